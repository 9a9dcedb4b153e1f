"""The bnlearn networks bundled in pgmpy load offline from the wheel, and convert to and from pgmpy exactly."""
from __future__ import annotations

import socket

import numpy as np
import pytest

from framework.causal import queries as q
from framework.causal.convert import from_pgmpy, to_pgmpy
from framework.causal.networks import _bif_text, available_networks, load_bayesian_network, load_network
from framework.causal.scm import random_scm
from framework.errors import ConfigError


def test_bundled_networks_are_listed():
    names = available_networks()
    for name in ("asia", "sachs", "alarm", "child", "insurance", "cancer", "survey", "hepar2", "win95pts"):
        assert name in names
    assert len(names) >= 24


def test_loading_never_touches_the_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a bundled network tried to reach the internet")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    _bif_text.cache_clear()  # force a fresh read of the wheel's file
    scm = from_pgmpy(load_bayesian_network("survey"))
    assert len(scm.variables) == 6 and scm.coupling == "independent"
    assert load_network("asia", "monotone").coupling == "monotone"


def test_unknown_network():
    with pytest.raises(ConfigError) as err:
        load_network("not-a-network")
    assert err.value.field == "network" and "alarm" in err.value.message


def test_alarm_structure_and_states():
    scm = load_network("alarm")
    assert len(scm.variables) == 37 and len(scm.dag.edges) == 46
    assert scm.states["HR"] == ("LOW", "NORMAL", "HIGH")
    assert scm.parents("HR") == ("CATECHOL",)
    np.testing.assert_allclose(scm.rows("HR"), [[0.05, 0.9, 0.05], [0.01, 0.09, 0.9]])


def test_pgmpy_round_trip_keeps_every_cpd():
    bn = load_bayesian_network("asia")
    scm = from_pgmpy(bn)
    back = from_pgmpy(to_pgmpy(scm))
    for v in scm.variables:
        np.testing.assert_array_equal(scm.cpd(v), back.cpd(v))
        assert scm.states[v] == back.states[v]
    rnd = random_scm(5, seed=2, cards=(2, 3), edge_prob=0.6)
    model = to_pgmpy(rnd)
    assert model.check_model()
    from pgmpy.inference import VariableElimination

    v = rnd.dag.topological_order()[-1]
    np.testing.assert_allclose(VariableElimination(model).query([v], show_progress=False).values, q.marginal(rnd, v),
                               atol=1e-12)


def test_counterfactuals_on_a_bundled_network_are_normalised_and_coupling_dependent():
    ind, mono = load_network("asia"), load_network("asia", "monotone")
    ask = dict(targets="dysp", do={"either": "no"}, evidence={"either": "yes", "dysp": "yes"})
    a, b = q.counterfactual(ind, **ask), q.counterfactual(mono, **ask)
    assert a.sum() == pytest.approx(1.0) and b.sum() == pytest.approx(1.0)
    assert abs(a[0] - b[0]) > 1e-3
