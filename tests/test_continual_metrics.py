"""Continual-learning metrics against hand-computed examples (bits; lower is better)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from framework.continual.metrics import (
    SIGN,
    ContinualRecorder,
    approximate_rank,
    average_error,
    bwt,
    dormant_fraction,
    effective_rank,
    experience_bits,
    forgetting,
    forgetting_first_last,
    forgetting_per_experience,
    fresh_baseline,
    fwt,
    intransigence,
    plasticity_ratios,
    stable_rank,
    summarise,
    weight_stats,
)
from framework.continual.strategies import StrategyConfig, build_strategy
from framework.continual.streams import TINY_STREAMS, build_stream
from framework.continual.units import find_units
from framework.models import TransformerConfig, build_model

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# rows: trained through experience i; columns: tested on experience j
R = [[1.0, 3.0, 4.0],
     [0.8, 0.5, 3.5],
     [1.5, 1.0, 0.25]]
INITIAL = [4.0, 4.0, 4.0]  # the freshly initialised model
FRESH = [0.5, 0.25, 0.5]  # a fresh model trained on each experience alone


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a busy CPU: thread hand-offs cost 20x the work, so run these on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_matrix_metrics_by_hand():
    assert average_error(R) == pytest.approx((1.5 + 1.0 + 0.25) / 3)
    assert bwt(R) == pytest.approx(((1.5 - 1.0) + (1.0 - 0.5)) / 2)  # 0.5: the old errors grew
    assert forgetting_first_last(R) == pytest.approx(0.5)
    assert fwt(R, INITIAL) == pytest.approx(((3.0 - 4.0) + (3.5 - 4.0)) / 2)  # -0.75: earlier training helped
    # Chaudhry: last minus the best since learned; experience 0 was best (0.8) after experience 1
    assert forgetting_per_experience(R) == pytest.approx([1.5 - 0.8, 1.0 - 0.5])
    assert forgetting(R) == pytest.approx(0.6)
    assert plasticity_ratios(R, FRESH) == pytest.approx([2.0, 2.0, 0.5])
    assert intransigence(R, FRESH) == pytest.approx((0.5 + 0.25 - 0.25) / 3)


def test_chaudhry_forgetting_can_be_negative_and_differs_from_first_minus_last():
    improving = [[1.0, 2.0], [0.5, 0.4]]  # training on experience 1 also helped experience 0
    assert forgetting(improving) == pytest.approx(-0.5) == bwt(improving)
    assert np.isnan(bwt([[1.0, 2.0]])) and np.isnan(fwt([[1.0, 2.0]], [1.0, 1.0]))


def test_summary_states_the_sign_and_carries_every_metric():
    out = summarise(R, INITIAL, FRESH)
    assert out["sign"] == SIGN and "lower is better" in SIGN
    assert out["learned_bits"] == [1.0, 0.5, 0.25]
    assert out["plasticity_ratio_mean"] == pytest.approx(1.5)
    assert {"average_error_bits", "bwt_bits", "fwt_bits", "forgetting_bits", "forgetting_first_last_bits",
            "intransigence_bits", "R_kl_bits"} <= set(out)
    with pytest.raises(ValueError):
        summarise([[1.0], [2.0]])  # more rows than experiences


def test_effective_and_approximate_rank_by_hand():
    assert effective_rank(torch.eye(4)) == pytest.approx(4.0)
    assert effective_rank(torch.outer(torch.arange(1.0, 6.0), torch.ones(3))) == pytest.approx(1.0)
    p = torch.tensor([0.75, 0.25], dtype=torch.float64)  # singular values 3 and 1
    assert effective_rank(torch.diag(torch.tensor([3.0, 1.0]))) == pytest.approx(math.exp(-(p * p.log()).sum().item()))
    assert approximate_rank(torch.diag(torch.tensor([3.0, 1.0]))) == 2  # 9 / 10 < 0.99
    assert approximate_rank(torch.diag(torch.tensor([10.0, 1.0]))) == 1  # 100 / 101 > 0.99
    assert approximate_rank(torch.eye(5)) == 5
    assert stable_rank(torch.diag(torch.tensor([3.0, 1.0]))) == pytest.approx(10 / 9)
    assert stable_rank(torch.eye(5)) == pytest.approx(5.0)


def test_weight_stats_by_hand():
    layer = nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0]]))
        layer.bias.copy_(torch.tensor([3.0]))
    zeros = {n: torch.zeros_like(p) for n, p in layer.named_parameters()}
    stats = weight_stats(layer, zeros)
    assert stats["mean_abs_weight"] == pytest.approx(2.0)
    assert stats["weight_norm"] == pytest.approx(math.sqrt(14)) == stats["distance_from_init"]


def tiny_transformer(stream, seed=0):
    torch.manual_seed(seed)
    return stream.prepare_model(build_model(TransformerConfig(d_model=8, n_layers=1, n_heads=2, d_ff=16),
                                            stream.vocab_size, stream.n_classes, stream.seq_len))


def test_dormant_and_dead_units_by_hand():
    stream = build_stream(TINY_STREAMS["vocab_shift"])
    model = tiny_transformer(stream)
    group = find_units(model)[0]
    with torch.no_grad():
        group.incoming[0].param[:4] = 0.0  # GELU(0 . x + 0) = 0: never active
        group.incoming[1].param[:4] = 0.0
    tokens = torch.stack([stream.test_stream[0].dataset[i][0] for i in range(8)])
    assert dormant_fraction(model, tokens, 0.0)["fraction"] == pytest.approx(4 / 16)
    assert dormant_fraction(model, tokens, 0.025)["fraction"] >= 4 / 16
    assert dormant_fraction(model, tokens, 1.0)["fraction"] < 1.0  # not every unit is at or below the mean


class Constant(nn.Module):
    """Logits that are the same everywhere (0: the uniform predictive), or the log of a fixed posterior."""

    def __init__(self, n_classes: int):
        super().__init__()
        self.n_classes = n_classes

    def forward(self, tokens):
        return torch.zeros(*tokens.shape, self.n_classes)


def test_experience_bits_by_hand():
    stream = build_stream(TINY_STREAMS["vocab_shift"])  # bijection V=4, L=4: 4, 3, 2, 1 values left
    bits = experience_bits(Constant(4), stream.test_stream[0].dataset)
    # KL(uniform over the k free values || uniform over 4) = 2 - log2 k, averaged over the 4 keys
    expected = np.mean([2 - math.log2(k) for k in (4, 3, 2, 1)])
    assert bits["kl_bits"] == pytest.approx(expected, abs=1e-12) and bits["kl_bits_stderr"] == pytest.approx(0, abs=1e-12)
    assert bits["entropy_mae_bits"] == pytest.approx(expected, abs=1e-12)
    assert bits["n_sequences"] == 8 and bits["n_positions"] == 4


def test_recorder_fills_the_error_matrix_and_the_diagnostics():
    stream = build_stream(TINY_STREAMS["prior_shift"])
    recorder = ContinualRecorder(stream)
    strategy = build_strategy(StrategyConfig(train_mb_size=8), tiny_transformer(stream), plugins=[recorder])
    for experience in stream.train_stream:
        strategy.train(experience)
    assert len(recorder.initial) == 2 and np.asarray(recorder.rows).shape == (2, 2)
    summary = recorder.summary(fresh=[1.0, 1.0])
    assert summary["bwt_bits"] == pytest.approx(recorder.rows[1][0] - recorder.rows[0][0])
    assert summary["fwt_bits"] == pytest.approx(recorder.rows[0][1] - recorder.initial[1])
    assert [d["experience"] for d in summary["diagnostics"]] == [0, 1]
    first = summary["diagnostics"][0]
    assert 1.0 <= first["effective_rank"] <= 8 and 1 <= first["approximate_rank"] <= 8
    assert 0.0 <= first["dormant"]["fraction"] <= 1.0 and first["distance_from_init"] > 0
    # the first column right after training on it is what experience_bits says
    model_row = experience_bits(strategy.model, stream.test_stream[1].dataset)["kl_bits"]
    assert recorder.rows[1][1] == pytest.approx(model_row)
    partial = ContinualRecorder(stream, columns=[1])
    assert "bwt_bits" not in partial.summary()


def test_fresh_baseline_trains_a_new_model_per_experience_with_the_same_budget():
    stream = build_stream(TINY_STREAMS["permuted_tokens"])
    # enough of a budget (8 steps at a high rate) that training beats the untrained model whatever the seeds
    config = StrategyConfig(name="ewc", train_mb_size=8, train_epochs=4, lr=1e-2)

    def make():
        return tiny_transformer(stream)

    a, b = fresh_baseline(make, config, stream), fresh_baseline(make, config, stream)
    assert len(a) == 2 and a == b and all(x > 0 for x in a)
    untrained = experience_bits(make(), stream.test_stream[0].dataset)["kl_bits"]
    assert a[0] < untrained
