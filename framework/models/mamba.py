"""Mamba-1: a selective state-space model, the wind tunnels' strongest non-attention baseline.

Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (arXiv 2312.00752).
The block follows mamba-ssm's ``mamba_ssm/modules/mamba_simple.py`` (its non-fused path) and
johnma2006/mamba-minimal / alxndrcrts/mamba.py:

    x -> in_proj -> (x, z);  x -> causal depthwise conv1d -> SiLU -> selective SSM -> * SiLU(z) -> out_proj

where the SSM's step size delta, input matrix B and output matrix C are functions of the input
(x_proj, then dt_proj for delta through a softplus), A is diagonal and negative (S4D-real init
A_n = -(n + 1)), and D is a skip connection. The scan itself lives in ``selective_scan.py``.

Blocks are pre-norm residual (RMSNorm, as in the released Mamba language models). No positional
embedding: the recurrence and the causal convolution know the order.

Hook points: ``blocks[i].hook_resid_post`` (B, T, d) and ``hook_features`` (B, T, d), the final
normalised features fed to the head (the paper's "final-layer states" clustered by hidden state).
Set ``model.scan_impl`` to "ref", "parallel", "fused" or "compiled" to force a scan (tests compare
them); "auto" uses mamba-ssm's CUDA kernel on CUDA when it can, the compiled kernel on CPU, else
"fused".

The block keeps its activations in (B, L, .) memory from in_proj to out_proj: the depthwise conv is
K shifted multiply-adds on (B, L, E) (:class:`_CausalConv1dSiLU`, tested against nn.Conv1d) rather
than nn.Conv1d on a transposed copy, and the scan reads the (B, L, .) views directly. Measured on
the 2-core CPU (threads 2, batch 128, demo sizes, training steps interleaved in one process with
the transformer they are matched to; /tmp/mamba_ratio.py-style script): Mamba/transformer step time
went from 5.3x to 3.7x at T = 19 (bijection) and from 4.8x to 3.6x at T = 93 (HMM), with this
block and the fused scan of ``selective_scan.py``. The compiled CPU scan (``selective_scan_kernel.py``)
has since brought the step to 1.2x to 1.4x the transformer's at batch 32 (``benchmarks/mamba_step.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from framework.errors import require
from framework.models.base import ModelConfig, SequenceModel, head_logits
from framework.models.selective_scan import selective_scan


@dataclass
class MambaConfig(ModelConfig):
    name: str = "mamba"
    size_field = "d_model"
    d_model: int = 64
    n_layers: int = 2
    d_state: int = 16  # N, the SSM state size per channel (the paper's default)
    d_conv: int = 4  # width of the causal depthwise convolution (the paper's default)
    expand: int = 2  # d_inner = expand * d_model (the paper's default)

    def __post_init__(self):
        for field in ("d_model", "n_layers", "d_state", "d_conv", "expand"):
            value = getattr(self, field)
            require(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                    field, f"must be an integer >= 1, got {value!r}")

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def dt_rank(self) -> int:
        return math.ceil(self.d_model / 16)  # mamba-ssm's dt_rank="auto"


_causal_conv_cache: dict[str, object] = {}


def _causal_conv1d_kernel():
    """The ``causal_conv1d`` package's fused conv + SiLU (or None); imported on first use only."""
    if "fn" not in _causal_conv_cache:
        try:
            from causal_conv1d import causal_conv1d_fn
        except Exception:  # not installed, or its CUDA extension fails to load
            causal_conv1d_fn = None
        _causal_conv_cache["fn"] = causal_conv1d_fn
    return _causal_conv_cache["fn"]


class _CausalConv1dSiLU(torch.autograd.Function):
    """SiLU(causal depthwise conv1d) on (B, L, E) activations, as K shifted multiply-adds.

    Equal to ``F.silu(nn.Conv1d(E, E, K, groups=E, padding=K - 1)(x.transpose(1, 2))[..., :L])``
    (tests compare them). PyTorch's CPU depthwise convolution wants (B, E, L) memory and its backward
    took longer than the rest of the block's elementwise work together; here every op is a
    broadcast multiply-add over whole (B, L, E) rows, in the layout in_proj and x_proj use.
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        L, K = x.shape[1], weight.shape[-1]
        w = weight.view(weight.shape[0], K).t().contiguous()  # (K, E); tap k sees x[t - (K - 1 - k)]
        pre = torch.mul(x, w[K - 1]) if bias is None else torch.addcmul(bias, x, w[K - 1])  # (B, L, E)
        for m in range(1, min(K, L)):
            pre[:, m:].addcmul_(x[:, : L - m], w[K - 1 - m])
        ctx.save_for_backward(x, w, pre)
        ctx.has_bias = bias is not None
        return F.silu(pre)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, w, pre = ctx.saved_tensors
        L, K = x.shape[1], w.shape[0]
        g = torch.ops.aten.silu_backward(grad, pre)  # d loss / d pre, (B, L, E)
        dx = torch.mul(g, w[K - 1])
        dw = w.new_zeros(K, w.shape[1])
        dw[K - 1] = (g * x).sum((0, 1))
        for m in range(1, min(K, L)):
            dx[:, : L - m].addcmul_(g[:, m:], w[K - 1 - m])
            dw[K - 1 - m] = (g[:, m:] * x[:, : L - m]).sum((0, 1))
        dbias = g.sum((0, 1)) if ctx.has_bias else None
        return dx, dw.t().reshape(w.shape[1], 1, K), dbias


def causal_conv1d_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x (B, L, E), weight (E, 1, K) and bias (E,) of a depthwise nn.Conv1d -> (B, L, E)."""
    return _CausalConv1dSiLU.apply(x, weight, bias)


class MambaMixer(nn.Module):
    def __init__(self, cfg: MambaConfig, dt_min: float = 0.001, dt_max: float = 0.1):
        super().__init__()
        E, N, R = cfg.d_inner, cfg.d_state, cfg.dt_rank
        self.d_state, self.dt_rank = N, R
        self.in_proj = nn.Linear(cfg.d_model, 2 * E, bias=False)
        # padding on both sides, then keep the first L outputs: position t sees inputs t-d_conv+1..t.
        self.conv1d = nn.Conv1d(E, E, kernel_size=cfg.d_conv, groups=E, padding=cfg.d_conv - 1)
        self.x_proj = nn.Linear(E, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, E, bias=True)
        self.out_proj = nn.Linear(E, cfg.d_model, bias=False)

        # delta = softplus(dt_proj(.)) starts log-uniform in [dt_min, dt_max]: set the bias to the
        # inverse softplus of such a sample, and keep the weight small (mamba-ssm's init).
        nn.init.uniform_(self.dt_proj.weight, -(R**-0.5), R**-0.5)
        dt = torch.exp(torch.rand(E) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=1e-4)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))

        # S4D-real: A_n = -(n + 1) for every channel; stored as log(-A) so A stays negative.
        A = torch.arange(1, N + 1, dtype=torch.float32).repeat(E, 1)  # (E, N)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(E))

    def forward(self, hidden: torch.Tensor, scan_impl: str = "auto") -> torch.Tensor:
        E = self.D.shape[0]
        xz = self.in_proj(hidden)  # (B, L, 2E)
        x, z = xz.split(E, dim=-1)  # (B, L, E) views; everything stays (B, L, .), no transposes
        kernel = _causal_conv1d_kernel() if scan_impl == "auto" and x.is_cuda else None
        if kernel is not None:
            x = kernel(x.transpose(1, 2), self.conv1d.weight.squeeze(1), self.conv1d.bias,
                       activation="silu").transpose(1, 2)  # (B, L, E)
        else:
            x = causal_conv1d_silu(x, self.conv1d.weight, self.conv1d.bias)  # (B, L, E)

        x_dbl = self.x_proj(x)  # (B, L, R + 2N)
        dt, B_ssm, C_ssm = x_dbl.split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        # dt_proj's bias is added inside the scan (delta_bias), before the softplus, as mamba-ssm does.
        delta = dt @ self.dt_proj.weight.t()  # (B, L, E)
        A = -torch.exp(self.A_log)  # (E, N)
        # The scan takes (B, X, L) shapes, here views of (B, L, X) memory, which it reads as is.
        y = selective_scan(
            x.transpose(1, 2), delta.transpose(1, 2), A, B_ssm.transpose(1, 2), C_ssm.transpose(1, 2),
            self.D, z=z.transpose(1, 2), delta_bias=self.dt_proj.bias, delta_softplus=True, impl=scan_impl,
        )  # (B, E, L), already gated by SiLU(z)
        return self.out_proj(y.transpose(1, 2))  # (B, L, d)


class MambaBlock(nn.Module):
    def __init__(self, cfg: MambaConfig):
        super().__init__()
        self.norm = nn.RMSNorm(cfg.d_model, eps=1e-5)
        self.mixer = MambaMixer(cfg)
        self.hook_resid_post = nn.Identity()

    def forward(self, x: torch.Tensor, scan_impl: str = "auto") -> torch.Tensor:
        return self.hook_resid_post(x + self.mixer(self.norm(x), scan_impl))  # (B, T, d)


class Mamba(SequenceModel):
    article = "a Mamba model"
    color = "tab:orange"

    def __init__(self, config: MambaConfig, vocab_size: int, n_classes: int, max_len: int):
        super().__init__()
        self.config = config
        self.max_len = max_len  # unused: a recurrence runs at any length (length generalisation)
        self.scan_impl = "auto"
        self.embedding = nn.Embedding(vocab_size, config.d_model)
        self.blocks = nn.ModuleList(MambaBlock(config) for _ in range(config.n_layers))
        self.norm_f = nn.RMSNorm(config.d_model, eps=1e-5)
        self.hook_features = nn.Identity()
        self.head = nn.Linear(config.d_model, n_classes)

        # mamba-ssm's _init_weights: embeddings N(0, 0.02), zero biases except dt_proj's, and the
        # residual-writing out_proj rescaled by 1/sqrt(n_layers) (GPT-2's prenorm-residual rule).
        nn.init.normal_(self.embedding.weight, std=0.02)
        # mamba-ssm ties the head to the embedding; ours is untied (classes are not tokens), so give
        # it the same N(0, 0.02): every model in the zoo starts near the uniform prediction.
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        for block in self.blocks:
            with torch.no_grad():
                block.mixer.out_proj.weight /= math.sqrt(config.n_layers)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embedding(tokens)  # (B, T, d)
        for block in self.blocks:
            x = block(x, self.scan_impl)  # (B, T, d)
        x = self.hook_features(self.norm_f(x))  # (B, T, d)
        return head_logits(self.head, x)  # (B, T, n_classes), float32 even under bf16 autocast
