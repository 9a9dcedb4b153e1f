"""Checks shared by the task tests: the Batch contract, and the sampler's labels against the oracle."""
from __future__ import annotations

import math

import torch
from hypothesis import strategies as st

from framework.tasks import Batch, Task

SEEDS = st.integers(0, 2**32 - 1)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def entropy_bits(p: torch.Tensor) -> torch.Tensor:
    """H(p) in bits, written independently of framework.metrics (xlogy) so the tests check it too."""
    return -torch.special.xlogy(p, p).sum(-1) / math.log(2)


def check_interface(task: Task, batch: Batch, B: int) -> None:
    P = len(task.positions())
    assert batch.tokens.shape == (B, task.seq_len) and batch.tokens.dtype == torch.long
    assert int(batch.tokens.min()) >= 0 and int(batch.tokens.max()) < task.vocab_size
    assert torch.equal(batch.positions, task.positions())
    assert batch.posterior.shape == (B, P, task.n_classes) and batch.posterior.dtype == torch.float64
    assert batch.labels.shape == (B, P) and batch.labels.dtype == torch.long
    assert int(batch.labels.min()) >= 0 and int(batch.labels.max()) < task.n_classes


def check_distributions(batch: Batch) -> None:
    post = batch.posterior
    assert bool((post >= 0).all())
    assert torch.allclose(post.sum(-1), torch.ones((), dtype=torch.float64), rtol=0, atol=1e-12)
    assert bool((post.gather(-1, batch.labels[..., None]) > 0).all()), "a realised label has zero posterior mass"


def check_batch(task: Task, batch: Batch, B: int) -> None:
    check_interface(task, batch, B)
    check_distributions(batch)


def assert_calibrated(batch: Batch, groups: torch.Tensor | None = None, bins: int = 10, z_max: float = 5.0) -> None:
    """Labels drawn by the sampler are distributed as the oracle's posterior says.

    Each statistic is a per-sequence sum whose mean is exactly 0 when sampler and oracle agree:
    hits minus predicted mass per bin of posterior mass (calibration: class identities are
    exchangeable in these tasks, so per-class counts alone cannot tell), per (position, class),
    log p(label) + H(p) (the labels' log-likelihood matches the oracle's entropy), and per group of
    ``groups`` (B, P, C), a feature of each class read off the tokens (e.g. "this value is stored in
    the sequence"), which catches an oracle that ignores the tokens. Sequences are i.i.d., so the
    z-scores use the spread across sequences (positions inside one sequence are correlated). A
    statistic that is 0 by construction (e.g. the bins when every posterior is uniform on its
    support) must then be 0 up to rounding.
    """
    post = batch.posterior  # (B, P, C)
    B, P, C = post.shape
    resid = torch.nn.functional.one_hot(batch.labels, C).double() - post  # (B, P, C)
    which = (post * bins).long().clamp(max=bins - 1)
    by_bin = torch.zeros(B, bins, dtype=torch.float64).scatter_add_(1, which.reshape(B, -1), resid.reshape(B, -1))
    log_lik = torch.log(post.gather(-1, batch.labels[..., None])).squeeze(-1)  # (B, P)
    entropy = -torch.special.xlogy(post, post).sum(-1)
    parts = [by_bin, resid.reshape(B, P * C), (log_lik + entropy).sum(-1, keepdim=True)]
    if groups is not None:
        n = int(groups.max()) + 1
        parts.append(torch.zeros(B, n, dtype=torch.float64).scatter_add_(1, groups.reshape(B, -1), resid.reshape(B, -1)))
    stats = torch.cat(parts, 1)
    mean, sem = stats.mean(0), stats.std(0) / math.sqrt(B)
    random = sem > 1e-9
    assert int(random.sum()) > 0
    z = mean[random] / sem[random]
    assert bool((z.abs() < z_max).all()), f"sampler and oracle disagree: max |z| = {float(z.abs().max()):.1f}"
    assert bool((mean[~random].abs() < 1e-9).all()), "sampler and oracle disagree on a deterministic statistic"
