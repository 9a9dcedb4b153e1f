"""The "MLP fails" baseline: a deep residual MLP that reads the prefix at fixed positions.

Aggarwal, Dalal & Misra (arXiv 2512.22471) train parameter-matched deep residual MLPs with
LayerNorm on every wind tunnel; they fail (1.85 bits entropy MAE on bijection elimination, vs
0.003 for the transformer). Their MLP is per-position (it sees only its own token and position),
which ``context="token"`` reproduces. The default, ``context="prefix"``, is stronger: it reads the
whole causally masked prefix, so it can represent any fixed function of the tokens so far. That
suffices for elimination (uniform over the values not yet seen is a function of the *set* of seen
values), and our runs find it solves bijection elimination as well as the transformer; it still
fails where the answer needs a computation over the context, such as HMM filtering.

At position t the MLP's input is conceptually the concatenation of the embeddings of tokens
0..max_len-1 with the positions after t zeroed, plus which position t it is predicting at:

    h_t = W [e_0; ...; e_t; 0; ...; 0] + p_t = sum_{s <= t} W_s e_s + p_t

W_s being the (d_model, hidden) slice of W that reads position s. We compute that exactly and
causally without forming the (max_len * d_model)-wide input: per-position projections
e_s @ W_s (one batched matmul), then a cumulative sum over time. p_t, a learned embedding of the
query position, also serves as the first layer's bias.

Then n_layers residual blocks ``x + Linear(GELU(Linear(LayerNorm(x))))``, hidden -> hidden ->
hidden (no 4x expansion: ``hidden`` is the one width, which keeps capacity matching one-dimensional),
a final LayerNorm and a linear head. There is no attention and no recurrence: position s is read
by its own weights W_s, whatever token it holds.

Hook point: ``hook_features`` (B, T, hidden), the final-LayerNorm features fed to the head.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from framework.errors import require
from framework.models.base import ModelConfig, SequenceModel, head_logits


CONTEXTS = ("prefix", "token")


@dataclass
class MLPConfig(ModelConfig):
    name: str = "mlp"
    size_field = "hidden"
    width_field = "d_model"  # moved only when no hidden is within tolerance (capacity.py)
    d_model: int = 32  # token embedding width; the flattened prefix is max_len * d_model wide
    hidden: int = 256  # width of every hidden layer; capacity matching resizes this
    n_layers: int = 4  # residual blocks after the prefix read
    # "prefix": position t reads the whole causally masked prefix (tokens 0..t).
    # "token": position t reads only its own token and position: the paper's per-position MLP
    # control (public code: MLPControl), which cannot see the context at all.
    context: str = "prefix"

    def __post_init__(self):
        for field in ("d_model", "hidden", "n_layers"):
            value = getattr(self, field)
            require(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                    field, f"must be an integer >= 1, got {value!r}")
        require(self.context in CONTEXTS, "context", f"must be one of {', '.join(CONTEXTS)}; got {self.context!r}")


class ResidualBlock(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.ln = nn.LayerNorm(hidden)
        self.fc = nn.Linear(hidden, hidden)
        self.out_proj = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.out_proj(F.gelu(self.fc(self.ln(x))))  # (B, T, hidden)


class MLP(SequenceModel):
    article = "an MLP"
    color = "tab:red"
    fixed_length = "reads a fixed-width prefix (one weight block per position) and has no weights for longer sequences"

    def at_length(self, T: int) -> "MLP | None":
        return self if T <= self.max_len else None

    def __init__(self, config: MLPConfig, vocab_size: int, n_classes: int, max_len: int):
        super().__init__()
        self.config = config
        self.max_len = max_len
        self.embedding = nn.Embedding(vocab_size, config.d_model)
        # W_s for every input position s: the first layer's weight, split by the position it reads.
        self.prefix_weight = nn.Parameter(torch.empty(max_len, config.d_model, config.hidden))
        self.query_pos = nn.Embedding(max_len, config.hidden)  # p_t, doubling as the first bias
        self.blocks = nn.ModuleList(ResidualBlock(config.hidden) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.hidden)
        self.hook_features = nn.Identity()
        self.head = nn.Linear(config.hidden, n_classes)

        # N(0, 0.02) like the transformer, with residual-writing projections scaled by
        # 1/sqrt(2 n_layers) so the residual stream's variance does not grow with depth.
        for p in (self.embedding.weight, self.prefix_weight, self.query_pos.weight, self.head.weight):
            nn.init.normal_(p, std=0.02)
        nn.init.zeros_(self.head.bias)
        for block in self.blocks:
            nn.init.normal_(block.fc.weight, std=0.02)
            nn.init.normal_(block.out_proj.weight, std=0.02 / (2 * config.n_layers) ** 0.5)
            nn.init.zeros_(block.fc.bias)
            nn.init.zeros_(block.out_proj.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        T = tokens.shape[1]
        if T > self.max_len:
            raise ValueError(f"sequence length {T} exceeds max_len={self.max_len} of the prefix read")
        e = self.embedding(tokens)  # (B, T, d)
        read = torch.einsum("btd,tdh->bth", e, self.prefix_weight[:T])  # (B, T, hidden): e_s @ W_s
        if self.config.context == "prefix":
            read = read.cumsum(dim=1)  # (B, T, hidden): sum_{s<=t} e_s W_s
        x = read + self.query_pos.weight[:T]  # (B, T, hidden)
        for block in self.blocks:
            x = block(x)  # (B, T, hidden)
        x = self.hook_features(self.ln_f(x))  # (B, T, hidden)
        return head_logits(self.head, x)  # (B, T, n_classes), float32 even under bf16 autocast
