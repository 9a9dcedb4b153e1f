"""Continuous SCMs: linear-Gaussian (closed forms) and nonlinear additive noise (exact per-unit counterfactuals).

``LinearGaussianSCM``: X = W X + c + e, e ~ N(0, diag(sigma^2)), so X = A (c + e) with A = (I - W)^{-1}.
do(X_k = a) zeroes row k of W and sigma_k and sets c_k = a; every interventional distribution is
N(A' c', A' D' A'^T), and conditioning is Gaussian conditioning. A counterfactual given factual evidence
x_E is Pearl's three steps in closed form: abduction e | x_E is Gaussian (mean D A_E^T (A_E D A_E^T)^+
(x_E - A_E c), covariance D - D A_E^T (A_E D A_E^T)^+ A_E D), then the intervened model is applied to
it; with every variable observed the counterfactual is a point (zero covariance).

``AdditiveNoiseSCM``: X_v = f_v(pa_v) + N_v with any scipy noise. The noise of a fully observed unit is
recovered exactly, N_v = x_v - f_v(pa_v), so each unit's counterfactual is exact; interventional
distributions are sampled. Both convert to DoWhy 0.14 ``gcm`` (``framework.causal.convert.to_dowhy``),
whose ``counterfactual_samples`` must agree with ours to float precision and whose
``interventional_samples`` within sampling error.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from scipy import stats

from framework.causal.graphs import DAG
from framework.errors import ConfigError, require

Values = Mapping[str, float]


class AdditiveNoiseSCM:
    """X_v = f_v(parents (n, k) in ``dag.parents(v)`` order) + N_v; a root's f takes an (n, 0) array."""

    def __init__(self, dag: DAG, functions: Mapping[str, Callable[[np.ndarray], np.ndarray]],
                 noise: Mapping[str, object]):
        self.dag, self.variables = dag, dag.nodes
        self.index = {v: i for i, v in enumerate(dag.nodes)}
        for v in dag.nodes:
            require(v in functions or not dag.parents(v), f"functions.{v}", "missing mechanism for a non-root")
            require(v in noise, f"noise.{v}", "missing noise distribution")
            frozen = noise[v]
            require(hasattr(frozen, "dist") and hasattr(frozen, "kwds"), f"noise.{v}",
                    "must be a frozen scipy distribution, e.g. scipy.stats.norm(loc=0, scale=1)")
            require(not frozen.args, f"noise.{v}", "give the scipy parameters by keyword (loc=..., scale=...)")
        self.functions = {v: functions.get(v, lambda x: np.zeros(len(x))) for v in dag.nodes}
        self.noise = dict(noise)

    def noise_scipy(self, v: str) -> tuple[object, dict]:
        return self.noise[v].dist, dict(self.noise[v].kwds)

    def root_value(self, v: str) -> float:
        return float(np.asarray(self.functions[v](np.zeros((1, 0))))[0])

    def _f(self, v: str, values: np.ndarray) -> np.ndarray:
        pa = values[:, [self.index[p] for p in self.dag.parents(v)]]
        return np.asarray(self.functions[v](pa), dtype=np.float64).reshape(len(values))

    def propagate(self, noise: np.ndarray, do: Values | None = None) -> np.ndarray:
        """(n, n_vars): the variables produced by noise (n, n_vars) under ``do`` (constants)."""
        do = _checked(self.dag, do, "do")
        out = np.zeros_like(noise, dtype=np.float64)
        for v in self.dag.topological_order():
            j = self.index[v]
            out[:, j] = do[v] if v in do else self._f(v, out) + noise[:, j]
        return out

    def abduct(self, observed: np.ndarray) -> np.ndarray:
        """(n, n_vars): the exact noise of fully observed units."""
        observed = np.asarray(observed, dtype=np.float64)
        return np.stack([observed[:, self.index[v]] - self._f(v, observed) for v in self.variables], axis=1)

    def counterfactual(self, observed: np.ndarray, do: Values) -> np.ndarray:
        """(n, n_vars): each fully observed unit's values had ``do`` been applied (abduction, action, prediction)."""
        return self.propagate(self.abduct(observed), do)

    def sample_noise(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return np.stack([self.noise[v].rvs(size=n, random_state=rng) for v in self.variables], axis=1)

    def sample(self, n: int, seed: int, do: Values | None = None) -> np.ndarray:
        return self.propagate(self.sample_noise(n, seed), do)


def _checked(dag: DAG, values: Values | None, field: str) -> dict[str, float]:
    values = dict(values or {})
    for v, x in values.items():
        dag.check_node(v, field)
        require(np.isfinite(float(x)), f"{field}.{v}", f"must be a finite number, got {x!r}")
    return {v: float(x) for v, x in values.items()}


class LinearGaussianSCM:
    """X_v = sum_p w[p, v] X_p + c_v + e_v, e_v ~ N(0, sigma_v^2) independent."""

    def __init__(self, dag: DAG, weights: Mapping[tuple[str, str], float], intercepts: Values | None = None,
                 noise_std: Values | float = 1.0):
        self.dag, self.variables = dag, dag.nodes
        self.index = {v: i for i, v in enumerate(dag.nodes)}
        n = len(dag.nodes)
        self.W = np.zeros((n, n))  # W[child, parent]
        edges = set(dag.edges)
        for (p, c), w in weights.items():
            require((p, c) in edges, f"weights.{p}->{c}", f"not an edge of graph {dag.name!r}")
            self.W[self.index[c], self.index[p]] = float(w)
        self.c = np.array([float((intercepts or {}).get(v, 0.0)) for v in dag.nodes])
        stds = noise_std if isinstance(noise_std, Mapping) else {v: noise_std for v in dag.nodes}
        for v in stds:
            dag.check_node(v, "noise_std")
        self.sigma = np.array([float(stds.get(v, 1.0)) for v in dag.nodes])
        bad = [v for v, s in zip(dag.nodes, self.sigma) if not s >= 0]
        require(not bad, f"noise_std.{bad[0] if bad else ''}", "must be >= 0")

    def _model(self, do: Values | None):
        do = _checked(self.dag, do, "do")
        W, c, sigma = self.W.copy(), self.c.copy(), self.sigma.copy()
        for v, x in do.items():
            j = self.index[v]
            W[j], c[j], sigma[j] = 0.0, x, 0.0
        return np.linalg.inv(np.eye(len(c)) - W), c, sigma

    def mean_cov(self, do: Values | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(mean (n,), cov (n, n)) of every variable under do(do)."""
        A, c, sigma = self._model(do)
        return A @ c, A @ np.diag(sigma**2) @ A.T

    def interventional(self, targets: Sequence[str], do: Values | None = None,
                       evidence: Values | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(mean, cov) of ``targets`` under do(do) given ``evidence`` observed in that world."""
        mean, cov = self.mean_cov(do)
        return _condition(mean, cov, self._idx(targets, "targets"), self._values(evidence, "evidence"))

    def counterfactual(self, targets: Sequence[str], do: Values, evidence: Values) -> tuple[np.ndarray, np.ndarray]:
        """(mean, cov) of ``targets`` had do(do) held, given factual ``evidence``."""
        A, c, sigma = np.linalg.inv(np.eye(len(self.c)) - self.W), self.c, self.sigma
        D = np.diag(sigma**2)
        idx, x = self._values(evidence, "evidence")
        if idx:  # abduction: e | X_E = x_E
            AE = A[idx]
            gain = D @ AE.T @ np.linalg.pinv(AE @ D @ AE.T)
            m, S = gain @ (x - AE @ c), D - gain @ AE @ D
        else:
            m, S = np.zeros(len(c)), D
        A2, c2, _ = self._model(do)
        keep = np.ones(len(c))
        keep[[self.index[v] for v in do]] = 0.0  # an intervened variable ignores its own noise
        P = np.diag(keep)
        mean, cov = A2 @ (c2 + P @ m), A2 @ P @ S @ P @ A2.T
        t = self._idx(targets, "targets")
        return mean[t], cov[np.ix_(t, t)]

    def _idx(self, names: Sequence[str], field: str) -> list[int]:
        names = [names] if isinstance(names, str) else list(names)
        return [self.index[self.dag.check_node(v, field)] for v in names]

    def _values(self, values: Values | None, field: str) -> tuple[list[int], np.ndarray]:
        values = _checked(self.dag, values, field)
        return [self.index[v] for v in values], np.array(list(values.values()))

    def as_additive(self) -> AdditiveNoiseSCM:
        """The same SCM as an ``AdditiveNoiseSCM`` (linear f, Gaussian noise), e.g. for ``to_dowhy``."""
        functions = {}
        for v in self.dag.nodes:
            j = self.index[v]
            w = np.array([self.W[j, self.index[p]] for p in self.dag.parents(v)])
            functions[v] = (lambda w, c: lambda pa: pa @ w + c)(w, self.c[j])
        for v, s in zip(self.dag.nodes, self.sigma):
            if s == 0:
                raise ConfigError(f"noise_std.{v}", "an additive-noise SCM needs a positive noise scale")
        return AdditiveNoiseSCM(self.dag, functions, {v: stats.norm(loc=0.0, scale=s) for v, s in zip(self.dag.nodes, self.sigma)})

    def sample(self, n: int, seed: int, do: Values | None = None) -> np.ndarray:
        A, c, sigma = self._model(do)
        e = np.random.default_rng(seed).standard_normal((n, len(c))) * sigma
        return (c + e) @ A.T


def _condition(mean: np.ndarray, cov: np.ndarray, targets: list[int], evidence: tuple[list[int], np.ndarray]):
    idx, x = evidence
    if not idx:
        return mean[targets], cov[np.ix_(targets, targets)]
    gain = cov[np.ix_(targets, idx)] @ np.linalg.pinv(cov[np.ix_(idx, idx)])
    return mean[targets] + gain @ (x - mean[idx]), cov[np.ix_(targets, targets)] - gain @ cov[np.ix_(idx, targets)]
