"""Sum-product over discrete factors: variable elimination with a greedy min-size order, in numpy.

A factor is ``(scope, table)``: a tuple of integer variable ids and an ndarray with one axis per id.
Each elimination step is one ``np.einsum`` over the factors that mention the variable, so the cost is
that of the largest intermediate table, which the greedy order (smallest resulting table first) keeps
small on bounded-treewidth networks such as the bnlearn ones.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Factor = tuple[tuple[int, ...], np.ndarray]

EINSUM_LIMIT = 52  # np.einsum's number of distinct subscripts


def _einsum(factors: Sequence[Factor], out: Sequence[int]) -> np.ndarray:
    local: dict[int, int] = {}
    args = []
    for scope, table in factors:
        args += [table, [local.setdefault(v, len(local)) for v in scope]]
    for v in out:
        local.setdefault(v, len(local))
    if len(local) > EINSUM_LIMIT:
        raise ValueError(f"an elimination step spans {len(local)} variables, more than einsum's {EINSUM_LIMIT}")
    return np.einsum(*args, [local[v] for v in out], optimize=len(factors) > 2)


def sum_product(factors: Sequence[Factor], keep: Sequence[int]) -> np.ndarray:
    """sum over every variable not in ``keep`` of the product of ``factors``; axes in ``keep`` order.

    Every id in ``keep`` must appear in some factor. A factor with an empty scope is a scalar weight.
    """
    cards: dict[int, int] = {}
    for scope, table in factors:
        for v, n in zip(scope, table.shape):
            cards[v] = n
    keep = list(keep)
    pending = [f for f in factors]
    eliminate = set(cards) - set(keep)
    while eliminate:
        best, best_cost, best_union = None, None, None
        for v in eliminate:
            union = set()
            for scope, _ in pending:
                if v in scope:
                    union.update(scope)
            cost = 1
            for u in union:
                cost *= cards[u]
            if best_cost is None or cost < best_cost:
                best, best_cost, best_union = v, cost, union
        used = [f for f in pending if best in f[0]]
        pending = [f for f in pending if best not in f[0]]
        scope = tuple(sorted(best_union - {best}))
        pending.append((scope, _einsum(used, scope)))
        eliminate.discard(best)
    return _einsum(pending, keep)
