"""A GPT-style causal transformer: the architecture the wind tunnels were built to study.

References: Vaswani et al., "Attention Is All You Need" (2017); Radford et al., GPT-2 (2019) for the
pre-norm block and the scaled residual init; Karpathy's nanoGPT ``model.py``, which this file follows.
Aggarwal, Dalal & Misra (arXiv 2512.22471) use this architecture (6 layers, 6 heads, d=192 for the
bijection tunnel; 9 layers, 8 heads, d=256 for HMM filtering).

Hook points for ``probes/`` (``nn.Identity`` modules, so a forward hook reads them without any
change to this file; TransformerLens does the same with its ``HookPoint``):

    blocks[i].attn.hook_q / hook_k / hook_v   (B, H, T, dh)  per-head queries, keys, values
    blocks[i].attn.hook_z                     (B, H, T, dh)  attention output before out_proj
    blocks[i].hook_resid_mid                  (B, T, d)      after attention, before the MLP
    blocks[i].hook_resid_post                 (B, T, d)      the block's output
    hook_features                             (B, T, d)      final-LayerNorm features fed to the head

Attention weights are not materialised (``scaled_dot_product_attention`` may never form them);
a probe recomputes them from ``hook_q`` and ``hook_k`` as softmax(q k^T / sqrt(dh) + causal mask).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from framework.errors import require
from framework.models.base import ModelConfig, SequenceModel, head_logits


@dataclass
class TransformerConfig(ModelConfig):
    name: str = "transformer"
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4  # head size d_model / n_heads = 16
    d_ff: int = 256  # the usual 4 * d_model
    dropout: float = 0.0  # wind tunnels sample fresh sequences every step, so nothing to regularise
    # How the model knows where it is. "learned": one trained vector per position (GPT-2; positions
    # past the training length are never trained, so length generalisation tests what that costs);
    # "sinusoidal": the fixed encoding of Vaswani et al., defined at every length; "none": no
    # positional input at all (a causal mask alone lets a model infer position; Haviv et al. 2022).
    positional: str = "learned"

    def __post_init__(self):
        for field in ("d_model", "n_layers", "n_heads", "d_ff"):
            value = getattr(self, field)
            require(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                    field, f"must be an integer >= 1, got {value!r}")
        require(self.d_model % self.n_heads == 0, "n_heads",
                f"must divide d_model={self.d_model}, got {self.n_heads}")
        require(isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0,
                "dropout", f"must be in [0, 1), got {self.dropout!r}")
        require(self.positional in POSITIONAL, "positional",
                f"must be one of {', '.join(POSITIONAL)}; got {self.positional!r}")


POSITIONAL = ("learned", "sinusoidal", "none")


def sinusoidal_positions(max_len: int, d_model: int) -> torch.Tensor:
    """(max_len, d_model): sin on even, cos on odd channels, wavelengths 2*pi .. 10000*2*pi."""
    position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)  # (T, 1)
    rate = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.sin(position * rate)
    table[:, 1::2] = torch.cos(position * rate)[:, : d_model // 2]
    return table


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.d_head = cfg.d_model // cfg.n_heads
        self.dropout = cfg.dropout
        # Separate projections rather than one fused qkv: probes read q_proj / k_proj weights directly.
        self.q_proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.k_proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.v_proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.out_proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.hook_q = nn.Identity()
        self.hook_k = nn.Identity()
        self.hook_v = nn.Identity()
        self.hook_z = nn.Identity()

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.n_heads, self.d_head).transpose(1, 2)  # (B, H, T, dh)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, d = x.shape
        q = self.hook_q(self._heads(self.q_proj(x)))  # (B, H, T, dh)
        k = self.hook_k(self._heads(self.k_proj(x)))  # (B, H, T, dh)
        v = self.hook_v(self._heads(self.v_proj(x)))  # (B, H, T, dh)
        z = causal_attention(q, k, v, self.dropout if self.training else 0.0)  # (B, H, T, dh)
        z = self.hook_z(z)
        z = z.transpose(1, 2).reshape(B, T, d)  # (B, T, d)
        return self.resid_dropout(self.out_proj(z))


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float) -> torch.Tensor:
    """Causal scaled dot-product attention. Under CPU bf16 autocast (``train.precision``) it runs in
    float32: the CPU flash-attention kernel's forward and backward took 3.4x to 10x longer in bf16 than
    in float32 on this project's machine (7.3 against 0.73 ms at the demo transformer's shapes, 29
    against 8.6 ms at HMM's length), which made the mixed step slower than the plain one."""
    if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        dtype = torch.promote_types(q.dtype, torch.float32)
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.to(dtype), k.to(dtype), v.to(dtype), is_causal=True,
                                                  dropout_p=dropout_p)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p)


class MLP(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.d_ff)
        self.out_proj = nn.Linear(cfg.d_ff, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.out_proj(F.gelu(self.fc(x))))  # (B, T, d)


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg)
        self.hook_resid_mid = nn.Identity()
        self.hook_resid_post = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.hook_resid_mid(x + self.attn(self.ln_1(x)))  # (B, T, d)
        return self.hook_resid_post(x + self.mlp(self.ln_2(x)))  # (B, T, d)


class Transformer(SequenceModel):
    article = "a transformer"
    color = "tab:blue"

    def __init__(self, config: TransformerConfig, vocab_size: int, n_classes: int, max_len: int):
        super().__init__()
        self.config = config
        self.max_len = max_len
        self.tok_emb = nn.Embedding(vocab_size, config.d_model)
        if config.positional == "learned":
            self.pos_emb = nn.Embedding(max_len, config.d_model)
        else:
            table = sinusoidal_positions(max_len, config.d_model)
            self.register_buffer("pos_table", table if config.positional == "sinusoidal" else torch.zeros_like(table),
                                 persistent=False)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.d_model)
        self.hook_features = nn.Identity()
        self.head = nn.Linear(config.d_model, n_classes)

        # nanoGPT / GPT-2 init: N(0, 0.02) everywhere, and the projections that write into the
        # residual stream scaled by 1/sqrt(2 n_layers) so its variance does not grow with depth.
        self.apply(self._init_weights)
        for block in self.blocks:
            for proj in (block.attn.out_proj, block.mlp.out_proj):
                nn.init.normal_(proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layers))

    def at_length(self, T: int) -> "Transformer":
        """A copy with a longer position table when ``T`` exceeds it. Learned rows past the built length
        were never trained: they are drawn fresh (from the global RNG); sinusoidal and absent encodings
        are defined at every length."""
        if T <= self.max_len:
            return self
        longer = Transformer(self.config, self.tok_emb.num_embeddings, self.head.out_features, T)
        state = self.state_dict()
        if "pos_emb.weight" in state:
            rows = longer.pos_emb.weight.detach().clone()
            rows[: self.max_len] = state["pos_emb.weight"]
            state = {**state, "pos_emb.weight": rows}
        longer.load_state_dict(state)
        return longer.to(self.head.weight.device)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        T = tokens.shape[1]
        if T > self.max_len:
            raise ValueError(f"sequence length {T} exceeds max_len={self.max_len} of the position embedding")
        pos = torch.arange(T, device=tokens.device)
        position = self.pos_emb(pos) if self.config.positional == "learned" else self.pos_table[:T]  # (T, d)
        x = self.drop(self.tok_emb(tokens) + position)  # (B, T, d)
        for block in self.blocks:
            x = block(x)  # (B, T, d)
        x = self.hook_features(self.ln_f(x))  # (B, T, d)
        return head_logits(self.head, x)  # (B, T, n_classes), float32 even under bf16 autocast
