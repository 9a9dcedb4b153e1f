"""The continual runner: every strategy and plugin on every stream through the runner, the four
architectures, bad input refused before compute, exact resume after a kill, and the leaderboard."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import framework.runners.continual.jobs as jobs
from framework.continual.plasticity import PLASTICITY
from framework.continual.strategies import STRATEGIES
from framework.errors import ConfigError
from framework.experiment import plan, run

ROOT = Path(__file__).resolve().parent.parent
METHODS = [*STRATEGIES, *PLASTICITY]  # every method/<name>.yaml: the strategies, then naive + each plugin
STREAMS = ["vocab_shift", "prior_shift", "task_sequence", "permuted_tokens"]
TINY = ["experiment=continual/smoke", "runtime.progress=false", "report=false", "~models.mamba", "~models.lstm",
        "~models.mlp", "stream.n_experiences=2", "stream.n_train=16", "stream.n_test=8", "budget.batch_size=8",
        "eval_batch_size=8", "probe_sequences=8", "+strategy.mem_size=8", "+strategy.patterns_per_exp=8",
        "+strategy.agem_sample_size=8", "models.transformer.d_model=8", "models.transformer.d_ff=16"]
# plugin settings that act within a 2-step experience
ACTIVE = {"cbp": "plugins=[{name: cbp, replacement_rate: 0.5, maturity: 1}]",
          "redo": "plugins=[{name: redo, tau: 0.9, every: 1}]"}

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"), pytest.mark.filterwarnings("ignore::UserWarning")]


def without_timing(metrics: dict) -> str:
    strip = {k: v for k, v in metrics.items() if k != "timing"}
    strip["runs"] = [{k: v for k, v in r.items() if k != "timing"} for r in metrics["runs"]]
    return json.dumps(strip, indent=2)


def overrides(method: str, stream: str, *extra: str) -> list[str]:
    return [*TINY, f"stream={stream}", f"method={method}", *([ACTIVE[method]] if method in ACTIVE else []), *extra]


@pytest.mark.parametrize("stream", ["vocab_shift", "prior_shift", "permuted_tokens"])
def test_every_strategy_and_plugin_runs_on_the_stream_through_the_runner(compose, tmp_path, stream):
    # (task_sequence: every method runs in the resume test below)
    for method in METHODS:
        metrics = run(compose(overrides(method, stream, "fresh_baseline=false")), tmp_path / method)
        entry = metrics["runs"][0]
        assert (entry["stream"], entry["model"]) == (stream, "transformer")
        assert entry["method"] == ({"cbp": "naive+cbp", "shrink_perturb": "naive+shrink_perturb",
                                    "l2_init": "naive+l2_init", "redo": "naive+redo"}.get(method, method))
        rows = 1 if method == "joint" else 2
        assert len(entry["matrix"]) == rows and all(len(r) == 2 for r in entry["matrix"])
        assert all(v >= 0 for r in entry["matrix"] for v in r)
        assert entry["acc_bits"] == pytest.approx(sum(entry["matrix"][-1]) / 2)
        if method != "joint":
            R = entry["matrix"]
            assert entry["bwt_bits"] == pytest.approx(R[1][0] - R[0][0])
            assert entry["forgetting_bits"] == pytest.approx(R[1][0] - R[0][0])  # one earlier experience: the same
            assert len(entry["features"]["effective_rank"]) == 2 and entry["sign"].startswith("bits")
        if method in ACTIVE:
            assert entry["resets"] > 0


def test_the_four_architectures_run_naive_and_a_plasticity_method(compose, tmp_path):
    base = ["experiment=continual/smoke", "runtime.progress=false", "stream.n_experiences=2", "stream.n_train=16",
            "stream.n_test=8", "budget.batch_size=8", "probe_sequences=8"]
    naive = run(compose(base), tmp_path / "naive")
    assert [r["architecture"] for r in naive["runs"]] == ["transformer", "mamba", "lstm", "mlp"]
    params = [r["params"] for r in naive["runs"]]
    assert max(params) <= 1.02 * params[0] and min(params) >= 0.98 * params[0]  # capacity matched (match_to)
    redo = run(compose(base + ["method=redo", ACTIVE["redo"], "fresh_baseline=false", "report=false"]), tmp_path / "redo")
    for entry in redo["runs"]:
        assert entry["plugins"] == "redo" and entry["resets"] > 0, entry["architecture"]
    r = naive["runs"][0]
    assert len(r["plasticity"]) == 2 and r["plasticity"][0] == pytest.approx(r["learned_bits"][0] / r["fresh_kl_bits"][0])
    out = tmp_path / "naive"
    assert (out / "report.md").exists() and (out / "curves.png").exists()
    assert (out / "R_permuted_tokens_naive_transformer.png").exists()
    job = out / "permuted_tokens_naive_lstm"
    assert (job / "log.txt").read_text().count("KL_bits_Exp") >= 2  # Avalanche's TextLogger, fed our metric
    assert "training_loss" in (job / "csv" / "training_results.csv").read_text()
    assert list((job / "tb").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("override, field", [
    ("strategy.name=icarl", "strategy.name"),
    ("plugins=[{name: dropout}]", "plugins[0].name"),
    ("stream.name=split_mnist", "stream.name"),
    ("stream.n_experiences=1", "stream.n_experiences"),
    ("+strategy.mem_size=0", "strategy.mem_size"),
    ("plugins=[{name: cbp, replacement_rate: 1.5}]", "plugins[0].replacement_rate"),
    ("plugins=[{name: redo, tau: 0.0}]", "plugins[0].tau"),
    ("plugins=[{name: shrink_perturb, shrink: -0.1}]", "plugins[0].shrink"),
    ("+strategy.train_epochs=3", "strategy.train_epochs"),
    ("checkpoint_every=-1", "checkpoint_every"),
    (("models.lstm.n_layers=1", "models.lstm.match_params=false"), "plugins[0]"),  # with cbp: a 1-layer LSTM has no unit that may be reset
    ("method=joint", "plugins"),  # with cbp: joint has no later experience to keep plastic
])
def test_bad_input_is_refused_before_compute_naming_the_field(compose, override, field):
    override = (override,) if isinstance(override, str) else override
    args = ["experiment=continual/smoke", "plugins=[{name: cbp}]", *override]
    if override[0].startswith("method="):
        args = ["experiment=continual/smoke", *override, "plugins=[{name: cbp}]"]
    with pytest.raises(ConfigError) as err:
        plan(compose(args))
    assert err.value.field == field, err.value
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_the_cli_refuses_a_bad_stream_in_one_line_before_creating_anything(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "framework.cli", "experiment=continual/smoke", "stream.n_experiences=1",
                           f"hydra.run.dir={out}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "windtunnel: invalid setting: stream.n_experiences: a stream needs at least 2 experiences (and at most 10000), got 1"]
    assert not out.exists()


class Killed(Exception):
    pass


def test_a_run_interrupted_after_any_experience_resumes_to_identical_metrics(compose, tmp_path, monkeypatch):
    """Every strategy and plugin on task_sequence: killed after its first checkpoint (the state of a
    finished experience: importances, buffers, teacher, unit statistics, RNGs), resumed, and
    compared with an uninterrupted run."""
    real = jobs.save_torch
    for method in METHODS:
        args = overrides(method, "task_sequence", "stream.n_experiences=3", "report=false", "fresh_baseline=false")
        reference = run(compose(args), tmp_path / method / "reference")
        calls = []

        def dying(path, obj):
            real(path, obj)
            calls.append(path)
            raise Killed

        monkeypatch.setattr(jobs, "save_torch", dying)
        with pytest.raises(Killed):
            run(compose(args), tmp_path / method / "killed")
        monkeypatch.setattr(jobs, "save_torch", real)
        if method != "joint":  # joint has one experience: nothing left to resume but the report
            state = torch.load(calls[0], weights_only=True)
            assert state["experience"] == 1
        resumed = run(compose(args + ["resume=true"]), tmp_path / method / "killed")
        assert without_timing(resumed) == without_timing(reference), method


def _windtunnel(args, run_dir):
    return subprocess.Popen([sys.executable, "-m", "framework.cli", *args, f"hydra.run.dir={run_dir}"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


@pytest.mark.slow
def test_kill_9_at_random_points_then_resume_gives_identical_metrics(tmp_path):
    args = ["experiment=continual/smoke", "runtime.progress=false", "runtime.threads=1", "~models.mamba",
            "~models.mlp", "method=ewc", "plugins=[{name: cbp, replacement_rate: 0.05, maturity: 2}]",
            "stream.n_experiences=12", "stream.n_train=256", "stream.n_test=32", "checkpoint_every=5"]
    reference = _windtunnel(args, tmp_path / "reference")
    assert reference.wait(timeout=600) == 0, reference.stderr.read()
    run_dir = tmp_path / "killed"
    rng = random.Random(1234)
    kills = 0
    proc = _windtunnel(args, run_dir)
    for _ in range(3):
        deadline = time.time() + 120  # a random moment after the run has started working
        while not list(run_dir.glob("*/fresh.json")) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 2.0))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
        if (run_dir / "metrics.json").exists():  # written last, atomically: the kill came after the work was done
            json.loads((run_dir / "metrics.json").read_text())
        proc = _windtunnel(args + ["resume=true"], run_dir)
    assert proc.wait(timeout=600) == 0, proc.stderr.read()
    assert kills >= 2, "the run finished before it could be interrupted; make it longer"
    expected = json.loads((tmp_path / "reference" / "metrics.json").read_text())
    got = json.loads((run_dir / "metrics.json").read_text())
    assert without_timing(got) == without_timing(expected)


def _leaderboard(sweep_dir, *extra):
    cmd = [sys.executable, "-m", "framework.cli", "experiment=continual/leaderboard", "hydra/launcher=basic",
           "hydra.sweeper.params.method='naive,cbp'", "hydra.sweeper.params.stream=permuted_tokens",
           "hydra.sweeper.params.seed='0,1'", "stream.n_experiences=2", "stream.n_train=16", "stream.n_test=8",
           "budget.batch_size=8", "probe_sequences=8", "models.transformer.d_model=8", "models.transformer.d_ff=16",
           f"hydra.sweep.dir={sweep_dir}", *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def _first_leaderboard(sweep):
    proc = _leaderboard(sweep)
    assert proc.returncode == 0, proc.stderr[-2000:]
    finished = {p.parent.name: p.stat().st_mtime_ns for p in sweep.glob("*/metrics.json")}
    assert len(finished) == 4
    board = json.loads((sweep / "leaderboard.json").read_text())
    assert {(r["method"], r["n_seeds"]) for r in board["rows"]} == {("naive", 2), ("naive+cbp", 2)}
    assert sorted(o["method"] for o in board["overall"]) == ["naive", "naive+cbp"]
    assert "acc_bits" in (sweep / "leaderboard.csv").read_text().splitlines()[0]
    assert (sweep / "leaderboard.png").exists() and "Overall ranking" in (sweep / "leaderboard.md").read_text()
    assert list((sweep / ".fresh").glob("*.json"))  # F_j computed once per seed, shared by the methods
    return finished


def test_the_leaderboard_runs_every_method_and_seed_as_a_multirun_and_writes_its_tables(tmp_path):
    _first_leaderboard(tmp_path / "leaderboard")


@pytest.mark.slow
def test_a_rerun_leaderboard_redoes_only_its_missing_jobs(tmp_path):
    sweep = tmp_path / "leaderboard"
    finished = _first_leaderboard(sweep)
    lost = sorted(finished)[0]
    (sweep / lost / "metrics.json").unlink()
    proc = _leaderboard(sweep)
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = {p.parent.name: p.stat().st_mtime_ns for p in sweep.glob("*/metrics.json")}
    assert set(again) == set(finished)
    assert all(again[k] == finished[k] for k in finished if k != lost), "a finished job was redone"
