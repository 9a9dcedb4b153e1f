"""The whole-matrix view: every prompt of a small task against its exact next-token row.

A trained model is a map prompt -> next-token distribution, i.e. a matrix with one row per prompt.
For configurations small enough to enumerate (bijection V <= 5, task identification with small M)
every prompt is scored against the exact Bayesian row, so "how well does the model approximate the
matrix" gets an exact answer, with no sampling error: the mean and the worst-case KL over all rows.

A prompt is a prefix ending at a scored position. The models are causal, so one forward pass over
each full sequence yields the rows of all its prefixes; prefixes shared by several sequences are
counted once.
"""
from __future__ import annotations

import torch

from framework.metrics.bits import entropy_bits, entropy_bits_from_logits, kl_bits
from framework.metrics.evaluate import autocast_for
from framework.models.base import count_params
from framework.tasks.base import Task


def _first_of_each(prefixes: torch.Tensor) -> torch.Tensor:
    """Indices of the first occurrence of each distinct row of ``prefixes`` (N, t)."""
    _, inverse = torch.unique(prefixes, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), prefixes.shape[0], dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(prefixes.shape[0]), reduce="amin")
    return first


def matrix_view(model: torch.nn.Module, task: Task, device: torch.device | str = "cpu",
                batch_size: int = 2048) -> dict:
    """Mean and worst-case KL(Bayes || model) over every distinct prompt of ``task``."""
    device = torch.device(device)
    tokens = task.all_sequences()  # (N, T)
    positions = task.positions()
    exact = task.posterior(tokens)  # (N, P, C) float64
    was_training = model.training
    model.eval()
    with torch.inference_mode(), autocast_for(device):
        logits = torch.cat([model(chunk.to(device))[:, positions.to(device)].double().cpu()
                            for chunk in tokens.split(batch_size)])  # (N, P, C)
    model.train(was_training)

    kls, abs_errs, prompts, rows = [], [], [], []
    for j, pos in enumerate(positions.tolist()):
        keep = _first_of_each(tokens[:, : pos + 1])  # one sequence per distinct prompt
        p, q = exact[keep, j], logits[keep, j]  # (n, C)
        kls.append(kl_bits(p, q))
        abs_errs.append((entropy_bits_from_logits(q) - entropy_bits(p)).abs())
        prompts.append(tokens[keep, : pos + 1])
        rows.append(p)
    kl = torch.cat(kls)
    at = max(range(len(kls)), key=lambda j: kls[j].max())  # the scored position of the worst row
    distinct_rows = torch.unique(torch.cat(rows).round(decimals=12), dim=0).shape[0]
    return {
        "n_sequences": tokens.shape[0],
        "n_prompts": kl.numel(),  # rows of the matrix
        "n_distinct_rows": distinct_rows,  # distinct exact distributions among them
        "params": count_params(model),
        "kl_bits_mean": kl.mean().item(),
        "kl_bits_max": kl.max().item(),
        "entropy_mae_bits_mean": torch.cat(abs_errs).mean().item(),
        "worst_prompt": prompts[at][kls[at].argmax()].tolist(),
        "kl_bits_max_by_position": [k.max().item() for k in kls],
        "kl_bits_mean_by_position": [k.mean().item() for k in kls],
    }
