"""An LSTM baseline: a gated recurrence with a fixed-size state and no content-addressed memory.

Hochreiter & Schmidhuber, "Long Short-Term Memory" (1997); PyTorch's ``nn.LSTM`` (cuDNN on GPU).
In the wind-tunnel paper (Aggarwal, Dalal & Misra, arXiv 2512.22471) it matches the transformer on
bijection elimination but not on HMM filtering or associative recall.

token embedding -> n_layers stacked LSTM -> LayerNorm -> linear head. No positional embedding: the
recurrence knows the order, and it runs at any length.

Hook point: ``hook_features`` (B, T, d), the normalised top-layer hidden states fed to the head.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from framework.errors import require
from framework.models.base import ModelConfig, SequenceModel, head_logits


@dataclass
class LSTMConfig(ModelConfig):
    name: str = "lstm"
    size_field = "d_model"
    d_model: int = 64  # embedding width and hidden size of every layer
    n_layers: int = 2

    def __post_init__(self):
        for field in ("d_model", "n_layers"):
            value = getattr(self, field)
            require(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                    field, f"must be an integer >= 1, got {value!r}")


class LSTM(SequenceModel):
    article = "an LSTM"
    color = "tab:green"

    def __init__(self, config: LSTMConfig, vocab_size: int, n_classes: int, max_len: int):
        super().__init__()
        self.config = config
        self.max_len = max_len  # unused: a recurrence runs at any length
        self.embedding = nn.Embedding(vocab_size, config.d_model)
        # PyTorch's default LSTM init (uniform +-1/sqrt(d)) is the standard one; we keep it.
        self.lstm = nn.LSTM(config.d_model, config.d_model, config.n_layers, batch_first=True)
        self.ln_f = nn.LayerNorm(config.d_model)
        self.hook_features = nn.Identity()
        self.head = nn.Linear(config.d_model, n_classes)
        # Small head, as in the other models: every model in the zoo starts near the uniform prediction.
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embedding(tokens)  # (B, T, d)
        x, _ = self.lstm(x)  # (B, T, d), top layer's hidden state at every step
        x = self.hook_features(self.ln_f(x))  # (B, T, d)
        return head_logits(self.head, x)  # (B, T, n_classes), float32 even under bf16 autocast
