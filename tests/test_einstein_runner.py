"""The einstein runner end to end (quick experiment), resume, bad input before compute; the text
learner (callable adapter and an OpenAI-compatible server on 127.0.0.1); the PFN learner and its
regression_context task at tiny size."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from framework.adapters import AnswerStore
from framework.adapters.fakeserver import FakeChatServer
from framework.errors import ConfigError
from framework.einstein import build_learner, run_einstein
from framework.einstein.learners.text import copy_nearest, read_answers
from framework.einstein.protocol import fit_data
from framework.einstein.worlds import build_world
from framework.experiment import run
from framework.tasks import build_task

QUIET = ["runtime.progress=false"]


def test_quick_experiment_end_to_end(compose, tmp_path):
    metrics = run(compose(["experiment=einstein/quick", *QUIET]), tmp_path)
    runs = {(r["world"], r["learner"]): r for r in metrics["runs"]}
    assert metrics["runner"] == "einstein" and len(runs) == 2 * 4
    for world in ("w1_velocity", "w4_yukawa"):
        assert runs[world, "oracle"]["t_median"] == 1.0 and runs[world, "old_theory"]["t_median"] == 0.0
        assert runs[world, "oracle"]["symbolic_recovery"] == 1.0 and runs[world, "knn"]["symbolic_recovery"] is None
        for r in (runs[world, "knn"], runs[world, "poly"]):
            assert 0 <= r["t_median"] <= 1 and r["t_median_n"] == 2 and r["t_median_stderr"] >= 0
            assert [c["n_anomalies"] for c in r["anomaly_curve"]] == [0, 2, 8]
    for key in ("t_median", "frac_t_gt_half", "nmse", "in_regime_fit", "symbolic_recovery", "dl_bits"):
        assert {key, f"{key}_stderr", f"{key}_n"} <= set(runs["w1_velocity", "poly"])
    report = (tmp_path / "einstein_report.md").read_text()
    assert "| w4_yukawa | poly |" in report and "## Reading" in report and "einstein_report.md" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "einstein_w1_velocity.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "metrics.json").read_text())["runs"][0]["world"] == "w1_velocity"


def test_resume_skips_finished_pairs(compose, tmp_path, monkeypatch):
    run(compose(["experiment=einstein/quick", *QUIET, "learners=[knn,poly]", "worlds=[w1_velocity]"]), tmp_path)
    first = json.loads((tmp_path / "metrics.json").read_text())
    (tmp_path / "metrics.json").unlink()
    (tmp_path / "pairs" / "w1_velocity__poly.json").unlink()  # as if killed after the first pair
    import framework.einstein.protocol as protocol

    calls = []
    real = protocol.run_einstein
    monkeypatch.setattr(protocol, "run_einstein", lambda *a, **k: calls.append(a[1].name) or real(*a, **k))
    again = run(compose(["experiment=einstein/quick", *QUIET, "learners=[knn,poly]", "worlds=[w1_velocity]",
                         "resume=true"]), tmp_path)
    assert calls == ["poly"]
    strip = lambda m: [{k: v for k, v in r.items() if k != "timing"} for r in m["runs"]]  # noqa: E731
    assert strip(again) == strip(first)
    with pytest.raises(ConfigError) as err:  # the finished pair was run with other settings
        run(compose(["experiment=einstein/quick", *QUIET, "learners=[knn,poly]", "worlds=[w1_velocity]",
                     "resume=true", "n_instances=3"]), tmp_path)
    assert err.value.field == "resume"


@pytest.mark.parametrize("overrides, field", [
    (["worlds=[w7_nope]"], "worlds.w7_nope.name"),
    (["learners=[oracle2]"], "learners.oracle2.name"),
    (["+learner_options.knn.sees=[train,probes]"], "learners.knn.sees"),
    (["+learner_options.poly.sees=[train,laws]"], "learners.poly.sees"),
    (["+world_options.w1_velocity.n_anomaly=0"], "worlds.w1_velocity.n_anomaly"),
    (["+world_options.w4_yukawa.ranges={lam: [1e-9, 1e12]}"], "worlds.w4_yukawa.ranges.lam"),
    (["anomaly_counts=[0,99]"], "anomaly_counts"),
    (["n_instances=0"], "n_instances"),
    (["+learner_options.nope.k=3"], "learner_options.nope"),
    (["learners=[knn,knn]"], "learners[1]"),
    (["learners=[{name: text, adapter: {name: openai}}]"], "learners.text.adapter.model"),
])
def test_bad_input_is_one_line_error_before_compute(compose, tmp_path, monkeypatch, overrides, field):
    from framework.einstein.worlds.base import World

    monkeypatch.setattr(World, "instance", lambda *a, **k: pytest.fail("compute started before validation"))
    with pytest.raises(ConfigError) as err:
        run(compose(["experiment=einstein/quick", *QUIET, *overrides]), tmp_path / "run")
    assert err.value.field == field and "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # a Hydra -m subprocess: ~30 s idle, ~2 min on a busy 2-core machine
def test_sweep_over_seeds_at_tiny_size(tmp_path):
    cmd = [sys.executable, "-m", "framework.cli", "-m", "experiment=einstein/quick", "seed=0,1", "learners=[oracle,knn]",
           "worlds=[w1_velocity]", "runtime.progress=false", f"hydra.sweep.dir={tmp_path}"]
    done = subprocess.run(cmd, cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    jobs = sorted(p.parent for p in tmp_path.glob("*/metrics.json"))
    assert len(jobs) == 2 and {json.loads((j / "metrics.json").read_text())["seed"] for j in jobs} == {0, 1}
    report = subprocess.run([sys.executable, "-m", "framework.sweep_report", str(tmp_path)], capture_output=True,
                            text=True, timeout=120)
    assert report.returncode == 0, report.stderr[-2000:]
    assert "t_median" in (tmp_path / "summary.md").read_text()


# --- the text learner --------------------------------------------------------------------------

def test_read_answers():
    assert read_answers("Q1: 3.5\n**Q2:** 1.2e3\nQ3: n/a", 3)[:2] == [3.5, 1200.0]
    assert math.isnan(read_answers("Q1: 3.5\nQ2: 1\nQ3: n/a", 3)[2])
    assert read_answers("The answer is 4.25", 1) == [4.25] and all(map(math.isnan, read_answers(None, 2)))


def test_text_prompt_holds_the_data_and_probe_inputs_never_their_answers(tmp_path):
    inst = build_world("w1_velocity").instance(0)
    learner = build_learner({"name": "text", "store": str(tmp_path / "a.jsonl")})
    learner.fit(fit_data(learner, inst, 2), np.random.default_rng(0))
    prompts = [p for p, _, _ in learner.prompts(inst.x_probe)]
    text = "\n".join(prompts)
    assert len(prompts) == 4 and all(v in text for v in inst.variables) and inst.output in text
    assert f"{inst.y_anomaly[0]:.6g}" in text and f"{inst.x_probe[0, 0]:.6g}" in text
    for y in (*inst.y_probe_new, *inst.y_probe_old):
        assert f"={y:.6g}" not in text
    assert copy_nearest(prompts[0]).count("\n") == 7  # the stand-in answers every query


def test_text_learner_through_a_callable_resumes_from_its_store(tmp_path):
    learner = {"name": "text", "store": str(tmp_path / "answers.jsonl")}
    first = run_einstein("w1_velocity", learner, n_instances=1, seed=0, anomaly_counts=[0])
    with AnswerStore(tmp_path / "answers.jsonl") as store:
        asked = len(store)
    # 32 probes in prompts of 8 for each of two fits (0 and 8 anomalies), and for the main fit also the
    # 64 in-regime control points and the 72 seen points (description length): 4 + 4 + 8 + 9
    assert asked == 25
    again = run_einstein("w1_velocity", learner, n_instances=1, seed=0, anomaly_counts=[0])
    with AnswerStore(tmp_path / "answers.jsonl") as store:
        assert len(store) == asked
    assert again["scores"] == first["scores"] and first["scores"]["t_median"]["n"] == 1
    assert all(v is not None for v in first["instances"][0]["probes"]["y_hat"])


def test_text_learner_against_an_openai_compatible_server(tmp_path):
    with FakeChatServer(reply=lambda prompt: "Sure.\n" + copy_nearest(prompt)) as server:
        adapter = {"name": "openai", "model": "fake-model", "base_url": server.base_url, "retries": 0, "timeout_s": 10.0}
        learner = {"name": "text", "adapter": adapter, "store": str(tmp_path / "a.jsonl")}
        r = run_einstein("w4_yukawa", learner, n_instances=1, seed=0, anomaly_counts=[0])
        sent = server.prompts()
        assert len(sent) == 25 and all("Q1:" in p for p in sent)  # as in the callable test above
        inst = build_world("w4_yukawa").instance(r["instances"][0]["seed"])
        assert not any(f"={y:.6g}" in p for p in sent for y in inst.y_probe_new)
        same = run_einstein("w4_yukawa", learner, n_instances=1, seed=0, anomaly_counts=[0])
        assert len(server.prompts()) == 25 and same["scores"] == r["scores"]  # all answers from the store
    assert np.isfinite(r["scores"]["t_median"]["mean"]) and r["instances"][0]["probes"]["y_hat"][0] is not None


# --- the PFN learner and its task --------------------------------------------------------------

SMALL = {"name": "regression_context", "n_context": 5, "n_probe": 2, "x_bins": 8, "y_bins": 8, "noise": 0.05,
         "amplitudes": [-0.25, 0.0, 0.25], "bends": [0.0, 1.0], "shapes": ["square", "exp"]}


def test_regression_context_posterior_matches_reference():
    task = build_task(SMALL)
    batch = task.sample(4, torch.Generator().manual_seed(0))
    assert batch.tokens.shape == (4, task.seq_len) and task.n_hypotheses == 9 * 2 * 2
    assert torch.allclose(batch.posterior, task.posterior_reference(batch.tokens), atol=1e-9, rtol=0)
    assert torch.allclose(batch.posterior.sum(-1), torch.ones(4, 2, dtype=torch.float64))
    # the context lies in the lower half, queries at the scored positions
    x_ctx, _, _ = task.decode(batch.tokens)
    assert int(x_ctx.max()) < 4 and bool((batch.tokens[:, task.positions()] == task.query).all())
    # a sharp context (tiny noise, many points) puts the posterior on the law that made it
    sharp = build_task({**SMALL, "noise": 0.002, "n_context": 40, "max_spread": 40})
    b = sharp.sample(64, torch.Generator().manual_seed(1))
    w = sharp.hypothesis_posterior(b.tokens)
    assert float(w.max(-1).values.median()) > 0.3


def test_pfn_learner_trains_once_at_tiny_size_and_predicts(tmp_path):
    from framework.einstein.learners.pfn import _TRAINED

    cfg = {"name": "pfn", "steps": 30, "batch_size": 16, "cache_dir": str(tmp_path),
           "task": {"n_context": 12, "amplitudes": [-0.25, 0.0, 0.25], "bends": [0.0, 1.0], "shapes": ["square"]},
           "model": {"name": "transformer", "d_model": 16, "n_layers": 1, "n_heads": 2, "d_ff": 32}}
    before = len(_TRAINED)
    r = run_einstein("w1_velocity", cfg, n_instances=2, seed=0, anomaly_counts=[0])
    assert len(_TRAINED) == before + 1  # one training for four fits
    y_hat = np.asarray(r["instances"][0]["probes"]["y_hat"], dtype=float)
    assert np.all(np.isfinite(y_hat)) and 0 <= r["scores"]["t_median"]["mean"] <= 1
    [job] = [p.parent for p in tmp_path.glob("*/checkpoint.pt")]
    loaded = run_einstein("w1_velocity", {"name": "pfn", "checkpoint": str(job)}, n_instances=2, seed=0, anomaly_counts=[0])
    assert loaded["scores"]["t_median"] == r["scores"]["t_median"]
    with pytest.raises(ConfigError) as err:
        build_learner({"name": "pfn", "checkpoint": str(tmp_path / "missing")})
    assert err.value.field == "learner.checkpoint"
