"""Brute-force reference for every query: enumerate the exogenous joint, run the mechanisms, count.

Written apart from the oracle on purpose (it shares only the SCM's explicit noise and mechanisms, never
``worlds.py`` or ``factors.py``): each noise model lists a finite exogenous support (``points()``); every
combination of one point per variable is one unit, with probability the product of the point weights.
For each unit and each world, the variables are evaluated in causal order by their mechanisms, with the
world's interventions applied; a query is the weight of the units that satisfy the evidence and each
target value, over the weight of those that satisfy the evidence. Exponential in the number of
variables: for small SCMs and tests.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from framework.causal.scm import DiscreteSCM
from framework.causal.worlds import Event, ValueIn, World

MAX_UNITS = 2_000_000


def exogenous_size(scm: DiscreteSCM) -> int:
    """How many exogenous units the brute force enumerates (0 when a support is too large to list)."""
    n = 1
    for v in scm.variables:
        try:
            n *= len(scm.noise[v].points()[0])
        except ValueError:
            return 0
    return n


def units(scm: DiscreteSCM, limit: int = MAX_UNITS) -> tuple[np.ndarray, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """(weights (N,), {v: (table (R_v, C_v), point (N,))}): every exogenous unit, as one support point per
    variable, and f_v evaluated at each point and configuration (the point's response function)."""
    supports = {v: scm.noise[v].points() for v in scm.variables}
    sizes = [len(supports[v][0]) for v in scm.variables]
    n = int(np.prod(sizes, dtype=np.int64))
    if n > limit:
        raise ValueError(f"the exogenous joint has {n} units, more than the brute-force limit {limit}")
    grid = np.indices(sizes).reshape(len(sizes), -1)  # (n_vars, N): one point index per variable
    weights = np.ones(n)
    responses = {}
    for j, v in enumerate(scm.variables):
        w, u = supports[v]
        weights = weights * w[grid[j]]
        C = len(scm.rows(v))
        # f_v(c, u) at every configuration c for each point: the response function of the point
        table = np.stack([scm.noise[v].mechanism(np.full(len(w), c), u) for c in range(C)], axis=1)
        responses[v] = (table, grid[j])
    return weights, responses


def evaluate_worlds(scm: DiscreteSCM, worlds: Sequence[World], responses: dict) -> list[dict]:
    """values[w][v]: (N,) int, the state of v in world w for every unit."""
    n = len(next(iter(responses.values()))[1])
    values: list[dict] = [{} for _ in worlds]

    def value(w: int, v: str) -> np.ndarray:
        if v in values[w]:
            return values[w][v]
        action = worlds[w].get(v)
        if isinstance(action, ValueIn):
            out = value(action.world, v)
        elif action is not None:
            out = np.full(n, scm.state_index(v, action, "worlds"))
        else:
            parents = scm.parents(v)
            config = np.zeros(n, dtype=np.int64)
            for p in parents:  # C-order index, the first parent varying slowest
                config = config * scm.card(p) + value(w, p)
            table, point = responses[v]
            out = table[point, config]
        values[w][v] = out
        return out

    for v in scm.dag.topological_order():
        for w in range(len(worlds)):
            value(w, v)
    return values


def brute_force(scm: DiscreteSCM, worlds: Sequence[World], targets: Sequence[tuple[int, str]],
                evidence: Event | None = None, limit: int = MAX_UNITS, enumerated=None) -> np.ndarray:
    """P(targets | evidence) over ``worlds`` by enumeration; same contract as ``worlds.query``.

    ``enumerated``: ``units(scm)`` computed once and reused across many queries on one SCM.
    """
    weights, responses = enumerated if enumerated is not None else units(scm, limit)
    values = evaluate_worlds(scm, worlds, responses)
    keep = np.ones(len(weights), dtype=bool)
    for (w, v), spec in (evidence or {}).items():
        allowed = spec if isinstance(spec, (list, tuple, set, frozenset)) else [spec]
        keep &= np.isin(values[w][v], [scm.state_index(v, s, "evidence") for s in allowed])
    total = weights[keep].sum()
    if total <= 0:
        raise ValueError("evidence has probability zero")
    shape = tuple(scm.card(v) for _, v in targets)
    flat = np.ravel_multi_index(tuple(values[w][v][keep] for w, v in targets), shape) if shape else np.zeros(
        keep.sum(), dtype=np.int64)
    return np.bincount(flat, weights=weights[keep], minlength=int(np.prod(shape))).reshape(shape) / total
