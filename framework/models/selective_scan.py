"""The selective scan of Mamba-1, in pure PyTorch, beside its sequential reference.

Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (arXiv 2312.00752),
Algorithm 2. For every channel d and state n the scan runs the linear recurrence

    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t        y_t = C_t . h_t + D * u_t

with input-dependent delta, B, C. The signature and shapes are those of mamba-ssm's
``selective_scan_fn`` (``mamba_ssm/ops/selective_scan_interface.py``) so the CUDA kernel can be
swapped in unchanged:

    u, delta: (B, D, L)   A: (D, N)   B, C: (B, N, L)   D: (D,)   z: (B, D, L)   delta_bias: (D,)

(mamba-ssm also accepts a time-invariant or grouped B/C; we only need the input-dependent form.)

Three implementations and a dispatcher, as in mamba-ssm and mamba.py: the fast one next to an
obviously correct one.

- :func:`selective_scan_ref`: a plain loop over time. The definition; tests compare against it.
- :func:`selective_scan_fused`: the same loop as a single autograd node with a hand-written
  backward (:class:`_SelectiveScanFn`). What runs on CPU, and on CUDA without mamba-ssm.
- :func:`selective_scan_parallel`: a two-level chunked scan under ordinary autograd. It was the fast
  path before the fused scan, which now beats it at every shape we measured (below); it is kept as a
  second, independently written implementation that the tests compare, and "auto" no longer uses it.
- :func:`selective_scan`: picks mamba-ssm's CUDA kernel when the input is on CUDA and mamba-ssm
  imports, else the fused scan (warning once if on CUDA).

Why a hand-written backward: under autograd every op of a scan records a node and keeps its inputs,
so any PyTorch-level scan builds a graph that grows with L and holds many state-sized tensors, and
its backward replays them node by node. The fused scan records one node. Its forward runs the
recurrence one ``addcmul_`` per step; its backward runs the adjoint recurrence
g_t = dy_t C_t + exp(delta_{t+1} A) g_{t+1} backwards in time the same way and forms every gradient
from g and h with whole-chunk ops (formulas in :class:`_SelectiveScanFn`). Time is walked in chunks
whose buffers stay in cache, and the backward recomputes each chunk's decays and states rather than
keeping whole-sequence (L, B, N, D) tensors: memory that large is mmapped and page-faulted afresh on
every call (~0.4 ms per MB here), which costs more than the recomputation. Smaller measured wins:
D innermost in the chunk buffers, exp2 with log2(e) folded into A (3x faster than exp on this CPU),
and blocked 2-D transposes in and out of the time-major layout.

Why not the log-space cumsum trick: it computes h_t = exp(S_t) * cumsum_s(exp(-S_s) * b_s) with
S_t = sum_{s<=t} delta_s * A, and exp(-S_s) overflows float32 once |S| > 88, which a trained Mamba
reaches within a few dozen steps (delta ~ 1, A ~ -16). The fused (and the chunked) scan only ever
multiply decays in (0, 1] and exponentiate non-positive numbers: as stable as the sequential loop.

Measured on the 2-core CPU this project trains on (torch.set_num_threads(2), float32, median ms of
7-21 repeats, implementations interleaved in one process; forward + backward with delta bias,
softplus, D and z, inputs laid out as the Mamba block passes them). The machine was shared, so each
cell is the range over three runs (two for ref); the ratios within a run were steadier than the absolute numbers.

    (B, D, N, L)          ref        parallel    fused
    (128, 164, 16, 93)    553-592    443-698     95-134     fused 4.7-5.2x faster than parallel
    (128, 164, 16, 19)     65-75      71-115     20-31      2.9-4.2x
    (8, 128, 16, 93)       41-48      20-29       6-10      2.8-3.4x

A Mamba training step (forward, backward, AdamW; d_model 82, 2 layers, batch 128; "before" is the
chunked scan "auto" used to pick) took 1090-1720 ms before and 340-500 ms after at T = 93 (vocab
105, 5 classes; 2.7-3.4x), and 200-220 ms before and 76-104 ms after at T = 19 (vocab 20,
10 classes; 2.0-2.6x).
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


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
    larger ops and autograd nodes than the loop (faster than it at small batch on CPU; numbers in the
    module docstring), though still a graph that grows with L, unlike :func:`selective_scan_fused`.
    ``chunk`` overrides K (tests use it; any K >= 1 gives the same y).
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


_LOG2E = math.log2(math.e)
# Bytes per chunk buffer of the fused scan. On CPU a chunk's handful of buffers (decays, states,
# adjoints, one scratch) should sit in L2/L3: 2 MiB measured best at the shapes we train (1-4 MiB
# within noise, 8 MiB and up clearly slower). On GPU there is no cache to fit and every op is a kernel
# launch, so take the whole sequence in one chunk when it fits 256 MiB (a guess: not measured on GPU).
_CHUNK_BYTES = {"cpu": 2**21}
_CHUNK_BYTES_OTHER = 2**28


def _is_blx(x: torch.Tensor) -> bool:
    """True when a (B, X, L) tensor lies in memory as (B, L, X), as Mamba's delta and z do."""
    return x.shape[1] > 1 and x.stride(1) == 1


def _to_lbx(x: torch.Tensor) -> torch.Tensor:
    """(B, X, L) -> (L, B, X), contiguous: every time step a contiguous block."""
    batch, X, L = x.shape
    if x.is_contiguous() and not _is_blx(x):
        # A 2-D transpose of (B X, L): PyTorch copies 2-D transposes blockwise, 4-5x faster than the
        # element-by-element permute copy of a 3-D tensor.
        return x.view(batch * X, L).t().contiguous().view(L, batch, X)
    return x.permute(2, 0, 1).contiguous()  # from (B, L, X) memory: a copy of whole rows


def _from_lbx(g: torch.Tensor, blx: bool) -> torch.Tensor:
    """(L, B, X) -> (B, X, L), in (B, L, X) memory if ``blx`` else contiguous: the result then
    matches its consumer's layout, and the elementwise ops after it run on contiguous memory."""
    L, batch, X = g.shape
    if blx:
        return g.transpose(0, 1).contiguous().transpose(1, 2)
    return g.view(L, batch * X).t().contiguous().view(batch, X, L)


def _scan_chunk(dA, H, dt, du, A2, Bt, h):
    """Fill dA (K, B, N, D) with exp(delta A) and H (K, B, N, D) with the states h_1..h_K from h_0 = h."""
    torch.mul(dt[:, :, None, :], A2, out=dA).exp2_()  # exp(delta A) = 2^(delta A log2 e)
    torch.mul(du[:, :, None, :], Bt[:, :, :, None], out=H)  # delta u B
    Hs, dAs = H.unbind(0), dA.unbind(0)
    Hs[0].addcmul_(dAs[0], h)
    for k in range(1, len(Hs)):
        Hs[k].addcmul_(dAs[k], Hs[k - 1])  # h_t = exp(delta_t A) h_{t-1} + delta_t u_t B_t


class _SelectiveScanFn(torch.autograd.Function):
    """y_t = C_t . h_t (no D, no gate) and the last state, with a hand-written backward.

    Forward and backward walk time in chunks of K steps; within a chunk every tensor is
    (K, B, N, D): time outermost, so one step is one contiguous block, and D innermost (the products
    and sums over N ran 2-3x faster than with N = 16 innermost). The state entering each chunk is
    saved, each as its own tensor, and the backward recomputes the chunk's decays and states from
    it. At batch 128 K is 1-3 steps, so that is most of the states, but in blocks small enough for
    malloc to recycle from call to call, where one (L, B, N, D) block would be mmapped and
    page-faulted afresh each time (see the module docstring).

    Backward (g_t = dLoss/dh_t, the adjoint state; X_t the gradient of the exponent delta_t A):

        g_t = dy_t C_t + exp(delta_{t+1} A) g_{t+1}   (g_L = dy_L C_L + dLoss/dh_L)
        X_t = g_t exp(delta_t A) h_{t-1}
        dC_t = sum_d dy_t h_t      dB_t = sum_d g_t delta_t u_t      dA = sum_{b,t} X_t delta_t
        du_t = delta_t sum_n g_t B_t      ddelta_t = u_t sum_n g_t B_t + sum_n X_t A
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, chunk):
        with torch.autocast(u.device.type, enabled=False):  # keep the bmm out of half precision
            batch, dim, L = u.shape
            N = A.shape[1]
            A2 = (A.t() * _LOG2E).contiguous()  # (N, D)
            dt, ut, Bt, Ct = (_to_lbx(x) for x in (delta, u, B, C))  # (L, B, D|N)
            du = dt * ut  # (L, B, D)
            if chunk is None:
                budget = _CHUNK_BYTES.get(u.device.type, _CHUNK_BYTES_OTHER)
                chunk = budget // (batch * N * dim * u.element_size())
            K = max(1, min(L, chunk))
            y = u.new_empty(L, batch, dim)
            dA_buf, H_buf = u.new_empty(K, batch, N, dim), u.new_empty(K, batch, N, dim)
            h_in = []  # the state entering each chunk, (B, N, D) each
            h = u.new_zeros(batch, N, dim)
            for s in range(0, L, K):
                e = min(s + K, L)
                h_in.append(h)
                dA, H = dA_buf[: e - s], H_buf[: e - s]
                _scan_chunk(dA, H, dt[s:e], du[s:e], A2, Bt[s:e], h)
                KB = (e - s) * batch
                torch.bmm(Ct[s:e].view(KB, 1, N), H.view(KB, N, dim), out=y[s:e].view(KB, 1, dim))
                h = H[-1].clone()  # the next chunk overwrites H_buf
            kept = [dA_buf, H_buf] if K >= L else []  # one chunk: keep it, the backward needs no recompute
        ctx.K, ctx.n_chunks = K, len(h_in)
        ctx.blx = [_is_blx(x) for x in (u, delta, B, C)]
        ctx.save_for_backward(dt, du, ut, A, A2, Bt, Ct, *h_in, *kept)
        ctx.set_materialize_grads(False)
        return _from_lbx(y, blx=True), h.transpose(1, 2).contiguous()  # (B, D, L), (B, D, N)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y, grad_last):
        dt, du, ut, A, A2, Bt, Ct, *rest = ctx.saved_tensors
        h_in, kept = rest[: ctx.n_chunks], rest[ctx.n_chunks:]
        K = ctx.K
        L, batch, dim = dt.shape
        N = A.shape[1]
        with torch.autocast(dt.device.type, enabled=False):
            gy = _to_lbx(grad_y) if grad_y is not None else dt.new_zeros(L, batch, dim)  # (L, B, D)
            At = A.t().contiguous()  # (N, D)
            GB, dd = torch.empty_like(dt), torch.empty_like(dt)  # sum_n g B; d delta
            dBt, dCt = torch.empty_like(Bt), torch.empty_like(Ct)
            dAt = At.new_zeros(N, dim)
            if kept:
                dA_buf, H_buf = kept
            else:
                dA_buf, H_buf = dt.new_empty(K, batch, N, dim), dt.new_empty(K, batch, N, dim)
            G_buf, T_buf = dt.new_empty(K, batch, N, dim), dt.new_empty(K, batch, N, dim)
            carry_buf = dt.new_empty(batch, N, dim)
            # carry: exp(delta_{t+1} A) g_{t+1} for t the last step of the chunk being processed
            carry = grad_last.transpose(1, 2) if grad_last is not None else None
            for c in range(ctx.n_chunks - 1, -1, -1):
                s = c * K
                e = min(s + K, L)
                KB = (e - s) * batch
                h = h_in[c]
                dA, H, G, T = dA_buf[: e - s], H_buf[: e - s], G_buf[: e - s], T_buf[: e - s]
                if not kept:
                    _scan_chunk(dA, H, dt[s:e], du[s:e], A2, Bt[s:e], h)
                torch.mul(gy[s:e, :, None, :], Ct[s:e, :, :, None], out=G)  # dy_t C_t
                Gs, dAs = G.unbind(0), dA.unbind(0)
                if carry is not None:
                    Gs[-1].add_(carry)
                for k in range(len(Gs) - 2, -1, -1):
                    Gs[k].addcmul_(dAs[k + 1], Gs[k + 1])  # g_t = dy_t C_t + exp(delta_{t+1} A) g_{t+1}
                torch.bmm(gy[s:e].view(KB, 1, dim), H.view(KB, N, dim).transpose(1, 2),
                          out=dCt[s:e].view(KB, 1, N))
                torch.bmm(Bt[s:e].view(KB, 1, N), G.view(KB, N, dim), out=GB[s:e].view(KB, 1, dim))
                torch.bmm(du[s:e].view(KB, 1, dim), G.view(KB, N, dim).transpose(1, 2),
                          out=dBt[s:e].view(KB, 1, N))
                # X_t = g_t exp(delta_t A) h_{t-1}, in place of G (not needed any more)
                carry = torch.mul(dAs[0], Gs[0], out=carry_buf) if c else None
                X = G
                X[1:].mul_(dA[1:]).mul_(H[:-1])
                if c:
                    torch.mul(carry, h, out=X[0])
                else:
                    X[0].zero_()  # h_0 = 0
                torch.sum(torch.mul(X, At, out=T), -2, out=dd[s:e])
                dAt += torch.mul(X, dt[s:e, :, None, :], out=T).sum((0, 1))
            dd.addcmul_(ut, GB)
            du_grad = GB.mul_(dt)
        blx = ctx.blx
        return (_from_lbx(du_grad, blx[0]), _from_lbx(dd, blx[1]), dAt.t(),
                _from_lbx(dBt, blx[2]), _from_lbx(dCt, blx[3]), None)


def selective_scan_fused(
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
    """The same scan as :func:`selective_scan_ref`, as one autograd node with a hand-written backward
    (:class:`_SelectiveScanFn`). The delta bias and softplus, the D skip and the SiLU(z) gate stay
    outside it under ordinary autograd: they are a few elementwise ops on (B, D, L) tensors, and
    moving them inside measured no faster. ``chunk`` overrides the number of time steps per chunk
    (tests use it; any chunk >= 1 gives the same result)."""
    if chunk is not None and chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    dtype_in = u.dtype
    u, delta, A, B, C = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    y, last = _SelectiveScanFn.apply(u, delta, A, B, C, chunk)
    out = _finish(y, u, D, z, dtype_in)
    return (out, last) if return_last_state else out


_IMPLS = {"fused": selective_scan_fused, "parallel": selective_scan_parallel, "ref": selective_scan_ref}
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
    """Dispatch: ``impl`` is "auto" (CUDA kernel when possible, else fused), "fused", "parallel" or "ref"."""
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if impl in _IMPLS:
        return _IMPLS[impl](*args)
    if impl != "auto":
        raise ValueError(f"impl must be 'auto', {', '.join(map(repr, _IMPLS))}, got {impl!r}")
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
    return selective_scan_fused(*args)
