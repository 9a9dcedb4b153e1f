"""The model interface: ``model(tokens) -> logits`` at every position, and a config per architecture.

Every model maps (B, T) long tokens to (B, T, n_classes) logits and is causal: the output at
position t depends on tokens 0..t only. Models are built by name through ``framework.models``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class ModelConfig:
    """Fields every model config carries. Subclasses add sizes and validate in ``__post_init__``."""

    name: str = "?"
    # Resize this architecture to the transformer's parameter count (within 2%) before building.
    match_params: bool = False


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class SequenceModel(nn.Module):
    """Base class: subclasses set ``self.config`` and implement ``forward``."""

    config: ModelConfig

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, n_classes)
        raise NotImplementedError
