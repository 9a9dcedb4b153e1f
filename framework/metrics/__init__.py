"""Bits metrics against exact posteriors, and their evaluation over a fixed held-out set."""
from framework.metrics.bits import entropy_bits, entropy_bits_from_logits, kl_bits, soft_cross_entropy
from framework.metrics.evaluate import EvalSet, evaluate

__all__ = ["EvalSet", "evaluate", "entropy_bits", "entropy_bits_from_logits", "kl_bits", "soft_cross_entropy"]
