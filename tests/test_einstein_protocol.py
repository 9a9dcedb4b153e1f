"""The Einstein-test protocol: reference learners bound the scores exactly, results are JSON,
bad input is refused before compute, the plot renders, every learner runs."""
from __future__ import annotations

import json

import numpy as np
import pytest

from framework.errors import ConfigError
from framework.einstein import LEARNERS, WORLDS, build_learner, plot_world, run_einstein
from framework.einstein.protocol import fit_data, score_instance
from framework.einstein.worlds import build_world

ALL = [{"name": n} for n in WORLDS] + [{"name": "w2_kinetic", "query": "inverse"}]
IDS = [c["name"] + ("_inverse" if c.get("query") else "") for c in ALL]


@pytest.mark.parametrize("world", ALL, ids=IDS)
def test_oracle_scores_one_and_old_theory_zero(world):
    oracle = run_einstein(world, "oracle", n_instances=2, seed=1, anomaly_counts=[0])
    old = run_einstein(world, "old_theory", n_instances=2, seed=1, anomaly_counts=[0])
    for key in ("t_median", "t_mean", "frac_t_gt_half"):
        assert oracle["scores"][key]["mean"] == 1.0
        assert old["scores"][key]["mean"] == 0.0
    assert oracle["scores"]["nmse"]["mean"] == 0.0 and old["scores"]["nmse_vs_old"]["mean"] == 1.0
    assert oracle["scores"]["symbolic_recovery"]["mean"] == 1.0
    assert old["scores"]["symbolic_recovery"]["mean"] == 0.0
    assert oracle["scores"]["in_regime_fit"]["mean"] == 0.0
    assert old["scores"]["in_regime_fit"]["mean"] <= 0.1  # TRAIN_SIGMA: the old law fits the regime
    assert [c["t_mean"]["mean"] for c in oracle["anomaly_curve"]] == [1.0, 1.0]
    json.dumps(oracle, allow_nan=False)


def test_results_shape():
    r = run_einstein("w1_velocity", "poly", n_instances=3, seed=0)
    assert r["anomaly_counts"] == [0, 1, 2, 4, 8]
    assert [c["n_anomalies"] for c in r["anomaly_curve"]] == r["anomaly_counts"]
    assert set(r["scores"]) >= {"t_median", "frac_t_gt_half", "nmse", "in_regime_fit", "dl_data_bits", "symbolic_recovery"}
    assert r["scores"]["symbolic_recovery"] is None  # poly has no formula
    assert r["scores"]["t_median"]["n"] == 3 and r["scores"]["t_median"]["stderr"] >= 0
    inst = r["instances"][0]
    assert len(inst["probes"]["y_hat"]) == len(inst["probes"]["y_new"]) == 32
    json.dumps(r, allow_nan=False)


def test_learners_never_see_probes_or_law_names():
    world = build_world("w1_velocity")
    inst = world.instance(0)
    seen = {}
    for name in LEARNERS:
        learner = build_learner(name)
        data = fit_data(learner, inst, 3)
        fields = {k for k, v in vars(data).items() if v is not None}
        seen[name] = fields
        assert not any(np.shares_memory(v, inst.x_probe) for v in vars(data).values() if isinstance(v, np.ndarray))
        if not learner.reference:
            assert data.laws is None
    assert "laws" in seen["oracle"] and "laws" not in seen["mdl"]
    assert seen["knn"] == {"x_train", "y_train", "x_anomaly", "y_anomaly"}


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"world": "w7_nope", "learner": "poly"}, "world.name"),
        ({"world": "w1_velocity", "learner": "oracle2"}, "learner.name"),
        ({"world": "w1_velocity", "learner": {"name": "knn", "sees": ["train", "probes"]}}, "learner.sees"),
        ({"world": "w1_velocity", "learner": {"name": "mdl", "sees": ["train", "laws"]}}, "learner.sees"),
        ({"world": "w1_velocity", "learner": {"name": "mlp", "sees": ["train", "law_names"]}}, "learner.sees"),
        ({"world": "w1_velocity", "learner": {"name": "poly", "sees": ["train", "telemetry"]}}, "learner.sees"),
        ({"world": "w1_velocity", "learner": {"name": "poly", "degree": 0}}, "learner.degree"),
        ({"world": {"name": "w1_velocity", "n_anomaly": 0}, "learner": "poly"}, "world.n_anomaly"),
        ({"world": {"name": "w1_velocity", "ranges": {"c": [1.0, 1e12]}}, "learner": "poly"}, "world.ranges.c"),
        ({"world": "w1_velocity", "learner": "poly", "anomaly_counts": [0, 99]}, "anomaly_counts"),
        ({"world": "w1_velocity", "learner": "poly", "n_instances": 0}, "n_instances"),
    ],
)
def test_bad_input_is_one_line_error_before_compute(monkeypatch, kwargs, field):
    from framework.einstein.worlds.base import World

    def no_compute(*args, **kw):
        raise AssertionError("compute started before validation")

    monkeypatch.setattr(World, "instance", no_compute)
    with pytest.raises(ConfigError) as err:
        run_einstein(**{"n_instances": 1, **kwargs})
    assert err.value.field == field and "\n" not in str(err.value)


def test_an_instance_with_an_empty_anomaly_set_is_refused():
    world = build_world("w1_velocity")
    inst = world.instance(0)
    inst.x_anomaly, inst.y_anomaly, inst.sd_anomaly = inst.x_anomaly[:0], inst.y_anomaly[:0], inst.sd_anomaly[:0]
    from framework.einstein.learners import learner_config

    with pytest.raises(ConfigError) as err:
        score_instance(world, learner_config("poly"), inst, [0], 0)
    assert err.value.field == "world.n_anomaly"


@pytest.mark.parametrize("learner", ["poly", "spline", "knn", "mlp"])
def test_correlational_learners_run_and_fit_their_regime(learner):
    r = run_einstein("w4_yukawa", learner, n_instances=2, seed=0, anomaly_counts=[0])
    s = r["scores"]
    assert s["t_median"]["n"] == 2 and 0 <= s["t_median"]["mean"] <= 1
    assert np.isfinite(s["in_regime_fit"]["mean"])


def test_gplearn_runs_beside_this_scikit_learn():
    import gplearn
    import sklearn

    r = run_einstein("w1_velocity", {"name": "gplearn", "population_size": 100, "generations": 2}, n_instances=1, seed=0, anomaly_counts=[0])
    assert gplearn.__version__ == "0.4.3" and sklearn.__version__.startswith("1.")
    assert r["instances"][0]["formula"] is not None and r["scores"]["symbolic_recovery"]["n"] == 1


def test_plot_world_renders(tmp_path):
    results = [run_einstein("w1_velocity", name, n_instances=2, seed=0, anomaly_counts=[0, 4]) for name in ("oracle", "old_theory", "knn")]
    fig = plot_world(results, tmp_path / "w1.png")
    assert (tmp_path / "w1.png").stat().st_size > 10_000 and len(fig.axes) == 2
    with pytest.raises(ValueError):
        plot_world(results + [run_einstein("w4_yukawa", "oracle", n_instances=1, anomaly_counts=[0])])
