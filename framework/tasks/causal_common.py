"""Small discrete causal graphs shared by the two causal wind tunnels (``causal_mechanisms``, ``causal_samples``).

The graphs are CLadder's families without latent nodes (Jin et al. 2023; SPEC §5), with the same node
names and node order as ``framework.causal.graphs.FAMILIES`` (treatment ``X``, outcome ``Y``), so a test
can rebuild any sequence's SCM there and check these tasks' oracles against its exact engine. This
module deliberately does not import ``framework.causal``: tasks are a shared layer, and the tasks'
own vectorised math must stand on its own.

Conventions (the same as ``framework.causal``): a node's parents are listed in node order; a parent
configuration's index is its C-order (row-major) index, the first parent varying slowest; the node
order is topological.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from framework.errors import ConfigError

GRAPHS: dict[str, tuple[tuple[str, ...], tuple[tuple[str, str], ...]]] = {
    "chain": (("X", "V2", "Y"), (("X", "V2"), ("V2", "Y"))),
    "fork": (("X", "V2", "Y"), (("X", "Y"), ("V2", "Y"))),
    "collider": (("X", "Y", "V3"), (("X", "V3"), ("Y", "V3"))),
    "confounding": (("V1", "X", "Y"), (("V1", "X"), ("V1", "Y"), ("X", "Y"))),
    "mediation": (("X", "V2", "Y"), (("X", "V2"), ("X", "Y"), ("V2", "Y"))),
    "diamond": (("X", "V2", "V3", "Y"), (("X", "V2"), ("X", "V3"), ("V2", "Y"), ("V3", "Y"))),
    "diamondcut": (("V1", "X", "V3", "Y"), (("V1", "X"), ("V1", "V3"), ("X", "Y"), ("V3", "Y"))),
}


@dataclass(frozen=True)
class SmallGraph:
    """One of :data:`GRAPHS`, with parent indices and CPD-row offsets for ``card`` states per node."""

    name: str
    nodes: tuple[str, ...]
    parents: tuple[tuple[int, ...], ...]  # parents[v]: parent node indices, ascending (= node order)
    card: int
    x: int  # index of the treatment X
    y: int  # index of the outcome Y

    @property
    def n(self) -> int:
        return len(self.nodes)

    def rows(self, v: int) -> int:
        """Parent configurations of node v."""
        return self.card ** len(self.parents[v])

    def offsets(self) -> list[int]:
        """Where node v's rows start when every node's rows are stacked in node order."""
        out, at = [], 0
        for v in range(self.n):
            out.append(at)
            at += self.rows(v)
        return out

    def n_rows(self) -> int:
        return sum(self.rows(v) for v in range(self.n))

    def config(self, values: torch.Tensor, v: int) -> torch.Tensor:
        """(...,) long: node v's parent-configuration index from node values (..., n)."""
        c = torch.zeros(values.shape[:-1], dtype=torch.long, device=values.device)
        for p in self.parents[v]:
            c = c * self.card + values[..., p]
        return c

    def assignments(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """(card^n, n) long: every joint state of the nodes, C-order."""
        k = torch.arange(self.card**self.n, device=device)[:, None]
        return k // self.card ** torch.arange(self.n - 1, -1, -1, device=device) % self.card


def small_graph(name: str, card: int = 2, field: str = "graph") -> SmallGraph:
    if name not in GRAPHS:
        raise ConfigError(field, f"unknown graph {name!r}; choose one of: {', '.join(GRAPHS)}")
    nodes, edges = GRAPHS[name]
    parents = tuple(tuple(sorted(nodes.index(a) for a, b in edges if b == v)) for v in nodes)
    assert all(p < v for v, ps in enumerate(parents) for p in ps), "node order must be topological"
    return SmallGraph(name, nodes, parents, card, nodes.index("X"), nodes.index("Y"))
