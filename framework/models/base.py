"""The model interface: ``model(tokens) -> logits`` at every position, and a config per architecture.

Every model maps (B, T) long tokens to (B, T, n_classes) logits and is causal: the output at
position t depends on tokens 0..t only. Models are built by name through ``framework.models``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn


@dataclass
class ModelConfig:
    """Fields every model config carries. Subclasses add sizes and validate in ``__post_init__``."""

    name: str = "?"
    # Resize this architecture to the reference model's parameter count (within 2%) before building
    # (the reference is the run's `match_to` model; framework.models.capacity).
    match_params: bool = False

    # Capacity matching searches this integer field (the count must grow with it); None: not resizable.
    size_field: ClassVar[str | None] = None
    # A second field moved only when no value of size_field is within tolerance (None: never).
    width_field: ClassVar[str | None] = None


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class SequenceModel(nn.Module):
    """Base class: subclasses set ``self.config`` and implement ``forward``.

    The class attributes are how reports and error messages name the architecture.
    """

    config: ModelConfig
    article: ClassVar[str] = ""  # "an LSTM": how a refusal names it (default: "a <name> model")
    color: ClassVar[str | None] = None  # its colour in plots (None: the next colour of the cycle)
    # Why at_length cannot extend it, when it cannot ("reads a fixed-width prefix ...").
    fixed_length: ClassVar[str] = "cannot read sequences longer than it was built for"

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, n_classes)
        raise NotImplementedError

    def at_length(self, T: int) -> "SequenceModel | None":
        """This model, able to read ``T`` tokens: itself, an extended copy, or None where it cannot be.

        The default suits recurrences, which run at any length. Architectures with a position table
        override it; rows a copy adds are drawn from the global RNG, so the caller seeds it.
        """
        return self

    def value_projections(self) -> list[nn.Parameter]:
        """The attention value projections' parameters (weights and biases of every submodule named
        ``v_proj``, the transformer's), which ``train.value_lr_mult`` trains at a higher learning rate
        (Paper II's EM-like schedule). Architectures without attention have none."""
        return [p for name, module in self.named_modules() if name.rsplit(".", 1)[-1] == "v_proj"
                for p in module.parameters()]


def head_logits(head: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """``head(features)`` in at least float32, also under bf16 autocast (``train.precision``): bfloat16
    keeps three significant digits, and logits rounded to them would leave the model a floor of bits
    above the posterior. The head is one small matrix; a float64 model (the tests) keeps float64."""
    dtype = torch.promote_types(features.dtype, torch.float32)
    with torch.autocast(features.device.type, enabled=False):
        return head(features.to(dtype))


def hidden_matrices(module: nn.Module) -> list[nn.Parameter]:
    """The weights of every ``nn.Linear`` in ``module`` but those of submodules named ``head`` (the
    output layer of every model here). Muon's authors keep embeddings, the head, biases and norms on
    AdamW; matrices that are not linear maps of activations (an LSTM's gates inside ``nn.LSTM``,
    Mamba's ``A_log``) stay there too."""
    return [m.weight for name, m in module.named_modules()
            if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] != "head"]
