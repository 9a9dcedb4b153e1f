"""Muon with AdamW (framework.training.muon): the batched Newton-Schulz iteration against its closed
form through the SVD, the whole step against torch.optim.Muon's, and the split of a model's
parameters between the two optimizers."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.optim._muon as torch_muon

from framework.errors import CheckpointError
from framework.models import LSTMConfig, MambaConfig, TransformerConfig, build_model
from framework.models.base import hidden_matrices
from framework.training import TrainConfig, train
from framework.training.loop import make_optimizer
from framework.training.muon import BatchedMuon, MuonWithAdamW, newton_schulz

COEFFICIENTS, STEPS, EPS = (3.4445, -4.775, 2.0315), 5, 1e-7
SHAPES = [(7, 7), (5, 9), (9, 5), (16, 64), (64, 16), (5, 9), (3, 1), (1, 4)]


def newton_schulz_by_svd(g: torch.Tensor) -> torch.Tensor:
    """The iteration in closed form: on X = U S V^T each step maps the singular values s to
    a s + b s^3 + c s^5 and keeps U and V, from S = S_G / |G|_F."""
    u, s, vh = torch.linalg.svd(g, full_matrices=False)
    s = s / g.norm()
    a, b, c = COEFFICIENTS
    for _ in range(STEPS):
        s = a * s + b * s**3 + c * s**5
    return u @ torch.diag(s) @ vh


def test_newton_schulz_matches_its_closed_form_for_every_shape_in_one_call():
    generator = torch.Generator().manual_seed(0)
    for trial in range(20):
        updates = [torch.randn(shape, generator=generator, dtype=torch.float64) * (trial + 1) for shape in SHAPES]
        for update, orthogonal in zip(updates, newton_schulz(updates, COEFFICIENTS, STEPS, EPS)):
            assert orthogonal.shape == update.shape
            torch.testing.assert_close(orthogonal, newton_schulz_by_svd(update), rtol=1e-9, atol=1e-9)


def test_newton_schulz_of_a_zero_update_is_zero():
    [out] = newton_schulz([torch.zeros(4, 6, dtype=torch.float64)], COEFFICIENTS, STEPS, EPS)
    assert torch.equal(out, torch.zeros(4, 6, dtype=torch.float64))


def _exact_torch_iteration(grad, ns_coefficients, ns_steps, eps):
    """torch's own iteration with its bfloat16 cast taken out (the one thing BatchedMuon changes)."""
    x = grad.T if grad.size(0) > grad.size(1) else grad
    x = x / x.norm().clamp(min=eps)
    a, b, c = ns_coefficients
    for _ in range(ns_steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if grad.size(0) > grad.size(1) else x


@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("adjust_lr_fn", [None, "match_rms_adamw"])
def test_a_batched_muon_step_is_torch_muons_step(monkeypatch, nesterov, adjust_lr_fn):
    monkeypatch.setattr(torch_muon, "_zeropower_via_newtonschulz", _exact_torch_iteration)
    generator = torch.Generator().manual_seed(1)
    ours = [torch.nn.Parameter(torch.randn(shape, generator=generator, dtype=torch.float64)) for shape in SHAPES]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    settings = dict(lr=0.02, weight_decay=0.1, momentum=0.9, nesterov=nesterov, adjust_lr_fn=adjust_lr_fn)
    optimizers = BatchedMuon(ours, **settings), torch.optim.Muon(theirs, **settings)
    for _ in range(4):
        grads = [torch.randn(shape, generator=generator, dtype=torch.float64) for shape in SHAPES]
        for params, optimizer in zip((ours, theirs), optimizers):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            optimizer.step()
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-9)
    assert optimizers[0].state_dict()["state"].keys() == optimizers[1].state_dict()["state"].keys()


def test_each_group_steps_with_its_own_settings_as_the_loop_changes_its_lr(monkeypatch):
    monkeypatch.setattr(torch_muon, "_zeropower_via_newtonschulz", _exact_torch_iteration)
    generator = torch.Generator().manual_seed(4)
    ours = [torch.nn.Parameter(torch.randn(shape, generator=generator, dtype=torch.float64)) for shape in SHAPES[:4]]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]

    def groups(params):
        return [{"params": params[:2], "lr": 0.05, "weight_decay": 0.2, "momentum": 0.8},
                {"params": params[2:], "lr": 0.01, "weight_decay": 0.0, "momentum": 0.95, "nesterov": False}]

    optimizers = BatchedMuon(groups(ours), lr=1.0, weight_decay=0.5), torch.optim.Muon(groups(theirs), lr=1.0,
                                                                                      weight_decay=0.5)
    for step in range(3):
        grads = [torch.randn(p.shape, generator=generator, dtype=torch.float64) for p in ours]
        for params, optimizer in zip((ours, theirs), optimizers):
            for group in optimizer.param_groups:
                group["lr"] *= 0.5 ** step
            for p, g in zip(params, grads):
                p.grad = g.clone()
            optimizer.step()
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-9)


def test_a_batched_muon_step_is_close_to_torch_muons_in_bfloat16():
    generator = torch.Generator().manual_seed(2)
    ours = [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in SHAPES[:6]]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    start = [p.detach().clone() for p in ours]
    for params, optimizer in zip((ours, theirs), (BatchedMuon(ours, lr=0.1), torch.optim.Muon(theirs, lr=0.1))):
        for p in params:
            p.grad = torch.ones_like(p) + torch.randn(p.shape, generator=torch.Generator().manual_seed(3))
        optimizer.step()
    for p, q, p0 in zip(ours, theirs, start):
        ours_step, theirs_step = p.detach() - p0, q.detach() - p0
        assert (ours_step - theirs_step).norm() <= 0.05 * theirs_step.norm()  # bfloat16's ~3 significant digits


def _task_and(config):
    from framework.tasks import BijectionConfig, build_task

    task = build_task(BijectionConfig(V=5, L=5))
    torch.manual_seed(0)
    return task, build_model(config, task.vocab_size, task.n_classes, task.seq_len)


# Per model, the weights Muon should take, by name: a transformer block's q, k, v, o and two MLP
# matrices; a Mamba block's in, x, dt and out projections; nothing of the LSTM's (inside nn.LSTM).
HIDDEN = {"transformer": {f"blocks.0.{m}.weight" for m in ("attn.q_proj", "attn.k_proj", "attn.v_proj",
                                                            "attn.out_proj", "mlp.fc", "mlp.out_proj")},
          "mamba": {f"blocks.0.mixer.{m}.weight" for m in ("in_proj", "x_proj", "dt_proj", "out_proj")},
          "lstm": set()}


@pytest.mark.parametrize("config", [TransformerConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64),
                                    MambaConfig(d_model=16, n_layers=1), LSTMConfig(d_model=16)],
                         ids=["transformer", "mamba", "lstm"])
def test_muon_takes_the_hidden_linear_weights_and_adamw_the_rest(config):
    _, model = _task_and(config)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in hidden_matrices(model)} == HIDDEN[config.name]
    optimizer = make_optimizer(model, TrainConfig(optimizer="muon", value_lr_mult=10.0))
    if not HIDDEN[config.name]:  # the LSTM: AdamW alone
        assert isinstance(optimizer, torch.optim.AdamW)
        return
    assert isinstance(optimizer, MuonWithAdamW)
    muon = [p for g in optimizer.parts["muon"].param_groups for p in g["params"]]
    adamw = [p for g in optimizer.parts["adamw"].param_groups for p in g["params"]]
    assert sorted(map(id, muon + adamw)) == sorted(id(p) for p in model.parameters())  # each exactly once
    linear = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not model.head}
    assert {id(p) for p in muon} == linear and all(p.dim() == 2 for p in muon)
    assert id(model.head.weight) not in {id(p) for p in muon}
    values = {id(p) for p in model.value_projections()}
    for group in optimizer.param_groups:
        assert group["lr_mult"] == (10.0 if {id(p) for p in group["params"]} <= values and values else 1.0)
        assert group["lr"] == pytest.approx(TrainConfig.lr * group["lr_mult"])


@pytest.mark.parametrize("saved, resumed", [("adamw", "muon"), ("muon", "adamw")])
def test_a_checkpoint_of_the_other_optimizer_is_refused_by_name(tmp_path, saved, resumed):
    from framework.metrics import EvalSet

    task, model = _task_and(TransformerConfig(d_model=16, n_layers=1, n_heads=2, d_ff=32))
    cfg = TrainConfig(steps=3, eval_every=3, val_sequences=16, checkpoint_every=1, optimizer=saved)
    val = EvalSet.generate(task, 16, seed=0)
    train(model, task, cfg, tmp_path, seed=0, val_set=val, meta={}, progress=False)
    with pytest.raises(CheckpointError, match="train.optimizer"):
        train(model, task, replace(cfg, steps=6, optimizer=resumed), tmp_path, seed=0, val_set=val, meta={},
              progress=False, resume=True)
