"""End to end: the smoke experiment through run() and through the `windtunnel` command."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from framework.errors import CheckpointError
from framework.experiment import run

ROOT = Path(__file__).resolve().parent.parent
RUN_KEYS = {"task", "model", "params", "steps", "timing", "entropy_mae_bits", "kl_bits", "per_position"}


def test_smoke_experiment_writes_metrics_report_and_plots(compose, tmp_path):
    metrics = run(compose(["experiment=smoke", "runtime.progress=false"]), tmp_path)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["experiment"] == "smoke" and len(on_disk["runs"]) == 8
    assert on_disk["runs"] == json.loads(json.dumps(metrics["runs"]))
    for entry in on_disk["runs"]:
        assert RUN_KEYS <= set(entry)
        assert entry["steps"] == 20
        assert entry["timing"]["train_seconds"] > 0
        assert entry["n_sequences"] >= 2048
        pp = entry["per_position"]
        assert len(pp["h_model"]) == len(pp["h_bayes"]) == len(pp["kl_bits"]) == entry["n_positions"]
        assert entry["kl_bits"] >= 0
        job_dir = tmp_path / f"{entry['task_key']}_{entry['model_key']}"
        assert (job_dir / "checkpoint.pt").exists() and (job_dir / "log.jsonl").exists()
        assert any((job_dir / "tb").iterdir())
    assert {e["model"] for e in on_disk["runs"]} == {"transformer", "mamba", "lstm", "mlp"}
    for name in ("config.yaml", "report.md", "calibration_bijection.png", "calibration_hmm.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert "| hmm | mlp |" in (tmp_path / "report.md").read_text()


def test_resume_skips_finished_jobs(compose, tmp_path):
    overrides = ["experiment=smoke", "runtime.progress=false", "~models.mamba", "~models.lstm", "~models.mlp",
                 "~tasks.hmm"]
    first = run(compose(overrides), tmp_path)
    again = run(compose(overrides + ["resume=true"]), tmp_path)
    assert again["runs"] == first["runs"]


def test_jobs_side_by_side_give_the_same_results_in_the_plans_order(compose, tmp_path):
    """runtime.workers=2: the jobs train in two spawned processes, finishing in any order; every
    result equals the one-after-another run's (one thread each, so the same arithmetic), and a
    second run with resume=true finds them all done."""
    overrides = ["experiment=smoke", "runtime.progress=false", "runtime.threads=1", "~models.lstm", "~models.mlp",
                 "~tasks.hmm"]
    one = run(compose(overrides), tmp_path / "one")
    two = run(compose(overrides + ["runtime.workers=2"]), tmp_path / "two")
    strip = lambda runs: [{k: v for k, v in r.items() if k not in ("timing", "settings_hash")} for r in runs]  # noqa: E731
    assert [r["model_key"] for r in two["runs"]] == ["transformer", "mamba"]
    assert strip(two["runs"]) == strip(one["runs"])
    assert run(compose(overrides + ["runtime.workers=2", "resume=true"]), tmp_path / "two")["runs"] == two["runs"]


def test_a_failing_job_on_a_worker_fails_the_run_by_its_own_error(compose, tmp_path):
    overrides = ["experiment=smoke", "runtime.progress=false", "runtime.workers=2", "~models.lstm", "~models.mlp",
                 "~tasks.hmm"]
    cfg = compose(overrides)
    (tmp_path / "bijection_mamba").mkdir(parents=True)
    (tmp_path / "bijection_mamba" / "checkpoint.pt").write_text("not a checkpoint")  # resume will choke on it
    cfg.resume = True
    with pytest.raises(CheckpointError, match="checkpoint"):
        run(cfg, tmp_path)


def _cli(args, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "framework.cli", *args, f"hydra.run.dir={tmp_path}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_cli_rejects_an_impossible_setting_in_one_line_without_leaving_a_run(tmp_path):
    out_dir = tmp_path / "run"
    proc = _cli(["experiment=smoke", "tasks.bijection.L=9"], out_dir)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [lines[0]] and "tasks.bijection.L" in lines[0], proc.stderr
    assert not out_dir.exists()


@pytest.mark.slow
def test_cli_runs_the_smoke_experiment(tmp_path):
    proc = _cli(["experiment=smoke", "runtime.progress=false"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "metrics.json").read_text())["experiment"] == "smoke"


def test_a_failed_run_leaves_no_metrics_and_resume_finishes_it(compose, tmp_path, monkeypatch):
    import framework.runners.windtunnel.jobs as experiment

    overrides = ["experiment=smoke", "runtime.progress=false", "~models.mamba", "~models.mlp", "~tasks.hmm"]
    real_train = experiment.train
    calls = []

    def failing_train(*args, **kwargs):
        calls.append(kwargs["desc"])
        if len(calls) == 2:
            raise KeyboardInterrupt  # the run is stopped during its second job
        return real_train(*args, **kwargs)

    monkeypatch.setattr(experiment, "train", failing_train)
    with pytest.raises(KeyboardInterrupt):
        run(compose(overrides), tmp_path)
    assert not (tmp_path / "metrics.json").exists()
    assert (tmp_path / "bijection_transformer" / "result.json").exists()
    assert not any(p.name.endswith(".tmp") for p in tmp_path.rglob("*"))

    monkeypatch.setattr(experiment, "train", real_train)
    metrics = run(compose(overrides + ["resume=true"]), tmp_path)
    assert [r["model_key"] for r in metrics["runs"]] == ["transformer", "lstm"]
    assert (tmp_path / "metrics.json").exists()
