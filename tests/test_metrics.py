"""Bits metrics against independent numpy formulas, and the evaluation pipeline against exact answers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from framework.metrics import EvalSet, entropy_bits, entropy_bits_from_logits, evaluate, kl_bits, soft_cross_entropy
from framework.tasks import BijectionConfig, HMMConfig, build_task


def _np_entropy(p):
    p = np.asarray(p, dtype=np.float64)
    nz = p[p > 0]
    return float(-(nz * np.log2(nz)).sum())


def _np_kl(p, q):
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    m = p > 0
    return float((p[m] * np.log2(p[m] / q[m])).sum())


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 12), st.integers(0, 2**31 - 1), st.integers(0, 3))
def test_entropy_and_kl_match_numpy(n, seed, n_zeros):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(n))
    p[rng.permutation(n)[: min(n_zeros, n - 1)]] = 0.0
    p /= p.sum()
    logits = rng.normal(size=n) * 3
    q = np.exp(logits - logits.max())
    q /= q.sum()
    pt, lt = torch.tensor(p), torch.tensor(logits)
    assert entropy_bits(pt).item() == pytest.approx(_np_entropy(p), abs=1e-12)
    assert entropy_bits_from_logits(lt).item() == pytest.approx(_np_entropy(q), abs=1e-12)
    assert kl_bits(pt, lt).item() == pytest.approx(_np_kl(p, q), abs=1e-10)
    # soft cross-entropy (nats) exceeds H(p) by exactly KL(p || q)
    excess = soft_cross_entropy(pt[None].float(), lt[None].float()).item() - _np_entropy(p) * math.log(2)
    assert excess == pytest.approx(_np_kl(p, q) * math.log(2), abs=1e-5)


def test_kl_is_zero_only_at_the_posterior():
    p = torch.tensor([0.5, 0.25, 0.25, 0.0], dtype=torch.float64)
    assert kl_bits(p, torch.log(p.clamp_min(1e-300))).item() == pytest.approx(0.0, abs=1e-12)
    assert kl_bits(p, torch.zeros(4, dtype=torch.float64)).item() == pytest.approx(2.0 - 1.5, abs=1e-12)


class PosteriorModel(torch.nn.Module):
    """Outputs the task's exact log-posterior at scored positions (uniform elsewhere): a Bayes-optimal model."""

    def __init__(self, task, blur: float = 0.0):
        super().__init__()
        self.task, self.blur = task, blur
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, tokens):
        logits = torch.zeros(*tokens.shape, self.task.n_classes, dtype=torch.float64)
        q = (1 - self.blur) * self.task.posterior(tokens) + self.blur / self.task.n_classes
        logits[:, self.task.positions()] = torch.log(q.clamp_min(1e-300))
        return logits


@pytest.mark.parametrize("config", [BijectionConfig(V=6, L=6), BijectionConfig(V=5, L=8, replacement=True), HMMConfig(K=5)])
def test_evaluate_scores_the_exact_posterior_as_zero_bits(config):
    task = build_task(config)
    eval_set = EvalSet.generate(task, 300, seed=1, batch_size=128)
    scores = evaluate(PosteriorModel(task), eval_set)
    assert scores["n_sequences"] == 300
    assert scores["kl_bits"] < 1e-9 and scores["entropy_mae_bits"] < 1e-9
    assert len(scores["per_position"]["h_bayes"]) == len(task.positions())
    # a miscalibrated (blurred towards uniform) model is penalised on both metrics
    blurred = evaluate(PosteriorModel(task, blur=0.2), eval_set)
    assert blurred["kl_bits"] > 0.01 and blurred["entropy_mae_bits"] > 0.01


def test_uniform_model_kl_equals_log_c_minus_bayes_entropy():
    task = build_task(BijectionConfig(V=8, L=8))
    eval_set = EvalSet.generate(task, 256, seed=3)

    class Uniform(torch.nn.Module):
        def forward(self, tokens):
            return torch.zeros(*tokens.shape, task.n_classes)

    scores = evaluate(Uniform(), eval_set)
    # H_Bayes at key i is log2(V - i); uniform over V has KL log2 V - log2(V - i)
    expected = np.mean([math.log2(8) - math.log2(8 - i) for i in range(8)])
    assert scores["kl_bits"] == pytest.approx(expected, abs=1e-9)
    assert scores["entropy_mae_bits"] == pytest.approx(expected, abs=1e-9)


def test_eval_set_is_fixed_by_its_seed_and_differs_across_seeds():
    task = build_task(BijectionConfig(V=10, L=10))
    a, b, c = (EvalSet.generate(task, 100, seed=s) for s in (7, 7, 8))
    assert torch.equal(a.batches[0].tokens, b.batches[0].tokens)
    assert not torch.equal(a.batches[0].tokens, c.batches[0].tokens)


def test_chunked_cpu_forward_scores_like_one_pass(monkeypatch):
    import importlib

    from framework.models import TransformerConfig, build_model

    evaluate_module = importlib.import_module("framework.metrics.evaluate")  # the attribute is the function

    task = build_task(HMMConfig(K=6))
    eval_set = EvalSet.generate(task, 300, seed=4, batch_size=300)
    torch.manual_seed(0)
    model = build_model(TransformerConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64), task.vocab_size,
                        task.n_classes, task.seq_len).double()
    chunked = evaluate(model, eval_set)  # 128 + 128 + 44
    monkeypatch.setattr(evaluate_module, "CPU_CHUNK", 10_000)
    whole = evaluate(model, eval_set)
    for key in ("kl_bits", "entropy_mae_bits"):
        assert chunked[key] == pytest.approx(whole[key], rel=1e-12, abs=1e-15), key
    assert chunked["n_sequences"] == whole["n_sequences"] == 300
