"""Exact answers to the three rungs of Pearl's ladder on a discrete SCM, by name.

Rung 1: ``marginal`` (with ``evidence``: conditionals). Rung 2: ``interventional``, P(y | do(x), z) with
z observed after the intervention, and ``ate``. Both are variable elimination, rung 2 on the mutilated
graph; they depend only on the CPDs. Rung 3 (through the twin network of ``framework.causal.worlds``):
``counterfactual`` P(Y_x = y | e) with e factual, ``ett``, ``nde``, ``nie`` (CLadder's definitions,
Jin et al. 2023; Pearl 2001 for the natural effects), and Pearl's probabilities of causation ``pn``,
``ps``, ``pns`` (Pearl 1999; Tian & Pearl 2000). These depend on the SCM's coupling.

Effects are differences of probabilities of one outcome state ``outcome_state`` (for a binary outcome
with states 0/1 and ``outcome_state=1`` they are the usual expectations E[Y_1 - Y_0]). Pearl's
``pn``/``ps``/``pns`` read "y" as ``outcome_state`` and "not y" as any other state.

Do not use pgmpy's ``CausalInference.query`` for rung 2: it is wrong when ``do`` meets evidence or when
one do-target is a parent of another (pgmpy issues #1701, #3543; tests/test_causal_oracles.py shows it).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from framework.causal.scm import DiscreteSCM, State
from framework.causal.worlds import ValueIn, query
from framework.errors import require

Assignment = Mapping[str, State]
Evidence = Mapping[str, State | Sequence[State] | set]


def _names(targets: str | Sequence[str]) -> list[str]:
    names = [targets] if isinstance(targets, str) else list(targets)
    require(len(names) > 0, "targets", "needs at least one variable")
    return names


def _checked(scm: DiscreteSCM, values: Mapping | None, field: str) -> dict:
    """``values`` with every variable and state checked, so an error names ``do`` or ``evidence``."""
    values = dict(values or {})
    for v, s in values.items():
        scm.dag.check_node(v, field)
        for state in s if isinstance(s, (list, tuple, set, frozenset)) else [s]:
            scm.state_index(v, state, field)
    return values


def _in_world(w: int, evidence: Evidence | None, scm: DiscreteSCM) -> dict:
    return {(w, v): s for v, s in _checked(scm, evidence, "evidence").items()}


def marginal(scm: DiscreteSCM, targets: str | Sequence[str], evidence: Evidence | None = None) -> np.ndarray:
    """Rung 1: P(targets | evidence), one axis per target."""
    names = _names(targets)
    return query(scm, [{}], [(0, v) for v in names], _in_world(0, evidence, scm))


def interventional(scm: DiscreteSCM, targets: str | Sequence[str], do: Assignment,
                   evidence: Evidence | None = None) -> np.ndarray:
    """Rung 2: P(targets | do(do), evidence), evidence observed in the intervened world."""
    names = _names(targets)
    return query(scm, [_checked(scm, do, "do")], [(0, v) for v in names], _in_world(0, evidence, scm))


def ate(scm: DiscreteSCM, treatment: str, outcome: str, treated: State = 1, control: State = 0,
        outcome_state: State = 1) -> float:
    """P(Y = y | do(X = treated)) - P(Y = y | do(X = control))."""
    y = scm.state_index(outcome, outcome_state, "outcome_state")
    return float(interventional(scm, outcome, {treatment: treated})[y]
                 - interventional(scm, outcome, {treatment: control})[y])


def counterfactual(scm: DiscreteSCM, targets: str | Sequence[str], do: Assignment,
                   evidence: Evidence | None = None) -> np.ndarray:
    """Rung 3: P(targets_{do} | evidence), the evidence observed in the factual world."""
    names = _names(targets)
    return query(scm, [{}, _checked(scm, do, "do")], [(1, v) for v in names], _in_world(0, evidence, scm))


def ett(scm: DiscreteSCM, treatment: str, outcome: str, treated: State = 1, control: State = 0,
        outcome_state: State = 1) -> float:
    """Effect of treatment on the treated: P(Y_{treated} = y | X = treated) - P(Y_{control} = y | X = treated)."""
    y = scm.state_index(outcome, outcome_state, "outcome_state")
    seen = {treatment: treated}
    return float(counterfactual(scm, outcome, {treatment: treated}, seen)[y]
                 - counterfactual(scm, outcome, {treatment: control}, seen)[y])


def default_mediators(scm: DiscreteSCM, treatment: str, outcome: str) -> tuple[str, ...]:
    """Every variable on a directed path from the treatment to the outcome."""
    on_path = scm.dag.descendants(treatment) & scm.dag.ancestors(outcome)
    return tuple(v for v in scm.variables if v in on_path)


def _natural(scm, treatment, outcome, direct_world, mediator_world, mediators, outcome_state) -> float:
    """P(Y_{X=direct, M=M_{X=mediator}} = y) via worlds [{X: mediator}, {X: direct, M: ValueIn(0)}]."""
    y = scm.state_index(outcome, outcome_state, "outcome_state")
    if mediators is None:
        mediators = default_mediators(scm, treatment, outcome)
    worlds = [{treatment: mediator_world}, {treatment: direct_world, **{m: ValueIn(0) for m in mediators}}]
    return float(query(scm, worlds, [(1, outcome)])[y])


def nde(scm: DiscreteSCM, treatment: str, outcome: str, mediators: Sequence[str] | None = None,
        treated: State = 1, control: State = 0, outcome_state: State = 1) -> float:
    """Natural direct effect: P(Y_{treated, M_{control}} = y) - P(Y_{control} = y)."""
    base = interventional(scm, outcome, {treatment: control})[scm.state_index(outcome, outcome_state, "outcome_state")]
    return _natural(scm, treatment, outcome, treated, control, mediators, outcome_state) - float(base)


def nie(scm: DiscreteSCM, treatment: str, outcome: str, mediators: Sequence[str] | None = None,
        treated: State = 1, control: State = 0, outcome_state: State = 1) -> float:
    """Natural indirect effect: P(Y_{control, M_{treated}} = y) - P(Y_{control} = y)."""
    base = interventional(scm, outcome, {treatment: control})[scm.state_index(outcome, outcome_state, "outcome_state")]
    return _natural(scm, treatment, outcome, control, treated, mediators, outcome_state) - float(base)


def _other_states(scm: DiscreteSCM, v: str, s: int) -> list[int]:
    return [k for k in range(scm.card(v)) if k != s]


def pn(scm: DiscreteSCM, treatment: str, outcome: str, treated: State = 1, control: State = 0,
       outcome_state: State = 1) -> float:
    """Probability of necessity: P(Y_{control} != y | X = treated, Y = y)."""
    y = scm.state_index(outcome, outcome_state, "outcome_state")
    p = counterfactual(scm, outcome, {treatment: control}, {treatment: treated, outcome: y})
    return float(1.0 - p[y])


def ps(scm: DiscreteSCM, treatment: str, outcome: str, treated: State = 1, control: State = 0,
       outcome_state: State = 1) -> float:
    """Probability of sufficiency: P(Y_{treated} = y | X = control, Y != y)."""
    y = scm.state_index(outcome, outcome_state, "outcome_state")
    p = counterfactual(scm, outcome, {treatment: treated}, {treatment: control, outcome: _other_states(scm, outcome, y)})
    return float(p[y])


def pns(scm: DiscreteSCM, treatment: str, outcome: str, treated: State = 1, control: State = 0,
        outcome_state: State = 1) -> float:
    """Probability of necessity and sufficiency: P(Y_{treated} = y, Y_{control} != y)."""
    y = scm.state_index(outcome, outcome_state, "outcome_state")
    joint = query(scm, [{treatment: treated}, {treatment: control}], [(0, outcome), (1, outcome)])
    return float(joint[y].sum() - joint[y, y])
