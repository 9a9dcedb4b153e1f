"""Evaluation on a fixed-seed set of fresh sequences, never the training stream.

The set is generated on the CPU from its own seed, so it is the same sequences on any device and
in any run with the same seed. Scores carry their standard error over sequences and the count.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch

from framework.metrics.bits import entropy_bits, entropy_bits_from_logits, kl_bits
from framework.tasks.base import Batch, Task


# Sequences per forward pass on a CPU. An eval batch is a unit of the eval set (its size decides the
# sequences drawn), not of compute: forwards of 512 HMM sequences spill the caches and ran 30% slower
# than in chunks of 64-128 (benchmarks/README.md, eval_cost). GPUs take the whole batch.
CPU_CHUNK = 128


@dataclass
class EvalSet:
    batches: list[Batch]

    @classmethod
    def generate(cls, task: Task, n_sequences: int, seed: int, batch_size: int = 512) -> "EvalSet":
        generator = torch.Generator("cpu").manual_seed(seed)
        sizes = [min(batch_size, n_sequences - i) for i in range(0, n_sequences, batch_size)]
        return cls([task.sample(n, generator) for n in sizes])

    @property
    def n_sequences(self) -> int:
        return sum(len(b) for b in self.batches)


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA; a no-op elsewhere (CPU bf16 is slower and less precise here)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _mean_stderr(per_sequence: torch.Tensor) -> tuple[float, float]:
    n = per_sequence.numel()
    mean = per_sequence.mean().item()
    stderr = per_sequence.std(unbiased=True).item() / math.sqrt(n) if n > 1 else float("nan")
    return mean, stderr


def evaluate(model: torch.nn.Module, eval_set: EvalSet, device: torch.device | str = "cpu") -> dict:
    """Bits of ``model`` against the exact posterior on every sequence and scored position of the set."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    kls, h_models, h_bayes, hits, bayes_hits = [], [], [], [], []
    with torch.inference_mode(), autocast_for(device):
        for batch in eval_set.batches:
            batch = batch.to(device)
            chunks = batch.tokens.split(CPU_CHUNK) if device.type == "cpu" else [batch.tokens]
            logits = torch.cat([model(tokens)[:, batch.positions] for tokens in chunks]).double()  # (B, P, C)
            kls.append(kl_bits(batch.posterior, logits).cpu())
            h_models.append(entropy_bits_from_logits(logits).cpu())
            h_bayes.append(entropy_bits(batch.posterior).cpu())
            hits.append((logits.argmax(-1) == batch.labels).cpu())
            bayes_hits.append((batch.posterior.argmax(-1) == batch.labels).cpu())
    model.train(was_training)
    kl = torch.cat(kls)  # (N, P)
    h_model, h_true = torch.cat(h_models), torch.cat(h_bayes)
    abs_err = (h_model - h_true).abs()
    mae, mae_se = _mean_stderr(abs_err.mean(-1))
    kl_mean, kl_se = _mean_stderr(kl.mean(-1))
    acc, acc_se = _mean_stderr(torch.cat(hits).double().mean(-1))
    bayes_acc, bayes_acc_se = _mean_stderr(torch.cat(bayes_hits).double().mean(-1))
    return {
        "entropy_mae_bits": mae,
        "entropy_mae_bits_stderr": mae_se,
        "kl_bits": kl_mean,
        "kl_bits_stderr": kl_se,
        # Top-1 agreement with the realised outcome, and the same for the Bayes-optimal guess: the
        # ceiling a perfect model reaches (1.0 for recall of stored keys, chance for unseen values).
        "accuracy": acc,
        "accuracy_stderr": acc_se,
        "bayes_accuracy": bayes_acc,
        "bayes_accuracy_stderr": bayes_acc_se,
        "n_sequences": kl.shape[0],
        "n_positions": kl.shape[1],
        "per_position": {
            "h_model": h_model.mean(0).tolist(),
            "h_bayes": h_true.mean(0).tolist(),
            "kl_bits": kl.mean(0).tolist(),
            "entropy_mae_bits": abs_err.mean(0).tolist(),
            "accuracy": torch.cat(hits).double().mean(0).tolist(),
        },
    }
