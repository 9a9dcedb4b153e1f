"""CLadder-style causal query generation with exact answers (Jin et al. 2023; SPEC §5).

Query types per rung (CLadder's codes): rung 1 ``marginal``, ``correlation`` (a conditional), ``exp_away``
(explaining away, conditioning on a collider); rung 2 ``ate``, ``backadj`` (backdoor adjustment set),
``collider_bias``; rung 3 ``ett``, ``nde``, ``nie``, ``det-counterfactual`` (deterministic mechanisms),
and Pearl's ``pn`` / ``ps``. Graphs: CLadder's ten families (treatment X, outcome Y), random DAGs and
the bnlearn networks bundled in pgmpy. Treatment/outcome pairs are chosen where the type makes sense:
a directed path for effects, a mediator on it for NIE (and a direct edge for NDE), a common child for
explaining away and collider bias (with no causal path for the latter), a d-connected pair for
correlations.

Every answer comes from the exact engine (``framework.causal.queries``) on the numbers the prompt
prints: family and random-DAG CPD entries are hundredths drawn per query, network CPDs are rounded to
1/10000 once (``render.UNIT``). Rung 3 draws a coupling per query and states it in the prompt. The
identifiability flag comes from ``identify_effect`` (rung 2) and ``identify_query`` (rung 3).

Query i is a function of ``derive_seed(settings.seed, "query", i)`` alone, and numbers are rounded to
12 significant digits, so a set is the same on every machine and any slice of it can be regenerated.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from framework.causal import render
from framework.causal.graphs import DAG, FAMILIES, family, random_dag
from framework.causal.identify import Identification, backdoor_set, identify_effect, identify_query
from framework.causal.networks import load_network
from framework.causal.queries import ate, counterfactual, default_mediators, ett, marginal, nde, nie, pn, ps
from framework.causal.queryset import QUERY_TYPES, CausalQuery, write_queryset
from framework.causal.scm import DiscreteSCM
from framework.causal.worlds import ValueIn
from framework.errors import ConfigError, require
from framework.seeds import derive_seed

GENERATOR_VERSION = "1"
DEFAULT_NETWORKS = ("asia", "cancer", "earthquake", "sachs", "survey")  # small enough to print every CPD
NUMERIC = ("marginal", "correlation", "exp_away", "ate", "ett", "nde", "nie", "det-counterfactual", "pn", "ps")
TOL = 1e-12  # an effect smaller than this is no effect (yes/no decisions)
MAX_TRIES = 100


@dataclass(frozen=True)
class QueryGenSettings:
    count: int = 1000
    seed: int = 0
    families: tuple[str, ...] = tuple(FAMILIES)
    networks: tuple[str, ...] = DEFAULT_NETWORKS
    random_nodes: tuple[int, int] = (4, 6)  # a random DAG has between these many nodes (inclusive)
    weights: tuple[float, float, float] = (0.6, 0.25, 0.15)  # how often a query uses a family, a network, a random DAG
    query_types: tuple[str, ...] = tuple(QUERY_TYPES)
    couplings: tuple[str, ...] = ("independent", "monotone")  # rung 3 draws one per query
    names: tuple[str, ...] = ("real", "anticommonsense", "nonsense")
    number_fraction: float = 0.25  # share of numeric queries asked for the number (backadj: for the set)

    def __post_init__(self) -> None:
        for key in ("families", "networks", "random_nodes", "weights", "query_types", "couplings", "names"):
            value = getattr(self, key)
            object.__setattr__(self, key, (value,) if isinstance(value, str) else tuple(value))
        require(self.count >= 0, "count", f"must be >= 0, got {self.count}")
        for f in self.families:
            require(f in FAMILIES, "families", f"unknown family {f!r}; choose from {', '.join(FAMILIES)}")
        require(len(self.random_nodes) == 2 and 2 <= self.random_nodes[0] <= self.random_nodes[1] <= 12,
                "random_nodes", f"must be (low, high) with 2 <= low <= high <= 12, got {self.random_nodes}")
        require(len(self.weights) == 3 and all(w >= 0 for w in self.weights), "weights",
                f"must be three weights >= 0 (family, network, random), got {self.weights}")
        usable = [w for w, has in zip(self.weights, (self.families, self.networks, True)) if has]
        require(sum(usable) > 0, "weights", "no source with a positive weight has any graph")
        for q in self.query_types:
            require(q in QUERY_TYPES, "query_types", f"unknown query type {q!r}; choose from {', '.join(QUERY_TYPES)}")
        require(len(self.query_types) > 0, "query_types", "needs at least one query type")
        for c in self.couplings:
            require(c in ("independent", "monotone"), "couplings", f"must be independent or monotone, got {c!r}")
        require(len(self.couplings) > 0, "couplings", "needs at least one coupling")
        for n in self.names:
            require(n in ("real", "anticommonsense", "nonsense"), "names",
                    f"must be real, anticommonsense or nonsense, got {n!r}")
        require(len(self.names) > 0, "names", "needs at least one name variant")
        require(0.0 <= self.number_fraction <= 1.0, "number_fraction", f"must be in [0, 1], got {self.number_fraction}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


# ------------------------------------------------------------------ graphs and where each query type fits


def _closure(start: str, step: dict[str, tuple[str, ...]]) -> set[str]:
    seen, stack = set(), list(step[start])
    while stack:
        v = stack.pop()
        if v not in seen:
            seen.add(v)
            stack.extend(step[v])
    return seen


@dataclass
class Graph:
    """A graph with, per query type, the (treatment, outcome, third node) tuples where it makes sense."""

    source: str
    name: str
    dag: DAG
    candidates: dict[str, list[tuple]]
    desc: dict[str, set[str]]
    anc: dict[str, set[str]]


def _graph(source: str, name: str, dag: DAG) -> Graph:
    parents = {v: dag.parents(v) for v in dag.nodes}
    children = {v: tuple(c for c in dag.nodes if v in parents[c]) for v in dag.nodes}
    desc = {v: _closure(v, children) for v in dag.nodes}
    anc = {v: _closure(v, parents) for v in dag.nodes}
    obs = dag.observed()
    pairs = [("X", "Y")] if source == "family" else [(x, y) for x in obs for y in obs if x != y]
    causal = [(x, y) for x, y in pairs if y in desc[x]]
    # d-connected given nothing <=> a common ancestor (either one counting as its own ancestor)
    assoc = [(x, y) for x, y in pairs if (anc[x] | {x}) & (anc[y] | {y})]
    colliders = [(x, y, c) for x, y in pairs for c in obs if x in parents[c] and y in parents[c]]
    mediated = [(x, y) for x, y in causal if desc[x] & anc[y]]
    cand = {
        "marginal": [(None, y) for y in (("Y",) if source == "family" else obs)],
        "correlation": assoc,
        "exp_away": colliders,
        "ate": causal,
        "backadj": [(x, y) for x, y in causal if not dag.latent or backdoor_set(dag, x, y) is not None],
        "collider_bias": [(x, y, c) for x, y, c in colliders if y not in desc[x]],
        "ett": causal, "pn": causal, "ps": causal,
        "nie": mediated,
        "nde": [(x, y) for x, y in mediated if x in parents[y]],
        "det-counterfactual": causal if source != "network" else [],
    }
    return Graph(source, name, dag, cand, desc, anc)


@lru_cache(maxsize=None)
def family_graph(name: str) -> Graph:
    return _graph("family", name, family(name))


def _quantised(rows: np.ndarray) -> np.ndarray:
    """Rows of probabilities -> integers in 1/UNIT summing to UNIT (the residual on each row's largest entry)."""
    q = np.rint(rows * render.UNIT).astype(np.int64)
    q[np.arange(len(q)), q.argmax(1)] += render.UNIT - q.sum(1)
    return q


@lru_cache(maxsize=None)
def network_model(name: str) -> tuple[Graph, dict[str, np.ndarray], dict[str, DiscreteSCM]]:
    """The bundled network, its CPDs rounded to 1/UNIT, and one SCM on those numbers per coupling."""
    base = load_network(name)
    units = {v: _quantised(base.rows(v)) for v in base.variables}
    cpds = {v: units[v] / render.UNIT for v in base.variables}
    scms = {c: DiscreteSCM(base.dag, cpds, base.states, c) for c in ("independent", "monotone")}
    return _graph("network", name, base.dag), units, scms


def valid_adjustment(dag: DAG, treatment: str, outcome: str, adjust) -> bool:
    """The backdoor criterion: observed, no descendant of the treatment, and blocking every backdoor path."""
    z = set(adjust)
    if not z <= set(dag.observed()) - {treatment, outcome} or z & dag.descendants(treatment):
        return False
    g = dag.to_networkx()
    g.remove_edges_from([(treatment, c) for c in dag.children(treatment)])
    return nx.is_d_separator(g, {treatment}, {outcome}, z)


@lru_cache(maxsize=4096)
def _identify_effect(dag: DAG, x: str, y: str) -> Identification:
    return identify_effect(dag, x, y)


# ------------------------------------------------------------------ one query


def _number(v: float) -> float:
    return float(f"{float(v):.12g}") + 0.0  # + 0.0: no -0.0


class _Query:
    """The pieces of one query while it is being built."""

    def __init__(self, graph: Graph, scm: DiscreteSCM, units, rng, settings: QueryGenSettings, qtype: str, coupling):
        self.g, self.scm, self.units, self.rng, self.s, self.qtype, self.coupling = graph, scm, units, rng, settings, qtype, coupling
        self.dag = graph.dag
        self.evidence_nodes: set[str] = set()

    def label(self, v: str, state: int) -> str:
        return f"{self.names[v]} = {self.labels[v][state]}"

    def formal_state(self, v: str, state: int) -> str:
        return f"{v}={self.scm.states[v][state]}"


def _states(q: _Query, x: str | None, y: str) -> tuple[int, int, int]:
    """(treated, control, outcome state): 1, 0, 1 for binary families and random DAGs; drawn for networks."""
    if q.g.source != "network":
        return 1, 0, 1
    t = c = 0
    if x is not None:
        t, c = (int(s) for s in q.rng.choice(q.scm.card(x), 2, replace=False))
    return t, c, int(q.rng.integers(q.scm.card(y)))


def _ask(q: _Query, qtype: str, cand: tuple, kind: str, polarity: bool) -> dict[str, Any]:
    """The question, its exact answer and the query's worlds (for identify_query), by type."""
    scm, dag = q.scm, q.dag
    x, y = cand[0], cand[1]
    t, c, ys = _states(q, x, y)
    q.t, q.c, q.ys, q.polarity = t, c, ys, polarity
    Y = q.label(y, ys)
    out: dict[str, Any] = {"treatment": x, "outcome": y, "worlds": None, "meta": {}}
    more = "more" if polarity else "less"

    def decide(value: float) -> bool:
        return value > TOL if polarity else value < -TOL

    if qtype == "marginal":
        value = float(marginal(scm, y)[ys])
        out.update(formal=f"P({q.formal_state(y, ys)})", value=value)
        if kind == "number":
            out.update(question=f"What is the overall probability that {Y}?", answer=value)
        else:
            out.update(question=f"Is {Y} {more} likely than not overall?", answer=decide(value - 0.5))
    elif qtype == "correlation":
        p1, p0 = (float(marginal(scm, y, {x: s})[ys]) for s in (t, c))
        fx1, fx0, fy = q.formal_state(x, t), q.formal_state(x, c), q.formal_state(y, ys)
        q.evidence_nodes = {x}
        if kind == "number":
            out.update(formal=f"P({fy} | {fx1})", value=p1, answer=p1,
                       question=f"Among those with {q.label(x, t)}, what is the probability that {Y}?")
        else:
            out.update(formal=f"P({fy} | {fx1}) - P({fy} | {fx0})", value=p1 - p0, answer=decide(p1 - p0),
                       question=f"Is {Y} {more} likely among those with {q.label(x, t)} than among those with "
                                f"{q.label(x, c)}?")
    elif qtype == "exp_away":
        k = cand[2]
        ks = int(q.rng.integers(scm.card(k))) if q.g.source == "network" else 1
        p1, p0 = (float(marginal(scm, y, {x: s, k: ks})[ys]) for s in (t, c))
        fk, fy = q.formal_state(k, ks), q.formal_state(y, ys)
        q.evidence_nodes = {x, k}
        out["meta"] = {"collider": k, "collider_state": scm.states[k][ks]}
        where = f"If we look only at those with {q.label(k, ks)}"
        if kind == "number":
            out.update(formal=f"P({fy} | {q.formal_state(x, t)}, {fk})", value=p1, answer=p1,
                       question=f"{where}, what is the probability that {Y} among those with {q.label(x, t)}?")
        else:
            out.update(formal=f"P({fy} | {q.formal_state(x, t)}, {fk}) - P({fy} | {q.formal_state(x, c)}, {fk})",
                       value=p1 - p0, answer=decide(p1 - p0),
                       question=f"{where}, is {Y} {more} likely when {q.label(x, t)} than when {q.label(x, c)}?")
    elif qtype in ("ate", "collider_bias"):
        value = ate(scm, x, y, t, c, ys)
        fy = q.formal_state(y, ys)
        out.update(formal=f"P({fy} | do({q.formal_state(x, t)})) - P({fy} | do({q.formal_state(x, c)}))", value=value)
        if qtype == "collider_bias":
            k = cand[2]
            ks = int(q.rng.integers(scm.card(k))) if q.g.source == "network" else 1
            q.evidence_nodes = {k}
            out.update(answer=abs(value) > TOL, meta={"collider": k, "collider_state": scm.states[k][ks]},
                       question=f"If we look only at those with {q.label(k, ks)}, does it follow that setting "
                                f"{q.label(x, t)} instead of {q.label(x, c)} would change the chance that {Y}?")
        elif kind == "number":
            out.update(answer=value, question=f"By how much does setting {q.label(x, t)} instead of {q.label(x, c)} "
                                              f"change the probability that {Y} (a difference of probabilities)?")
        else:
            out.update(answer=decide(value), question=f"Would setting {q.label(x, t)} instead of {q.label(x, c)} make "
                                                      f"{Y} {more} likely?")
    elif qtype == "backadj":
        minimal = backdoor_set(dag, x, y)
        order = {v: i for i, v in enumerate(dag.nodes)}
        sort = lambda vs: tuple(sorted(set(vs), key=order.get))  # noqa: E731
        out.update(formal=f"backdoor({x}, {y})", value=None)
        if kind == "set":
            out.update(answer=sort(minimal), meta={"note": "any set meeting the backdoor criterion is correct; "
                                                           "the answer is a minimal one"},
                       question=f"To find the effect of {q.names[x]} on {q.names[y]} from observational data, which "
                                f"variables must one adjust for (a smallest set meeting the backdoor criterion)?")
        else:
            others = [v for v in dag.observed() if v not in (x, y)]
            below = [v for v in others if v in q.g.desc[x]]
            free = [v for v in others if v not in q.g.desc[x] and v not in minimal]
            options = [sort(minimal)]
            if free:
                options.append(sort([*minimal, free[int(q.rng.integers(len(free)))]]))
            if below:
                options.append(sort([*minimal, below[int(q.rng.integers(len(below)))]]))
            if minimal:
                options.append(())
            chosen = options[int(q.rng.integers(len(options)))]
            shown = ", ".join(q.names[v] for v in chosen) if chosen else "no variable at all"
            out.update(formal=f"backdoor({x}, {y}; {{{', '.join(chosen)}}})", answer=valid_adjustment(dag, x, y, chosen),
                       meta={"candidate": list(chosen)},
                       question=f"To find the effect of {q.names[x]} on {q.names[y]} from observational data, is it "
                                f"correct to adjust for {shown} (the backdoor criterion)?")
    elif qtype == "ett":
        value = ett(scm, x, y, t, c, ys)
        fy, fx1 = q.formal_state(y, ys), q.formal_state(x, t)
        out.update(formal=f"P({y}_{{{x}={scm.states[x][t]}}}={scm.states[y][ys]} | {fx1}) - "
                          f"P({y}_{{{x}={scm.states[x][c]}}}={scm.states[y][ys]} | {fx1})", value=value,
                   worlds=([{}, {x: c}], [(1, y)], {(0, x): t}))
        q.evidence_nodes = {x}
        if kind == "number":
            out.update(answer=value, question=f"For those with {q.label(x, t)}, by how much is the probability that {Y} "
                                              f"higher than it would have been had they had {q.label(x, c)}?")
        else:
            out.update(answer=decide(value), question=f"For those with {q.label(x, t)}, would {Y} have been "
                                                      f"{'less' if polarity else 'more'} likely had they had "
                                                      f"{q.label(x, c)}?")
    elif qtype in ("nde", "nie"):
        meds = default_mediators(scm, x, y)
        shown = render._join([q.names[m] for m in meds])
        fy = q.formal_state(y, ys)
        if qtype == "nde":
            value = nde(scm, x, y, meds, t, c, ys)
            worlds = [{x: c}, {x: t, **{m: ValueIn(0) for m in meds}}]
            formal = f"P({y}_{{{x}={scm.states[x][t]}, M=M_{{{x}={scm.states[x][c]}}}}}={scm.states[y][ys]}) - " \
                     f"P({fy} | do({q.formal_state(x, c)}))"
            what = (f"if {shown} were kept at the values they would take under {q.label(x, c)}, and {q.names[x]} "
                    f"were changed from {q.label(x, c)} to {q.label(x, t)}")
        else:
            value = nie(scm, x, y, meds, t, c, ys)
            worlds = [{x: t}, {x: c, **{m: ValueIn(0) for m in meds}}]
            formal = f"P({y}_{{{x}={scm.states[x][c]}, M=M_{{{x}={scm.states[x][t]}}}}}={scm.states[y][ys]}) - " \
                     f"P({fy} | do({q.formal_state(x, c)}))"
            what = (f"if {q.names[x]} were kept at {q.label(x, c)}, and {shown} changed from the values they take "
                    f"under {q.label(x, c)} to those under {q.label(x, t)}")
        out.update(formal=formal, value=value, worlds=(worlds, [(1, y)], None), meta={"mediators": list(meds)})
        if kind == "number":
            out.update(answer=value, question=f"By how much would the probability that {Y} change {what}?")
        else:
            out.update(answer=decide(value), question=f"Would {Y} become {more} likely {what}?")
    elif qtype == "det-counterfactual":
        unit = scm.sample(1, int(q.rng.integers(2**31)))[0]
        seen = [v for v in dag.observed() if v == x or v not in q.g.desc[x]]
        evidence = {v: int(unit[scm.index[v]]) for v in seen}
        x_cf = 1 - evidence[x]
        value = float(counterfactual(scm, y, {x: x_cf}, evidence)[ys])
        facts = render._join([q.label(v, s) for v, s in evidence.items()])
        q.evidence_nodes = set(seen)
        out["meta"] = {"evidence": {v: scm.states[v][s] for v, s in evidence.items()}, "counterfactual": scm.states[x][x_cf]}
        out.update(formal=f"P({y}_{{{x}={scm.states[x][x_cf]}}}={scm.states[y][ys]} | "
                          + ", ".join(q.formal_state(v, s) for v, s in evidence.items()) + ")", value=value,
                   worlds=([{}, {x: x_cf}], [(1, y)], {(0, v): s for v, s in evidence.items()}))
        if kind == "number":
            out.update(answer=value, question=f"We know that {facts}. What is the probability that {Y} had "
                                              f"{q.label(x, x_cf)} been the case instead?")
        else:
            out.update(answer=value > 0.5, question=f"We know that {facts}. Would {Y} be the case had "
                                                    f"{q.label(x, x_cf)} been the case instead?")
    elif qtype in ("pn", "ps"):
        others = [s for s in range(scm.card(y)) if s != ys]
        not_y = q.label(y, others[0]) if len(others) == 1 else f"{q.names[y]} is not {q.labels[y][ys]}"
        q.evidence_nodes = {x, y}
        if qtype == "pn":
            value = pn(scm, x, y, t, c, ys)
            worlds = ([{}, {x: c}], [(1, y)], {(0, x): t, (0, y): ys})
            formal = f"P({y}_{{{x}={scm.states[x][c]}}}!={scm.states[y][ys]} | {q.formal_state(x, t)}, {q.formal_state(y, ys)})"
            what = (f"among those with {q.label(x, t)} and {Y}, that {not_y} would have been the case had they had "
                    f"{q.label(x, c)} (the probability of necessity)")
        else:
            value = ps(scm, x, y, t, c, ys)
            worlds = ([{}, {x: t}], [(1, y)], {(0, x): c, (0, y): others})
            formal = f"P({y}_{{{x}={scm.states[x][t]}}}={scm.states[y][ys]} | {q.formal_state(x, c)}, {y}!={scm.states[y][ys]})"
            what = (f"among those with {q.label(x, c)} and {not_y}, that {Y} would have been the case had they had "
                    f"{q.label(x, t)} (the probability of sufficiency)")
        out.update(formal=formal, value=value, worlds=worlds)
        if kind == "number":
            out.update(answer=value, question=f"What is the probability, {what}?")
        else:
            out.update(answer=value > 0.5, question=f"Is it more likely than not, {what}?")
    else:  # pragma: no cover - QUERY_TYPES and this function list the same types
        raise AssertionError(qtype)
    return out


def _binary_units(dag: DAG, rng: np.random.Generator, deterministic: bool) -> dict[str, np.ndarray]:
    """(C, 2) integer rows in 1/UNIT: P(v=1 | c) uniform on the hundredths 1..99; with ``deterministic``
    every node with parents gets 0/1 rows (its mechanism is a function of its parents)."""
    out = {}
    for v in dag.nodes:
        C = 2 ** len(dag.parents(v))
        if deterministic and C > 1:
            one = rng.integers(0, 2, size=C)
            while one.min() == one.max():  # a constant mechanism would ignore its causes
                one = rng.integers(0, 2, size=C)
            one = one * render.UNIT
        else:
            one = rng.integers(1, 100, size=C) * (render.UNIT // 100)
        out[v] = np.stack([render.UNIT - one, one], 1)
    return out


def _draw_graph(settings: QueryGenSettings, rng: np.random.Generator):
    weights = np.array([w if has else 0.0 for w, has in zip(settings.weights, (settings.families, settings.networks, True))])
    source = ("family", "network", "random")[int(rng.choice(3, p=weights / weights.sum()))]
    if source == "family":
        return family_graph(settings.families[int(rng.integers(len(settings.families)))]), None
    if source == "network":
        graph, units, scms = network_model(settings.networks[int(rng.integers(len(settings.networks)))])
        return graph, (units, scms)
    lo, hi = settings.random_nodes
    dag = random_dag(int(rng.integers(lo, hi + 1)), int(rng.integers(2**31)), edge_prob=0.5, max_parents=3)
    return _graph("random", "random", dag), None


def generate_query(settings: QueryGenSettings, index: int) -> CausalQuery:
    """Query ``index`` of the set ``settings`` describes (a function of the settings' seed and the index)."""
    seed = derive_seed(settings.seed, "query", index)
    rng = np.random.default_rng(seed)
    for _ in range(MAX_TRIES):
        graph, fixed = _draw_graph(settings, rng)
        types = [t for t in settings.query_types if graph.candidates[t]]
        if not types:
            continue
        qtype = types[int(rng.integers(len(types)))]
        cand = graph.candidates[qtype][int(rng.integers(len(graph.candidates[qtype])))]
        rung = QUERY_TYPES[qtype]
        coupling = settings.couplings[int(rng.integers(len(settings.couplings)))] if rung == 3 else None
        if fixed is None:
            units = _binary_units(graph.dag, rng, qtype == "det-counterfactual")
            cpds = {v: units[v] / render.UNIT for v in graph.dag.nodes}
            scm = DiscreteSCM(graph.dag, cpds, coupling=coupling or "independent")
        else:
            units, scm = fixed[0], fixed[1][coupling or "independent"]
        q = _Query(graph, scm, units, rng, settings, qtype, coupling)
        variant = settings.names[int(rng.integers(len(settings.names)))]
        q.variant, q.names, q.labels = render.choose_names(graph.dag, graph.source, graph.name, variant, scm.states,
                                                           rng, cand[0], cand[1])
        kinds = {"backadj": "set", "collider_bias": None}.get(qtype, "number" if qtype in NUMERIC else None)
        kind = kinds if kinds is not None and rng.random() < settings.number_fraction else "yes_no"
        polarity = bool(rng.random() < 0.5)
        try:
            asked = _ask(q, qtype, cand, kind, polarity)
            if rung == 1:
                ident = Identification(1, True, "observational")
            elif rung == 2:
                ident = _identify_effect(graph.dag, asked["treatment"], asked["outcome"])
            else:
                ident = identify_query(scm, *asked["worlds"])
        except ConfigError as err:  # evidence of probability zero (a network CPD with zeros): draw again
            if "probability zero" in err.message:
                continue
            raise
        return _record(q, asked, rung, kind, ident, seed)
    raise ConfigError("query_types", f"no graph among {MAX_TRIES} draws fits any of the query types "
                      f"{', '.join(settings.query_types)}")


def _record(q: _Query, asked: dict[str, Any], rung: int, kind: str, ident: Identification, seed: int) -> CausalQuery:
    dag = q.dag
    x, y = asked["treatment"], asked["outcome"]
    needed = {y} | ({x} if x else set()) | q.evidence_nodes | set(asked.get("meta", {}).get("mediators", []))
    shown = needed | set().union(*(q.g.anc[v] for v in needed))
    info = render.given_info(dag, q.units, shown, q.names, q.labels)
    if q.coupling is not None:
        info += " " + render.COUPLING_TEXT[q.coupling]
    answer = asked["answer"]
    if kind == "number":
        answer = _number(answer)
    value = None if asked["value"] is None else _number(asked["value"])
    meta = dict(asked["meta"])
    if kind == "yes_no" and q.qtype in ("marginal", "correlation", "exp_away", "ate", "ett", "nde", "nie"):
        meta["polarity"] = "more" if q.polarity else "less"  # "... more / less likely?": answer = value > 0 / < 0
    if x is not None and q.qtype not in ("backadj", "det-counterfactual"):
        meta["treated"], meta["control"] = q.scm.states[x][q.t], q.scm.states[x][q.c]
    meta["outcome_state"] = q.scm.states[y][q.ys]
    return CausalQuery.build(
        check=False, rung=rung, query_type=q.qtype, source=q.g.source, graph=q.g.name, nodes=dag.nodes, edges=dag.edges,
        latent=tuple(sorted(dag.latent)), treatment=x, outcome=y, formal=asked["formal"], answer_kind=kind,
        answer=answer, value=value, coupling=q.coupling, identifiable=ident.identifiable,
        identification=ident.method, names=q.variant, variables=dict(q.names),
        background=render.background(dag, q.names), given_info=info,
        question=asked["question"] + " " + render.ANSWER_TEXT[kind], seed=seed, meta=meta)


def _chunk(args: tuple[QueryGenSettings, int, int]) -> list[CausalQuery]:
    settings, lo, hi = args
    return [generate_query(settings, i) for i in range(lo, hi)]


def generate_queries(settings: QueryGenSettings, workers: int = 1) -> list[CausalQuery]:
    """Every query of the set, in index order. ``workers`` > 1 splits the indices over processes; the
    result is the same (query i depends on i alone)."""
    require(workers >= 1, "workers", f"must be >= 1, got {workers}")
    if workers == 1 or settings.count < 2 * workers:
        return _chunk((settings, 0, settings.count))
    import multiprocessing

    for name in settings.networks if settings.weights[1] > 0 else ():  # parse once, before the workers fork
        network_model(name)
    bounds = np.linspace(0, settings.count, 4 * workers + 1).astype(int)
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        parts = pool.map(_chunk, [(settings, int(a), int(b)) for a, b in zip(bounds, bounds[1:])])
    return [q for part in parts for q in part]


def generate_queryset(path: str | Path, settings: QueryGenSettings | None = None, workers: int = 1) -> Path:
    """Generate ``settings.count`` queries and write them as a versioned JSONL query set (atomically)."""
    settings = settings or QueryGenSettings()
    return write_queryset(path, generate_queries(settings, workers), settings.to_dict(), GENERATOR_VERSION)
