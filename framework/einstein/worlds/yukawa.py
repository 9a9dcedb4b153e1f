"""W4: inverse-square -> Yukawa-screened force (Yukawa 1935); no historical episode to recite.

A source of strength q at distance r. Old: ``F = A q / r^2``. New, the force of the screened
potential ``V = -A q exp(-r/lam) / r``: ``F = A q (1 + r/lam) exp(-r/lam) / r^2``. The coupling A
and the screening length lam are log-uniform in displayed units. The reference computation is
the attraction ``F = dV/dr`` by complex-step differentiation of the potential (exact to rounding, Squire & Trapp
1998); the tests also check ``∫_r^inf F dr' = -V(r)`` by quadrature.

Regimes in x = r / lam: training x in [1e-3, x_train] (the relative error x^2/2 under TRAIN_SIGMA sds),
anomalies at [0.3, 1], probes at [1, 5]. Strengths q log-uniform in [0.1, 10]. Noise: relative.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import sympy as sp
from scipy import integrate

from framework.einstein.worlds.base import TRAIN_SIGMA, World, WorldConfig


@dataclass
class YukawaConfig(WorldConfig):
    name: str = "w4_yukawa"
    DECLARED: ClassVar = {"A": (1e-2, 1e2), "lam": (1e0, 1e4)}
    LIMITS: ClassVar = {"A": (1e-9, 1e9), "lam": (1e-6, 1e9)}


class YukawaWorld(World):
    name = "w4_yukawa"
    title = "W4 inverse-square -> Yukawa-screened force"
    inputs = ("q", "r")
    output_name = "F"
    noise_kind = "relative"

    def x_train(self) -> float:
        return 0.9 * math.sqrt(2 * TRAIN_SIGMA * self.config.noise)

    def law_old(self, x, k):
        return k["A"] * x[:, 0] / x[:, 1] ** 2

    def law_new(self, x, k):
        q, r = x[:, 0], x[:, 1]
        z = r / k["lam"]
        return k["A"] * q * (1 + z) * np.exp(-z) / r**2

    def potential_by_quadrature(self, q: float, r: float, k) -> float:
        """∫_r^inf F(r') dr' by quadrature in s = r'/r on [1, inf)."""
        lam = k["lam"]
        value, _ = integrate.quad(lambda s: (1 + s * r / lam) * math.exp(-(s - 1) * r / lam) / s**2, 1.0, math.inf, epsabs=0, epsrel=1e-13, limit=400)
        return k["A"] * q * math.exp(-r / lam) * value / r

    def law_new_reference(self, x, k):
        q, r = x[:, 0], x[:, 1]
        h = 1e-30 * r  # complex step: Im V(r + ih) / h = V'(r) with no subtractive error

        def potential(z):
            return -k["A"] * q * np.exp(-z / k["lam"]) / z

        return np.imag(potential(r + 1j * h)) / h

    def expressions(self, symbols, k):
        q, r = symbols
        a, lam = k["A"], k["lam"]
        return a * q / r**2, a * q * (1 + r / lam) * sp.exp(-r / lam) / r**2

    def sample_inputs(self, rng, k, n, regime):
        lo, hi = {"train": (1e-3, self.x_train()), "anomaly": (0.3, 1.0), "probe": (1.0, 5.0)}[regime]
        q = np.exp(rng.uniform(math.log(0.1), math.log(10), n))
        z = np.exp(rng.uniform(math.log(lo), math.log(hi), n))
        return np.stack([q, z * k["lam"]], axis=1)

    def noise_scale(self, k):
        return self.config.noise
