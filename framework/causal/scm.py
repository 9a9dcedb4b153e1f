"""Discrete structural causal models: a DAG, CPDs, and explicit exogenous noise with mechanisms.

An SCM is built from a graph + CPDs + a coupling (``independent`` or ``monotone``, see
``framework.causal.noise``), or from random Dirichlet CPDs with a seed. Every SCM records its coupling,
because rung-3 answers depend on it while rung-1 and rung-2 answers depend only on the CPDs.

Conventions: ``cpd(v)`` has shape (*parent cards, card) with parents in ``dag.parents(v)`` order; a
parent configuration's index is its C-order (row-major) index; states are named (``states[v]``) and
addressed by name or by index.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from framework.causal.graphs import DAG, random_dag
from framework.causal.noise import COUPLINGS, Noise
from framework.errors import ConfigError, require

ROW_TOLERANCE = 1e-6  # a CPD row may miss 1 by this much (BIF files print 4-6 digits); it is renormalised

State = int | str  # a state by index (int) or by name (str)


class DiscreteSCM:
    """V_v = f_v(pa_v, U_v) for every node, U_v mutually independent across variables."""

    def __init__(self, dag: DAG, cpds: Mapping[str, object], states: Mapping[str, Sequence[str]] | None = None,
                 coupling: str = "independent", noise: Mapping[str, Noise] | None = None):
        self.dag = dag
        self.variables = dag.nodes
        self.index = {v: i for i, v in enumerate(self.variables)}
        if noise is not None:  # explicit mechanisms: the CPDs are whatever they imply
            missing = [v for v in self.variables if v not in noise]
            require(not missing, "noise", f"no noise model for {', '.join(missing)}")
            cpds = {v: noise[v].cpd for v in self.variables}
            couplings = {n.coupling for n in noise.values()}
            coupling = couplings.pop() if len(couplings) == 1 else "mixed"
        elif coupling not in COUPLINGS:
            raise ConfigError("coupling", f"unknown coupling {coupling!r}; choose one of: {', '.join(COUPLINGS)}")
        self.coupling = coupling
        self._cpds = _validated_cpds(dag, cpds)
        self.cards = {v: self._cpds[v].shape[-1] for v in self.variables}
        self.states = _validated_states(self.cards, states)
        self.noise = dict(noise) if noise is not None else {v: COUPLINGS[coupling](self.rows(v)) for v in self.variables}
        if coupling == "monotone":  # snapped breakpoints: keep the CPDs exactly those the mechanisms imply
            self._cpds = {v: self.noise[v].cpd.reshape(self._cpds[v].shape) for v in self.variables}

    # ------------------------------------------------------------------ structure

    def parents(self, v: str) -> tuple[str, ...]:
        return self.dag.parents(v)

    def card(self, v: str) -> int:
        return self.cards[self.dag.check_node(v)]

    def cpd(self, v: str) -> np.ndarray:
        """(*parent cards, card) float64."""
        return self._cpds[self.dag.check_node(v)]

    def rows(self, v: str) -> np.ndarray:
        """(C, card): one CPD row per parent configuration, C-order."""
        return self.cpd(v).reshape(-1, self.cards[v])

    def parent_cards(self, v: str) -> tuple[int, ...]:
        return tuple(self.cards[p] for p in self.parents(v))

    def config_index(self, v: str, parent_values: np.ndarray) -> np.ndarray:
        """(N,) int: the configuration index of parent values (N, n_parents), in ``parents(v)`` order."""
        cards = self.parent_cards(v)
        if not cards:
            return np.zeros(len(parent_values), dtype=np.int64)
        return np.ravel_multi_index(tuple(np.asarray(parent_values).T), cards)

    def state_index(self, v: str, state: State, field: str = "state") -> int:
        self.dag.check_node(v, field)
        if isinstance(state, (bool, np.bool_)):
            state = int(state)
        if isinstance(state, (int, np.integer)):
            require(0 <= state < self.cards[v], f"{field}.{v}",
                    f"state index {state} out of range: {v} has {self.cards[v]} states {list(self.states[v])}")
            return int(state)
        if state in self.states[v]:
            return self.states[v].index(state)
        raise ConfigError(f"{field}.{v}", f"unknown state {state!r} of {v}; states: {list(self.states[v])}")

    # ------------------------------------------------------------------ derived models

    def with_coupling(self, coupling: str) -> "DiscreteSCM":
        """The same CPDs, another coupling: the same rung-1 and rung-2 answers, other counterfactuals."""
        return DiscreteSCM(self.dag, self._cpds, self.states, coupling)

    def sample(self, n: int, seed: int, do: Mapping[str, State] | None = None) -> np.ndarray:
        """(n, n_vars) int64 state indices in ``variables`` order, drawn through the mechanisms."""
        rng = np.random.default_rng(seed)
        do = {v: self.state_index(v, s, "do") for v, s in (do or {}).items()}
        out = np.zeros((n, len(self.variables)), dtype=np.int64)
        for v in self.dag.topological_order():
            if v in do:
                out[:, self.index[v]] = do[v]
                continue
            configs = self.config_index(v, out[:, [self.index[p] for p in self.parents(v)]])
            out[:, self.index[v]] = self.noise[v].sample(configs, rng)
        return out

    def __repr__(self) -> str:
        return f"DiscreteSCM({self.dag.name!r}, {len(self.variables)} variables, coupling={self.coupling!r})"


def _validated_cpds(dag: DAG, cpds: Mapping[str, object]) -> dict[str, np.ndarray]:
    extra = [v for v in cpds if v not in dag.nodes]
    require(not extra, f"cpds.{extra[0] if extra else ''}", f"not a variable of graph {dag.name!r}")
    missing = [v for v in dag.nodes if v not in cpds]
    require(not missing, "cpds", f"no CPD for {', '.join(missing)}")
    arrays, out = {v: np.asarray(cpds[v], dtype=np.float64) for v in dag.nodes}, {}
    for v in dag.topological_order():
        table, parents = arrays[v], dag.parents(v)
        require(table.ndim >= 1 and table.shape[-1] >= 1, f"cpds.{v}", "needs at least one state")
        pcards = tuple(out[p].shape[-1] for p in parents)
        card = table.shape[-1]
        if table.shape != (*pcards, card):
            require(table.shape == (int(np.prod(pcards)), card), f"cpds.{v}",
                    f"shape {table.shape} does not fit parents {list(parents)} with {list(pcards)} states: "
                    f"expected {(*pcards, card)}")
            table = table.reshape(*pcards, card)
        require(bool(np.all(np.isfinite(table))) and bool(np.all(table >= 0)), f"cpds.{v}",
                "entries must be finite and non-negative")
        sums = table.sum(axis=-1)
        bad = np.argwhere(np.abs(sums - 1.0) > ROW_TOLERANCE)
        if len(bad):
            where = ", ".join(f"{p}={i}" for p, i in zip(parents, bad[0])) or "no parents"
            raise ConfigError(f"cpds.{v}", f"row ({where}) sums to {sums[tuple(bad[0])]:.6g}, not 1")
        out[v] = table / sums[..., None]
    return out


def _validated_states(cards: dict[str, int], states: Mapping[str, Sequence[str]] | None) -> dict[str, tuple[str, ...]]:
    states = dict(states or {})
    extra = [v for v in states if v not in cards]
    require(not extra, f"states.{extra[0] if extra else ''}", "not a variable of the graph")
    out = {}
    for v, card in cards.items():
        names = tuple(str(s) for s in states.get(v, range(card)))
        require(len(names) == card, f"states.{v}", f"{len(names)} state names for {card} CPD states")
        require(len(set(names)) == card, f"states.{v}", f"repeated state name in {list(names)}")
        out[v] = names
    return out


def random_cpds(dag: DAG, seed: int, cards: int | Mapping[str, int] | Sequence[int] = 2,
                alpha: float = 1.0) -> dict[str, np.ndarray]:
    """Independent Dirichlet(alpha) rows for every CPD. ``cards``: one count, a per-variable map, or a
    tuple of counts to draw from uniformly per variable."""
    require(alpha > 0, "alpha", f"must be > 0, got {alpha}")
    rng = np.random.default_rng(seed)
    if isinstance(cards, Mapping):
        card = {v: int(cards[v]) for v in dag.nodes}
    elif isinstance(cards, (int, np.integer)):
        card = {v: int(cards) for v in dag.nodes}
    else:
        card = {v: int(rng.choice(list(cards))) for v in dag.nodes}
    for v, k in card.items():
        require(k >= 1, f"cards.{v}", f"must be >= 1, got {k}")
    return {v: rng.dirichlet(np.full(card[v], alpha), size=tuple(card[p] for p in dag.parents(v)))
            for v in dag.nodes}


def random_scm(dag: DAG | int, seed: int, cards: int | Mapping[str, int] | Sequence[int] = 2, alpha: float = 1.0,
               coupling: str = "independent", edge_prob: float = 0.5, max_parents: int | None = None) -> DiscreteSCM:
    """An SCM with Dirichlet CPDs on ``dag``, or on a random DAG of ``dag`` nodes drawn from the same seed."""
    if isinstance(dag, (int, np.integer)):
        dag = random_dag(int(dag), seed, edge_prob, max_parents)
    return DiscreteSCM(dag, random_cpds(dag, seed + 1, cards, alpha), coupling=coupling)

