"""W5: epicycles -> heliocentric angles (Ptolemy -> Kepler 1609; Tycho's Mars).

An observer on a circular orbit of radius 1 and period 1 (Earth) watches an outer planet of
semi-major axis a (log-uniform). Inputs: the time t (in a random time unit tau) and the planet's
orbital eccentricity e; output: the planet's geocentric longitude in radians, unwrapped (continuous
in t). Old (deferent + epicycle, equivalently circular heliocentric orbits): the planet moves
uniformly on a circle, ``theta = arg(a exp(i(n t + M0 + w)) - exp(i(2 pi t + L0)))``. New (Kepler):
the planet moves on an ellipse of eccentricity e, position from Kepler's equation
``E - e sin E = M`` solved by Newton's method to rounding. The reference integrates Newton's
two-body equations of motion (DOP853, rtol 1e-13) from perihelion.

Regimes in e: training e in [0, e_train] (circles fit within TRAIN_SIGMA sds), anomalies at
[5 sd, 25 sd] (the 8-arcminute discrepancy in Tycho's Mars that Kepler would not ignore), probes at
e in [0.05, 0.3]; times uniform over two synodic periods. Noise: absolute, sd = ``noise * 0.1`` rad.
The unwrapped angle is exact because, for an outer planet (a (1 - e) > 1), the geocentric
direction is within pi/2 of the heliocentric one, which is within pi/2 of the mean longitude.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import sympy as sp
from scipy import integrate

from framework.einstein.worlds.base import TRAIN_SIGMA, World, WorldConfig

RADIANS_PER_NOISE = 0.1
KeplerE = sp.Function("kepler_E")  # the solution E(M, e) of Kepler's equation, a token of the code


@dataclass
class PlanetsConfig(WorldConfig):
    name: str = "w5_planets"
    n_anomaly: int = 16  # the Kepler law is long: it needs this much evidence to be well posed
    DECLARED: ClassVar = {"a": (2.0, 30.0), "tau": (1e-2, 1e2)}
    LIMITS: ClassVar = {"a": (1.5, 1e3), "tau": (1e-9, 1e9)}


def _wrap(angle):
    return (angle + np.pi) % (2 * np.pi) - np.pi


def kepler_E(M: np.ndarray, e: np.ndarray) -> np.ndarray:
    E = M + e * np.sin(M)
    for _ in range(50):
        step = (E - e * np.sin(E) - M) / (1 - e * np.cos(E))
        E = E - step
        if np.all(np.abs(step) <= 1e-16 * np.maximum(1, np.abs(E))):
            break
    return E


class PlanetsWorld(World):
    name = "w5_planets"
    title = "W5 epicycles -> heliocentric angles"
    inputs = ("t", "e")
    output_name = "longitude"
    noise_kind = "absolute"

    def sd_radians(self) -> float:
        return self.config.noise * RADIANS_PER_NOISE

    def derived(self, rng, k):
        return {"M0": float(rng.uniform(0, 2 * np.pi)), "w": float(rng.uniform(0, 2 * np.pi)), "L0": float(rng.uniform(0, 2 * np.pi))}

    def e_train(self, k) -> float:
        # the longitude error of a circle is about 2 e a / (a - 1) at worst
        return 0.25 * TRAIN_SIGMA * self.sd_radians() * (k["a"] - 1) / k["a"]

    def _years(self, x, k):
        return x[:, 0] * k["tau"]

    def _geocentric(self, t_years, px, py, k, mean_longitude):
        ex, ey = np.cos(2 * np.pi * t_years + k["L0"]), np.sin(2 * np.pi * t_years + k["L0"])
        raw = np.arctan2(py - ey, px - ex)
        return mean_longitude + _wrap(raw - mean_longitude)

    def _mean(self, t_years, k):
        n = 2 * np.pi * k["a"] ** -1.5
        return n * t_years + k["M0"]

    def law_old(self, x, k):
        t = self._years(x, k)
        M = self._mean(t, k)
        lon = M + k["w"]
        return self._geocentric(t, k["a"] * np.cos(lon), k["a"] * np.sin(lon), k, lon)

    def _position(self, M, e, k):
        E = kepler_E(_wrap(M), e)
        xo, yo = k["a"] * (np.cos(E) - e), k["a"] * np.sqrt(1 - e**2) * np.sin(E)
        cw, sw = np.cos(k["w"]), np.sin(k["w"])
        return cw * xo - sw * yo, sw * xo + cw * yo

    def law_new(self, x, k):
        t, e = self._years(x, k), x[:, 1]
        M = self._mean(t, k)
        px, py = self._position(M, e, k)
        return self._geocentric(t, px, py, k, M + k["w"])

    def law_new_reference(self, x, k):
        a, gm = k["a"], 4 * np.pi**2  # GM of the sun in AU^3 / yr^2
        out = []
        for (t_disp, e) in x:
            t = t_disp * k["tau"]
            M = self._mean(np.array([t]), k)[0]
            period = 2 * np.pi / (2 * np.pi * a**-1.5)
            since = (M % (2 * np.pi)) / (2 * np.pi) * period  # time since the last perihelion
            r0 = a * (1 - e)
            v0 = math.sqrt(gm * (1 + e) / r0)

            def rhs(_, s):
                r3 = (s[0] ** 2 + s[1] ** 2) ** 1.5
                return [s[2], s[3], -gm * s[0] / r3, -gm * s[1] / r3]

            sol = integrate.solve_ivp(rhs, (0.0, since), [r0, 0.0, 0.0, v0], method="DOP853", rtol=1e-13, atol=1e-15 * a)
            xo, yo = sol.y[0, -1], sol.y[1, -1]
            cw, sw = math.cos(k["w"]), math.sin(k["w"])
            px, py = cw * xo - sw * yo, sw * xo + cw * yo
            out.append(self._geocentric(np.array([t]), np.array([px]), np.array([py]), k, np.array([M + k["w"]]))[0])
        return np.array(out)

    def expressions(self, symbols, k):
        t, e = symbols
        a, tau, M0, w, L0 = (k[key] for key in ("a", "tau", "M0", "w", "L0"))
        M = 2 * sp.pi * a ** sp.Rational(-3, 2) * tau * t + M0
        ex, ey = sp.cos(2 * sp.pi * tau * t + L0), sp.sin(2 * sp.pi * tau * t + L0)
        old = sp.atan2(a * sp.sin(M + w) - ey, a * sp.cos(M + w) - ex)
        E = KeplerE(M, e)
        xo, yo = a * (sp.cos(E) - e), a * sp.sqrt(1 - e**2) * sp.sin(E)
        px, py = sp.cos(w) * xo - sp.sin(w) * yo, sp.sin(w) * xo + sp.cos(w) * yo
        return old, sp.atan2(py - ey, px - ex)

    def sample_inputs(self, rng, k, n, regime):
        synodic = 1 / (1 - k["a"] ** -1.5)  # years
        t = rng.uniform(0, 2 * synodic, n) / k["tau"]
        sd = self.sd_radians()
        lo, hi = {"train": (0.0, self.e_train(k)), "anomaly": (5 * sd, 25 * sd), "probe": (0.05, 0.3)}[regime]
        hi_ok = min(hi, 0.99 * (1 - 1 / k["a"]))  # keep a (1 - e) > 1: an outer planet
        return np.stack([t, rng.uniform(min(lo, hi_ok), hi_ok, n)], axis=1)

    def noise_scale(self, k):
        return self.sd_radians()

