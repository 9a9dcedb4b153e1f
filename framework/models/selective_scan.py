"""The selective scan of Mamba-1, in pure PyTorch, beside its sequential reference.

Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (arXiv 2312.00752),
Algorithm 2. For every channel d and state n the scan runs the linear recurrence

    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t        y_t = C_t . h_t + D * u_t

with input-dependent delta, B, C. The signature and shapes are those of mamba-ssm's
``selective_scan_fn`` (``mamba_ssm/ops/selective_scan_interface.py``) so the CUDA kernel can be
swapped in unchanged:

    u, delta: (B, D, L)   A: (D, N)   B, C: (B, N, L)   D: (D,)   z: (B, D, L)   delta_bias: (D,)

(mamba-ssm also accepts a time-invariant or grouped B/C; we only need the input-dependent form.)

Two implementations and a dispatcher, as in mamba-ssm and mamba.py: the fast one next to an
obviously correct one.

- :func:`selective_scan_ref`: a plain loop over time. The definition; tests compare against it.
- :func:`selective_scan_parallel`: a chunked scan (below). What runs on CPU and on CUDA without
  mamba-ssm.
- :func:`selective_scan`: picks mamba-ssm's CUDA kernel when the input is on CUDA and mamba-ssm
  imports, else the chunked scan (warning once if on CUDA).

Why a chunked scan rather than the log-space cumsum trick: the trick computes
h_t = exp(S_t) * cumsum_s(exp(-S_s) * b_s) with S_t = sum_{s<=t} delta_s * A, and exp(-S_s)
overflows float32 once |S| > 88, which a trained Mamba reaches within a few dozen steps
(delta ~ 1, A ~ -16). The chunked scan only ever multiplies decays in (0, 1] and exponentiates
non-positive numbers, so it is as stable as the sequential loop, while taking ~2 sqrt(L) Python
steps instead of L (20 instead of 93 at L = 93).

Why not a fully vectorised scan (Blelloch, or a whole-sequence segsum): on CPU the scan is bound by
memory traffic over the (B, D, L, N) state, and the per-step tensors of a loop stay in cache while
whole-sequence passes do not; a version doing whole-tensor passes measured 2-3x slower than the
loop. Measured forward + backward on 2 CPU threads (B, D, N, L = 128, 128, 16, 93): loop ~0.42 s,
chunked ~0.29 s; at B = 8: 37 ms vs 18 ms; at B = 32, L = 200: 0.28 s vs 0.14 s.
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F


def _prepare(u, delta, A, B, C, delta_bias, delta_softplus):
    """Upcast to at least float32 (float64 stays float64) and apply the delta bias / softplus."""
    dtype = torch.promote_types(u.dtype, torch.float32)
    u, delta, A, B, C = (t.to(dtype) for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return u, delta, A, B, C


def _finish(y, u, D, z, dtype_in):
    if D is not None:
        y = y + u * D.to(y.dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(dtype_in)


def selective_scan_ref(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
):
    """The recurrence, one time step at a time. Returns y (B, D, L) [and the last state (B, D, N)]."""
    dtype_in = u.dtype
    u, delta, A, B, C = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    batch, dim, L = u.shape
    h = u.new_zeros(batch, dim, A.shape[1])  # (B, D, N)
    ys = []
    for t in range(L):
        decay = torch.exp(delta[:, :, t, None] * A)  # (B, D, N)
        drive = (delta[:, :, t] * u[:, :, t])[:, :, None] * B[:, None, :, t]  # (B, D, N)
        h = decay * h + drive
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, :, t]))
    y = torch.stack(ys, dim=2) if ys else u.new_zeros(batch, dim, 0)  # (B, D, L)
    out = _finish(y, u, D, z, dtype_in)
    return (out, h) if return_last_state else out


def selective_scan_parallel(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    chunk: int | None = None,
):
    """The same scan as :func:`selective_scan_ref`, in two levels of chunks.

    Split time into ``nc`` chunks of ``K`` steps (K = ceil(sqrt(L)) by default):

    1. scan every chunk from a zero state, all chunks at once: K steps on (B, D, nc, N) tensors,
       keeping each position's local state h_t and its decay since the chunk start
       P_t = prod of exp(delta * A) (a product of numbers in (0, 1]: no overflow, no log of 0);
    2. carry the state across chunk boundaries: nc steps on (B, D, N) tensors;
    3. read out y_t = C_t . (h_t + P_t * h_in), h_in the state entering the chunk.

    K + nc ~ 2 sqrt(L) Python steps replace the reference's L, each on nc times more data: fewer,
    larger ops and autograd nodes, which is faster on CPU (numbers in the module docstring) and on
    GPU (fewer kernel launches). ``chunk`` overrides K (tests use it; any K >= 1 gives the same y).
    Every per-step tensor comes from ``unbind`` rather than indexing: the backward of
    ``x[:, :, k]`` allocates a zero tensor the size of ``x`` for every k, which made an
    indexing version slower than the loop it replaces.
    """
    dtype_in = u.dtype
    u, delta, A, B, C = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    batch, dim, L = u.shape
    N = A.shape[1]
    K = chunk if chunk is not None else math.isqrt(max(L - 1, 0)) + 1  # ceil(sqrt(L)) for L >= 1
    if K < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    nc = max(1, -(-L // K))
    pad = nc * K - L
    # Zero delta on the padding makes the decay 1 and the drive 0: the state passes through unchanged.
    delta_c = F.pad(delta, (0, pad)).view(batch, dim, nc, K)
    du_c = F.pad(delta * u, (0, pad)).view(batch, dim, nc, K)
    B_c = F.pad(B, (0, pad)).view(batch, N, nc, K).permute(3, 0, 2, 1)  # (K, B, nc, N)
    C_c = F.pad(C, (0, pad)).view(batch, N, nc, K).permute(3, 0, 2, 1)  # (K, B, nc, N)

    # 1. Local scans, every chunk from a zero state.
    h = u.new_zeros(batch, dim, nc, N)
    P = u.new_ones(batch, dim, nc, N)
    local_h, local_P = [], []
    for delta_k, du_k, B_k in zip(delta_c.unbind(3), du_c.unbind(3), B_c.unbind(0)):
        decay = torch.exp(delta_k.unsqueeze(-1) * A[:, None, :])  # (B, D, nc, N)
        h = decay * h + du_k.unsqueeze(-1) * B_k.unsqueeze(1)  # (B, D, nc, N)
        P = P * decay  # (B, D, nc, N)
        local_h.append(h)
        local_P.append(P)

    # 2. The state entering each chunk; the last ``carry`` is the state after the final step.
    carry = u.new_zeros(batch, dim, N)
    incoming = []
    for P_end, h_end in zip(P.unbind(2), h.unbind(2)):  # chunk by chunk, (B, D, N) each
        incoming.append(carry)
        carry = P_end * carry + h_end
    h_in = torch.stack(incoming, dim=2)  # (B, D, nc, N)

    # 3. Read-out, one in-chunk offset at a time.
    ys = [
        torch.einsum("bdcn,bcn->bdc", h_k + P_k * h_in, C_k)  # (B, D, nc)
        for h_k, P_k, C_k in zip(local_h, local_P, C_c.unbind(0))
    ]
    y = torch.stack(ys, dim=3).reshape(batch, dim, nc * K)[:, :, :L]  # (B, D, L)
    out = _finish(y, u, D, z, dtype_in)
    return (out, carry) if return_last_state else out


_cuda_kernel_cache: dict[str, object] = {}
_warned_no_kernel = False


def cuda_kernels():
    """mamba-ssm's ``selective_scan_fn`` (or None), imported on first use: importing mamba-ssm
    needs its compiled CUDA extension, so it must never happen at module import time."""
    if "scan" not in _cuda_kernel_cache:
        try:
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        except Exception:  # ImportError, or an OSError / RuntimeError from a broken CUDA extension
            selective_scan_fn = None
        _cuda_kernel_cache["scan"] = selective_scan_fn
    return _cuda_kernel_cache["scan"]


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, impl: str = "auto"):
    """Dispatch: ``impl`` is "auto" (CUDA kernel when possible, else parallel), "parallel" or "ref"."""
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if impl == "ref":
        return selective_scan_ref(*args)
    if impl == "parallel":
        return selective_scan_parallel(*args)
    if impl != "auto":
        raise ValueError(f"impl must be 'auto', 'parallel' or 'ref', got {impl!r}")
    if u.is_cuda:
        kernel = cuda_kernels()
        if kernel is not None:
            # The kernel wants float32 parameters even when activations are half precision.
            D = D.float() if D is not None else None
            delta_bias = delta_bias.float() if delta_bias is not None else None
            return kernel(u, delta, A.float(), B, C, D, z, delta_bias, delta_softplus, return_last_state)
        global _warned_no_kernel
        if not _warned_no_kernel:
            _warned_no_kernel = True
            warnings.warn(
                "mamba-ssm is not installed (pip install '.[cuda]'); Mamba falls back to the "
                "pure-PyTorch selective scan, which is correct but several times slower on GPU.",
                stacklevel=2,
            )
    return selective_scan_parallel(*args)
