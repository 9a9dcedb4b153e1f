"""Discrete SCMs: every bad input is a one-line ConfigError naming its field; noise models imply their CPDs."""
from __future__ import annotations

import numpy as np
import pytest

from framework.causal import queries as q
from framework.causal.graphs import DAG, family
from framework.causal.noise import IndependentNoise, MonotoneNoise, ResponseNoise
from framework.causal.scm import DiscreteSCM, random_scm
from framework.causal.worlds import ValueIn, query
from framework.errors import ConfigError

XY = DAG(("X", "Y"), (("X", "Y"),), name="xy")
CPDS = {"X": [0.5, 0.5], "Y": [[0.7, 0.3], [0.3, 0.7]]}


def error(fn, *args, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        fn(*args, **kwargs)
    assert "\n" not in str(err.value)
    return err.value


def test_rows_must_sum_to_one_naming_the_variable():
    e = error(DiscreteSCM, XY, {"X": [0.5, 0.5], "Y": [[0.7, 0.3], [0.3, 0.6]]})
    assert e.field == "cpds.Y" and "X=1" in e.message and "0.9" in e.message
    e = error(DiscreteSCM, XY, {"X": [0.2, 0.2], "Y": CPDS["Y"]})
    assert e.field == "cpds.X" and "sums to 0.4" in e.message


@pytest.mark.parametrize("cpds, field, text", [
    ({"X": [0.5, 0.5]}, "cpds", "no CPD for Y"),
    ({**CPDS, "Z": [1.0]}, "cpds.Z", "not a variable"),
    ({"X": [0.5, 0.5], "Y": [[0.7, 0.3]]}, "cpds.Y", "expected (2, 2)"),
    ({"X": [1.5, -0.5], "Y": CPDS["Y"]}, "cpds.X", "non-negative"),
    ({"X": [np.nan, 1.0], "Y": CPDS["Y"]}, "cpds.X", "finite"),
])
def test_bad_cpds(cpds, field, text):
    e = error(DiscreteSCM, XY, cpds)
    assert e.field == field and text in e.message


def test_bad_coupling_states_and_graph():
    e = error(DiscreteSCM, XY, CPDS, coupling="antitone")
    assert e.field == "coupling" and "independent" in e.message and "monotone" in e.message
    e = error(DiscreteSCM, XY, CPDS, states={"X": ["a", "b", "c"]})
    assert e.field == "states.X"
    e = error(DiscreteSCM, XY, CPDS, states={"X": ["a", "a"]})
    assert e.field == "states.X" and "repeated" in e.message
    e = error(lambda: DiscreteSCM(DAG(("X", "Y"), (("X", "Y"), ("Y", "X")), name="cyc"), CPDS))
    assert e.field == "edges" and "'cyc'" in e.message


def test_unknown_variables_and_states_in_queries():
    scm = DiscreteSCM(XY, CPDS, states={"X": ["no", "yes"], "Y": ["low", "high"]})
    e = error(q.marginal, scm, "Q")
    assert e.field == "targets" and "'Q'" in e.message
    e = error(q.marginal, scm, "Y", {"Q": 0})
    assert e.field == "evidence" and "'Q'" in e.message
    e = error(q.marginal, scm, "Y", {"X": "maybe"})
    assert e.field == "evidence.X" and "'maybe'" in e.message and "yes" in e.message
    e = error(q.marginal, scm, "Y", {"X": 2})
    assert e.field == "evidence.X" and "out of range" in e.message
    e = error(q.interventional, scm, "Y", {"Q": 1})
    assert e.field == "do"
    e = error(q.interventional, scm, "Y", {"X": "maybe"})
    assert e.field == "do.X"
    e = error(q.counterfactual, scm, "Y", {"X": "no"}, {"Y": "medium"})
    assert e.field == "evidence.Y"
    e = error(query, scm, [{}, {"X": ValueIn(5)}], [(1, "Y")])
    assert e.field == "worlds[1].X" and "no world" in e.message
    e = error(query, scm, [{}], [(3, "Y")])
    assert e.field == "targets" and "out of range" in e.message
    assert q.marginal(scm, "Y", {"X": "yes"})[1] == pytest.approx(0.7)  # names and indices both work


def test_evidence_of_probability_zero_is_a_clear_error():
    scm = DiscreteSCM(XY, {"X": [1.0, 0.0], "Y": CPDS["Y"]})
    e = error(q.marginal, scm, "Y", {"X": 1})
    assert e.field == "evidence" and "probability zero" in e.message
    e = error(q.interventional, scm, "Y", {"X": 0}, {"X": 1})  # contradicts its own intervention
    assert e.field == "evidence" and "probability zero" in e.message and "intervention" in e.message
    det = DiscreteSCM(XY, {"X": [0.5, 0.5], "Y": [[1.0, 0.0], [0.0, 1.0]]})
    e = error(q.counterfactual, det, "Y", {"X": 0}, {"X": 1, "Y": 0})
    assert "probability zero" in e.message
    e = error(q.marginal, scm, "Y", {"X": []})
    assert e.field == "evidence.X" and "no state" in e.message


@pytest.mark.parametrize("noise_cls", [IndependentNoise, MonotoneNoise])
def test_noise_points_and_joint_response_imply_the_cpd(noise_cls):
    rows = np.random.default_rng(0).dirichlet(np.ones(3), size=4)  # (C=4, card=3)
    noise = noise_cls(rows)
    np.testing.assert_allclose(noise.cpd, rows, atol=1e-12)
    w, u = noise.points()
    assert w.sum() == pytest.approx(1.0)
    for c in range(4):
        implied = np.bincount(noise.mechanism(np.full(len(w), c), u), weights=w, minlength=3)
        np.testing.assert_allclose(implied, rows[c], atol=1e-12)
    configs = np.repeat(np.arange(4), 3)[:, None]
    values = np.tile(np.arange(3), 4)[:, None]
    np.testing.assert_allclose(noise.joint_response(configs, values), rows.ravel(), atol=1e-12)
    draws = noise.sample(np.zeros(20_000, dtype=int), np.random.default_rng(1))
    np.testing.assert_allclose(np.bincount(draws, minlength=3) / 20_000, rows[0], atol=0.015)


def test_monotone_snaps_breakpoints_so_touching_intervals_touch():
    noise = MonotoneNoise(np.array([[0.1 + 0.2, 0.7], [0.3, 0.7]]))
    assert noise.joint_response(np.array([[0, 1]]), np.array([[0, 1]]))[0] == 0.0


def test_response_noise_gives_deterministic_counterfactuals():
    # Y = X with prob 0.6, Y = 1 - X with prob 0.4: a custom coupling with the CPDs of neither built-in
    noise = {"X": ResponseNoise([0.5, 0.5], [[0], [1]], 2), "Y": ResponseNoise([0.6, 0.4], [[0, 1], [1, 0]], 2)}
    scm = DiscreteSCM(XY, {}, noise=noise)
    assert scm.coupling == "response"
    np.testing.assert_allclose(scm.rows("Y"), [[0.6, 0.4], [0.4, 0.6]])
    assert q.pn(scm, "X", "Y") == pytest.approx(1.0)  # every unit with X=1, Y=1 has Y = X


def test_sampling_follows_the_cpds_and_do():
    scm = random_scm(family("confounding"), seed=5, cards=2)
    draws = scm.sample(40_000, seed=0)
    assert draws.shape == (40_000, 3)
    y = draws[:, scm.index["Y"]]
    assert y.mean() == pytest.approx(q.marginal(scm, "Y")[1], abs=0.01)
    y_do = scm.sample(40_000, seed=1, do={"X": 1})[:, scm.index["Y"]]
    assert y_do.mean() == pytest.approx(q.interventional(scm, "Y", {"X": 1})[1], abs=0.01)
    mono = scm.with_coupling("monotone")
    assert mono.coupling == "monotone" and mono.sample(5, seed=0).shape == (5, 3)
    np.testing.assert_allclose(mono.cpd("Y"), scm.cpd("Y"), atol=1e-12)


def test_random_scms_are_seeded():
    a, b = random_scm(4, seed=7, cards=(2, 3)), random_scm(4, seed=7, cards=(2, 3))
    assert a.dag == b.dag and all(np.array_equal(a.cpd(v), b.cpd(v)) for v in a.variables)
    assert error(random_scm, 3, seed=0, alpha=0).field == "alpha"
