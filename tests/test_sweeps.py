"""Sweeps: content-addressed job folders, reruns that skip finished jobs, and the sweep report."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from framework.sweep_report import aggregate, main as report_main

ROOT = Path(__file__).resolve().parent.parent
BASE = ["experiment=smoke", "runtime.progress=false", "~tasks.hmm", "~models.mamba", "~models.mlp", "train.steps=10"]


def _sweep(args, sweep_dir, **popen):
    cmd = [sys.executable, "-m", "framework.cli", "-m", *BASE, *args, f"hydra.sweep.dir={sweep_dir}"]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _finished(sweep_dir: Path) -> dict[str, float]:
    return {p.parent.name: p.stat().st_mtime_ns for p in sweep_dir.glob("*/metrics.json")}


def test_sweep_reruns_only_what_is_missing_and_reports_every_job(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = _sweep(["seed=0,1"], sweep_dir)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    first = _finished(sweep_dir)
    assert len(first) == 2

    lost = sorted(first)[0]  # one job "did not finish": its results are gone, its checkpoints remain
    (sweep_dir / lost / "metrics.json").unlink()
    summary = aggregate(sweep_dir)
    assert summary["missing"] == [lost] and len(summary["finished"]) == 1

    proc = _sweep(["seed=0,1"], sweep_dir)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    second = _finished(sweep_dir)
    assert set(second) == set(first)  # the same config hashes, so the same folders
    kept = [name for name in first if name != lost]
    assert all(second[name] == first[name] for name in kept), "a finished job was redone"

    assert report_main([str(sweep_dir)]) == 0
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert summary["missing"] == [] and len(summary["finished"]) == 2
    assert {(g["task_key"], g["model_key"], g["n_seeds"]) for g in summary["groups"]} == {
        ("bijection", "transformer", 2), ("bijection", "lstm", 2)}
    assert (sweep_dir / "summary.md").exists() and (sweep_dir / "summary_kl_bits.png").exists()


@pytest.mark.slow
def test_submitit_local_sweep_of_eight_jobs_survives_a_kill(tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=20", "seed=0,1,2,3", "train.lr=1e-3,2e-3",
            "runtime.threads=1", "train.steps=40"]
    proc = _sweep(args, sweep_dir, start_new_session=True)
    deadline = time.time() + 600
    while len(_finished(sweep_dir)) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and every job it started
        proc.wait()
    subprocess.run(["pkill", "-9", "-f", str(sweep_dir)], check=False)  # submitit jobs in their own sessions
    before = _finished(sweep_dir)
    assert 0 < len(before) < 8, "kill the sweep mid-way: make the jobs longer"
    report = aggregate(sweep_dir)
    assert len(report["missing"]) + len(report["finished"]) == report["jobs"]

    proc = _sweep(args, sweep_dir)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err
    after = _finished(sweep_dir)
    assert len(after) == 8
    assert all(after[name] == before[name] for name in before), "a finished job was redone"
    assert report_main([str(sweep_dir)]) == 0
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert summary["missing"] == [] and {g["n_seeds"] for g in summary["groups"]} == {4}
