"""Scores of the Einstein test (SPEC §6), per instance; the protocol averages them over instances.

* theory preference ``t = clip((y_hat - y_old)(y_new - y_old) / (y_new - y_old)^2, 0, 1)`` at each
  probe: 0 means the learner followed the old law, 1 the new one; per instance its median, its
  mean and the fraction of probes with t > 0.5.
* ``nmse``: mean squared error against the new law on the probes over the variance of the new law
  there; ``nmse_vs_old``: the same error over the old law's (1 = no better than the old law).
* ``in_regime_fit``: the rms error on fresh in-regime points in noise sds (a control: a learner
  that fits the data it saw has <= 1), and ``in_regime_nmse``.
* symbolic recovery by the SRBench rule (La Cava et al. 2021): the learner's formula recovers the
  law when their difference or their ratio simplifies to a constant. Fitted constants are never
  exactly the truth's, so first (SRBench rounds them) each float of the learner's formula, in a
  canonical form (a fraction whose denominator is made monic), is snapped to the truth's constant,
  or a power of it (+-1/2, +-1, +-2) times a small rational, or a product of two of them
  (+-1 powers), or a small rational, when within
  ``rtol`` (relative); then sympy simplifies difference and ratio exactly (floats as rationals).
* description length in bits of the learner's formula plus its residuals on train + anomaly data,
  coded with the instance's noise sd (:mod:`framework.einstein.description`).
"""
from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import sympy as sp

from framework.einstein import description

RECOVERY_RTOL = 1e-2  # how close a fitted constant must be to snap to the truth's


def theory_preference(y_hat: np.ndarray, y_old: np.ndarray, y_new: np.ndarray) -> np.ndarray:
    d = y_new - y_old
    with np.errstate(all="ignore"):
        t = (np.asarray(y_hat, dtype=float) - y_old) * d / (d * d)
    return np.clip(np.where(np.isfinite(t), t, 0.0), 0.0, 1.0)  # a non-finite prediction prefers nothing


def _nmse(y_hat, y, reference_error):
    with np.errstate(all="ignore"):
        err = float(np.mean((np.asarray(y_hat, dtype=float) - y) ** 2))
    return err / reference_error if reference_error > 0 and math.isfinite(err) else float("nan")


def probe_scores(y_hat, y_old, y_new) -> dict[str, float]:
    t = theory_preference(y_hat, y_old, y_new)
    return {
        "t_median": float(np.median(t)),
        "t_mean": float(np.mean(t)),
        "frac_t_gt_half": float(np.mean(t > 0.5)),
        "nmse": _nmse(y_hat, y_new, float(np.var(y_new))),
        "nmse_vs_old": _nmse(y_hat, y_new, float(np.mean((y_old - y_new) ** 2))),
    }


def in_regime_scores(y_hat, y_new, sd) -> dict[str, float]:
    with np.errstate(all="ignore"):
        z = (np.asarray(y_hat, dtype=float) - y_new) / sd
        rms = float(np.sqrt(np.mean(z * z)))
    return {"in_regime_fit": rms if math.isfinite(rms) else float("nan"), "in_regime_nmse": _nmse(y_hat, y_new, float(np.var(y_new)))}


def description_bits(expr: sp.Expr | None, y: np.ndarray, y_hat: np.ndarray, sd: np.ndarray) -> dict[str, float | None]:
    """Data bits for any learner; formula and total bits only for a learner with a formula."""
    data = float(np.sum(description.gaussian_bits(y - y_hat, sd)))
    data = data if math.isfinite(data) else float("nan")
    if expr is None:
        return {"dl_bits": None, "dl_formula_bits": None, "dl_data_bits": data}
    formula = description.formula_bits(expr, len(y))
    return {"dl_bits": formula + data, "dl_formula_bits": formula, "dl_data_bits": data}


# --- symbolic recovery -------------------------------------------------------------------------

_SMALL = sorted({Fraction(p, q) for p in range(1, 13) for q in range(1, 13)})
_POWERS = (Fraction(1), Fraction(-1), Fraction(2), Fraction(-2), Fraction(1, 2), Fraction(-1, 2))


def _candidates(truth_floats: list[float]) -> list[tuple[float, sp.Expr]]:
    out = [(float(r), sp.Rational(r.numerator, r.denominator)) for r in _SMALL]
    for t in truth_floats:
        for p in _POWERS:
            base = sp.Float(abs(t)) ** sp.Rational(p.numerator, p.denominator)
            for r in (Fraction(1), Fraction(2), Fraction(1, 2), Fraction(3), Fraction(1, 3), Fraction(4), Fraction(1, 4)):
                out.append((abs(t) ** float(p) * float(r), sp.Rational(r.numerator, r.denominator) * base))
    for t1, t2 in itertools.combinations(sorted({abs(t) for t in truth_floats}), 2):
        for p1, p2 in itertools.product((1, -1), repeat=2):
            out.append((t1**p1 * t2**p2, sp.Float(t1) ** p1 * sp.Float(t2) ** p2))
    return out


def _snap(value: float, candidates, rtol: float) -> sp.Expr | None:
    best, best_err = None, rtol
    for v, expr in candidates:
        err = abs(abs(value) - v) / v
        if err <= best_err:
            best, best_err = expr, err
    if best is None:
        return None
    return best if value > 0 else -best


def _canonical(expr: sp.Expr) -> sp.Expr:
    """A fraction p/q with q normalised (constant term 1, else leading coefficient 1), so that
    constants are comparable: a (u + v) / (b + c u v) becomes (a/b)(u + v) / (1 + (c/b) u v)."""
    num, den = sp.fraction(sp.together(expr))
    try:
        gens = sorted(den.free_symbols, key=str)
        if gens:
            poly = sp.Poly(sp.expand(den), *gens)
            lead = poly.coeff_monomial(1) or poly.LC()
        else:
            lead = den
        if lead != 0:
            num, den = num / lead, sp.expand(den / lead)
    except (sp.PolynomialError, sp.GeneratorsNeeded):
        pass
    return num / den


def _floats(expr: sp.Expr) -> list[sp.Float]:
    return sorted({f for f in expr.atoms(sp.Float)}, key=float)


def _constant(expr: sp.Expr, symbols) -> sp.Expr | None:
    simplified = sp.simplify(expr)
    if simplified.free_symbols & set(symbols) or simplified.is_finite is False:
        return None
    return simplified


def _functions(expr: sp.Expr) -> set:
    return {type(f) for f in expr.atoms(sp.Function)}


def symbolic_recovery(formula: sp.Expr | None, truth: sp.Expr, symbols, rtol: float = RECOVERY_RTOL) -> bool:
    """The SRBench rule after snapping the formula's constants to the truth's (see the module docstring)."""
    if formula is None:
        return False
    if formula == truth:
        return True
    if _functions(formula) != _functions(truth):
        return False  # exp vs elliptic_k, atan2 vs kepler_E: cannot simplify to a constant
    symbols = tuple(symbols)
    try:
        # the learner's variables may carry other assumptions: map them by name onto the truth's
        by_name = {s.name: s for s in symbols}
        formula = formula.xreplace({s: by_name[s.name] for s in formula.free_symbols if s.name in by_name})
        candidates = _candidates([float(f) for f in _floats(truth) if float(f) != 0])
        canon = _canonical(formula)
        replacements = {}
        for f in _floats(canon):
            snapped = _snap(float(f), candidates, rtol)
            if snapped is None:
                return False
            replacements[f] = snapped
        snapped = canon.xreplace(replacements)
        exact_truth = sp.nsimplify(truth, rational=True)
        exact_formula = sp.nsimplify(snapped, rational=True)
        if _constant(exact_formula - exact_truth, symbols) is not None:
            return True
        ratio = _constant(exact_formula / exact_truth, symbols)
        if ratio is not None and ratio != 0:  # y = 0 is not a recovery of anything
            return True
    except (TypeError, ValueError, ZeroDivisionError, sp.PolynomialError, RecursionError):
        return False
    return False


def mean_stderr(values) -> dict[str, float | int]:
    """Mean, its standard error over instances, and the count (NaNs dropped)."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    n = len(v)
    if n == 0:
        return {"mean": float("nan"), "stderr": float("nan"), "n": 0}
    return {"mean": float(v.mean()), "stderr": float(v.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan"), "n": n}


