"""Exact queries over several worlds of one SCM: the twin (multi-world) network, by variable elimination.

Pearl's three steps, without sampling or enumerating the exogenous joint: every world (the factual one,
``{}``, and each intervened one) gets a copy of every variable; copies of a variable share its noise
U_v (abduction is conditioning on the factual copies); an intervention replaces a copy by a constant
(action); querying the intervened copies is prediction. A copy whose parents are the same nodes in two
worlds is one node (the usual twin-network merge), so a query that never separates the worlds costs
what an ordinary Bayesian-network query costs, and rung 1 and rung 2 are the one-world case (rung 2 is
elimination on the mutilated graph: the intervened copy is a constant with no parents).

Once U_v is summed out, the copies of v that the query needs get one factor,
P(f_v(pa^1, U_v) = v^1, ..., f_v(pa^k, U_v) = v^k), which each noise model gives in closed form
(``Noise.joint_response``); with a single copy it is the CPD itself. Copies that neither the targets nor
the evidence depend on are dropped before elimination (barren nodes).

A nested intervention ``ValueIn(k)`` sets a variable to the value it takes in world k: with worlds
``[{X: 0}, {X: 1, M: ValueIn(0)}]``, Y in world 1 is Y_{X=1, M_{X=0}} (natural direct effects).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from framework.causal.factors import Factor, sum_product
from framework.causal.scm import DiscreteSCM, State
from framework.errors import ConfigError, require


@dataclass(frozen=True)
class ValueIn:
    """An intervention setting a variable to the value that same variable takes in world ``world``."""

    world: int


Intervention = State | ValueIn
World = Mapping[str, Intervention]
Event = Mapping[tuple[int, str], State | Sequence[State] | set]  # (world, variable) -> state or allowed states


def _const(state: int) -> int:
    return -1 - state  # constants are negative refs; node ids are >= 0


class MultiWorld:
    """The merged multi-world network of ``scm`` under ``worlds``.

    ``ref[(w, v)]`` is the node id (>= 0) of v in world w, or ``-1 - s`` when v is fixed to state s there.
    ``nodes[i] = (v, parent refs)``: node i is a copy of v whose parents are those refs.
    """

    def __init__(self, scm: DiscreteSCM, worlds: Sequence[World]):
        require(len(worlds) >= 1, "worlds", "needs at least one world ({} is the factual one)")
        self.scm, self.worlds = scm, [dict(w) for w in worlds]
        for w, world in enumerate(self.worlds):
            for v in world:
                scm.dag.check_node(v, f"worlds[{w}]")
        self.ref: dict[tuple[int, str], int] = {}
        self.nodes: list[tuple[str, tuple[int, ...]]] = []
        ids: dict[tuple[str, tuple[int, ...]], int] = {}
        for v in scm.dag.topological_order():
            for w in range(len(self.worlds)):
                self._resolve(w, v, ids, ())

    def _resolve(self, w: int, v: str, ids: dict, chain: tuple) -> int:
        if (w, v) in self.ref:
            return self.ref[(w, v)]
        action = self.worlds[w].get(v)
        if isinstance(action, ValueIn):
            k = action.world
            require(isinstance(k, int) and 0 <= k < len(self.worlds), f"worlds[{w}].{v}",
                    f"ValueIn({k}) names no world; there are {len(self.worlds)}")
            require((k, v) not in chain and k != w, f"worlds[{w}].{v}", "ValueIn chain refers back to itself")
            r = self._resolve(k, v, ids, chain + ((w, v),))
        elif action is not None:
            r = _const(self.scm.state_index(v, action, f"worlds[{w}]"))
        else:
            key = (v, tuple(self.ref[(w, p)] for p in self.scm.parents(v)))
            r = ids.get(key)
            if r is None:
                r = ids[key] = len(self.nodes)
                self.nodes.append(key)
        self.ref[(w, v)] = r
        return r

    def lookup(self, key: tuple[int, str], field: str) -> int:
        try:
            w, v = key
        except (TypeError, ValueError):
            raise ConfigError(field, f"expected (world, variable) pairs, got {key!r}") from None
        require(isinstance(w, (int, np.integer)) and 0 <= w < len(self.worlds), field,
                f"world {w!r} out of range: there are {len(self.worlds)} worlds")
        self.scm.dag.check_node(v, field)
        return self.ref[(int(w), v)]

    def relevant(self, roots: Sequence[int]) -> list[int]:
        """Node ids that ``roots`` depend on (themselves included), ascending."""
        seen, stack = set(), [r for r in roots if r >= 0]
        while stack:
            i = stack.pop()
            if i not in seen:
                seen.add(i)
                stack.extend(p for p in self.nodes[i][1] if p >= 0)
        return sorted(seen)

    def copies(self, relevant: Sequence[int]) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for i in relevant:
            out.setdefault(self.nodes[i][0], []).append(i)
        return out


def _allowed(scm: DiscreteSCM, v: str, spec, field: str) -> np.ndarray:
    """(card,) bool: the states an evidence entry allows."""
    mask = np.zeros(scm.card(v), dtype=bool)
    states = spec if isinstance(spec, (list, tuple, set, frozenset)) else [spec]
    require(len(states) > 0, f"{field}.{v}", "allows no state")
    for s in states:
        mask[scm.state_index(v, s, field)] = True
    return mask


def _factor(scm: DiscreteSCM, net: MultiWorld, v: str, copies: list[int], fixed: dict[int, int]) -> Factor:
    """P(copies of v | their parents) with U_v summed out; constants and ``fixed`` nodes substituted."""
    if len(copies) == 1:  # a single copy: the CPD, sliced at its fixed parents
        (i,) = copies
        index, scope = [], []
        for r in (*net.nodes[i][1], i):
            if r < 0:
                index.append(-1 - r)
            elif r in fixed:
                index.append(fixed[r])
            else:
                index.append(slice(None))
                scope.append(r)
        return tuple(scope), scm.cpd(v)[tuple(index)]
    free: list[int] = []
    for i in copies:
        for r in (*net.nodes[i][1], i):
            if r >= 0 and r not in fixed and r not in free:
                free.append(r)
    shape = tuple(scm.card(net.nodes[r][0]) for r in free)
    grid = np.indices(shape).reshape(len(free), -1)  # (F, N): every joint state of the free nodes
    column = {r: grid[j] for j, r in enumerate(free)}
    n = grid.shape[1]

    def values(r: int) -> np.ndarray:
        if r < 0:
            return np.full(n, -1 - r)
        return np.full(n, fixed[r]) if r in fixed else column[r]

    configs = np.stack([scm.config_index(v, np.stack([values(p) for p in net.nodes[i][1]], axis=1))
                        if net.nodes[i][1] else np.zeros(n, dtype=np.int64) for i in copies], axis=1)
    states = np.stack([values(i) for i in copies], axis=1)  # (N, k)
    return tuple(free), scm.noise[v].joint_response(configs, states).reshape(shape)


@dataclass
class Solution:
    """An unnormalised joint over the requested targets and the evidence probability it divides by."""

    joint: np.ndarray  # (card of each target,) float64: P(targets, evidence)
    evidence: float  # P(evidence)
    coupled: tuple[str, ...]  # variables whose noise the query couples across worlds (rung 3 proper)

    @property
    def conditional(self) -> np.ndarray:
        return self.joint / self.evidence


def solve(scm: DiscreteSCM, worlds: Sequence[World], targets: Sequence[tuple[int, str]],
          evidence: Event | None = None) -> Solution:
    """Exact P(targets | evidence) over ``worlds``; evidence of probability zero is a ConfigError."""
    net = MultiWorld(scm, worlds)
    trefs = [net.lookup(t, "targets") for t in targets]
    masks: dict[int, np.ndarray] = {}
    for key, spec in (evidence or {}).items():
        r = net.lookup(key, "evidence")
        mask = _allowed(scm, key[1], spec, "evidence")
        if r < 0:
            if not mask[-1 - r]:
                raise ConfigError("evidence", f"has probability zero: {key[1]} is fixed to "
                                  f"{scm.states[key[1]][-1 - r]!r} in world {key[0]} by its intervention")
            continue
        masks[r] = masks.get(r, np.ones_like(mask)) & mask
        if not masks[r].any():
            raise ConfigError("evidence", f"has probability zero: it allows no state of {key[1]} in world {key[0]}")
    free_targets = list(dict.fromkeys(r for r in trefs if r >= 0))
    fixed = {r: int(np.flatnonzero(m)[0]) for r, m in masks.items() if m.sum() == 1 and r not in free_targets}
    relevant = net.relevant([*free_targets, *masks])
    copies = net.copies(relevant)
    factors = [_factor(scm, net, v, ids, fixed) for v, ids in copies.items()]
    factors += [((r,), m.astype(np.float64)) for r, m in masks.items() if r not in fixed and not m.all()]
    joint = sum_product(factors, free_targets) if factors else np.ones(())
    total = float(joint.sum())
    if not total > 0.0:
        shown = ", ".join(f"{v}[{w}]={s!r}" for (w, v), s in (evidence or {}).items())
        raise ConfigError("evidence", f"has probability zero under this SCM: P({shown}) = 0")
    coupled = tuple(v for v, ids in copies.items() if len(ids) > 1)
    return Solution(_expand(scm, targets, trefs, free_targets, joint), total, coupled)


def _expand(scm: DiscreteSCM, targets, trefs: list[int], free: list[int], joint: np.ndarray) -> np.ndarray:
    """The joint over the targets as asked: constants and repeated nodes become indicator axes."""
    shape = tuple(scm.card(v) for _, v in targets)
    if not shape:
        return joint
    grids = np.indices(shape)
    first = {r: trefs.index(r) for r in free}
    out = joint[tuple(grids[first[r]] for r in free)] if free else np.full(shape, float(joint))
    for t, r in enumerate(trefs):
        if r < 0:
            out = out * (grids[t] == -1 - r)
        elif first[r] != t:
            out = out * (grids[t] == grids[first[r]])
    return out


def query(scm: DiscreteSCM, worlds: Sequence[World], targets: Sequence[tuple[int, str]],
          evidence: Event | None = None) -> np.ndarray:
    """P(targets | evidence): an array with one axis per target, in target order."""
    return solve(scm, worlds, targets, evidence).conditional
