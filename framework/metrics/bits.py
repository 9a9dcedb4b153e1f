"""Bits against the exact posterior (SPEC §3).

Per sequence and scored position, with p the exact posterior and q the model's predictive:
``entropy_mae_bits`` = mean |H(q) - H(p)| (the paper's headline metric, strict per-sequence form)
and ``kl_bits`` = mean KL(p || q) (zero only if the distributions agree). Everything is float64,
log base 2, with 0 log 0 = 0.
"""
from __future__ import annotations

import math

import torch

LN2 = math.log(2.0)


def entropy_bits(p: torch.Tensor) -> torch.Tensor:
    """H(p) in bits over the last axis; zero-probability entries contribute nothing."""
    p = p.double()
    plogp = torch.where(p > 0, p * torch.log(p.clamp_min(1e-300)), torch.zeros_like(p))
    return -plogp.sum(-1) / LN2


def entropy_bits_from_logits(logits: torch.Tensor) -> torch.Tensor:
    logq = torch.log_softmax(logits.double(), dim=-1)
    return -(logq.exp() * logq).sum(-1) / LN2


def kl_bits(p: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(p || softmax(logits)) in bits over the last axis."""
    p = p.double()
    logq = torch.log_softmax(logits.double(), dim=-1)
    logp = torch.log(p.clamp_min(1e-300))
    terms = torch.where(p > 0, p * (logp - logq), torch.zeros_like(p))
    return terms.sum(-1).clamp_min(0.0) / LN2


def soft_cross_entropy(p: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Mean over positions of -sum p log q (nats): the training loss against an exact posterior.

    Its minimum over q is H(p), reached exactly at q = p, so its excess over H(p) is KL(p || q).
    """
    logq = torch.log_softmax(logits.float(), dim=-1)
    return -(p.to(logq.dtype) * logq).sum(-1).mean()
