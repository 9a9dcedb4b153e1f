"""Resume inside an experience (framework.continual.steps): a run SIGKILLed between two training
steps of an experience and rerun with resume=true ends with the metrics of an uninterrupted run,
for every strategy and plugin, and trains only the steps after its last step checkpoint.

The killed run is a real process (forked from the test, so Avalanche is not imported again) that
SIGKILLs itself right after the optimizer step ``KILL_AT`` of the stream, which lies inside an
experience and one step past a step checkpoint; the resume runs here and counts its steps.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

import framework.runners.continual.jobs as jobs
from framework.continual.plasticity import PLASTICITY
from framework.continual.strategies import STRATEGIES, PosteriorStrategy
from framework.experiment import run

ROOT = Path(__file__).resolve().parent.parent
# 3 experiences of 32 sequences in minibatches of 8: 4 steps each (Cumulative 4, 8, 12; Joint 12 in one)
BASE = ["experiment=continual/smoke", "runtime.progress=false", "report=false", "~models.mamba", "~models.lstm",
        "~models.mlp", "stream=task_sequence", "stream.n_experiences=3", "stream.n_train=32", "stream.n_test=8",
        "budget.batch_size=8", "eval_batch_size=8", "probe_sequences=8", "+strategy.mem_size=8",
        "+strategy.patterns_per_exp=8", "+strategy.agem_sample_size=8", "models.transformer.d_model=8",
        "models.transformer.d_ff=16", "fresh_baseline=false", "checkpoint_every=2"]
KILL_AT = 7  # the 3rd step of experience 1 (Joint: of its only experience), after the checkpoint at step 2
EXTRA = {"cbp": ["plugins=[{name: cbp, replacement_rate: 0.5, maturity: 1}]"],  # so that they act within 12 steps
         "redo": ["plugins=[{name: redo, tau: 0.9, every: 1}]"],
         "gdumb": ["strategy.mem_size=32"]}  # a buffer of 4 steps (8 holds one minibatch)

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"), pytest.mark.filterwarnings("ignore::UserWarning")]


def without_timing(metrics: dict) -> str:
    strip = {k: v for k, v in metrics.items() if k != "timing"}
    strip["runs"] = [{k: v for k, v in r.items() if k != "timing"} for r in metrics["runs"]]
    return json.dumps(strip, indent=2)


def counting_steps(monkeypatch) -> list:
    """The experience of every optimizer step from now on (PosteriorStrategy: every strategy here)."""
    experiences = []
    real = PosteriorStrategy.optimizer_step

    def counted(self):
        real(self)
        experiences.append(int(self.clock.train_exp_counter))

    monkeypatch.setattr(PosteriorStrategy, "optimizer_step", counted)
    return experiences


def killed_at(cfg, run_dir: Path, step: int) -> None:
    """Run ``cfg`` in a forked process that SIGKILLs itself right after its optimizer step ``step``."""
    def child():
        done = [0]
        real = PosteriorStrategy.optimizer_step

        def dying(self):
            real(self)
            done[0] += 1
            if done[0] == step:
                os.kill(os.getpid(), signal.SIGKILL)

        PosteriorStrategy.optimizer_step = dying
        try:
            run(cfg, run_dir)
        finally:
            os._exit(3)  # finished (or failed) without being killed: the parent says so

    proc = multiprocessing.get_context("fork").Process(target=child)
    proc.start()
    proc.join(timeout=300)
    assert proc.exitcode == -signal.SIGKILL, f"the run was not killed at step {step} (exit code {proc.exitcode})"


def clock_iterations(checkpoint: dict) -> int:
    """The stream's training steps done when a step checkpoint was taken (Avalanche's clock)."""
    [clock] = [p for p in checkpoint["strategy"]["plugins"] if p["class"] == "Clock"]
    return clock["attrs"]["train_iterations"]


CASES = [*STRATEGIES, *PLASTICITY, "replay+dropout", "agem+dropout"]


@pytest.mark.parametrize("case", CASES)
def test_a_run_killed_inside_an_experience_resumes_at_its_step_to_identical_metrics(compose, tmp_path, monkeypatch,
                                                                                     case):
    method, _, dropout = case.partition("+")
    args = [*BASE, f"method={method}", *EXTRA.get(method, [])]
    kill = KILL_AT
    if dropout:  # draws from the global torch RNG in every forward; the second epoch's shuffle is drawn after
        # them: the tape's case. Killed at step 7 of experience 1's 8, in its second epoch.
        args += ["models.transformer.dropout=0.1", "budget.epochs=2"]
        kill = 8 + KILL_AT
    steps = counting_steps(monkeypatch)
    reference = run(compose(args), tmp_path / "reference")
    per_experience = Counter(steps)
    steps.clear()

    run_dir = tmp_path / "killed"
    killed_at(compose(args), run_dir, kill)
    [job_dir] = run_dir.glob("task_sequence_*")
    checkpoint = torch.load(job_dir / jobs.STEP, weights_only=True)
    e, s = checkpoint["experience"], checkpoint["step"]
    assert 0 < s < per_experience[e], f"step {s} of {per_experience[e]}: not inside experience {e}"
    done = clock_iterations(checkpoint)
    assert done == kill - 1  # one step trained after the checkpoint, lost with the process
    if method != "joint":
        assert torch.load(job_dir / jobs.STATE, weights_only=True)["experience"] == e == 1

    resumed = run(compose(args + ["resume=true"]), run_dir)
    assert len(steps) == sum(per_experience.values()) - done, "the resume trained steps that were done already"
    assert Counter(steps)[e] == per_experience[e] - s
    assert not (job_dir / jobs.STEP).exists()
    assert without_timing(resumed) == without_timing(reference), case


def test_the_fresh_baseline_resumes_at_its_step_too(compose, tmp_path, monkeypatch):
    args = [*BASE, "method=replay", "fresh_baseline=true"]
    steps = counting_steps(monkeypatch)
    reference = run(compose(args), tmp_path / "reference")
    total = len(steps)
    steps.clear()
    run_dir = tmp_path / "killed"
    killed_at(compose(args), run_dir, KILL_AT)  # the fresh model of experience 1, at its 3rd step
    [job_dir] = run_dir.glob("task_sequence_*")
    checkpoint = torch.load(job_dir / jobs.FRESH_STEP, weights_only=True)
    assert (checkpoint["experience"], checkpoint["step"]) == (1, 2)
    assert not (job_dir / jobs.STATE).exists()
    resumed = run(compose(args + ["resume=true"]), run_dir)
    assert len(steps) == total - (KILL_AT - 1)
    assert without_timing(resumed) == without_timing(reference)


def test_step_checkpoints_are_written_every_n_steps_and_the_last_one_is_removed(compose, tmp_path, monkeypatch):
    written = []
    real = jobs.save_torch

    def recording(path, obj):
        real(path, obj)
        written.append((Path(path).name, obj["experience"], obj.get("step")))

    monkeypatch.setattr(jobs, "save_torch", recording)
    run(compose([*BASE, "method=naive", "checkpoint_every=3"]), tmp_path / "every3")
    # 4 steps an experience: one step checkpoint (before step 4), then the experience's state
    assert written == [("step.pt", 0, 3), ("state.pt", 1, None), ("step.pt", 1, 3), ("state.pt", 2, None),
                       ("step.pt", 2, 3), ("state.pt", 3, None)]
    assert not list((tmp_path / "every3").glob("*/step.pt"))
    written.clear()
    run(compose([*BASE, "method=naive", "checkpoint_every=0"]), tmp_path / "off")
    assert [w[0] for w in written] == ["state.pt"] * 3


def _windtunnel(args, run_dir):
    return subprocess.Popen([sys.executable, "-m", "framework.cli", *args, f"hydra.run.dir={run_dir}"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, text=True)


@pytest.mark.slow
def test_the_cli_killed_with_kill_9_inside_an_experience_resumes_at_the_step(tmp_path):
    """Through the command line: A-GEM (its memory loader in play from experience 1 on), the parent
    sends SIGKILL once a step checkpoint inside experience 1 is on disk."""
    args = [*BASE, "method=agem", "stream.n_train=256", "checkpoint_every=5", "runtime.threads=1"]
    reference = _windtunnel(args, tmp_path / "reference")
    run_dir = tmp_path / "killed"
    proc = _windtunnel(args, run_dir)
    deadline = time.time() + 300
    step = None
    while proc.poll() is None and time.time() < deadline:
        path = next(run_dir.glob(f"*/{jobs.STEP}"), None)
        if path is not None:
            try:
                checkpoint = torch.load(path, weights_only=True)
            except Exception:  # replaced while read
                continue
            if checkpoint["experience"] == 1 and checkpoint["step"] >= 10:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                step = checkpoint["step"]
                break
    assert step is not None, "the run ended before it reached experience 1; make it longer"
    proc = _windtunnel(args + ["resume=true"], run_dir)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert re.search(r"resuming experience [12] at step [1-9]", out), out[-2000:]
    out, _ = reference.communicate(timeout=600)
    assert reference.returncode == 0, out
    expected = json.loads((tmp_path / "reference" / "metrics.json").read_text())
    got = json.loads((run_dir / "metrics.json").read_text())
    assert without_timing(got) == without_timing(expected)
