"""Causal DAGs: validation, topological order, d-separation, CLadder's graph families, random DAGs.

The ten families are CLadder's (Jin et al. 2023, ``causalbenchmark/graphs/stories/phenomena.py``), with
its node names: treatment ``X``, outcome ``Y``, other variables ``V1``-``V3``. Three families have an
unobserved node: ``iv`` (V1 confounds X and Y; V2 is the instrument), ``frontdoor`` (V1 confounds X and
Y; V3 is the mediator) and ``arrowhead`` (V2 confounds the mediator V3 and Y). The graph keeps such a
node (the SCM needs its mechanism) and marks it ``latent``, so identification may not adjust for it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import networkx as nx
import numpy as np

from framework.errors import ConfigError, require


@dataclass(frozen=True)
class DAG:
    """A directed acyclic graph over named variables; a cycle or an unknown node is a ConfigError.

    ``parents(v)`` lists v's parents in ``nodes`` order: every CPD and mechanism indexes its parent
    configurations in that order (C order, the first parent varying slowest).
    """

    nodes: tuple[str, ...]
    edges: tuple[tuple[str, str], ...] = ()
    latent: frozenset[str] = frozenset()  # nodes that exist in the SCM but are never observed
    name: str = "dag"
    _parents: dict = field(init=False, repr=False, compare=False)
    _order: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "nodes", tuple(str(v) for v in self.nodes))
        object.__setattr__(self, "edges", tuple((str(a), str(b)) for a, b in self.edges))
        object.__setattr__(self, "latent", frozenset(str(v) for v in self.latent))
        require(len(self.nodes) > 0, "nodes", f"graph {self.name!r} has no nodes")
        require(len(set(self.nodes)) == len(self.nodes), "nodes", f"graph {self.name!r} repeats a node name")
        known = set(self.nodes)
        for a, b in self.edges:
            require(a in known and b in known, "edges",
                    f"edge {a} -> {b} of graph {self.name!r} names a node that is not in nodes")
            require(a != b, "edges", f"graph {self.name!r} has a self-loop on {a}")
        require(len(set(self.edges)) == len(self.edges), "edges", f"graph {self.name!r} repeats an edge")
        require(self.latent <= known, "latent", f"latent nodes {sorted(self.latent - known)} are not in nodes")
        rank = {v: i for i, v in enumerate(self.nodes)}
        parents = {v: [] for v in self.nodes}
        for a, b in self.edges:
            parents[b].append(a)
        object.__setattr__(self, "_parents", {v: tuple(sorted(p, key=rank.get)) for v, p in parents.items()})
        object.__setattr__(self, "_order", self._topological_order(rank))

    def _topological_order(self, rank: dict) -> tuple[str, ...]:
        """Kahn's algorithm, ties broken by ``nodes`` order so the order is deterministic."""
        indegree = {v: len(self._parents[v]) for v in self.nodes}
        children = {v: [] for v in self.nodes}
        for a, b in self.edges:
            children[a].append(b)
        ready, order = sorted((v for v in self.nodes if indegree[v] == 0), key=rank.get), []
        while ready:
            v = ready.pop(0)
            order.append(v)
            for c in children[v]:
                indegree[c] -= 1
                if indegree[c] == 0:
                    ready.append(c)
            ready.sort(key=rank.get)
        if len(order) < len(self.nodes):
            cycle = nx.find_cycle(nx.DiGraph(self.edges))
            path = " -> ".join([a for a, _ in cycle] + [cycle[0][0]])
            raise ConfigError("edges", f"graph {self.name!r} is not acyclic: it has the cycle {path}")
        return tuple(order)

    # ------------------------------------------------------------------ structure

    def parents(self, v: str) -> tuple[str, ...]:
        self.check_node(v)
        return self._parents[v]

    def children(self, v: str) -> tuple[str, ...]:
        self.check_node(v)
        return tuple(b for b in self.nodes if v in self._parents[b])

    def topological_order(self) -> tuple[str, ...]:
        return self._order

    def ancestors(self, vs: str | Iterable[str]) -> set[str]:
        """The nodes with a directed path into ``vs`` (``vs`` excluded unless reachable from another)."""
        stack, seen = [p for v in _as_set(vs, self) for p in self._parents[v]], set()
        while stack:
            v = stack.pop()
            if v not in seen:
                seen.add(v)
                stack.extend(self._parents[v])
        return seen

    def descendants(self, vs: str | Iterable[str]) -> set[str]:
        return set().union(*(nx.descendants(self.to_networkx(), v) for v in _as_set(vs, self)))

    def observed(self) -> tuple[str, ...]:
        return tuple(v for v in self.nodes if v not in self.latent)

    def check_node(self, v: str, field_name: str = "variable") -> str:
        if v not in self._parents:
            raise ConfigError(field_name, f"unknown variable {v!r} in graph {self.name!r}; variables: {', '.join(self.nodes)}")
        return v

    # ------------------------------------------------------------------ derived graphs

    def mutilate(self, targets: Iterable[str]) -> "DAG":
        """The graph of do(targets): every edge into a target removed (Pearl's G_{\\bar X})."""
        targets = _as_set(targets, self)
        return DAG(self.nodes, tuple(e for e in self.edges if e[1] not in targets), self.latent, f"{self.name}|do")

    def to_networkx(self) -> nx.DiGraph:
        g = nx.DiGraph()
        g.add_nodes_from(self.nodes)
        g.add_edges_from(self.edges)
        return g

    def d_separated(self, xs: Iterable[str], ys: Iterable[str], given: Iterable[str] = ()) -> bool:
        return nx.is_d_separator(self.to_networkx(), _as_set(xs, self), _as_set(ys, self), _as_set(given, self))


def _as_set(vs: str | Iterable[str], dag: DAG) -> set[str]:
    vs = {vs} if isinstance(vs, str) else set(vs)
    for v in vs:
        dag.check_node(v)
    return vs


# ------------------------------------------------------------------ CLadder's families

FAMILIES: dict[str, tuple[tuple[str, ...], tuple[tuple[str, str], ...], frozenset[str]]] = {
    "chain": (("X", "V2", "Y"), (("X", "V2"), ("V2", "Y")), frozenset()),
    "fork": (("X", "V2", "Y"), (("X", "Y"), ("V2", "Y")), frozenset()),
    "collider": (("X", "Y", "V3"), (("X", "V3"), ("Y", "V3")), frozenset()),
    "confounding": (("V1", "X", "Y"), (("V1", "X"), ("V1", "Y"), ("X", "Y")), frozenset()),
    "mediation": (("X", "V2", "Y"), (("X", "V2"), ("X", "Y"), ("V2", "Y")), frozenset()),
    "iv": (("V1", "V2", "X", "Y"), (("V1", "X"), ("V2", "X"), ("V1", "Y"), ("X", "Y")), frozenset({"V1"})),
    "frontdoor": (("V1", "X", "V3", "Y"), (("V1", "X"), ("X", "V3"), ("V1", "Y"), ("V3", "Y")), frozenset({"V1"})),
    "diamond": (("X", "V2", "V3", "Y"), (("X", "V2"), ("X", "V3"), ("V2", "Y"), ("V3", "Y")), frozenset()),
    "diamondcut": (("V1", "X", "V3", "Y"), (("V1", "X"), ("V1", "V3"), ("X", "Y"), ("V3", "Y")), frozenset()),
    "arrowhead": (("X", "V2", "V3", "Y"), (("X", "V3"), ("V2", "V3"), ("X", "Y"), ("V2", "Y"), ("V3", "Y")),
                  frozenset({"V2"})),
}


def family(name: str) -> DAG:
    """One of CLadder's ten graph families, treatment ``X`` and outcome ``Y``."""
    if name not in FAMILIES:
        raise ConfigError("family", f"unknown graph family {name!r}; choose one of: {', '.join(FAMILIES)}")
    nodes, edges, latent = FAMILIES[name]
    return DAG(nodes, edges, latent, name)


def random_dag(n: int, seed: int, edge_prob: float = 0.5, max_parents: int | None = None) -> DAG:
    """A random DAG on ``V0 .. V{n-1}``: a random causal order, each forward edge kept with ``edge_prob``.

    The causal order is a random permutation of the names, so name order says nothing about causation;
    ``max_parents`` keeps the ``max_parents`` earliest-drawn parents of a node (bounds CPD sizes).
    """
    require(n >= 1, "n", f"must be >= 1, got {n}")
    require(0.0 <= edge_prob <= 1.0, "edge_prob", f"must be in [0, 1], got {edge_prob}")
    require(max_parents is None or max_parents >= 0, "max_parents", f"must be >= 0, got {max_parents}")
    rng = np.random.default_rng(seed)
    names = [f"V{i}" for i in range(n)]
    order = [names[i] for i in rng.permutation(n)]
    edges = []
    for j, child in enumerate(order):
        parents = [order[i] for i in range(j) if rng.random() < edge_prob]
        if max_parents is not None and len(parents) > max_parents:
            parents = [parents[i] for i in sorted(rng.choice(len(parents), max_parents, replace=False))]
        edges += [(p, child) for p in parents]
    return DAG(tuple(names), tuple(edges), frozenset(), f"random(n={n}, seed={seed})")
