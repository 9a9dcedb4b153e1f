"""The selective scan of Mamba-1, in pure PyTorch, beside its sequential reference.

Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (arXiv 2312.00752),
Algorithm 2. For every channel d and state n the scan runs the linear recurrence

    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t        y_t = C_t . h_t + D * u_t

with input-dependent delta, B, C. The signature and shapes are those of mamba-ssm's
``selective_scan_fn`` (``mamba_ssm/ops/selective_scan_interface.py``) so the CUDA kernel can be
swapped in unchanged:

    u, delta: (B, D, L)   A: (D, N)   B, C: (B, N, L)   D: (D,)   z: (B, D, L)   delta_bias: (D,)

(mamba-ssm also accepts a time-invariant or grouped B/C; we only need the input-dependent form.)

Four implementations and a dispatcher, as in mamba-ssm and mamba.py: the fast ones next to an
obviously correct one.

- :func:`selective_scan_ref`: a plain loop over time. The definition; tests compare against it.
- :func:`selective_scan_compiled` (``selective_scan_kernel.py``): the whole scan, softplus, D skip
  and gate included, as C++ compiled at first use: each direction one pass over time with the state
  in registers. What runs on CPU; 5.3x to 6.9x faster than the fused scan forward + backward at the four
  shapes of ``benchmarks/selective_scan.py`` (2 threads, 16-lane blocks on AVX-512).
- :func:`selective_scan_fused`: the same loop, with the delta bias and softplus, D skip and gate, as
  a single autograd node with a hand-written backward (:class:`_SelectiveScanFn`) in PyTorch ops.
  What runs on CUDA without mamba-ssm, and on CPU where the compiled scan cannot be built.
- :func:`selective_scan_parallel`: a two-level chunked scan under ordinary autograd. It was the fast
  path before the fused scan, which now beats it at every shape we measured (below); it is kept as a
  second, independently written implementation that the tests compare, and "auto" no longer uses it.
- :func:`selective_scan`: picks mamba-ssm's CUDA kernel when the input is on CUDA and mamba-ssm
  imports, the compiled scan on CPU, else the fused scan (warning once if on CUDA).

Why a hand-written backward: under autograd every op of a scan records a node and keeps its inputs,
so any PyTorch-level scan builds a graph that grows with L and holds many state-sized tensors, and
its backward replays them node by node. The fused scan records one node, which also takes in the
delta bias and softplus, the D skip and the SiLU(z) gate (their derivatives are a few (L, B, D) ops).
Its forward runs the recurrence one ``addcmul_`` per step; its backward runs the adjoint recurrence
g_t = C_t dy_t + exp(delta_{t+1} A) g_{t+1} backwards in time and forms every gradient from g and
h (formulas in :class:`_SelectiveScanFn`). Time is walked in chunks whose buffers stay in cache; the
state after each chunk is saved and the backward recomputes each chunk's decays (and, for chunks of
more than one step, states) rather than keeping whole-sequence (L, B, N, D) tensors: memory that
large is mmapped and page-faulted afresh on every call (~0.4 ms per MB here). Chunk-sized tensors
that are kept (rather than reused) are slower too, since they leave cache: keeping every chunk's
decays and states as well as the saved states, instead of recomputing the decays, measured no faster.

The cost is passes over the (L, B, N, D) state, each about 2 ms per layer at the demo size (6.4M
elements) on this CPU: 5 in the forward (delta A, exp, delta u B, the recurrence, the read-out) and,
at batch 128 (one-step chunks), 9 in the backward plus the recomputed decay: g_t as one baddbmm of
C_t dy_t onto exp(delta_{t+1} A) g_{t+1}, that product kept (it is also the carry and a factor of
the exponent's gradient X_t), three bmm for dC, dB and sum_n g B, and X_t, X_t A, its sum, X_t delta.
Smaller measured wins: D innermost in the chunk buffers, and blocked 2-D transposes in and out of
the time-major layout. exp2 with log2(e) folded into A, once 3x faster than exp here, measured 5%
slower than exp under torch 2.14.

Why not the log-space cumsum trick: it computes h_t = exp(S_t) * cumsum_s(exp(-S_s) * b_s) with
S_t = sum_{s<=t} delta_s * A, and exp(-S_s) overflows float32 once |S| > 88, which a trained Mamba
reaches within a few dozen steps (delta ~ 1, A ~ -16). The fused (and the chunked) scan only ever
multiply decays in (0, 1] and exponentiate non-positive numbers: as stable as the sequential loop.

Measured on the 2-core CPU this project trains on (torch.set_num_threads(2), float32, median ms of
7 repeats, implementations interleaved in one process; forward + backward with delta bias,
softplus, D and z, inputs laid out as the Mamba block passes them; load average 0.5-2, from
another engineer's jobs). "fused before" is the previous fused scan (scan only in the node, the
backward recomputing decays and states, three passes for X), kept out of the tree:

    (B, D, N, L)          ref      parallel    fused before    fused
    (128, 164, 16, 93)    569      483         170             137    1.24x faster than before
    (128, 164, 16, 19)     64       95          37              27    1.37x
    (8, 128, 16, 93)       48       23         9.5             9.2    1.04x

With the fused scan, a Mamba training step (forward, backward, AdamW, batch 128) was mostly the
scan: 72% of the step's profiled CPU time at T = 19. With the compiled scan it is 43% or less
(8-lane blocks, demo HMM, one thread), and Mamba's step is 1.2x to 1.4x the matched transformer's
(``benchmarks/mamba_step.py``; benchmarks/README.md, the Mamba step).
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from framework.models.selective_scan_kernel import apply_upcast, selective_scan_compiled
from framework.models.selective_scan_kernel import supports as supports_compiled


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


# Bytes per chunk of the fused scan's (K, B, N, D) tensors. On CPU a chunk's few tensors (decays,
# states, adjoints, a scratch) should sit in L2: 2 MiB measured best at the shapes we train (1-4 MiB
# within noise, 8 MiB and up clearly slower). On GPU there is no cache to fit and every op is a kernel
# launch, so take the whole sequence in one chunk when it fits 256 MiB (a guess: not measured on GPU).
_CHUNK_BYTES = {"cpu": 2**21}
_CHUNK_BYTES_OTHER = 2**28


def _is_blx(x: torch.Tensor) -> bool:
    """True when a (B, X, L) tensor lies in memory as (B, L, X), as Mamba's activations do."""
    return x.shape[1] > 1 and x.stride(1) == 1


def _to_lbx(x: torch.Tensor) -> torch.Tensor:
    """(B, X, L) -> (L, B, X), contiguous: every time step a contiguous block. May return ``x``'s
    own memory (when it already lies that way), so callers never write into the result."""
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
    return g.reshape(L, batch * X).t().contiguous().view(batch, X, L)


def _scan_chunk(dA, H, dt, du, At, Bt, h):
    """Fill dA (K, B, N, D) with exp(delta A) and H (K, B, N, D; None: a new tensor) with the states
    h_1..h_K from h_0 = h (None: zero). Returns H."""
    torch.mul(dt[:, :, None, :], At, out=dA).exp_()
    H = torch.mul(du[:, :, None, :], Bt[:, :, :, None], out=H)  # delta u B
    Hs, dAs = H.unbind(0), dA.unbind(0)
    if h is not None:
        Hs[0].addcmul_(dAs[0], h)
    for k in range(1, len(Hs)):
        Hs[k].addcmul_(dAs[k], Hs[k - 1])  # h_t = exp(delta_t A) h_{t-1} + delta_t u_t B_t
    return H


class _SelectiveScanFn(torch.autograd.Function):
    """The whole of :func:`selective_scan_ref` (delta bias and softplus, the scan, D skip, SiLU(z)
    gate, last state) as one autograd node with a hand-written backward.

    Time is walked in chunks of K steps; within a chunk the decays and states are (K, B, N, D):
    time outermost, so one step is one contiguous block, and D innermost (the products and sums over N
    ran 2-3x faster than with N = 16 innermost). The chunk buffers are reused from chunk to chunk, so
    they stay in cache; the state entering each chunk is saved, each as its own tensor, and the
    backward recomputes the chunk's decays (and, for K > 1, its states) from it. At batch 128 K is 1,
    the saved states are all the states, and the backward reads them rather than recomputing.

    Backward (g_t = dLoss/dh_t, the adjoint state; Q_t = exp(delta_t A) g_t, what the adjoint carries
    to t-1; X_t = Q_t h_{t-1}, the gradient of the exponent delta_t A):

        g_t = C_t dy_t + Q_{t+1}   (Q_{L+1} = dLoss/dh_L), one baddbmm per step
        dC_t = sum_d dy_t h_t      dB_t = sum_d g_t delta_t u_t      dA = sum_{b,t} X_t delta_t
        du_t = delta_t sum_n g_t B_t      ddelta_t = u_t sum_n g_t B_t + sum_n X_t A

    where dy is the gradient of the scan's read-out C_t . h_t, after the gate and the D skip.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk):
        batch, dim, L = u.shape
        N = A.shape[1]
        At = A.t().contiguous()  # (N, D)
        ut, Bt, Ct = _to_lbx(u), _to_lbx(B), _to_lbx(C)  # (L, B, D|N)
        raw = _to_lbx(delta)  # (L, B, D)
        if delta_bias is not None:
            raw = raw + delta_bias
        dt = F.softplus(raw) if delta_softplus else raw
        du = dt * ut  # (L, B, D)
        if chunk is None:
            budget = _CHUNK_BYTES.get(u.device.type, _CHUNK_BYTES_OTHER)
            chunk = budget // (batch * N * dim * u.element_size())
        K = max(1, min(L, chunk))
        y = u.new_empty(L, batch, dim)
        dA_buf, H_buf = u.new_empty(K, batch, N, dim), u.new_empty(K, batch, N, dim)
        h_in = []  # the state after each chunk, (B, N, D) each
        h = None
        for s in range(0, L, K):
            e = min(s + K, L)
            # A one-step chunk writes its state straight into a fresh tensor, saved as it is;
            # longer chunks reuse H_buf and save a copy of their last state.
            dA, H = dA_buf[: e - s], (H_buf[: e - s] if K > 1 else None)
            H = _scan_chunk(dA, H, dt[s:e], du[s:e], At, Bt[s:e], h)
            KB = (e - s) * batch
            torch.bmm(Ct[s:e].view(KB, 1, N), H.view(KB, N, dim), out=y[s:e].view(KB, 1, dim))
            h = H[-1].clone() if K > 1 else H[0]
            h_in.append(h)
        kept = [dA_buf, H] if h is not None and K >= L else []  # one chunk: keep it, the backward needs no recompute
        extra = []
        if D is not None:
            y.addcmul_(ut, D)
        if z is not None:
            zt = _to_lbx(z)
            gate = F.silu(zt)
            extra = [zt, gate, y]  # y before the gate
            y = y * gate
        ctx.K, ctx.n_chunks = K, len(h_in)
        ctx.flags = (D is not None, z is not None, delta_bias is not None, delta_softplus)
        ctx.blx = [_is_blx(x) for x in (u, delta, B, C)] + [z is not None and _is_blx(z)]
        ctx.save_for_backward(raw if delta_softplus else None, dt, du, ut, At, Bt, Ct, D, *extra, *h_in, *kept)
        ctx.set_materialize_grads(False)
        last = h.transpose(1, 2).contiguous() if h is not None else u.new_zeros(batch, dim, N)
        return _from_lbx(y, blx=True), last  # (B, D, L) in (B, L, D) memory, (B, D, N)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_last):
        has_D, has_z, has_bias, softplus = ctx.flags
        raw, dt, du, ut, At, Bt, Ct, D, *rest = ctx.saved_tensors
        if has_z:
            zt, gate, y_pre, *rest = rest
        h_out, kept = rest[: ctx.n_chunks], rest[ctx.n_chunks:]
        K = ctx.K
        L, batch, dim = dt.shape
        N = At.shape[0]
        dz = dD = None
        if grad_out is None:
            gy = dt.new_zeros(L, batch, dim)
            dz = dt.new_zeros(L, batch, dim) if has_z else None
        else:
            gy = _to_lbx(grad_out)  # (L, B, D)
            if has_z:
                dz = torch.ops.aten.silu_backward(gy * y_pre, zt)
                gy = gy * gate
        if has_D:
            dD = (gy * ut).sum((0, 1))
        GB, dd = torch.empty_like(dt), torch.empty_like(dt)  # sum_n g B; sum_n X A
        dBt, dCt = torch.empty_like(Bt), torch.empty_like(Ct)
        Kb = min(K, L)
        if kept:
            dA_buf, H_buf = kept
        else:
            dA_buf, H_buf = dt.new_empty(Kb, batch, N, dim), dt.new_empty(Kb, batch, N, dim)
        G_buf, Q_buf, T_buf = (dt.new_empty(Kb, batch, N, dim) for _ in range(3))
        # dA: one-step chunks accumulate X delta over time in place and sum over the batch at the
        # end; longer chunks sum each chunk's X delta over time and batch at once.
        acc = dt.new_zeros(batch, N, dim) if Kb == 1 else dt.new_zeros(N, dim)
        # Q_{t+1}, (B, N, D). It lives in Q_buf[0] between chunks: the next chunk reads it at its
        # last step before it overwrites Q_buf[0] at its first.
        carry = grad_last.transpose(1, 2) if grad_last is not None else None
        for c in range(ctx.n_chunks - 1, -1, -1):
            s = c * K
            e = min(s + K, L)
            k, KB = e - s, (e - s) * batch
            h = h_out[c - 1] if c else None  # the state entering the chunk
            dA, G, Q, T = dA_buf[:k], G_buf[:k], Q_buf[:k], T_buf[:k]
            if kept:
                H = H_buf
            elif k == 1:  # the chunk's one state was saved: recompute the decay only
                H = h_out[c].unsqueeze(0)
                torch.mul(dt[s:e, :, None, :], At, out=dA).exp_()
            else:
                H = H_buf[:k]
                _scan_chunk(dA, H, dt[s:e], du[s:e], At, Bt[s:e], h)
            if k == 1:  # two ops per step
                C_t, gy_t = Ct[s].view(batch, N, 1), gy[s].view(batch, 1, dim)
                if carry is None:
                    torch.bmm(C_t, gy_t, out=G[0])
                else:
                    torch.baddbmm(carry, C_t, gy_t, out=G[0])  # g_t = C_t dy_t + Q_{t+1}
                carry = torch.mul(dA[0], G[0], out=Q[0])  # Q_t
            else:  # one op per step, and three per chunk
                torch.mul(gy[s:e, :, None, :], Ct[s:e, :, :, None], out=G)  # C_t dy_t
                Gs, dAs = G.unbind(0), dA.unbind(0)
                if carry is not None:
                    Gs[-1].add_(carry)
                for j in range(k - 2, -1, -1):
                    Gs[j].addcmul_(dAs[j + 1], Gs[j + 1])  # g_t = C_t dy_t + exp(delta_{t+1} A) g_{t+1}
                carry = torch.mul(dA, G, out=Q)[0]  # Q_t for the chunk; the first is the carry
            torch.bmm(gy[s:e].view(KB, 1, dim), H.view(KB, N, dim).transpose(1, 2), out=dCt[s:e].view(KB, 1, N))
            torch.bmm(Bt[s:e].view(KB, 1, N), G.view(KB, N, dim), out=GB[s:e].view(KB, 1, dim))
            torch.bmm(du[s:e].view(KB, 1, dim), G.view(KB, N, dim).transpose(1, 2), out=dBt[s:e].view(KB, 1, N))
            X = G  # X_t = Q_t h_{t-1}, into G (read for the last time above); Q[0] stays the carry
            if k > 1:
                torch.mul(Q[1:], H[:-1], out=X[1:])
            if h is not None:
                torch.mul(Q[0], h, out=X[0])
            else:
                X[0].zero_()  # h_0 = 0
            torch.sum(torch.mul(X, At, out=T), -2, out=dd[s:e])
            if Kb == 1:
                acc.addcmul_(X[0], dt[s, :, None, :])
            else:
                acc += torch.mul(X, dt[s:e, :, None, :], out=T).sum((0, 1))
        dAt = acc.sum(0) if Kb == 1 else acc  # (N, D)
        dd.addcmul_(ut, GB)  # d delta (after the softplus)
        du_grad = GB.mul_(dt)
        if has_D:
            du_grad.addcmul_(gy, D)
        if softplus:
            dd = torch.ops.aten.softplus_backward(dd, raw, 1.0, 20.0)
        dbias = dd.sum((0, 1)) if has_bias else None
        blx = ctx.blx
        return (_from_lbx(du_grad, blx[0]), _from_lbx(dd, blx[1]), dAt.t(),
                _from_lbx(dBt, blx[2]), _from_lbx(dCt, blx[3]), dD,
                _from_lbx(dz, blx[4]) if has_z else None, dbias, None, None)


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
    (:class:`_SelectiveScanFn`), the delta bias, softplus, D skip and SiLU(z) gate included.
    ``chunk`` overrides the number of time steps per chunk (tests use it; any chunk >= 1 gives the
    same result)."""
    if chunk is not None and chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    return apply_upcast(_SelectiveScanFn, return_last_state, u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                        chunk)


_IMPLS = {"compiled": selective_scan_compiled, "fused": selective_scan_fused, "parallel": selective_scan_parallel,
          "ref": selective_scan_ref}
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
    """Dispatch: ``impl`` is "auto" (mamba-ssm's CUDA kernel on CUDA when it imports; on CPU the compiled
    kernel when it builds and d_state fits it; else fused), "compiled", "fused", "parallel" or "ref"."""
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if impl in _IMPLS:
        return _IMPLS[impl](*args)
    if impl != "auto":
        raise ValueError(f"impl must be 'auto', {', '.join(map(repr, _IMPLS))}, got {impl!r}")
    if supports_compiled(u, A):
        return selective_scan_compiled(*args)
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
