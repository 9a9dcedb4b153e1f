"""The whole-matrix view: enumeration is complete and exact, and row scores match a per-prompt loop."""
from __future__ import annotations

import math

import pytest
import torch

from framework.metrics.matrix import matrix_view
from framework.models import TransformerConfig, build_model
from framework.tasks import BijectionConfig, build_task


class OracleModel(torch.nn.Module):
    """Logits = log of the task's exact posterior at the scored positions (a perfect model)."""

    def __init__(self, task, temperature=1.0):
        super().__init__()
        self.task, self.temperature = task, temperature
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, tokens):
        out = torch.zeros(*tokens.shape, self.task.n_classes, dtype=torch.float64)
        out[:, self.task.positions()] = self.task.posterior(tokens).clamp_min(1e-300).log() / self.temperature
        return out


@pytest.mark.parametrize("V,L,replacement", [(3, 3, False), (4, 4, False), (4, 3, False), (3, 4, True), (4, 3, True)])
def test_bijection_enumeration_is_complete_and_distinct(V, L, replacement):
    task = build_task(BijectionConfig(V=V, L=L, replacement=replacement))
    every = task.all_sequences()
    listed = set(map(tuple, every.tolist()))
    assert len(listed) == every.shape[0] == task.count_sequences()
    sampled = task.sample(500, torch.Generator().manual_seed(V * 10 + L))
    assert set(map(tuple, sampled.tokens.tolist())) <= listed
    # every listed sequence is possible: its exact posterior gives the realised values nonzero mass
    post = task.posterior(every)
    values = every[:, 1::2] - V  # (N, L-1)
    assert (post[:, : L - 1].gather(-1, values.unsqueeze(-1)) > 0).all()


def test_enumeration_refuses_large_configs():
    with pytest.raises(ValueError, match="V <= 5"):
        build_task(BijectionConfig(V=8, L=8)).all_sequences()


def test_a_perfect_model_scores_zero_on_every_row():
    task = build_task(BijectionConfig(V=4, L=4))
    view = matrix_view(OracleModel(task), task)
    assert view["kl_bits_max"] < 1e-9 and view["entropy_mae_bits_mean"] < 1e-9


def test_rows_match_a_per_prompt_loop():
    task = build_task(BijectionConfig(V=4, L=3, replacement=True))
    model = OracleModel(task, temperature=2.0)  # wrong on purpose: flattened rows
    view = matrix_view(model, task)
    rows = {}
    every = task.all_sequences()
    exact = task.posterior(every)
    logits = model(every)
    for n, seq in enumerate(every.tolist()):
        for j, pos in enumerate(task.positions().tolist()):
            p, q = exact[n, j].tolist(), torch.log_softmax(logits[n, pos], -1).tolist()
            rows[tuple(seq[: pos + 1])] = sum(pi * (math.log2(pi) - qi / math.log(2)) for pi, qi in zip(p, q) if pi > 0)
    kls = list(rows.values())
    assert view["n_prompts"] == len(rows)
    assert view["kl_bits_mean"] == pytest.approx(sum(kls) / len(kls), abs=1e-12)
    assert view["kl_bits_max"] == pytest.approx(max(kls), abs=1e-12)
    assert rows[tuple(view["worst_prompt"])] == pytest.approx(max(kls), abs=1e-12)


def test_matrix_view_of_a_real_model_reports_its_size():
    task = build_task(BijectionConfig(V=3, L=3))
    model = build_model(TransformerConfig(d_model=16, n_layers=1, n_heads=2, d_ff=32), task.vocab_size,
                        task.n_classes, task.seq_len)
    view = matrix_view(model, task)
    assert view["params"] == sum(p.numel() for p in model.parameters())
    assert view["n_sequences"] == 36 and view["kl_bits_max"] >= view["kl_bits_mean"] > 0
    # V=3, L=3: the first key's row (uniform over 3), then uniform over 2, then a point mass
    assert view["n_distinct_rows"] == 1 + 3 + 3
