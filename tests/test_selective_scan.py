"""The fused and chunked selective scans against the sequential reference (mamba-ssm's selective_scan_ref)."""
from __future__ import annotations

import itertools
import os
import sys
import warnings

import pytest
import torch

from framework.models import MambaConfig, build_model
from framework.models.mamba import causal_conv1d_silu
from framework.models import selective_scan_kernel
from framework.models.selective_scan import (
    cuda_kernels,
    selective_scan,
    selective_scan_fused,
    selective_scan_parallel,
    selective_scan_ref,
)
from framework.models.selective_scan_kernel import selective_scan_compiled

# The compiled CPU scan is built by the tests like anywhere else (a C++ compiler is part of the
# project's machines); only an explicit WINDTUNNEL_CPU_KERNEL=0 skips its tests.
needs_kernel = pytest.mark.skipif(os.environ.get("WINDTUNNEL_CPU_KERNEL") == "0",
                                  reason="WINDTUNNEL_CPU_KERNEL=0")

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


def extras(batch, dim, L, dtype=torch.float64, seed=10):
    """D, z and a delta bias, for the full mamba-ssm signature."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(dim, generator=g, dtype=dtype), torch.randn(batch, dim, L, generator=g, dtype=dtype),
            torch.randn(dim, generator=g, dtype=dtype))


def run_with_grads(scan, inputs, full=False, softplus=False, **kwargs):
    """y, the last state and the gradients of every input, under a loss that weighs both outputs.

    ``full`` adds D and z (and, with ``softplus``, a delta bias through the softplus) as inputs."""
    batch, dim, L = inputs[0].shape
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    extra_leaves = []
    if full:
        D, z, bias = (t.to(inputs[0]) for t in extras(batch, dim, L))
        extra_leaves = [t.requires_grad_() for t in ((D, z, bias) if softplus else (D, z))]
        kwargs.update(D=extra_leaves[0], z=extra_leaves[1])
        if softplus:
            kwargs.update(delta_bias=extra_leaves[2], delta_softplus=True)
    y, h = scan(*leaves, return_last_state=True, **kwargs)
    g = torch.Generator().manual_seed(11)
    wy = torch.randn(y.shape, generator=g, dtype=torch.float64).to(y)
    wh = torch.randn(h.shape, generator=g, dtype=torch.float64).to(h)
    ((y * wy).sum() + (h * wh).sum()).backward()
    return [y.detach(), h.detach()] + [t.grad for t in leaves + extra_leaves]


@pytest.mark.parametrize("regime", ["small", "large", "mixed"])
@pytest.mark.parametrize("batch,dim,n,L", GRID)
def test_fused_matches_reference_with_gradients(batch, dim, n, L, regime):
    """Outputs, last state and the gradients of u, delta, A, B, C, D and z. At these sizes the
    default chunk holds the whole sequence (the backward reuses the forward's buffers); chunks of 3
    steps take the other path, where the backward recomputes every chunk."""
    inputs = make_inputs(batch, dim, n, L, regime)
    ref = run_with_grads(selective_scan_ref, inputs, full=True)
    assert all(torch.isfinite(t).all() for t in ref)
    for chunk in (None, 3):
        fused = run_with_grads(selective_scan_fused, inputs, full=True, chunk=chunk)
        assert fused[0].shape == (batch, dim, L) and fused[1].shape == (batch, dim, n)
        for name, got, want in zip(["y", "h_L", "u", "delta", "A", "B", "C", "D", "z"], fused, ref):
            assert got.dtype == torch.float64, name
            torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-9,
                                       msg=lambda m: f"chunk {chunk}, {name}: {m}")


@pytest.mark.parametrize("L,chunk", [(1, 1), (7, 1), (7, 2), (7, 3), (7, 7), (7, 50), (64, 5), (200, 64)])
def test_fused_any_chunk_size_gives_the_same_scan(L, chunk):
    """Chunk boundaries carry the state forward and the adjoint backward; the last chunk may be short."""
    inputs = make_inputs(2, 4, 4, L, "mixed", seed=1)
    ref = run_with_grads(selective_scan_ref, inputs, full=True, softplus=True)
    fused = run_with_grads(selective_scan_fused, inputs, full=True, softplus=True, chunk=chunk)
    for got, want in zip(fused, ref):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-9)
    with pytest.raises(ValueError, match="chunk"):
        selective_scan_fused(*inputs, chunk=0)


@pytest.mark.parametrize("batch,dim,n,L,chunk", [(1, 1, 1, 1, None), (2, 3, 2, 5, None), (2, 3, 2, 9, 2),
                                                 (1, 2, 3, 6, 4)])
def test_fused_gradcheck(batch, dim, n, L, chunk):
    """Finite differences against the hand-written backward, through every input and both outputs."""
    u, delta, A, B, C = make_inputs(batch, dim, n, L, "mixed", seed=3)
    D, z, bias = extras(batch, dim, L)

    def scan(*args):
        return selective_scan_fused(*args[:5], D=args[5], z=args[6], delta_bias=args[7], delta_softplus=True,
                                    return_last_state=True, chunk=chunk)

    raw = delta.log()  # before the softplus, so that softplus(raw) spans the same range as delta
    leaves = [t.clone().requires_grad_() for t in (u, raw, A, B, C, D, z, bias)]
    assert torch.autograd.gradcheck(scan, leaves)
    # and the scan alone, with no softplus, D or z in front of it
    leaves = [t.clone().requires_grad_() for t in (u, delta, A, B, C)]
    assert torch.autograd.gradcheck(lambda *a: selective_scan_fused(*a, return_last_state=True, chunk=chunk),
                                    leaves)


@pytest.mark.parametrize("impl", ["fused", pytest.param("compiled", marks=needs_kernel)])
def test_fused_handles_unused_outputs_and_empty_sequences(impl):
    fast = {"fused": selective_scan_fused, "compiled": selective_scan_compiled}[impl]
    u, delta, A, B, C = make_inputs(2, 3, 4, 9, "mixed", seed=6)
    # only the last state carries gradient (y unused), and only y (the state unused)
    for pick in (lambda y, h: h.square().sum(), lambda y, h: y.square().sum()):
        grads = []
        for scan in (selective_scan_ref, fast):
            leaves = [t.clone().requires_grad_() for t in (u, delta, A, B, C)]
            pick(*scan(*leaves, return_last_state=True)).backward()
            # the reference leaves C's gradient None when only the state is used; the fused scan, zero
            grads.append([torch.zeros_like(t) if t.grad is None else t.grad for t in leaves])
        for got, want in zip(*reversed(grads)):
            torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-9)
    y, h = fast(u[..., :0], delta[..., :0], A, B[..., :0], C[..., :0], return_last_state=True)
    assert y.shape == (2, 3, 0) and torch.equal(h, torch.zeros(2, 3, 4, dtype=torch.float64))


def test_fused_records_one_autograd_node_for_the_whole_scan():
    """The point of the fused scan: the graph does not grow with L."""
    def graph_size(L):
        leaves = [t.requires_grad_() for t in make_inputs(1, 2, 2, L, "mixed")]
        seen, stack = set(), [selective_scan_fused(*leaves).grad_fn]
        while stack:
            node = stack.pop()
            if node is not None and node not in seen:
                seen.add(node)
                stack.extend(next_fn for next_fn, _ in node.next_functions)
        return len(seen)

    assert graph_size(5) == graph_size(200) < 15


@pytest.mark.parametrize("impl", ["fused", pytest.param("compiled", marks=needs_kernel)])
def test_fused_accepts_any_memory_layout(impl):
    """Mamba passes delta and z as (B, L, D) memory viewed as (B, D, L), and B, C as contiguous copies;
    the results and gradients must not depend on the layout (the scan transposes internally)."""
    fast = {"fused": selective_scan_fused, "compiled": selective_scan_compiled}[impl]
    u, delta, A, B, C = make_inputs(3, 5, 4, 23, "mixed", seed=7)

    def relayout(t):  # the same values, in (B, L, X) memory
        return t.transpose(1, 2).contiguous().transpose(1, 2)

    want = run_with_grads(selective_scan_ref, (u, delta, A, B, C), full=True)
    got = run_with_grads(fast, (relayout(u), relayout(delta), A, relayout(B), relayout(C)), full=True)
    strided = (u, torch.cat([delta, delta], 1)[:, 5:], A.t().contiguous().t(), B, C)  # a slice; A transposed
    sliced = run_with_grads(fast, strided, full=True)
    for g1, g2, w in zip(got, sliced, want):
        torch.testing.assert_close(g1, w, atol=1e-10, rtol=1e-9)
        torch.testing.assert_close(g2, w, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("impl", ["fused", pytest.param("compiled", marks=needs_kernel)])
def test_fused_float32_is_stable_at_long_lengths(impl):
    """float32, L = 200, decays down to exp(-1e3) per step: finite, and outputs and gradients close
    to the float64 reference. (The compiled scan's float32 exp is its own polynomial.)"""
    fast = {"fused": selective_scan_fused, "compiled": selective_scan_compiled}[impl]
    inputs = make_inputs(2, 8, 16, 200, "large", seed=5)
    ref = run_with_grads(selective_scan_ref, inputs, full=True)
    fused = run_with_grads(fast, [t.float() for t in inputs], full=True)
    for name, got, want in zip(["y", "h_L", "u", "delta", "A", "B", "C", "D", "z"], fused, ref):
        assert got.dtype == torch.float32 and torch.isfinite(got).all(), name
        torch.testing.assert_close(got.double(), want, atol=1e-4, rtol=1e-4, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("impl", ["fused", pytest.param("compiled", marks=needs_kernel), "auto"])
def test_mamba_fused_scan_equals_reference_scan(impl):
    """The model end to end: logits and every parameter's gradient, float64."""
    torch.manual_seed(0)
    model = build_model(MambaConfig(d_model=16, n_layers=2), 11, 5, 40).double()
    tokens = torch.randint(0, 11, (3, 40))
    out = {}
    for name in ("ref", impl):
        model.scan_impl = name
        model.zero_grad()
        logits = model(tokens)
        logits.square().sum().backward()
        out[name] = (logits.detach(), [p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(out[impl][0], out["ref"][0], atol=1e-10, rtol=1e-10)
    for (name, _), g, g_ref in zip(model.named_parameters(), out[impl][1], out["ref"][1]):
        torch.testing.assert_close(g, g_ref, atol=1e-9, rtol=1e-9, msg=lambda m: f"{name}: {m}")


@needs_kernel
def test_auto_dispatch_on_cpu_is_the_compiled_scan_and_silent(recwarn):
    u, delta, A, B, C = make_inputs(1, 4, 4, 10, "mixed", dtype=torch.float32)
    auto = selective_scan(u, delta, A, B, C)
    assert torch.equal(auto, selective_scan_compiled(u, delta, A, B, C))  # the same code, bit for bit
    for impl, scan in [("compiled", selective_scan_compiled), ("fused", selective_scan_fused),
                       ("parallel", selective_scan_parallel), ("ref", selective_scan_ref)]:
        assert torch.equal(selective_scan(u, delta, A, B, C, impl=impl), scan(u, delta, A, B, C))
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
    if cuda_kernels() is None:  # the fallback: the fused scan on CUDA, with one warning
        with pytest.warns(UserWarning, match="mamba-ssm"):
            y = selective_scan(*(t.cuda() for t in inputs))
    else:
        y = selective_scan(*(t.cuda() for t in inputs))
    torch.testing.assert_close(y.cpu(), selective_scan_ref(*inputs), atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fused_matches_reference_with_gradients():
    inputs = make_inputs(2, 8, 16, 64, "mixed", dtype=torch.float32)
    ref = run_with_grads(selective_scan_ref, inputs, full=True)
    fused = run_with_grads(selective_scan_fused, [t.cuda() for t in inputs], full=True)
    for got, want in zip(fused, ref):
        torch.testing.assert_close(got.cpu(), want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("batch,L,E,K", [(1, 1, 1, 4), (2, 3, 5, 4), (3, 17, 6, 4), (2, 9, 4, 1), (2, 6, 3, 7)])
def test_causal_conv_matches_nn_conv1d(batch, L, E, K):
    """The shifted multiply-add conv + SiLU against nn.Conv1d (values and the gradients of x, weight
    and bias), float64, x a strided (B, L, E) view as in the Mamba block; L < K included."""
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(E, E, kernel_size=K, groups=E, padding=K - 1).double()
    xz = torch.randn(batch, L, 2 * E, dtype=torch.float64)
    grads = []
    for path in ("nn", "fast"):
        conv.zero_grad()
        leaf = xz.clone().requires_grad_()
        x = leaf[..., :E]  # (B, L, E), row stride 2E
        if path == "nn":
            out = torch.nn.functional.silu(conv(x.transpose(1, 2))[..., :L]).transpose(1, 2)
        else:
            out = causal_conv1d_silu(x, conv.weight, conv.bias)
        w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        (out * w).sum().backward()
        grads.append([out.detach(), leaf.grad, conv.weight.grad.clone(), conv.bias.grad.clone()])
    for name, got, want in zip(["out", "x", "weight", "bias"], grads[1], grads[0]):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("batch,L", [(1, 1), (3, 5), (4, 23)])
def test_mamba_mixer_matches_the_reference_block(batch, L, monkeypatch):
    """One Mamba block, fused scan and shifted-add conv, against the block written the reference way
    (nn.Conv1d on (B, E, L), the sequential scan with its own softplus, D and gate under autograd):
    output and the gradients of the input and every parameter, float64. Chunks of 2 steps take the
    scan's other backward path."""
    import framework.models.selective_scan as ss

    torch.manual_seed(0)
    mixer = build_model(MambaConfig(d_model=8, n_layers=1, d_state=4), 5, 3, 40).double().blocks[0].mixer
    hidden = torch.randn(batch, L, 8, dtype=torch.float64)

    def reference(h):
        E = mixer.D.shape[0]
        x, z = mixer.in_proj(h).transpose(1, 2).split(E, dim=1)  # (B, E, L)
        x = torch.nn.functional.silu(mixer.conv1d(x)[..., :L])
        dt, B, C = mixer.x_proj(x.transpose(1, 2)).split([mixer.dt_rank, mixer.d_state, mixer.d_state], -1)
        delta = (dt @ mixer.dt_proj.weight.t()).transpose(1, 2)
        y = selective_scan_ref(x, delta, -torch.exp(mixer.A_log), B.transpose(1, 2), C.transpose(1, 2),
                               mixer.D, z=z, delta_bias=mixer.dt_proj.bias, delta_softplus=True)
        return mixer.out_proj(y.transpose(1, 2))

    def grads(run):
        mixer.zero_grad()
        leaf = hidden.clone().requires_grad_()
        out = run(leaf)
        (out * torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view(out.shape)).sum().backward()
        return [out.detach(), leaf.grad] + [p.grad.clone() for p in mixer.parameters()]

    want = grads(reference)
    got = [grads(lambda h: mixer(h, "fused"))]
    if os.environ.get("WINDTUNNEL_CPU_KERNEL") != "0":
        got.append(grads(lambda h: mixer(h, "compiled")))
    fused = ss.selective_scan_fused
    monkeypatch.setitem(ss._IMPLS, "fused", lambda *args: fused(*args, chunk=2))
    got.append(grads(lambda h: mixer(h, "fused")))
    names = ["out", "input"] + [n for n, _ in mixer.named_parameters()]
    for result in got:
        for name, g, w in zip(names, result, want):
            torch.testing.assert_close(g, w, atol=1e-10, rtol=1e-9, msg=lambda m: f"{name}: {m}")


@needs_kernel
@pytest.mark.parametrize("regime", ["small", "large", "mixed"])
@pytest.mark.parametrize("batch,dim,n,L", GRID + [(2, 13, 16, 93), (1, 20, 3, 5), (2, 37, 16, 20), (1, 16, 4, 7)])
def test_compiled_matches_reference_with_gradients(batch, dim, n, L, regime):
    """The compiled CPU scan, float64 (its exp and log1p are the C library's there): outputs, last state
    and every gradient, the scan alone and with D, z, and the delta bias through the softplus. Channel
    counts that are not a multiple of its 8- or 16-lane blocks (AVX-512) included."""
    inputs = make_inputs(batch, dim, n, L, regime)
    for full, softplus in ((False, False), (True, False), (True, True)):
        ref = run_with_grads(selective_scan_ref, inputs, full=full, softplus=softplus)
        got = run_with_grads(selective_scan_compiled, inputs, full=full, softplus=softplus)
        names = ["y", "h_L", "u", "delta", "A", "B", "C", "D", "z", "delta_bias"]
        assert len(got) == len(ref)
        for name, g, w in zip(names, got, ref):
            assert g.dtype == torch.float64, name
            torch.testing.assert_close(g, w, atol=1e-10, rtol=1e-9,
                                       msg=lambda m: f"full={full} softplus={softplus} {name}: {m}")


@needs_kernel
@pytest.mark.parametrize("batch,dim,n,L", [(1, 1, 1, 1), (2, 3, 2, 5), (1, 9, 3, 6)])
def test_compiled_gradcheck(batch, dim, n, L):
    """Finite differences against the compiled backward, through every input and both outputs."""
    u, delta, A, B, C = make_inputs(batch, dim, n, L, "mixed", seed=3)
    D, z, bias = extras(batch, dim, L)

    def scan(*args):
        return selective_scan_compiled(*args[:5], D=args[5], z=args[6], delta_bias=args[7], delta_softplus=True,
                                       return_last_state=True)

    leaves = [t.clone().requires_grad_() for t in (u, delta.log(), A, B, C, D, z, bias)]
    assert torch.autograd.gradcheck(scan, leaves)


@needs_kernel
@pytest.mark.parametrize("batch", [1, 2, 5])
def test_compiled_splits_the_batch_over_threads(batch):
    """Two threads split the batch and sum their shares of dA, dD and the delta bias's gradient: the
    same numbers as one thread and as the reference (B = 1 leaves the second thread idle)."""
    inputs = make_inputs(batch, 11, 4, 17, "mixed", seed=8)
    threads = torch.get_num_threads()
    try:
        results = []
        for n_threads in (1, 2):
            torch.set_num_threads(n_threads)
            results.append(run_with_grads(selective_scan_compiled, inputs, full=True, softplus=True))
    finally:
        torch.set_num_threads(threads)
    ref = run_with_grads(selective_scan_ref, inputs, full=True, softplus=True)
    for one, two, want in zip(*results, ref):
        torch.testing.assert_close(two, one, atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(two, want, atol=1e-10, rtol=1e-9)


@needs_kernel
def test_compiled_refuses_what_it_cannot_take_and_auto_falls_back():
    """d_state above the kernel's maximum: the compiled scan raises, "auto" takes the fused scan."""
    n = selective_scan_kernel.library().scan_max_state() + 1
    u, delta, A, B, C = make_inputs(1, 3, n, 4, "mixed", dtype=torch.float32)
    with pytest.raises(RuntimeError, match="d_state"):
        selective_scan_compiled(u, delta, A, B, C)
    assert torch.equal(selective_scan(u, delta, A, B, C), selective_scan_fused(u, delta, A, B, C))


def test_kernel_that_cannot_build_falls_back_to_the_fused_scan_with_one_warning(monkeypatch, tmp_path):
    monkeypatch.setenv("WINDTUNNEL_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "false")  # a "compiler" that fails
    monkeypatch.delitem(selective_scan_kernel._cache, "lib", raising=False)
    u, delta, A, B, C = make_inputs(1, 4, 4, 10, "mixed", dtype=torch.float32)
    with pytest.warns(UserWarning, match="compiled CPU selective scan is unavailable"):
        auto = selective_scan(u, delta, A, B, C)
    assert torch.equal(auto, selective_scan_fused(u, delta, A, B, C))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        selective_scan(u, delta, A, B, C)
    assert list(tmp_path.iterdir()) == []  # the failed build left nothing behind
    monkeypatch.setenv("WINDTUNNEL_CPU_KERNEL", "0")  # and turned off on purpose: no warning at all
    monkeypatch.delitem(selective_scan_kernel._cache, "lib")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(selective_scan(u, delta, A, B, C), auto)


@needs_kernel
def test_kernel_is_built_once_into_its_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("WINDTUNNEL_KERNEL_CACHE", str(tmp_path))
    monkeypatch.delitem(selective_scan_kernel._cache, "lib", raising=False)
    assert selective_scan_kernel.library() is not None
    [built] = tmp_path.iterdir()
    assert built.name.startswith("selective_scan_cpu-") and built.suffix == ".so"
    stamp = built.stat().st_mtime_ns
    monkeypatch.delitem(selective_scan_kernel._cache, "lib")  # a new process, as it were
    selective_scan_kernel.library()
    assert [p.name for p in tmp_path.iterdir()] == [built.name] and built.stat().st_mtime_ns == stamp
