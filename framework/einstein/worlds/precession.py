"""W3: Newtonian orbits -> perihelion precession (Einstein 1915; the Mercury anomaly).

A test body orbits a mass whose gravitational radius is m = GM/c^2 (log-uniform, displayed length
units); the inputs are the perihelion and aphelion distances r_p, r_a, the output the advance of
the perihelion per orbit in a random angle unit s. Old (Newton, two bodies): a closed ellipse,
advance 0. New (Schwarzschild geodesic): with u = 1/r the orbit obeys
``(du/dphi)^2 = 2m (u - u1)(u2 - u)(u3 - u)``, u1 = 1/r_a, u2 = 1/r_p, u3 = 1/(2m) - u1 - u2, so

    advance = 4 K(k^2) / sqrt(A) - 2 pi,   A = 1 - 2m(2 u1 + u2),  k^2 = 2m (u2 - u1) / A,

with K the complete elliptic integral of the first kind. K is computed by the arithmetic-geometric
mean, carried as deviations from 1 so that advances of 1e-8 rad keep full relative precision. The
reference is the quadrature of the orbit equation itself (substituting u = u1 + (u2 - u1) sin^2 t).
To first order the advance is 6 pi m / p with p the semi-latus rectum (Einstein's 43"/century).

Regimes (sd the noise in radians, ``noise * 1e-3``): training orbits with r_p / m in
[7.2 pi/(T sd), 72 pi/(T sd)] (advance under T = TRAIN_SIGMA sds), 20 anomalies with advance between 10 and
500 sd (Mercury), probes with r_p / m in [30, 3000]. Eccentricities are uniform in [0, 0.6]. Noise:
absolute, on the advance.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import sympy as sp
from scipy import integrate

from framework.einstein.worlds.base import TRAIN_SIGMA, World, WorldConfig

RADIANS_PER_NOISE = 1e-3  # sd in radians = noise * RADIANS_PER_NOISE


@dataclass
class PrecessionConfig(WorldConfig):
    name: str = "w3_precession"
    n_anomaly: int = 20  # the exact law is long (an elliptic integral): it needs this much evidence
    DECLARED: ClassVar = {"m": (1e-3, 1e3), "angle_unit": (1e-6, 1e-3)}
    LIMITS: ClassVar = {"m": (1e-12, 1e12), "angle_unit": (1e-12, 1e3)}


def _one_minus_agm_inverse(m_param: np.ndarray) -> np.ndarray:
    """2 K(m) / pi - 1 = 1 / AGM(1, sqrt(1 - m)) - 1, without cancellation for small m."""
    b = np.sqrt(1 - m_param)
    da = np.zeros_like(m_param)  # 1 - a
    dg = m_param / (1 + b)  # 1 - g
    for _ in range(40):
        prod = da + dg - da * dg  # 1 - a g
        da, dg = 0.5 * (da + dg), prod / (1 + np.sqrt(1 - prod))
        if np.all(np.abs(da - dg) <= 1e-17 * np.maximum(np.abs(da), 1e-300)):
            break
    agm_dev = da  # 1 - AGM
    return agm_dev / (1 - agm_dev)


def advance(r_p: np.ndarray, r_a: np.ndarray, m: float) -> np.ndarray:
    """Perihelion advance per orbit, radians, on the Schwarzschild geodesic (closed form)."""
    u1, u2 = 1 / r_a, 1 / r_p
    one_minus_a = 2 * m * (2 * u1 + u2)
    a = 1 - one_minus_a
    k2 = 2 * m * (u2 - u1) / a
    x = _one_minus_agm_inverse(k2)  # 2K/pi - 1
    sa = np.sqrt(a)
    y = one_minus_a / (sa * (1 + sa))  # 1/sqrt(A) - 1
    return 2 * math.pi * (x + y + x * y)


def advance_reference(r_p: float, r_a: float, m: float) -> float:
    """The same by quadrature of dphi = du / sqrt(2m (u - u1)(u2 - u)(u3 - u)) over a whole orbit."""
    u1, u2 = 1 / r_a, 1 / r_p
    one_minus_a = 2 * m * (2 * u1 + u2)
    b = 2 * m * (u2 - u1)

    def excess(t):  # 2 / sqrt(A - B sin^2 t) - 2, written without cancellation
        q = 1 - one_minus_a - b * math.sin(t) ** 2
        sq = math.sqrt(q)
        return 2 * (one_minus_a + b * math.sin(t) ** 2) / (sq * (1 + sq))

    value, _ = integrate.quad(excess, 0.0, math.pi / 2, epsabs=0, epsrel=1e-13, limit=200)
    return 2 * value


class PrecessionWorld(World):
    name = "w3_precession"
    title = "W3 Newtonian orbits -> perihelion precession"
    inputs = ("r_p", "r_a")
    output_name = "advance"
    noise_kind = "absolute"

    def sd_radians(self) -> float:
        return self.config.noise * RADIANS_PER_NOISE

    def law_old(self, x, k):
        return np.zeros(len(x))

    def law_new(self, x, k):
        return advance(x[:, 0], x[:, 1], k["m"]) / k["angle_unit"]

    def law_new_reference(self, x, k):
        return np.array([advance_reference(rp, ra, k["m"]) for rp, ra in x]) / k["angle_unit"]

    def expressions(self, symbols, k):
        rp, ra = symbols
        m, s = k["m"], k["angle_unit"]
        u1, u2 = 1 / ra, 1 / rp
        a = 1 - 2 * m * (2 * u1 + u2)
        new = (4 * sp.elliptic_k(2 * m * (u2 - u1) / a) / sp.sqrt(a) - 2 * sp.pi) / s
        return sp.Integer(0), new

    def sample_inputs(self, rng, k, n, regime):
        sd = self.sd_radians()
        e = rng.uniform(0.0, 0.6, n)
        if regime == "train":
            # 6 pi m / p <= TRAIN_SIGMA sd with margin for the higher orders
            lo = 7.2 * math.pi / (TRAIN_SIGMA * sd)
            x = np.exp(rng.uniform(math.log(lo), math.log(10 * lo), n))
        elif regime == "anomaly":
            # 6 pi m / p between 10 and 500 sd, p = r_p (1 + e)
            p = np.exp(rng.uniform(math.log(6 * math.pi / (500 * sd)), math.log(6 * math.pi / (10 * sd)), n))
            x = p / (1 + e)
        else:
            x = np.exp(rng.uniform(math.log(30.0), math.log(3000.0), n))
        r_p = x * k["m"]
        return np.stack([r_p, r_p * (1 + e) / (1 - e)], axis=1)

    def noise_scale(self, k):
        return self.sd_radians() / k["angle_unit"]
