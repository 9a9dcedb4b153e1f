"""W2: Newtonian -> relativistic kinetic energy, as forward and as inverse queries (Einstein 1905, §10).

Forward (``query="forward"``): from mass m and speed v, the kinetic energy K.
Old: ``K = m v^2 / (2 E)``. New: ``K = m c^2 (1 / sqrt(1 - v^2/c^2) - 1) / E``.
Inverse (``query="inverse"``): from m and K, the speed. Old: ``v = sqrt(2 E K / m)``.
New: ``v = c sqrt(1 - 1 / (1 + E K / (m c^2))^2)``.

Constants, log-uniform in displayed units: the speed of light c and the energy unit E (so K is in a
random unit, not m c^2). Masses are log-uniform in [0.1, 10]. The reference computations are the
work integral ``K = m ∫_0^v s gamma(s)^3 ds`` (quadrature) for the forward law and a bracketing
root of that forward law for the inverse one.

Regimes in beta = v / c: training up to ``beta_train`` (from the noise: the Newtonian relative error
3/4 beta^2 stays under TRAIN_SIGMA sds), anomalies at [0.3, 0.6] (the Kaufmann / Bertozzi electron
analogue), probes at [0.6, 0.98]. Noise: relative, sd = noise * |y|.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import sympy as sp
from scipy import integrate, optimize

from framework.errors import require
from framework.einstein.worlds.base import TRAIN_SIGMA, World, WorldConfig


@dataclass
class KineticConfig(WorldConfig):
    name: str = "w2_kinetic"
    query: str = "forward"  # "forward": (m, v) -> K; "inverse": (m, K) -> v
    DECLARED: ClassVar = {"c": (1e1, 1e5), "energy_unit": (1e-3, 1e3)}
    LIMITS: ClassVar = {"c": (1e-3, 1e9), "energy_unit": (1e-9, 1e9)}

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.query in ("forward", "inverse"), "query", f"must be 'forward' or 'inverse', got {self.query!r}")


def _kinetic(m, v, c, e):
    beta2 = (v / c) ** 2
    # gamma - 1 = beta^2 / (sqrt(1 - beta^2) (1 + sqrt(1 - beta^2))): no cancellation at small beta
    s = np.sqrt(1 - beta2)
    return m * c**2 * beta2 / (s * (1 + s)) / e


def _speed(m, kin, c, e):
    x = e * kin / (m * c**2)  # gamma - 1
    # 1 - 1/gamma^2 = x (2 + x) / (1 + x)^2
    return c * np.sqrt(x * (2 + x)) / (1 + x)


class KineticWorld(World):
    name = "w2_kinetic"
    title = "W2 Newtonian -> relativistic kinetic energy"
    output_name = "K"
    noise_kind = "relative"

    def __init__(self, config: KineticConfig):
        super().__init__(config)
        self.inverse = config.query == "inverse"
        self.inputs = ("m", "K") if self.inverse else ("m", "v")
        self.output_name = "v" if self.inverse else "K"

    def beta_train(self) -> float:
        return 0.9 * math.sqrt(TRAIN_SIGMA * self.config.noise / 0.75)

    def law_old(self, x, k):
        m, q = x[:, 0], x[:, 1]
        if self.inverse:
            return np.sqrt(2 * k["energy_unit"] * q / m)
        return m * q**2 / (2 * k["energy_unit"])

    def law_new(self, x, k):
        m, q = x[:, 0], x[:, 1]
        return (_speed if self.inverse else _kinetic)(m, q, k["c"], k["energy_unit"])

    def _work_integral(self, m, v, c, e):
        value, _ = integrate.quad(lambda s: s / (1 - (s / c) ** 2) ** 1.5, 0.0, v, epsabs=0, epsrel=1e-13, limit=200)
        return m * value / e

    def law_new_reference(self, x, k):
        c, e = k["c"], k["energy_unit"]
        out = []
        for m, q in x:
            if not self.inverse:
                out.append(self._work_integral(m, q, c, e))
            else:
                out.append(optimize.brentq(lambda v: self._work_integral(m, v, c, e) - q, 0.0, c * (1 - 1e-6), xtol=1e-14 * c, rtol=1e-14, maxiter=500))
        return np.array(out)

    def expressions(self, symbols, k):
        m, q = symbols
        c, e = k["c"], k["energy_unit"]
        if self.inverse:
            return sp.sqrt(2 * e * q / m), c * sp.sqrt(1 - 1 / (1 + e * q / (m * c**2)) ** 2)
        return m * q**2 / (2 * e), m * c**2 * (1 / sp.sqrt(1 - q**2 / c**2) - 1) / e

    def sample_inputs(self, rng, k, n, regime):
        lo, hi = {"train": (0.05 * self.beta_train(), self.beta_train()), "anomaly": (0.3, 0.6), "probe": (0.6, 0.98)}[regime]
        m = np.exp(rng.uniform(math.log(0.1), math.log(10), n))
        v = k["c"] * rng.uniform(lo, hi, n)
        second = _kinetic(m, v, k["c"], k["energy_unit"]) if self.inverse else v
        return np.stack([m, second], axis=1)

    def noise_scale(self, k):
        return self.config.noise
