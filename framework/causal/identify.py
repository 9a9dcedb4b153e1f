"""Identifiability flags: can a query be answered from the observational distribution and the graph?

Rung 1 always can. Rung 2, the effect of X on Y (Pearl 2009, ch. 3): by the backdoor criterion (a set
of observed non-descendants of X that d-separates X from Y once X's outgoing edges are removed;
``networkx.find_minimal_d_separator`` finds a minimal one), else the frontdoor criterion (observed M
intercepting every directed X -> Y path, with no open backdoor path X -> M and every backdoor path
M -> Y blocked by X), else an instrument Z (associated with X, d-separated from Y once X's outgoing
edges are removed), which point-identifies the effect only in a linear SCM. Latent nodes are never
adjusted for. Without latent nodes every rung-2 query is identified (adjust for the parents).

Rung 3 in general needs the full SCM. The twin network tells when it does not: if no variable needs
two coupled copies (``worlds.Solution.coupled`` is empty), the answer is a function of the CPDs
alone, the same for every coupling, and so identified in a graph without latent nodes ("cpds");
otherwise it depends on the coupling ("scm"). This is structural, so "scm" means "not identified in
general": special CPDs (deterministic, or an effect-free mechanism) can still make couplings agree.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import networkx as nx

from framework.causal.graphs import DAG
from framework.causal.scm import DiscreteSCM
from framework.causal.worlds import Event, MultiWorld, ValueIn, World

MAX_FRONTDOOR = 3  # the largest mediator set tried by the frontdoor search


@dataclass(frozen=True)
class Identification:
    rung: int
    identifiable: bool
    method: str  # observational | no-effect | backdoor | frontdoor | iv | cpds | scm | none
    adjustment: tuple[str, ...] = ()  # the backdoor set, the frontdoor mediators, or the instruments
    note: str = ""


def _without_out_edges(g: nx.DiGraph, xs: set[str]) -> nx.DiGraph:
    h = g.copy()
    h.remove_edges_from([(a, b) for a, b in g.edges if a in xs])
    return h


def backdoor_set(dag: DAG, treatment: str, outcome: str) -> tuple[str, ...] | None:
    """A minimal backdoor adjustment set of observed variables, or None when there is none."""
    g = dag.to_networkx()
    candidates = set(dag.observed()) - {treatment, outcome} - nx.descendants(g, treatment)
    z = nx.find_minimal_d_separator(_without_out_edges(g, {treatment}), {treatment}, {outcome}, restricted=candidates)
    return None if z is None else tuple(v for v in dag.nodes if v in z)


def is_frontdoor(dag: DAG, treatment: str, outcome: str, mediators: Sequence[str]) -> bool:
    g, m = dag.to_networkx(), set(mediators)
    cut = g.copy()
    cut.remove_nodes_from(m)
    if nx.has_path(cut, treatment, outcome):
        return False
    if not nx.is_d_separator(_without_out_edges(g, {treatment}), {treatment}, m, set()):
        return False
    return nx.is_d_separator(_without_out_edges(g, m), m, {outcome}, {treatment})


def frontdoor_set(dag: DAG, treatment: str, outcome: str) -> tuple[str, ...] | None:
    g = dag.to_networkx()
    on_paths = nx.descendants(g, treatment) & nx.ancestors(g, outcome)
    candidates = [v for v in dag.observed() if v in on_paths]
    for size in range(1, min(MAX_FRONTDOOR, len(candidates)) + 1):
        for m in combinations(candidates, size):
            if is_frontdoor(dag, treatment, outcome, m):
                return m
    return None


def instruments(dag: DAG, treatment: str, outcome: str) -> tuple[str, ...]:
    g = dag.to_networkx()
    cut = _without_out_edges(g, {treatment})
    return tuple(z for z in dag.observed() if z not in (treatment, outcome)
                 and not nx.is_d_separator(g, {z}, {treatment}, set())
                 and nx.is_d_separator(cut, {z}, {outcome}, set()))


def identify_effect(dag: DAG, treatment: str, outcome: str, linear: bool = False) -> Identification:
    """Rung 2: is P(outcome | do(treatment)) identified from P(observed) and the graph, and how."""
    dag.check_node(treatment, "treatment")
    dag.check_node(outcome, "outcome")
    if outcome not in dag.descendants(treatment):
        return Identification(2, True, "no-effect", (), f"{outcome} is not a descendant of {treatment}: P(y|do(x)) = P(y)")
    z = backdoor_set(dag, treatment, outcome)
    if z is not None:
        return Identification(2, True, "backdoor", z)
    m = frontdoor_set(dag, treatment, outcome)
    if m is not None:
        return Identification(2, True, "frontdoor", m)
    ivs = instruments(dag, treatment, outcome)
    if ivs:
        return Identification(2, linear, "iv", ivs, "an instrument point-identifies the effect only in a linear SCM"
                              if not linear else "linear SCM: the Wald ratio identifies the effect")
    return Identification(2, False, "none", (), "no backdoor, frontdoor or instrument (the full ID algorithm is not run)")


def identify_query(scm: DiscreteSCM, worlds: Sequence[World], targets: Sequence[tuple[int, str]],
                   evidence: Event | None = None) -> Identification:
    """The flag of a multi-world query (the contract of ``worlds.query``)."""
    dag = scm.dag
    actions = [w for w in worlds if w]
    if len(worlds) == 1 and not actions:
        return Identification(1, True, "observational")
    if len(worlds) == 1:
        do = set(worlds[0])
        if not dag.latent:
            return Identification(2, True, "backdoor", tuple(sorted({p for x in do for p in dag.parents(x)} - do)),
                                  "no latent variables: adjust for the parents of the intervened variables")
        y = targets[0][1] if len(targets) == 1 else None
        if len(do) == 1 and y is not None and not evidence:
            return identify_effect(dag, next(iter(do)), y)
        return Identification(2, False, "none", (), "latent variables with several targets, do-targets or evidence: "
                              "not analysed")
    net = MultiWorld(scm, worlds)
    roots = [net.lookup(t, "targets") for t in targets] + [net.lookup(k, "evidence") for k in (evidence or {})]
    coupled = tuple(v for v, ids in net.copies(net.relevant(roots)).items() if len(ids) > 1)
    nested = any(isinstance(a, ValueIn) for w in worlds for a in w.values())
    if coupled:
        return Identification(3, False, "scm", coupled, "the answer depends on how the noise of these variables "
                              "couples their responses across worlds")
    note = "a function of the CPDs alone (every coupling agrees)" + (", with nested interventions" if nested else "")
    if dag.latent:
        return Identification(3, False, "cpds", (), note + "; the graph has latent variables: not analysed further")
    return Identification(3, True, "cpds", (), note)
