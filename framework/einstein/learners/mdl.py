"""Symbolic regression by minimum description length: enumerate formulas, fit constants, pick by bits.

The hypothesis space is products of powers of enumerated expression trees (a "monomial of atoms",
the form most laws of physics take once the units are factored out):

    y = a * prod_j atom_j(x; k_j) ** e_j,   e_j in EXPONENTS, at most ``max_factors`` factors,

with a and the k_j real constants. The atoms are the union, deduplicated by value, of

* every expression tree of at most ``atom_size`` nodes over the variables, the integer 1 and at most
  one constant k, built from + - * / neg inv sq sqrt exp (enumerated bottom-up, trees equal as
  functions at random points kept once: observational equivalence), and
* two-term sums ``T1 + T2``, ``T1 - T2``, ``T1 + k T2`` and exponentials ``exp(k T)``, where a term T
  is 1 or a monomial ``prod_i x_i^p_i`` with p_i in -2..2 (``k T1 + T2`` is the same family up to
  the scale a, so it is not listed again).

Only atoms whose root is a variable, a sum, a difference or an exponential are kept (a product,
quotient or power at the root duplicates the product layer). Raw trees alone do not scale: at 7
nodes over two variables there are 22-29 thousand distinct atoms (measured), too many to try on
every step; the sums of terms reach laws like ``(u + v) / (1 + k u v)`` at a few hundred. The zero
law ``y = 0`` and the constant law ``y = a`` are in the space too.

Search: beam search over factors. Each step tries every atom with every exponent on top of each
beam member; the scale a is solved in closed form and each new k is chosen on a log grid of both
signs, then the best ``beam`` candidates have all their constants refined jointly by
``scipy.optimize.least_squares``. Every candidate is scored by its description length in bits
(:mod:`framework.einstein.description`): ``formula_bits`` of the sympy formula plus the residuals
coded with their maximum-likelihood sd. Two noise codes are tried, absolute residuals and, for
positive data, residuals of ``log y`` (relative noise; the Jacobian ``sum log2 y`` keeps the two
comparable); the shorter wins. The learner is never told the noise level.

This is not a general symbolic regressor: a law that is not such a product (a sum of two terms, an
elliptic integral, Kepler's equation) can be approximated but not recovered. Measured (5 instances,
seed 0, all anomalies; fraction of probes with t > 0.5 / symbolic recovery): W1 1.00 / 5 of 5,
W2 forward 0.97 / 0, W2 inverse 0.62 / 0, W3 1.00 / 0 (it finds Einstein's first-order 6 pi m / p,
not the exact elliptic law), W4 1.00 / 0 (t is high but nMSE ~1: it bends the inverse square with
an additive term instead of finding the screening), W5 0.15 / 0. With no anomaly, t = 0 on W1-W4.
About 5-10 s a fit on one busy core.
"""
from __future__ import annotations

import functools
import itertools
import math
import warnings
from dataclasses import dataclass

import numpy as np
import sympy as sp
from scipy import optimize

from framework.errors import require
from framework.einstein import description
from framework.einstein.learners.base import FitData, Learner, LearnerConfig

EXPONENTS = (-2.0, -1.0, -0.5, 0.5, 1.0, 2.0)
UNARY = ("neg", "inv", "sq", "sqrt", "exp")
BINARY = ("add", "sub", "mul", "div")
ROOTS = ("var", "add", "sub", "exp")


@dataclass
class MDLConfig(LearnerConfig):
    name: str = "mdl"
    atom_size: int = 5  # nodes per raw-tree atom (the two-term sums come on top)
    max_factors: int = 4
    beam: int = 4
    k_decades: int = 8  # the k grid (one point a decade, refined after) spans 10^-k_decades .. 10^k_decades times the data's scale, both signs
    refine: int = 8  # candidates per step whose constants are refined jointly (and as many with a new k)

    def __post_init__(self):
        require(1 <= self.atom_size <= 8, "atom_size", f"must be in 1..8 (enumeration grows fast), got {self.atom_size}")
        require(1 <= self.max_factors <= 6, "max_factors", f"must be in 1..6, got {self.max_factors}")
        require(self.beam >= 1, "beam", f"must be >= 1, got {self.beam}")
        require(1 <= self.k_decades <= 15, "k_decades", f"must be in 1..15, got {self.k_decades}")
        require(self.refine >= 1, "refine", f"must be >= 1, got {self.refine}")


# --- expression trees: ("var", i) | ("one",) | ("k",) | (op, child) | (op, left, right) --------------

def _eval(tree, x: np.ndarray, k):
    """Values of ``tree`` at inputs x (N, d); k is a scalar or a (G, 1) column (a grid)."""
    op = tree[0]
    if op == "var":
        return x[:, tree[1]]
    if op == "one":
        return np.ones(x.shape[0])
    if op == "k":
        return k
    a = _eval(tree[1], x, k)
    if op == "neg":
        return -a
    if op == "inv":
        return 1.0 / a
    if op == "sq":
        return a * a
    if op == "sqrt":
        return np.sqrt(a)
    if op == "exp":
        return np.exp(a)
    b = _eval(tree[2], x, k)
    return {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide}[op](a, b)


def _sympy(tree, symbols, k):
    op = tree[0]
    if op == "var":
        return symbols[tree[1]]
    if op == "one":
        return sp.Integer(1)
    if op == "k":
        return sp.Float(k)
    a = _sympy(tree[1], symbols, k)
    unary = {"neg": lambda v: -v, "inv": lambda v: 1 / v, "sq": lambda v: v**2, "sqrt": sp.sqrt, "exp": sp.exp}
    if op in unary:
        return unary[op](a)
    b = _sympy(tree[2], symbols, k)
    return {"add": a + b, "sub": a - b, "mul": a * b, "div": a / b}[op]


def _has_k(tree) -> bool:
    return tree[0] == "k" or any(_has_k(c) for c in tree[1:] if isinstance(c, tuple))


def _has_var(tree) -> bool:
    return tree[0] == "var" or any(_has_var(c) for c in tree[1:] if isinstance(c, tuple))


def _monomial(powers) -> tuple | None:
    tree = None
    for i, p in enumerate(powers):
        if p == 0:
            continue
        f = ("var", i)
        f = {1: f, 2: ("sq", f), -1: ("inv", f), -2: ("inv", ("sq", f))}[p]
        tree = f if tree is None else ("mul", tree, f)
    return tree


def _term_sums(n_vars: int) -> list[tuple]:
    monomials = [m for p in itertools.product((-2, -1, 0, 1, 2), repeat=n_vars) if (m := _monomial(p)) is not None]
    terms = [("one",)] + monomials
    out = []
    for i, t1 in enumerate(terms):
        for t2 in terms[i + 1 :]:
            out += [("add", t1, t2), ("sub", t1, t2), ("add", t1, ("mul", ("k",), t2))]
    out += [("exp", ("mul", ("k",), m)) for m in monomials]
    return out


@functools.lru_cache(maxsize=8)
def atoms(n_vars: int, size: int) -> tuple[tuple, ...]:
    """All distinct atoms (as functions): raw trees of at most ``size`` nodes, then the term sums."""
    rng = np.random.default_rng(12345)
    points = rng.uniform(0.3, 3.0, size=(24, n_vars))
    # k values closed under k -> -k and k -> 1/k: families that differ by such a reparametrisation of
    # k, or by a constant factor (the scale a absorbs it), hash alike and are kept once
    base_k = np.array([0.61, 1.37])
    k_probe = np.concatenate([base_k, -base_k, 1 / base_k, -1 / base_k])[:, None]
    by_size: dict[int, list[tuple]] = {s: [] for s in range(1, size + 1)}
    seen: set = set()

    def admit(tree, s):
        with np.errstate(all="ignore"):
            v = np.broadcast_to(_eval(tree, points, k_probe), (len(k_probe), len(points)))
        if not np.all(np.isfinite(v)) or np.max(np.abs(v)) > 1e12:
            return
        if not _has_var(tree) and tree[0] not in ("one", "k"):
            return  # a constant subtree is one k
        if _has_var(tree) and np.ptp(v[0]) <= 1e-9 * (1 + np.abs(v[0]).max()):
            return  # exp(x / -x) and kin: constant functions written with variables
        if np.any(v[:, 0] == 0):
            return
        rows = np.round(v / v[:, :1], 9)  # up to a constant factor
        key = frozenset(map(tuple, rows)) if _has_k(tree) else (tuple(rows[0]), "nok")
        if key in seen:
            return
        seen.add(key)
        by_size[s].append(tree)

    for i in range(n_vars):
        admit(("var", i), 1)
    admit(("one",), 1)
    admit(("k",), 1)
    for s in range(2, size + 1):
        for op in UNARY:
            for child in by_size[s - 1]:
                if op == "neg" and child[0] in ("neg", "one", "k"):
                    continue
                admit((op, child), s)
        for left_size in range(1, s - 1):
            right_size = s - 1 - left_size
            for op in BINARY:
                if op in ("add", "mul") and left_size > right_size:
                    continue  # commutative: one order suffices (equal sizes are deduplicated by value)
                for left in by_size[left_size]:
                    lk = _has_k(left)
                    for right in by_size[right_size]:
                        if lk and _has_k(right):
                            continue  # at most one constant per atom
                        admit((op, left, right), s)
    by_size[size + 1] = []
    for tree in _term_sums(n_vars):
        admit(tree, size + 1)
    out = [t for s in range(1, size + 2) for t in by_size[s] if _has_var(t) and (t[0] in ROOTS)]
    return tuple(out)


def _exponent_tokens(e: float) -> int:
    return 0 if e == 1 else 1 if e in (-1.0, 2.0, 0.5) else 2


def _size(tree) -> int:
    return 1 + sum(_size(c) for c in tree[1:] if isinstance(c, tuple))


@dataclass
class _Model:
    factors: tuple  # ((tree, exponent, k or None), ...)
    a: float = 0.0
    zero: bool = False
    log_mode: bool = False
    bits: float = math.inf


def _product(factors, x, ks=None):
    value = np.ones(x.shape[0])
    for j, (tree, e, k) in enumerate(factors):
        kk = ks[j] if ks is not None else k
        value = value * np.power(_eval(tree, x, kk if kk is not None else 0.0), e)
    return value


def _fit_scale(F: np.ndarray, y: np.ndarray, log_mode: bool):
    """(a, residuals) with the scale a solved in closed form."""
    if log_mode:
        r = np.log(y) - np.log(F)
        la = float(np.mean(r))
        return math.exp(min(la, 700.0)), r - la
    denom = float(F @ F)
    a = float(F @ y) / denom if denom > 0 else 0.0
    return a, y - a * F


class MDLLearner(Learner):
    name = "mdl"
    sees = ("train", "anomalies", "variables")

    def fit(self, data: FitData, rng):
        x, y = data.xy()
        self.n_vars = x.shape[1]
        names = data.variables or tuple(f"x{i}" for i in range(self.n_vars))
        self.symbols = tuple(sp.Symbol(v, positive=True) for v in names)
        # one scale for all inputs (their overall geometric mean): per-column scales would turn u + v
        # into u/s1 + v/s2 and hide a law from the grammar; the scale only centres the k grid
        self.x_scale = np.full(self.n_vars, float(np.exp(np.mean(np.log(np.abs(x) + 1e-300)))))
        self.y_scale = float(np.exp(np.mean(np.log(np.abs(y) + 1e-300))))
        xs, ys = x / self.x_scale, y / self.y_scale
        library = atoms(self.n_vars, self.config.atom_size)
        self.n_atoms = len(library)
        n = len(y)
        self.per_token = math.log2(len(description.ALPHABET) + self.n_vars)
        self.per_constant = 0.5 * math.log2(max(n, 2)) + description.CONSTANT_OVERHEAD
        zero = _Model((), zero=True, bits=description.fitted_gaussian_bits(ys) + self.per_token)
        best = [zero]
        modes = [False] + ([True] if np.all(ys > 0) else [])
        for log_mode in modes:
            best += self._search(library, xs, ys, log_mode)
        for m in best:
            m.bits = self._exact_bits(m, xs, ys)
        self.model = min(best, key=lambda m: m.bits)
        self.bits = self.model.bits

    # --- search ----------------------------------------------------------------------------------
    def _jacobian_bits(self, ys, log_mode):
        return float(np.sum(np.log2(ys))) if log_mode else 0.0

    def _data_bits(self, residual, ys, log_mode):
        return description.fitted_gaussian_bits(residual) + self._jacobian_bits(ys, log_mode)

    def _structure_bits(self, factors) -> float:
        tokens = 1 + sum(_size(t) + _exponent_tokens(e) + 1 for t, e, _ in factors)
        consts = 1 + sum(1 for _, _, k in factors if k is not None)
        return tokens * self.per_token + consts * self.per_constant

    def _approx_bits(self, factors, rss, n, ys, log_mode):
        data = 0.5 * n * math.log2(2 * math.pi * math.e * max(rss / n, 1e-300)) + self._jacobian_bits(ys, log_mode)
        return self._structure_bits(factors) + data

    def _search(self, library, xs, ys, log_mode) -> list[_Model]:
        """The best few models met on the way (by approximate bits), for exact scoring by the caller."""
        cfg = self.config
        n = len(ys)
        half = 10.0 ** np.arange(-cfg.k_decades, cfg.k_decades + 0.5, 1.0)
        grid = np.concatenate([half, -half])  # (G,)
        plain = [t for t in library if not _has_k(t)]
        keyed = [t for t in library if _has_k(t)]
        with np.errstate(all="ignore"):
            V0 = np.stack([np.broadcast_to(_eval(t, xs, 0.0), (n,)) for t in plain])  # (A0, N)
            V1 = np.stack([np.broadcast_to(_eval(t, xs, grid[:, None]), (len(grid), n)) for t in keyed])  # (A1, G, N)
        V1 = V1.reshape(-1, n)  # (A1 G, N): row a * G + g is atom a at k = grid[g]
        caches: tuple[dict, dict] = ({}, {})  # per block: exponent -> normalised powers (or logs)
        tok0 = np.array([_size(t) for t in plain], dtype=float)
        tok1 = np.repeat(np.array([_size(t) for t in keyed], dtype=float), len(grid))
        a, r = _fit_scale(np.ones(n), ys, log_mode)
        start = _Model((), a=a, log_mode=log_mode, bits=self._approx_bits((), float(r @ r), n, ys, log_mode))
        beam, met = [start], [start]
        for _ in range(cfg.max_factors):
            with np.errstate(all="ignore"):
                F = np.stack([_product(m.factors, xs) for m in beam])  # (B, N)
                found = []
                for e in EXPONENTS:
                    for V, tok, nk, trees, per, cache in ((V0, tok0, 0, plain, 1, caches[0]), (V1, tok1, 1, keyed, len(grid), caches[1])):
                        rss = self._rss_matrix(V, e, F, ys, log_mode, cache)  # (rows, B)
                        for b, m in enumerate(beam):
                            used = {id(t) for t, _, _ in m.factors}
                            for j, t in enumerate(trees):
                                if id(t) in used:
                                    rss[j * per : (j + 1) * per, b] = np.inf
                        base = np.array([self._structure_bits(m.factors) for m in beam])  # (B,)
                        extra = (tok[:, None] + _exponent_tokens(e) + 1) * self.per_token + (nk * self.per_constant)
                        bits = base[None, :] + extra + 0.5 * n * np.log2(2 * np.pi * np.e * np.maximum(rss / n, 1e-300))
                        bits = np.where(np.isfinite(rss), bits, np.inf)
                        take = min(3 * cfg.refine + cfg.beam, bits.size)
                        flat = np.argpartition(bits.ravel(), take - 1)[:take]
                        for f in flat:
                            row, b = divmod(int(f), len(beam))
                            if not np.isfinite(bits[row, b]):
                                continue
                            j, g = divmod(row, per)
                            k = float(grid[g]) if nk else None
                            found.append((float(bits[row, b]), beam[b].factors + ((trees[j], e, k),)))
            if not found:
                break
            found.sort(key=lambda c: c[0])
            # the best overall, the best with a new constant and the best without one: a plain first
            # factor (u + v) often fits worse alone than a one-step fit with a k, yet leads further
            with_k = [c for c in found if c[1][-1][2] is not None][: 3 * cfg.refine]  # coarse grid: refine more
            plain_k = [c for c in found if c[1][-1][2] is None][: cfg.refine]
            chosen = found[: cfg.refine] + with_k + plain_k
            pool = []
            for _, factors in chosen:
                m = self._refine(factors, xs, ys, log_mode)
                if m is not None and math.isfinite(m.bits):
                    pool.append(m)
            pool.sort(key=lambda m: m.bits)
            unique, keys = [], set()
            for m in pool:
                key = frozenset((id(t), e) for t, e, _ in m.factors)
                if key not in keys:
                    keys.add(key)
                    unique.append(m)
            # the beam keeps the best few, and the best few without a new constant, so that a law
            # built from plain factors (q r^-2) is not crowded out by one-step fits with a k
            plain_first = [m for m in unique if m.factors[-1][2] is None][: max(1, cfg.beam // 2)]
            beam = plain_first + [m for m in unique if m not in plain_first][: cfg.beam - len(plain_first)]
            if not beam:
                break
            met += unique[: cfg.beam]

        met.sort(key=lambda m: m.bits)
        return self._polish(met[: 2 * cfg.beam], xs, ys, log_mode)

    def _polish(self, models, xs, ys, log_mode):
        """Try every other exponent on each factor of the best models (the coarse k grid can rank
        (1 + k u v)^-2 above (1 + k u v)^-1 before either is refined)."""
        out = list(models)
        for m in models[: self.config.beam]:
            for j, (tree, e, k) in enumerate(m.factors):
                for e2 in EXPONENTS:
                    if e2 == e:
                        continue
                    factors = m.factors[:j] + ((tree, e2, k),) + m.factors[j + 1 :]
                    trial = self._refine(factors, xs, ys, log_mode)
                    if trial is not None and math.isfinite(trial.bits):
                        out.append(trial)
        out.sort(key=lambda m: m.bits)
        return out[: 2 * self.config.beam]

    @staticmethod
    def _rss_matrix(V: np.ndarray, e: float, F: np.ndarray, ys: np.ndarray, log_mode: bool, cache: dict | None = None) -> np.ndarray:
        """RSS with the best scale for every (atom row of V, beam member of F): (rows, B); inf where invalid.

        ``cache`` keeps what depends on V and e only (logs, normalised powers) across the steps of a search.
        """
        cache = {} if cache is None else cache
        if log_mode:
            if "log" not in cache:
                pos = np.all(V > 0, axis=1) & np.all(np.isfinite(V), axis=1)
                L = np.log(np.where(V > 0, V, 1.0))  # (rows, N)
                Lc = L - L.mean(1, keepdims=True)
                cache["log"] = (pos, Lc, (Lc * Lc).sum(1))
            pos, Lc, LL = cache["log"]
            ok_f = np.all(F > 0, axis=1)
            z = np.log(ys)[None, :] - np.log(np.where(F > 0, F, 1.0))  # (B, N)
            zc = z - z.mean(1, keepdims=True)
            rss = (zc * zc).sum(1)[None, :] - 2 * e * (Lc @ zc.T) + e * e * LL[:, None]
            valid = pos[:, None] & ok_f[None, :]
        else:
            if e not in cache:
                P = np.power(V, e)
                valid_rows = np.all(np.isfinite(P), axis=1)
                P = np.where(valid_rows[:, None], P, 0.0)
                # the scale a absorbs any factor: normalise rows so that squares neither overflow nor cancel
                peak = np.max(np.abs(P), axis=1, keepdims=True)
                P = P / np.where(peak > 0, peak, 1.0)
                cache[e] = (valid_rows, P, P * P)
            valid_rows, P, P2 = cache[e]
            F = F / np.maximum(np.max(np.abs(F), axis=1, keepdims=True), 1e-300)
            gy = P @ (F * ys[None, :]).T  # (rows, B)
            gg = P2 @ (F * F).T
            yy = float(ys @ ys)
            rss = yy - np.where(gg > 0, gy * gy / np.where(gg > 0, gg, 1.0), 0.0)
            rss = np.maximum(rss, 1e-12 * yy)
            valid = valid_rows[:, None] & (gg > 0) & np.all(np.isfinite(F), axis=1)[None, :]
        return np.where(valid & np.isfinite(rss), np.maximum(rss, 0.0) + 1e-300, np.inf)

    @staticmethod
    def _rss(g: np.ndarray, ys: np.ndarray, log_mode: bool) -> np.ndarray:
        """Residual sum of squares with the best scale, per row of g (G, N), computed directly; inf where invalid."""
        out = np.full(len(g), np.inf)
        for i, row in enumerate(g):
            if not np.all(np.isfinite(row)) or (log_mode and not np.all(row > 0)):
                continue
            if not log_mode and not np.any(row):
                continue
            _, r = _fit_scale(row / np.max(np.abs(row)), ys, log_mode)
            out[i] = float(r @ r)
        return out

    def _as_model(self, factors, bits, xs, ys, log_mode):
        with np.errstate(all="ignore"):
            a, _ = _fit_scale(_product(factors, xs), ys, log_mode)
        return _Model(factors, a=a, log_mode=log_mode, bits=bits)

    def _refine(self, factors, xs, ys, log_mode):
        idx = [j for j, (_, _, k) in enumerate(factors) if k is not None]
        if not idx:
            return self._as_model(factors, self._approx_bits(factors, self._rss_of(factors, xs, ys, log_mode), len(ys), ys, log_mode), xs, ys, log_mode)
        k0 = np.array([factors[j][2] for j in idx])

        def residual(theta):
            ks = [None] * len(factors)
            for j, t in zip(idx, theta):
                ks[j] = t
            ks = [ks[j] if ks[j] is not None else factors[j][2] for j in range(len(factors))]
            with np.errstate(all="ignore"):
                _, r = _fit_scale(_product(factors, xs, ks), ys, log_mode)
            return np.where(np.isfinite(r), r, 1e6)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                sol = optimize.least_squares(residual, k0, x_scale=np.abs(k0), method="trf", max_nfev=200)
                theta = sol.x
            except (ValueError, FloatingPointError):
                theta = k0
        new = list(factors)
        for j, t in zip(idx, theta):
            new[j] = (factors[j][0], factors[j][1], float(t))
        new = tuple(new)
        rss = self._rss_of(new, xs, ys, log_mode)
        if not math.isfinite(rss):
            return None
        return self._as_model(new, self._approx_bits(new, rss, len(ys), ys, log_mode), xs, ys, log_mode)

    def _rss_of(self, factors, xs, ys, log_mode) -> float:
        with np.errstate(all="ignore"):
            return float(self._rss(_product(factors, xs)[None, :], ys, log_mode)[0])

    # --- the chosen law ------------------------------------------------------------------------
    def _exact_bits(self, m: _Model, xs, ys) -> float:
        if m.zero:
            return description.fitted_gaussian_bits(ys) + self.per_token
        with np.errstate(all="ignore"):
            a, r = _fit_scale(_product(m.factors, xs), ys, m.log_mode)
        if not np.all(np.isfinite(r)):
            return math.inf
        return description.formula_bits(self._formula(m), len(ys)) + self._data_bits(r, ys, m.log_mode)

    def _formula(self, m: _Model) -> sp.Expr:
        if m.zero:
            return sp.Integer(0)
        scaled = tuple(s / float(c) for s, c in zip(self.symbols, self.x_scale))
        expr = sp.Float(m.a * self.y_scale)
        for tree, e, k in m.factors:
            expr = expr * _sympy(tree, scaled, k if k is not None else 0.0) ** sp.nsimplify(e)
        return expr

    def predict(self, x):
        m = self.model
        if m.zero:
            return np.zeros(len(x))
        with np.errstate(all="ignore"):
            return self.y_scale * m.a * _product(m.factors, np.asarray(x, dtype=float) / self.x_scale)

    def formula(self):
        return self._formula(self.model)
