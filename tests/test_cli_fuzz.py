"""Fuzz the command line with bad overrides: each exits 2 with one line naming the field, no traceback, no run folder."""
from __future__ import annotations

import random
import sys

import pytest

from framework import cli

# (override, the field its error must name, a word the message must contain)
BAD = [
    ("train.lr=0", "train.lr", "> 0"),
    ("train.lr=-1", "train.lr", "> 0"),
    ("train.lr=fast", "train.lr", "Float"),
    ("train.steps=0", "train.steps", ">= 1"),
    ("train.steps=1.5", "train.steps", "Integer"),
    ("train.batch_size=0", "train.batch_size", ">= 1"),
    ("train.warmup_steps=-5", "train.warmup_steps", ">= 0"),
    ("train.min_lr_ratio=2", "train.min_lr_ratio", "[0, 1]"),
    ("train.weight_decay=-0.1", "train.weight_decay", ">= 0"),
    ("train.betas_2=1", "train.betas_2", "(0, 1)"),
    ("train.grad_clip=0", "train.grad_clip", "> 0"),
    ("train.muon_momentum=1", "train.muon_momentum", "[0, 1)"),
    ("train.target=logits", "train.target", "posterior"),
    ("train.eval_sequences=10", "train.eval_sequences", "2048"),
    ("runtime.device=tpu", "runtime.device", "cuda"),
    ("train.eval_every=0", "train.eval_every", ">= 1"),
    ("train.checkpoint_every=0", "train.checkpoint_every", ">= 1"),
    ("runtime.threads=-1", "runtime.threads", ">= 0"),
    ("train.threads=1", "train.threads", "runtime.threads"),  # run-wide now: runtime.threads
    ("runtime.progress=maybe", "runtime.progress", "bool"),
    ("+tasks.bijection.bogus=1", "tasks.bijection.bogus", "not a field"),
    ("+tasks.bijection.replacment=true", "tasks.bijection.replacment", "not a field"),
    ("+train.bogus=1", "train.bogus", "not a field"),
    ("+runtime.bogus=1", "runtime.bogus", "not a field"),
    ("checkpoint=/etc/passwd", "checkpoint", "experiment=probe/<name>"),  # not a wind-tunnel setting
    ("train.lrr=1", "train.lrr", "fields"),
    ("+trian.lr=1", "trian", "settings"),
    ("seed=abc", "seed", "Integer"),
    ("experiment=nonexistent", "experiment", "choose one of"),
    ("train=nope", "train", "choose one of"),
    ("tasks.bijection.V=1", "tasks.bijection.V", ">= 2"),
    ("tasks.bijection.L=0", "tasks.bijection.L", ">= 1"),
    ("tasks.bijection.L=99", "tasks.bijection.L", "<= V"),
    ("tasks.bijection.name=maze", "tasks.bijection.name", "choose one of"),
    ("tasks.bijection.replacement=maybe", "tasks.bijection.replacement", "bool"),
    ("tasks.bijection.W=3", "tasks.bijection.W", "fields"),
    ("models.transformer.n_heads=5", "models.transformer.n_heads", "divide"),
    ("models.transformer.d_model=0", "models.transformer.d_model", ">= 1"),
    ("models.transformer.dropout=1.5", "models.transformer.dropout", "[0, 1)"),
    ("models.transformer.name=rnn", "models.transformer.name", "choose one of"),
    ("models.transformer.d_modl=3", "models.transformer.d_modl", "fields"),
]
EXTRA_BAD = [  # only meaningful in experiments that have these entries
    ("tasks.hmm.S=1", "tasks.hmm.S", ">= 2"),
    ("tasks.hmm.O=30", "tasks.hmm.O", "0.05"),
    ("tasks.hmm.K=0", "tasks.hmm.K", ">= 1"),
    ("models.mlp.context=window", "models.mlp.context", "prefix"),
    ("models.mlp.hidden=0", "models.mlp.hidden", ">= 1"),
    ("models.lstm.n_layers=0", "models.lstm.n_layers", ">= 1"),
    ("models.mamba.d_state=0", "models.mamba.d_state", ">= 1"),
    ("++train_by.hmm=3", "train_by.hmm", "mapping"),
    ("+train_by.hmm={steps: 0}", "train_by.hmm.steps", ">= 1"),
    ("+train_by.mlp={stepz: 3}", "train_by.mlp.stepz", "not a train setting"),
    ("tasks.bijection=null", "tasks.bijection", "must be a task config"),
    ("models.mlp=5", "models.mlp", "must be a model config"),
    ("+evaluate_at.hmm=5", "evaluate_at.hmm", "must map variant names"),
    ("+probe_options.value_manifold=5", "probe_options.value_manifold", "must be a mapping"),
    ("+probe_options.dynamics.bogus=1", "probe_options.dynamics", "has no option 'bogus'"),  # dynamics not run
]


def _cases():
    cases = []
    experiments = ("default", "smoke", "demo")
    for number, (override, field, word) in enumerate(BAD):
        cases.append(([f"experiment={experiments[number % 3]}", override], field, word))
    for override, field, word in EXTRA_BAD:
        for experiment in ("smoke", "demo"):
            cases.append(([f"experiment={experiment}", override], field, word))
    # combinations: a bad override among valid ones, and inside a sweep
    rng = random.Random(0)
    valid = ["train.steps=5", "seed=3", "train.lr=2e-3", "runtime.progress=false", "resume=true"]
    for override, field, word in rng.sample([b for b in BAD if b[1]], 10):
        cases.append((["experiment=smoke", *rng.sample(valid, 2), override], field, word))
    cases.append((["experiment=smoke", "train.lr=1e-3,0"], "train.lr", "> 0"))
    cases.append((["experiment=smoke", "seed=1,2,3", "tasks.bijection.L=6,8"], "tasks.bijection.L", "<= V"))
    cases.append((["experiment=smoke", "~models.transformer", "~models.mamba", "~models.lstm", "~models.mlp"],
                  "models", "no model"))
    return cases


CASES = _cases()


def test_at_least_fifty_cases():
    assert len(CASES) >= 50


@pytest.mark.parametrize("args,field,word", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_override_is_rejected_cleanly(args, field, word, tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["windtunnel", "-m" if any("," in a for a in args) else "--", *args,
                                      f"hydra.run.dir={run_dir}", f"hydra.sweep.dir={run_dir}"])
    if sys.argv[1] == "--":
        sys.argv.pop(1)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert f"invalid setting: {field}:" in lines[0], lines[0]
    assert word in lines[0], lines[0]
    assert not run_dir.exists()


@pytest.mark.parametrize("path,what", [("/etc/passwd", "not a torch checkpoint"), ("/bin/sh", "not a torch checkpoint")])
def test_a_file_that_is_not_a_checkpoint_is_named_as_such(path, what, tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["windtunnel", "experiment=probe/value_manifold", f"checkpoint={path}",
                                      f"hydra.run.dir={run_dir}"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and what in lines[0] and path in lines[0], lines
    assert "IndexError" not in lines[0] and not run_dir.exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_cuda_on_a_machine_without_it_is_refused_before_any_folder(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["windtunnel", "experiment=smoke", "runtime.device=cuda", f"hydra.run.dir={run_dir}"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exit_info.value.code == 2 and len(lines) == 1 and "runtime.device" in lines[0], lines
    assert not run_dir.exists()
