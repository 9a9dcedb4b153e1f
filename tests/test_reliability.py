"""Runs lose nothing and repeat exactly: same-seed determinism, kill -9 and resume, safe checkpoint loading."""
from __future__ import annotations

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from framework.experiment import run
from framework.io import CheckpointError, load_torch
from framework.tasks import BijectionConfig, build_task
from framework.training import TrainConfig, train
from framework.metrics import EvalSet
from framework.models import TransformerConfig, build_model

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["experiment=smoke", "runtime.progress=false", "~tasks.hmm", "~models.mamba", "~models.mlp"]


def without_timing(metrics: dict) -> str:
    """metrics.json as bytes, minus the fields that measure the machine's speed."""
    strip = {k: v for k, v in metrics.items() if k != "timing"}
    strip["runs"] = [{k: v for k, v in r.items() if k != "timing"} for r in metrics["runs"]]
    return json.dumps(strip, indent=2)


def test_two_runs_with_the_same_seed_agree_and_another_seed_differs(compose, tmp_path):
    a = run(compose(SMALL), tmp_path / "a")
    b = run(compose(SMALL), tmp_path / "b")
    c = run(compose(SMALL + ["seed=1"]), tmp_path / "c")
    assert without_timing(a) == without_timing(b)
    assert a["runs"][0]["kl_bits"] != c["runs"][0]["kl_bits"]


def _windtunnel(args, run_dir):
    return subprocess.Popen([sys.executable, "-m", "framework.cli", *args, f"hydra.run.dir={run_dir}"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def test_kill_9_at_three_random_points_then_resume_gives_identical_metrics(tmp_path):
    args = SMALL + ["train.steps=400", "train.checkpoint_every=7", "train.eval_every=50", "runtime.threads=1",
                    "train.batch_size=16"]
    reference = _windtunnel(args, tmp_path / "reference")
    assert reference.wait(timeout=300) == 0, reference.stderr.read()

    run_dir = tmp_path / "killed"
    rng = random.Random(1234)
    kills = 0
    proc = _windtunnel(args, run_dir)
    for _ in range(3):
        # a random moment after training has started (a checkpoint exists), before the run can finish
        deadline = time.time() + 120
        while not list(run_dir.glob("*/checkpoint.pt")) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
        assert not (run_dir / "metrics.json").exists() or proc.returncode == 0
        proc = _windtunnel(args + ["resume=true"], run_dir)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    assert kills >= 2, "the run finished before it could be interrupted; make it longer"
    expected = json.loads((tmp_path / "reference" / "metrics.json").read_text())
    got = json.loads((run_dir / "metrics.json").read_text())
    assert without_timing(got) == without_timing(expected)


class Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_malicious_checkpoint_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": Exploit(marker)}, path)
    with pytest.raises(CheckpointError, match="refusing checkpoint"):
        load_torch(path)
    with open(path, "wb") as f:  # a plain pickle too, not only torch's zip format
        pickle.dump(Exploit(marker), f)
    with pytest.raises(CheckpointError):
        load_torch(path)
    assert not marker.exists()


def _tiny_training(tmp_path, **kwargs):
    task = build_task(BijectionConfig(V=4, L=4))
    torch.manual_seed(0)
    model = build_model(TransformerConfig(d_model=16, n_layers=1, n_heads=2, d_ff=32), task.vocab_size,
                        task.n_classes, task.seq_len)
    cfg = TrainConfig(steps=10, batch_size=8, eval_every=10, val_sequences=8, checkpoint_every=5)
    return train(model, task, cfg, tmp_path, seed=0, val_set=EvalSet.generate(task, 8, seed=1),
                 meta={"task": "t", "model": "m", "params": 0}, **kwargs)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "foreign"])
def test_a_corrupt_or_foreign_checkpoint_is_refused_with_a_message(tmp_path, damage):
    _tiny_training(tmp_path)
    path = tmp_path / "checkpoint.pt"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "garbage":
        path.write_bytes(os.urandom(4096))
    else:
        torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="refusing checkpoint"):
        _tiny_training(tmp_path, resume=True)


def test_interrupted_writes_leave_only_intact_files(tmp_path):
    _tiny_training(tmp_path)
    (tmp_path / ".checkpoint.pt.abc.tmp").write_bytes(b"half a write")
    _tiny_training(tmp_path, resume=True)
    assert not list(tmp_path.glob(".*.tmp"))
    assert load_torch(tmp_path / "checkpoint.pt")["step"] == 10
