"""Exogenous noise and mechanisms of one discrete variable: what makes a CPD an SCM (rung 3).

A CPD P(V | pa) fixes only each parent configuration's marginal. An SCM V = f(pa, U) also fixes how
the responses to *different* configurations are coupled through the shared U, and counterfactuals
depend on that coupling (SPEC §5: same CPDs, P(Y_{x=0}=0 | X=1, Y=1) = 0.571 with a shared monotone
noise, 0.700 with independent noise). Each noise model here states its coupling and offers three views:

* ``points()`` / ``mechanism(c, u)``: an explicit finite exogenous support and f evaluated on it. The
  brute-force reference enumerates these.
* ``joint_response(c, v)``: P(f(c_1, U) = v_1, ..., f(c_k, U) = v_k), the one number the twin-network
  oracle needs per variable, in closed form (no enumeration).
* ``sample(c, rng)``.

``independent``: the canonical response-function SCM with independent rows, U = (U_c)_c, U_c ~ P(. | c),
f(c, U) = U_c. ``monotone``: one U ~ Uniform(0, 1) shared by all configurations, f(c, u) = the inverse
CDF of row c at u (Pearl's monotonicity when rows are stochastically ordered). ``response``: any finite
distribution over response functions, given explicitly (e.g. deterministic mechanisms).
"""
from __future__ import annotations

import abc

import numpy as np

MAX_POINTS = 1_000_000  # points() refuses exogenous supports larger than this
SNAP = 1e-12  # CDF breakpoints closer than this are one breakpoint (so 0.1 + 0.2 meets 0.3 exactly)


class Noise(abc.ABC):
    """The exogenous noise U_v and mechanism f_v of one variable with C parent configurations."""

    coupling: str
    cpd: np.ndarray  # (C, card) float64: the CPD rows this noise implies

    @property
    def card(self) -> int:
        return self.cpd.shape[1]

    @abc.abstractmethod
    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """(weights (R,), u (R, ...)): a finite exogenous support whose cells f maps identically."""

    @abc.abstractmethod
    def mechanism(self, configs: np.ndarray, u: np.ndarray) -> np.ndarray:
        """(N,) int: f(configs[i], u[i])."""

    @abc.abstractmethod
    def joint_response(self, configs: np.ndarray, values: np.ndarray) -> np.ndarray:
        """(N,) float64: P(f(configs[i, j], U) = values[i, j] for every j) for configs, values (N, k)."""

    @abc.abstractmethod
    def sample(self, configs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(N,) int: f(configs[i], U_i) with fresh, independent U_i."""


class IndependentNoise(Noise):
    coupling = "independent"

    def __init__(self, cpd: np.ndarray):
        self.cpd = np.asarray(cpd, dtype=np.float64)

    def points(self):
        C, card = self.cpd.shape
        if card**C > MAX_POINTS:
            raise ValueError(f"independent noise has {card}^{C} exogenous points, more than {MAX_POINTS}")
        u = np.indices((card,) * C).reshape(C, -1).T  # (R, C): the response to each configuration
        return self.cpd[np.arange(C), u].prod(axis=1), u

    def mechanism(self, configs, u):
        return u[np.arange(len(configs)), configs]

    def joint_response(self, configs, values):
        N, k = configs.shape
        prob, consistent = np.ones(N), np.ones(N, dtype=bool)
        for j in range(k):
            repeated = np.zeros(N, dtype=bool)
            for i in range(j):
                same = configs[:, i] == configs[:, j]
                consistent &= ~same | (values[:, i] == values[:, j])
                repeated |= same
            # a configuration seen before adds no new factor: its row U_c is one draw, already counted
            prob *= np.where(repeated, 1.0, self.cpd[configs[:, j], values[:, j]])
        return np.where(consistent, prob, 0.0)

    def sample(self, configs, rng):
        cdf = np.cumsum(self.cpd[configs], axis=1)
        return np.minimum((cdf <= rng.random(len(configs))[:, None]).sum(axis=1), self.card - 1)


class MonotoneNoise(Noise):
    coupling = "monotone"

    def __init__(self, cpd: np.ndarray):
        cdf = np.cumsum(np.asarray(cpd, dtype=np.float64), axis=1)
        cdf[:, -1] = 1.0
        # Snap nearly equal breakpoints together, so that intervals which should touch do touch exactly.
        flat = np.sort(np.concatenate([[0.0, 1.0], cdf.ravel()]))
        starts = np.concatenate([[True], np.diff(flat) > SNAP])
        first, last = flat[starts], flat[np.concatenate([starts[1:], [True]])]
        reps = np.where(last == 1.0, 1.0, first)  # a group keeps 0 or 1 exactly when it holds them
        self.cdf = reps[np.searchsorted(first, cdf, side="right") - 1]  # (C, card): upper ends
        self.lower = np.concatenate([np.zeros((len(cdf), 1)), self.cdf[:, :-1]], axis=1)  # (C, card)
        self.cpd = self.cdf - self.lower

    def points(self):
        edges = np.unique(np.concatenate([[0.0, 1.0], self.cdf.ravel()]))
        widths = np.diff(edges)
        keep = widths > 0
        return widths[keep], ((edges[:-1] + edges[1:]) / 2)[keep]

    def mechanism(self, configs, u):
        # inverse CDF: the first state whose cumulative probability exceeds u
        return np.minimum((self.cdf[configs] <= u[:, None]).sum(axis=1), self.card - 1)

    def joint_response(self, configs, values):
        lo = self.lower[configs, values].max(axis=1)
        hi = self.cdf[configs, values].min(axis=1)
        return np.maximum(hi - lo, 0.0)

    def sample(self, configs, rng):
        return self.mechanism(configs, rng.random(len(configs)))


class ResponseNoise(Noise):
    """U ranges over R response functions with probabilities ``weights``; f(c, r) = table[r, c]."""

    coupling = "response"

    def __init__(self, weights: np.ndarray, table: np.ndarray, card: int):
        self.weights = np.asarray(weights, dtype=np.float64)  # (R,)
        self.table = np.asarray(table, dtype=np.int64)  # (R, C)
        C = self.table.shape[1]
        self.cpd = np.zeros((C, card))
        for c in range(C):
            np.add.at(self.cpd[c], self.table[:, c], self.weights)

    def points(self):
        return self.weights, np.arange(len(self.weights))

    def mechanism(self, configs, u):
        return self.table[u, configs]

    def joint_response(self, configs, values):
        hit = np.ones((len(configs), len(self.weights)), dtype=bool)  # (N, R)
        for j in range(configs.shape[1]):
            hit &= self.table[:, configs[:, j]].T == values[:, j, None]
        return hit @ self.weights

    def sample(self, configs, rng):
        return self.table[rng.choice(len(self.weights), size=len(configs), p=self.weights), configs]


COUPLINGS = {"independent": IndependentNoise, "monotone": MonotoneNoise}
