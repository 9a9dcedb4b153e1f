"""W1: Galilean -> Lorentz velocity composition (Einstein 1905, §5).

A body moves at u in a frame that itself moves at v; what speed w does the rest frame see?
Old (Galileo): ``w = u + v``. New (Einstein): ``w = (u + v) / (1 + u v / c^2)``, with c drawn
log-uniformly in displayed units (so no instance has the textbook number). The reference computation
adds rapidities, ``w = c tanh(artanh(u/c) + artanh(v/c))``: a different route to the same law.

Regimes, in units of beta = speed / c: training ``u, v <= beta_train`` with ``beta_train`` chosen from
the noise so that the Galilean sum is within TRAIN_SIGMA noise sds of the truth (the aether-era lab);
anomalies at beta in [0.2, 0.5] (the Michelson-Morley / Fizeau analogue); probes at [0.5, 0.97].
Noise: absolute, sd = noise * beta_train * c (``noise`` is relative to the typical training speed).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from framework.einstein.worlds.base import TRAIN_SIGMA, World, WorldConfig


@dataclass
class VelocityConfig(WorldConfig):
    name: str = "w1_velocity"
    DECLARED: ClassVar = {"c": (1e1, 1e5)}
    LIMITS: ClassVar = {"c": (1e-3, 1e9)}


class VelocityWorld(World):
    name = "w1_velocity"
    title = "W1 Galilean -> Lorentz velocity composition"
    inputs = ("u", "v")
    output_name = "w"
    noise_kind = "absolute"

    def beta_train(self) -> float:
        # Galilean error at u = v = beta c is 2 beta^3 c / (1 + beta^2) <= TRAIN_SIGMA noise beta c
        return 0.9 * math.sqrt(TRAIN_SIGMA * self.config.noise / 2)

    def law_old(self, x, k):
        return x[:, 0] + x[:, 1]

    def law_new(self, x, k):
        u, v = x[:, 0], x[:, 1]
        return (u + v) / (1 + u * v / k["c"] ** 2)

    def law_new_reference(self, x, k):
        c = k["c"]
        return c * np.tanh(np.arctanh(x[:, 0] / c) + np.arctanh(x[:, 1] / c))

    def expressions(self, symbols, k):
        u, v = symbols
        return u + v, (u + v) / (1 + u * v / k["c"] ** 2)

    def sample_inputs(self, rng, k, n, regime):
        lo, hi = {"train": (0.05 * self.beta_train(), self.beta_train()), "anomaly": (0.2, 0.5), "probe": (0.5, 0.97)}[regime]
        return k["c"] * rng.uniform(lo, hi, size=(n, 2))

    def noise_scale(self, k):
        return self.config.noise * self.beta_train() * k["c"]
