"""DAGs: validation errors name the field and the graph, topological order, CLadder families, random DAGs."""
from __future__ import annotations

import pytest

from framework.causal.graphs import DAG, FAMILIES, family, random_dag
from framework.errors import ConfigError


def test_cycle_is_a_config_error_naming_graph_and_cycle():
    with pytest.raises(ConfigError) as err:
        DAG(("A", "B", "C"), (("A", "B"), ("B", "C"), ("C", "A")), name="loop")
    assert err.value.field == "edges"
    assert "'loop'" in err.value.message and "cycle" in err.value.message
    assert "A" in err.value.message and "C" in err.value.message


@pytest.mark.parametrize("nodes, edges, field, text", [
    (("A", "B"), (("A", "Q"),), "edges", "not in nodes"),
    (("A", "A"), (), "nodes", "repeats"),
    (("A",), (("A", "A"),), "edges", "self-loop"),
    (("A", "B"), (("A", "B"), ("A", "B")), "edges", "repeats an edge"),
    ((), (), "nodes", "no nodes"),
])
def test_bad_graphs(nodes, edges, field, text):
    with pytest.raises(ConfigError) as err:
        DAG(nodes, edges)
    assert err.value.field == field and text in err.value.message


def test_unknown_latent_and_unknown_node():
    with pytest.raises(ConfigError, match="latent"):
        DAG(("A",), (), frozenset({"Z"}))
    with pytest.raises(ConfigError) as err:
        family("chain").parents("Q")
    assert err.value.field == "variable" and "'Q'" in err.value.message


def test_topological_order_is_deterministic_and_valid():
    dag = DAG(("Y", "M", "X", "Z"), (("X", "M"), ("M", "Y"), ("Z", "Y"), ("X", "Z")))
    order = dag.topological_order()
    assert order == ("X", "M", "Z", "Y")
    for a, b in dag.edges:
        assert order.index(a) < order.index(b)
    assert dag.parents("Y") == ("M", "Z")  # nodes order, the CPD axis order
    assert dag.ancestors("Y") == {"X", "M", "Z"} and dag.descendants("X") == {"M", "Y", "Z"}
    assert dag.mutilate(["M"]).parents("M") == ()


def test_cladder_families():
    assert len(FAMILIES) == 10
    for name in FAMILIES:
        dag = family(name)
        assert {"X", "Y"} <= set(dag.nodes)
    assert family("collider").d_separated("X", "Y") and not family("collider").d_separated("X", "Y", ["V3"])
    assert family("chain").d_separated("X", "Y", ["V2"]) and not family("chain").d_separated("X", "Y")
    assert family("iv").latent == {"V1"} and family("frontdoor").latent == {"V1"} and family("arrowhead").latent == {"V2"}
    assert family("diamondcut").parents("Y") == ("X", "V3")
    with pytest.raises(ConfigError) as err:
        family("triangle-ish")
    assert err.value.field == "family" and "chain" in err.value.message


def test_random_dags_are_seeded_acyclic_and_bounded():
    a, b = random_dag(8, seed=3, edge_prob=0.7, max_parents=2), random_dag(8, seed=3, edge_prob=0.7, max_parents=2)
    assert a == b and a != random_dag(8, seed=4, edge_prob=0.7, max_parents=2)
    for seed in range(50):
        dag = random_dag(6, seed, edge_prob=0.8, max_parents=2)
        assert all(len(dag.parents(v)) <= 2 for v in dag.nodes)
        assert len(dag.topological_order()) == 6
    assert len(random_dag(5, 0, edge_prob=1.0).edges) == 10
    with pytest.raises(ConfigError, match="edge_prob"):
        random_dag(3, 0, edge_prob=1.5)
