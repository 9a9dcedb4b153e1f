"""The chunked selective scan against the sequential reference (mamba-ssm's selective_scan_ref)."""
from __future__ import annotations

import itertools
import sys

import pytest
import torch

from framework.models.selective_scan import (
    cuda_kernels,
    selective_scan,
    selective_scan_parallel,
    selective_scan_ref,
)

GRID = list(itertools.product([1, 3], [1, 8], [1, 4, 16], [1, 7, 64, 200]))  # (B, D, N, L)


def make_inputs(batch, dim, n, L, regime, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    u = randn(batch, dim, L)
    A = -torch.exp(randn(dim, n))  # negative, spread over about e^-3 .. e^3
    B, C = randn(batch, n, L), randn(batch, n, L)
    if regime == "small":  # slow decay: the state integrates the whole sequence
        delta = 10 ** (-4 + 2 * torch.rand(batch, dim, L, generator=g, dtype=dtype))
    elif regime == "large":  # fast decay: exp(delta * A) underflows to 0, cumulative log-decay ~ -1e5
        delta = 10 ** (0 + 1.5 * torch.rand(batch, dim, L, generator=g, dtype=dtype))
        A = A * 16
    else:  # mixed, with a run of near-zero delta (the state carried unchanged across chunks)
        delta = 10 ** (-3 + 4 * torch.rand(batch, dim, L, generator=g, dtype=dtype))
        delta[..., L // 3: 2 * L // 3] = 1e-6
    return u, delta, A, B, C


@pytest.mark.parametrize("regime", ["small", "large", "mixed"])
@pytest.mark.parametrize("batch,dim,n,L", GRID)
def test_parallel_matches_reference(batch, dim, n, L, regime):
    u, delta, A, B, C = make_inputs(batch, dim, n, L, regime)
    ref = selective_scan_ref(u, delta, A, B, C)
    par = selective_scan_parallel(u, delta, A, B, C)
    assert par.shape == ref.shape == (batch, dim, L) and par.dtype == torch.float64
    assert torch.isfinite(ref).all()
    torch.testing.assert_close(par, ref, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("L,chunk", [(1, 1), (7, 1), (7, 3), (7, 7), (7, 50), (64, 5), (200, 64)])
def test_any_chunk_size_gives_the_same_scan(L, chunk):
    u, delta, A, B, C = make_inputs(2, 4, 4, L, "mixed", seed=1)
    ref = selective_scan_ref(u, delta, A, B, C)
    torch.testing.assert_close(selective_scan_parallel(u, delta, A, B, C, chunk=chunk), ref,
                               atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("L", [5, 93])
def test_full_signature_and_last_state(L):
    """D skip, SiLU(z) gate, delta_bias + softplus, return_last_state: the mamba-ssm signature."""
    batch, dim, n = 2, 6, 4
    u, delta, A, B, C = make_inputs(batch, dim, n, L, "mixed", seed=2)
    g = torch.Generator().manual_seed(3)
    D = torch.randn(dim, generator=g, dtype=torch.float64)
    z = torch.randn(batch, dim, L, generator=g, dtype=torch.float64)
    bias = torch.randn(dim, generator=g, dtype=torch.float64)
    raw = torch.randn(batch, dim, L, generator=g, dtype=torch.float64)
    kwargs = dict(D=D, z=z, delta_bias=bias, delta_softplus=True, return_last_state=True)
    y_ref, h_ref = selective_scan_ref(u, raw, A, B, C, **kwargs)
    y_par, h_par = selective_scan_parallel(u, raw, A, B, C, **kwargs)
    assert h_ref.shape == (batch, dim, n)
    torch.testing.assert_close(y_par, y_ref, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(h_par, h_ref, atol=1e-9, rtol=1e-9)

    # The reference itself against the recurrence written out by hand for one (b, d).
    b, d = 1, 2
    sp = torch.nn.functional.softplus(raw[b, d] + bias[d])  # (L,)
    h = torch.zeros(n, dtype=torch.float64)
    for t in range(L):
        h = torch.exp(sp[t] * A[d]) * h + sp[t] * u[b, d, t] * B[b, :, t]
        y = (C[b, :, t] @ h + D[d] * u[b, d, t]) * torch.nn.functional.silu(z[b, d, t])
        torch.testing.assert_close(y_ref[b, d, t], y, atol=1e-12, rtol=1e-12)


def test_gradients_match_reference():
    batch, dim, n, L = 2, 3, 4, 37
    inputs = make_inputs(batch, dim, n, L, "mixed", seed=4)
    bias = torch.zeros(dim, dtype=torch.float64)
    grads = []
    for scan in (selective_scan_ref, selective_scan_parallel):
        leaves = [t.clone().requires_grad_() for t in (*inputs, bias)]
        y = scan(*leaves[:5], delta_bias=leaves[5], delta_softplus=True)
        (y * torch.linspace(-1, 1, L, dtype=torch.float64)).sum().backward()
        grads.append([t.grad for t in leaves])
    for g_par, g_ref in zip(grads[1], grads[0]):
        torch.testing.assert_close(g_par, g_ref, atol=1e-9, rtol=1e-9)


def test_float32_is_stable_at_long_lengths():
    """float32, L = 200, decays down to exp(-1e3) per step: finite and close to the float64 scan."""
    u, delta, A, B, C = make_inputs(2, 8, 16, 200, "large", seed=5)
    ref = selective_scan_ref(u, delta, A, B, C)
    par32 = selective_scan_parallel(*(t.float() for t in (u, delta, A, B, C)))
    assert par32.dtype == torch.float32 and torch.isfinite(par32).all()
    torch.testing.assert_close(par32.double(), ref, atol=1e-4, rtol=1e-4)


def test_auto_dispatch_on_cpu_is_the_parallel_scan_and_silent(recwarn):
    u, delta, A, B, C = make_inputs(1, 4, 4, 10, "mixed", dtype=torch.float32)
    torch.testing.assert_close(selective_scan(u, delta, A, B, C), selective_scan_parallel(u, delta, A, B, C))
    torch.testing.assert_close(selective_scan(u, delta, A, B, C, impl="ref"), selective_scan_ref(u, delta, A, B, C))
    assert not [w for w in recwarn if "mamba-ssm" in str(w.message)]
    with pytest.raises(ValueError, match="impl"):
        selective_scan(u, delta, A, B, C, impl="fast")


def test_mamba_ssm_is_only_imported_lazily():
    assert "mamba_ssm" not in sys.modules  # importing framework.models must not touch it
    kernel = cuda_kernels()
    assert kernel is None or callable(kernel)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_auto_matches_reference(monkeypatch):
    import framework.models.selective_scan as ss

    monkeypatch.setattr(ss, "_warned_no_kernel", False)
    inputs = make_inputs(2, 8, 16, 64, "mixed", dtype=torch.float32)
    if cuda_kernels() is None:  # the fallback: the chunked scan on CUDA, with one warning
        with pytest.warns(UserWarning, match="mamba-ssm"):
            y = selective_scan(*(t.cuda() for t in inputs))
    else:
        y = selective_scan(*(t.cuda() for t in inputs))
    torch.testing.assert_close(y.cpu(), selective_scan_ref(*inputs), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_parallel_is_faster_than_the_loop_on_cpu():
    import statistics
    import time

    torch.set_num_threads(2)
    leaves = [t.float().requires_grad_() for t in make_inputs(16, 128, 16, 100, "mixed")]
    times = {selective_scan_ref: [], selective_scan_parallel: []}
    for _ in range(7):  # interleaved, median: robust to a noisy machine
        for scan in times:
            start = time.perf_counter()
            scan(*leaves).sum().backward()
            times[scan].append(time.perf_counter() - start)
    assert statistics.median(times[selective_scan_parallel]) < statistics.median(times[selective_scan_ref])
