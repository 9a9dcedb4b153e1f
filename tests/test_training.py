"""The training loop: it learns, resumes exactly, refuses foreign checkpoints, and stops on a bad loss."""
from __future__ import annotations

import json

from dataclasses import replace

import pytest
import torch

from framework.errors import CheckpointError
from framework.metrics import EvalSet, evaluate
from framework.models import TransformerConfig, build_model
from framework.tasks import BijectionConfig, build_task
from framework.training import TrainConfig, train
from framework.training import precision as precision_module
from framework.training.loop import NonFiniteLoss, make_optimizer

TASK = build_task(BijectionConfig(V=5, L=5))
CFG = TrainConfig(steps=40, batch_size=32, lr=3e-3, warmup_steps=5, eval_every=20, val_sequences=64,
                  checkpoint_every=10)
META = {"task": "bijection-5", "model": "tiny", "params": 0}


def _model(seed=0):
    torch.manual_seed(seed)
    return build_model(TransformerConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64), TASK.vocab_size, TASK.n_classes,
                       TASK.seq_len)


def _val():
    return EvalSet.generate(TASK, 64, seed=99)


class Crash(RuntimeError):
    pass


class CrashingTask:
    """The same task, but sampling fails on the n-th call: an interruption mid-run."""

    def __init__(self, task, crash_at):
        self.task, self.calls, self.crash_at = task, 0, crash_at

    def sample(self, batch_size, generator):
        self.calls += 1
        if self.calls == self.crash_at:
            raise Crash()
        return self.task.sample(batch_size, generator)


@pytest.mark.parametrize("optimizer, precision", [("adamw", "float32"), ("muon", "float32"), ("muon", "bfloat16")])
def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path, optimizer, precision):
    cfg = replace(CFG, optimizer=optimizer, precision=precision)
    straight = _model()
    out = train(straight, TASK, cfg, tmp_path / "a", seed=5, val_set=_val(), meta=META)

    interrupted = _model()
    with pytest.raises(Crash):
        train(interrupted, CrashingTask(TASK, crash_at=27), cfg, tmp_path / "b", seed=5, val_set=_val(), meta=META)
    resumed = _model(seed=123)  # a fresh process would start from different weights; the checkpoint fixes that
    out_b = train(resumed, TASK, cfg, tmp_path / "b", seed=5, val_set=_val(), meta=META, resume=True)

    assert out_b.steps == out.steps == cfg.steps
    for (name, p), q in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), name
    assert [h["kl_bits"] for h in out_b.history] == [h["kl_bits"] for h in out.history]
    lines = (tmp_path / "b" / "log.jsonl").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in lines]
    assert steps == sorted(set(steps)), "log has duplicated steps after resume"


def test_a_resumed_run_keeps_the_precision_it_was_trained_in(tmp_path, monkeypatch, capsys):
    # Trained in bf16 where ``auto`` means bf16, resumed where ``auto`` means float32 (a CPU without
    # native bf16): it continues in bf16, bit for bit the uninterrupted run, and says so.
    cfg = replace(CFG, optimizer="muon", precision="auto")
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: True)
    straight = _model()
    out = train(straight, TASK, cfg, tmp_path / "a", seed=5, val_set=_val(), meta=META)
    assert out.precision == "bfloat16"
    with pytest.raises(Crash):
        train(_model(), CrashingTask(TASK, crash_at=27), cfg, tmp_path / "b", seed=5, val_set=_val(), meta=META)
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: False)
    resumed = _model(seed=123)
    out_b = train(resumed, TASK, cfg, tmp_path / "b", seed=5, val_set=_val(), meta=META, resume=True)
    assert out_b.precision == "bfloat16"
    note = capsys.readouterr().out
    assert "in bfloat16, the precision it was trained in (train.precision=auto would pick float32" in note
    for (name, p), q in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), name
    # A fresh run there is float32, and so is what its checkpoint records.
    fresh = train(_model(), TASK, replace(cfg, steps=10), tmp_path / "c", seed=5, val_set=_val(), meta=META)
    assert fresh.precision == "float32"
    assert torch.load(tmp_path / "c" / "checkpoint.pt", weights_only=True)["precision"] == "float32"


def test_resume_refuses_a_named_precision_other_than_the_checkpoints(tmp_path):
    cfg = replace(CFG, precision="bfloat16")
    with pytest.raises(Crash):
        train(_model(), CrashingTask(TASK, crash_at=27), cfg, tmp_path, seed=5, val_set=_val(), meta=META)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(CheckpointError, match="trained in bfloat16; train.precision=float32"):
        train(_model(), TASK, replace(cfg, precision="float32"), tmp_path, seed=5, val_set=_val(), meta=META,
              resume=True)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before  # refused before anything was written


def test_a_checkpoint_from_before_the_precision_was_recorded_resumes(tmp_path):
    cfg = replace(CFG, precision="float32")
    straight = _model()
    train(straight, TASK, cfg, tmp_path / "a", seed=5, val_set=_val(), meta=META)
    with pytest.raises(Crash):
        train(_model(), CrashingTask(TASK, crash_at=27), cfg, tmp_path / "b", seed=5, val_set=_val(), meta=META)
    path = tmp_path / "b" / "checkpoint.pt"
    old = torch.load(path, weights_only=True)
    del old["precision"]
    torch.save(old, path)
    resumed = _model(seed=123)
    out = train(resumed, TASK, cfg, tmp_path / "b", seed=5, val_set=_val(), meta=META, resume=True)
    assert out.precision == "float32" and out.steps == cfg.steps
    for p, q in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(p, q)


def test_resume_refuses_a_checkpoint_of_another_model(tmp_path):
    train(_model(), TASK, replace(CFG, steps=10), tmp_path, seed=1, val_set=_val(), meta=META)
    with pytest.raises(RuntimeError, match="refusing to resume"):
        train(_model(), TASK, CFG, tmp_path, seed=1, val_set=_val(), meta={**META, "model": "other"}, resume=True)


def test_training_reduces_kl_on_held_out_sequences(tmp_path):
    model = _model()
    before = evaluate(model, _val())["kl_bits"]
    train(model, TASK, replace(CFG, steps=150), tmp_path, seed=2, val_set=_val(), meta=META)
    after = evaluate(model, _val())["kl_bits"]
    assert after < 0.5 * before, (before, after)


def test_label_target_trains_too(tmp_path):
    model = _model()
    before = evaluate(model, _val())["kl_bits"]
    train(model, TASK, replace(CFG, steps=150, target="label"), tmp_path, seed=2, val_set=_val(), meta=META)
    assert evaluate(model, _val())["kl_bits"] < 0.7 * before


def test_non_finite_loss_stops_with_a_message_and_keeps_the_checkpoint(tmp_path):
    model = _model()

    class Poisoned(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model
            self.calls = 0

        def forward(self, tokens):
            self.calls += 1
            out = self.inner(tokens)
            return out * float("nan") if self.calls > 20 else out

    with pytest.raises(NonFiniteLoss, match="last good checkpoint"):
        train(Poisoned(), TASK, replace(CFG, steps=60, eval_every=100), tmp_path, seed=0, val_set=_val(), meta=META)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["step"] == 20
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_snapshots_hold_the_weights_at_each_snapshot_step(tmp_path):
    model = _model()
    train(model, TASK, replace(CFG, steps=30, snapshot_every=10), tmp_path, seed=3, val_set=_val(), meta=META)
    paths = sorted((tmp_path / "snapshots").glob("step_*.pt"))
    assert [p.name for p in paths] == ["step_0000010.pt", "step_0000020.pt", "step_0000030.pt"]
    last = torch.load(paths[-1], weights_only=True)
    assert last["meta"] == META and last["step"] == 30
    for name, p in model.state_dict().items():
        assert torch.equal(p, last["model"][name]), name
    first = torch.load(paths[0], weights_only=True)
    assert any(not torch.equal(first["model"][n], p) for n, p in model.state_dict().items())


def test_a_reached_target_stops_training_and_a_resume_stays_stopped(tmp_path):
    cfg = replace(CFG, steps=40, eval_every=10, target_kl_bits=1e3)  # any model is within 1000 bits
    model = _model()
    out = train(model, TASK, cfg, tmp_path, seed=3, val_set=_val(), meta=META)
    assert (out.steps, out.reached_target, [h["step"] for h in out.history]) == (10, True, [10])
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    again = train(model, TASK, cfg, tmp_path, seed=3, val_set=_val(), meta=META, resume=True)
    assert again.steps == 10 and again.reached_target
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())


def test_an_unreached_target_runs_every_step(tmp_path):
    out = train(_model(), TASK, replace(CFG, steps=20, target_kl_bits=1e-12), tmp_path, seed=3, val_set=_val(),
                meta=META)
    assert out.steps == 20 and not out.reached_target


def test_a_spent_time_limit_stops_after_one_step_with_a_validation(tmp_path):
    out = train(_model(), TASK, replace(CFG, time_limit_s=1e-9), tmp_path, seed=3, val_set=_val(), meta=META)
    assert out.steps == 1 and [h["step"] for h in out.history] == [1]
    assert (tmp_path / "checkpoint.pt").exists()


def test_a_fresh_start_clears_snapshots_of_an_earlier_run(tmp_path):
    train(_model(), TASK, replace(CFG, steps=30, snapshot_every=10), tmp_path, seed=3, val_set=_val(), meta=META)
    train(_model(), TASK, replace(CFG, steps=20, snapshot_every=20), tmp_path, seed=3, val_set=_val(), meta=META)
    assert [p.name for p in sorted((tmp_path / "snapshots").glob("*.pt"))] == ["step_0000020.pt"]


def test_value_lr_mult_trains_the_value_projections_at_that_multiple(tmp_path):
    model = _model()
    values = {id(p) for p in model.value_projections()}
    assert len(values) == 2  # v_proj weight and bias of the one block
    cfg = replace(CFG, steps=12, value_lr_mult=10.0, eval_every=100, optimizer="adamw")
    optimizer = make_optimizer(model, cfg)
    grouped = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    assert all(grouped[i]["lr_mult"] == 10.0 for i in values)
    assert all(g["lr_mult"] == 1.0 for i, g in grouped.items() if i not in values)
    assert {i for i, g in grouped.items() if g["weight_decay"] > 0} == {id(p) for p in model.parameters() if p.dim() >= 2}
    # In the loop: one step at the warmup lr, then AdamW's first update moves each weight by ~lr * mult.
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train(model, TASK, replace(cfg, steps=1, warmup_steps=0, weight_decay=0.0), tmp_path, seed=1, val_set=_val(),
          meta=META)
    step = {n: (p.detach() - before[n]).abs().max().item() for n, p in model.named_parameters()}
    assert step["blocks.0.attn.v_proj.weight"] == pytest.approx(10 * CFG.lr, rel=1e-3)
    assert step["blocks.0.attn.q_proj.weight"] == pytest.approx(CFG.lr, rel=1e-3)


def test_without_a_value_lr_mult_the_groups_are_decay_then_no_decay():
    optimizer = make_optimizer(_model(), replace(CFG, optimizer="adamw"))
    assert [(g["weight_decay"] > 0, g["lr_mult"]) for g in optimizer.param_groups] == [(True, 1.0), (False, 1.0)]
    assert optimizer.defaults["betas"] == (CFG.betas_1, CFG.betas_2)


def test_muon_momentum_reaches_muon_and_only_muon():
    optimizer = make_optimizer(_model(), replace(CFG, optimizer="muon", muon_momentum=0.99))
    assert {g["momentum"] for g in optimizer.parts["muon"].param_groups} == {0.99}
    assert all("momentum" not in g for g in optimizer.parts["adamw"].param_groups)
    assert optimizer.parts["adamw"].defaults["betas"] == (CFG.betas_1, CFG.betas_2)  # AdamW's own momentum untouched
    assert {g["momentum"] for g in make_optimizer(_model(), replace(CFG, optimizer="muon")).parts["muon"].param_groups} \
        == {CFG.muon_momentum}


def test_an_entropy_mae_target_stops_training_and_both_targets_must_be_met(tmp_path):
    out = train(_model(), TASK, replace(CFG, eval_every=10, target_entropy_mae_bits=1e3), tmp_path / "a", seed=3,
                val_set=_val(), meta=META)
    assert (out.steps, out.reached_target) == (10, True)
    both = replace(CFG, steps=20, eval_every=10, target_entropy_mae_bits=1e3, target_kl_bits=1e-12)
    out = train(_model(), TASK, both, tmp_path / "b", seed=3, val_set=_val(), meta=META)
    assert (out.steps, out.reached_target) == (20, False)


@pytest.mark.parametrize("field, value", [("betas_1", 1.0), ("betas_1", -0.1), ("value_lr_mult", 0.0),
                                          ("target_entropy_mae_bits", -1.0), ("optimizer", "sgd"),
                                          ("muon_momentum", 1.0), ("muon_momentum", -0.5)])
def test_bad_optimizer_settings_are_refused_by_name(field, value):
    with pytest.raises(ValueError, match=field):
        replace(CFG, **{field: value})
