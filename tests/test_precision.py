"""Mixed precision (``train.precision``, framework.training.precision): what "auto" resolves to, the
float32 islands under bf16 autocast (the output head, CPU attention), Newton-Schulz in bfloat16, and
a mixed-precision run that trains."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from framework.errors import ConfigError
from framework.metrics import EvalSet, evaluate
from framework.models import LSTMConfig, MambaConfig, MLPConfig, TransformerConfig, build_model
from framework.models.base import head_logits
from framework.models.transformer import causal_attention
from framework.tasks import BijectionConfig, build_task
from framework.training import TrainConfig, train
from framework.training.loop import loss_on, make_optimizer, train_step
from framework.training.muon import newton_schulz
from framework.training.precision import (cpu_has_native_bf16, native_bf16_in, resolve_precision,
                                          training_autocast)

COEFFICIENTS, STEPS, EPS = (3.4445, -4.775, 2.0315), 5, 1e-7
TASK = build_task(BijectionConfig(V=5, L=5))
CPU = torch.device("cpu")
BF16 = torch.autocast("cpu", dtype=torch.bfloat16)


def _model(config=None, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    config = config or TransformerConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64)
    return build_model(config, TASK.vocab_size, TASK.n_classes, TASK.seq_len).to(dtype)


def test_the_cpuinfo_flags_decide_native_bf16():
    assert native_bf16_in("processor : 0\nflags : fpu sse avx512f avx512_bf16 avx2\n")
    assert native_bf16_in("flags\t\t: fpu amx_bf16 amx_tile\n")
    assert not native_bf16_in("flags : fpu sse avx512f avx512bw avx2\n")  # AVX512 alone emulates bf16
    assert not native_bf16_in("")


@pytest.mark.parametrize("precision, device, expected", [
    ("float32", "cpu", torch.float32), ("bfloat16", "cpu", torch.bfloat16),
    ("float32", "cuda", torch.float32), ("auto", "cuda", torch.bfloat16),
])
def test_explicit_precisions_and_auto_on_cuda_resolve_to_their_dtype(precision, device, expected):
    assert resolve_precision(precision, device) == expected


def test_auto_on_the_cpu_is_bfloat16_exactly_where_the_cpu_has_it():
    expected = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    assert resolve_precision("auto", "cpu") == expected


def test_an_unknown_precision_is_refused_by_name():
    with pytest.raises(ConfigError, match="precision"):
        TrainConfig(precision="float16")


def test_float32_adds_no_autocast_and_bfloat16_does():
    with training_autocast(torch.float32, CPU):
        assert not torch.is_autocast_enabled("cpu")
    with training_autocast(torch.bfloat16, CPU):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16


def test_the_head_stays_float32_under_autocast_and_float64_stays_float64():
    head = torch.nn.Linear(16, 7)
    generator = torch.Generator().manual_seed(0)
    for _ in range(10):
        x = torch.randn(3, 5, 16, generator=generator)
        with BF16:
            logits = head_logits(head, x)
            rounded = head(x)  # what autocast alone would give
        assert logits.dtype == torch.float32 and rounded.dtype == torch.bfloat16
        torch.testing.assert_close(logits, head(x), rtol=0, atol=0)  # bit-identical to float32
    head64 = head.double()
    x64 = torch.randn(3, 5, 16, dtype=torch.float64, generator=generator)
    with BF16:
        assert head_logits(head64, x64).dtype == torch.float64


def test_cpu_attention_under_autocast_is_float32_attention():
    generator = torch.Generator().manual_seed(1)
    for trial in range(10):
        q, k, v = (torch.randn(2, 3, 4 + trial, 8, generator=generator) for _ in range(3))
        plain = causal_attention(q, k, v, 0.0)
        with BF16:
            mixed = causal_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), 0.0)
            same_inputs = causal_attention(q, k, v, 0.0)
        assert mixed.dtype == torch.float32
        torch.testing.assert_close(same_inputs, plain, rtol=0, atol=0)
        exact = torch.nn.functional.scaled_dot_product_attention(  # the same rounded inputs, in float64
            q.bfloat16().double(), k.bfloat16().double(), v.bfloat16().double(), is_causal=True)
        torch.testing.assert_close(mixed.double(), exact, rtol=1e-5, atol=1e-6)
    q64 = torch.randn(1, 1, 3, 4, dtype=torch.float64)
    with BF16:
        assert causal_attention(q64, q64, q64, 0.0).dtype == torch.float64


def test_newton_schulz_in_bfloat16_is_float32s_to_bfloat16_accuracy_and_float64_is_untouched():
    generator = torch.Generator().manual_seed(2)
    shapes = [(16, 64), (64, 16), (32, 32), (5, 9)]
    for trial in range(10):
        updates = [torch.randn(s, generator=generator) * (trial + 1) for s in shapes]
        plain = newton_schulz(updates, COEFFICIENTS, STEPS, EPS)
        mixed = newton_schulz(updates, COEFFICIENTS, STEPS, EPS, torch.bfloat16)
        for p, m in zip(plain, mixed):
            assert m.dtype == torch.float32
            assert (m - p).norm() / p.norm() < 0.05  # bfloat16 keeps ~3 digits over five iterations
        doubles = [u.double() for u in updates]
        for a, b in zip(newton_schulz(doubles, COEFFICIENTS, STEPS, EPS),
                        newton_schulz(doubles, COEFFICIENTS, STEPS, EPS, torch.bfloat16)):
            assert b.dtype == torch.float64 and torch.equal(a, b)


@pytest.mark.parametrize("precision, expected", [("bfloat16", torch.bfloat16), ("float32", torch.float32)])
def test_muon_orthogonalises_in_the_resolved_precision(precision, expected):
    optimizer = make_optimizer(_model(), TrainConfig(precision=precision))
    assert optimizer.parts["muon"].ns_dtype == expected


@pytest.mark.parametrize("config", [TransformerConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64),
                                    MambaConfig(d_model=16, n_layers=1), LSTMConfig(d_model=16, n_layers=1),
                                    MLPConfig(hidden=32, n_layers=1)], ids=lambda c: c.name)
@pytest.mark.parametrize("target", ["posterior", "label"])
def test_a_mixed_precision_loss_is_the_float32_loss_to_bfloat16_accuracy(config, target):
    model = _model(config)
    generator = torch.Generator().manual_seed(3)
    for _ in range(5):
        batch = TASK.sample(16, generator)
        plain = loss_on(model, batch, target)
        with training_autocast(torch.bfloat16, CPU):
            mixed = loss_on(model, batch, target)
        assert mixed.dtype == torch.float32
        assert abs(mixed.item() - plain.item()) < 0.02 * plain.item()
        assert mixed.item() != plain.item()  # the autocast did change the arithmetic


def test_a_mixed_precision_run_learns(tmp_path):  # and resumes exactly: test_training's resume test
    cfg = TrainConfig(steps=60, batch_size=32, lr=3e-3, warmup_steps=5, eval_every=30, val_sequences=64,
                      precision="bfloat16")
    val = EvalSet.generate(TASK, 64, seed=99)
    untrained = evaluate(_model(), val)["kl_bits"]
    model = _model()
    train(model, TASK, cfg, tmp_path, seed=5, val_set=val, meta={"task": "bijection-5"}, progress=False)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the weights stay float32
    assert evaluate(model, val)["kl_bits"] < 0.5 * untrained


def test_a_mixed_precision_step_changes_the_weights_in_float32():
    model, cfg = _model(), TrainConfig(precision="bfloat16", batch_size=16)
    optimizer = make_optimizer(model, cfg)
    before = [p.detach().clone() for p in model.parameters()]
    train_step(model, model, optimizer, TASK.sample(16, torch.Generator().manual_seed(4)), cfg)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()) if b.grad is not None)
