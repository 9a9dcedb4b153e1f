"""Description length in bits: one code for laws, learners' formulas and the well-posedness check.

Two-part MDL (Rissanen 1978; Grünwald, *The Minimum Description Length Principle*, 2007):
``L(model) + L(data | model)``. Every number here uses the same code, so the bits of an oracle
law, of an old law plus exceptions, and of a learner's formula can be compared directly.

* A formula is a straight-line program: common subexpressions are written once (``sympy.cse``)
  and then referred to by one token each; every expression is a tree in prefix order. Each token (an operator, a variable, a small
  integer or rational, the placeholder for a real constant) costs ``log2`` of the alphabet size.
  Each real constant then costs ``0.5 log2 N + CONSTANT_OVERHEAD`` bits: the asymptotically optimal
  precision for a parameter fitted on N points, plus a few bits for its sign and order of magnitude.
* Data given a model are coded as Gaussian residuals quantised at the noise level. With a known
  noise sd (the world knows its own noise; the scorer uses it) a point costs
  ``0.5 log2(2 pi) + r^2 / (2 sd^2 ln 2)`` bits. A learner does not know the noise, so
  :func:`fitted_gaussian_bits` uses the maximum-likelihood sd instead (the usual
  ``N/2 log2(2 pi e RSS/N)``); the quantisation constant is common to all models and dropped there.
* An exception (a point the old theory does not explain) costs the point's index, ``log2 N``, plus
  its value coded uniformly over the data's range at the noise precision, ``log2(range / sd)``.
"""
from __future__ import annotations

import math

import numpy as np
import sympy as sp

CONSTANT_OVERHEAD = 5.0  # bits for a constant's sign and octave, on top of 0.5 log2 N
SMALL = 10  # integers and rationals p/q with |p|, q <= SMALL are tokens, not real constants
# The fixed token alphabet (operators, special functions, small numbers, the constant placeholder);
# variables are added per formula. The laws' special functions are in it so that every world's old
# and new law can be coded.
ALPHABET = (
    "add sub mul div neg inv sq sqrt pow exp log sin cos atan2 ellipk kepler_E pi "
    "0 1 2 3 1/2 const"
).split()


def _tokens(expr: sp.Basic) -> tuple[int, int]:
    """(tokens, real constants) of a sympy expression read as a binary tree; floats are constants."""
    if expr.is_Symbol or isinstance(expr, sp.NumberSymbol):
        return 1, 0
    if expr.is_Rational:
        small = abs(expr.p) <= SMALL and expr.q <= SMALL
        return (1, 0) if small else (1, 1)
    if expr.is_Float:
        return 1, 1
    if expr.is_Add or expr.is_Mul:
        args = list(expr.args)
        extra = 0
        if expr.is_Mul and args and args[0] == -1:  # -x is one neg token, not a multiplication by -1
            args, extra = args[1:], 1
        counts = [_tokens(a) for a in args]
        return sum(c[0] for c in counts) + (len(args) - 1) + extra, sum(c[1] for c in counts)
    if expr.is_Pow:
        base, exponent = expr.args
        tb, cb = _tokens(base)
        if exponent in (-1, 2, sp.Rational(1, 2)):  # inv, sq, sqrt: one token
            return tb + 1, cb
        if exponent in (-2, sp.Rational(-1, 2)):  # inv of sq / sqrt
            return tb + 2, cb
        te, ce = _tokens(exponent)
        return tb + te + 1, cb + ce
    if isinstance(expr, sp.Function) or expr.args:
        counts = [_tokens(a) for a in expr.args]
        return 1 + sum(c[0] for c in counts), sum(c[1] for c in counts)
    return 1, 0


def formula_bits(expr: sp.Basic, n_points: int, constants: tuple[sp.Symbol, ...] = ()) -> float:
    """Bits to write ``expr`` (structure plus its real constants) for a data set of ``n_points``.

    Real constants are the floats in ``expr`` and the symbols listed in ``constants`` (a law written
    with named constants: each distinct one is paid for once, however often it appears).
    """
    expr = sp.sympify(expr)
    named = set(constants) & expr.free_symbols
    n_vars = len(expr.free_symbols - named)
    bindings, (reduced,) = sp.cse(expr, symbols=sp.numbered_symbols("_cse"), optimizations=None)
    tokens, floats = _tokens(reduced)
    for _, sub in bindings:
        t, f = _tokens(sub)
        tokens, floats = tokens + t, floats + f
    per_token = math.log2(len(ALPHABET) + max(n_vars, 1) + len(bindings))
    per_constant = 0.5 * math.log2(max(n_points, 2)) + CONSTANT_OVERHEAD
    return tokens * per_token + (floats + len(named)) * per_constant


def gaussian_bits(residual: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """Per-point bits of residuals under N(0, sd^2), quantised at sd (so a perfect point costs 1.33 bits)."""
    z = np.asarray(residual, dtype=float) / np.asarray(sd, dtype=float)
    return 0.5 * math.log2(2 * math.pi) + z**2 / (2 * math.log(2))


def exception_bits(y: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """Per-point bits to list a point as an exception: its index, then its value over the data's range."""
    y = np.asarray(y, dtype=float)
    spread = max(float(np.ptp(y)), float(np.min(sd)))
    return math.log2(max(len(y), 2)) + np.log2(np.maximum(spread / np.asarray(sd, dtype=float), 1.0))


def fitted_gaussian_bits(residual: np.ndarray, floor: float = 1e-300) -> float:
    """Bits of residuals under a Gaussian with the maximum-likelihood sd (the learner's code)."""
    r = np.asarray(residual, dtype=float)
    n = len(r)
    variance = max(float(np.mean(r**2)), floor)
    return 0.5 * n * math.log2(2 * math.pi * math.e * variance)


def law_bits(expr: sp.Basic, y: np.ndarray, y_law: np.ndarray, sd: np.ndarray, constants=()) -> float:
    """L(law) + L(data | law) with the known noise sd."""
    return formula_bits(expr, len(y), constants) + float(gaussian_bits(y - y_law, sd).sum())


def law_with_exceptions_bits(expr: sp.Basic, y: np.ndarray, y_law: np.ndarray, sd: np.ndarray, constants=()) -> float:
    """L(law) + the count of exceptions + per point the cheaper of its residual and an exception."""
    per_point = np.minimum(gaussian_bits(y - y_law, sd), exception_bits(y, sd))
    return formula_bits(expr, len(y), constants) + math.log2(len(y) + 1) + float(per_point.sum())
