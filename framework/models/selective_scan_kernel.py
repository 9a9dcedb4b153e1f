"""The compiled CPU selective scan (``selective_scan_cpu.cpp``): built with the system C++ compiler at
first use, cached, and loaded through ctypes.

The source includes no PyTorch headers, so a build takes about 2 s (a torch C++ extension takes a
minute); it is called on the tensors' memory (ctypes releases the GIL for the call) and runs its
threads on torch's own OpenMP pool. The shared
library is cached under ``$WINDTUNNEL_KERNEL_CACHE`` (default ``~/.cache/windtunnel/kernels``), named
by a hash of the source, the flags, the compiler's version and this CPU's instruction-set flags
(``-march=native``: a library built for one CPU may not run on another sharing the cache). Builds
write to a temporary file and rename it, so concurrent processes of a sweep do not collide.

Where no compiler is found or the build fails, :func:`library` returns None, warns once, and the
scan falls back to the pure-PyTorch fused scan (the same numbers to float32 rounding; the scan
5.3x to 6.9x slower, ``benchmarks/selective_scan.py``, and Mamba's training step 1.3x to 1.7x,
``benchmarks/mamba_step.py``).
``WINDTUNNEL_CPU_KERNEL=0`` turns the kernel off.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

SOURCE = Path(__file__).with_name("selective_scan_cpu.cpp")
# -fopenmp: see over_batch in the source; -Wno-psabi: GCC's note that 8-double vectors pass
# differently with AVX-512, which concerns no caller here (they are never passed across the ABI).
FLAGS = ("-O3", "-march=native", "-ffp-contract=fast", "-fno-math-errno", "-Wno-psabi", "-std=c++17",
         "-shared", "-fPIC", "-fopenmp")
_cache: dict[str, object] = {}


def cache_dir() -> Path:
    return Path(os.environ.get("WINDTUNNEL_KERNEL_CACHE") or Path.home() / ".cache" / "windtunnel" / "kernels")


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _build(compiler: str) -> Path:
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256("\n".join([SOURCE.read_text(), " ".join(FLAGS), version, platform.machine(),
                                    _cpu_flags()]).encode()).hexdigest()[:16]
    target = cache_dir() / f"selective_scan_cpu-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        subprocess.run([compiler, *FLAGS, "-o", tmp, str(SOURCE)], capture_output=True, text=True, check=True)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


class ScanArgs(ctypes.Structure):
    """The C struct ``ScanArgs`` of selective_scan_cpu.cpp (its size is checked at load)."""

    _fields_ = ([(name, ctypes.c_int64) for name in ("B", "L", "D", "N", "ldz")]
                + [("softplus", ctypes.c_int32), ("threads", ctypes.c_int32)]
                + [(name, ctypes.c_void_p) for name in (
                    "delta", "bias", "u", "At", "Bm", "Cm", "Dskip", "z", "gout", "dlast", "y", "last",
                    "du", "ddelta", "dz", "dB", "dC", "dAt", "dD", "dbias")])


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    for name in ("scan_forward_f32", "scan_forward_f64", "scan_backward_f32", "scan_backward_f64"):
        getattr(lib, name).argtypes = [ctypes.POINTER(ScanArgs)]
        getattr(lib, name).restype = None
    lib.scan_max_state.restype = ctypes.c_int
    lib.scan_args_size.restype = ctypes.c_int64
    if lib.scan_args_size() != ctypes.sizeof(ScanArgs):
        raise OSError(f"ScanArgs is {lib.scan_args_size()} bytes in C, {ctypes.sizeof(ScanArgs)} in Python")
    return lib


def library() -> ctypes.CDLL | None:
    """The loaded kernel, built on first call; None where it is turned off or cannot be built."""
    if "lib" not in _cache:
        lib = None
        if os.environ.get("WINDTUNNEL_CPU_KERNEL", "1") != "0":
            compiler = _compiler()
            try:
                if compiler is None:
                    raise OSError("no C++ compiler found (set CXX)")
                lib = _declare(ctypes.CDLL(str(_build(compiler))))
            except (OSError, subprocess.CalledProcessError) as err:
                detail = getattr(err, "stderr", "") or str(err)
                warnings.warn(f"the compiled CPU selective scan is unavailable ({detail.strip()[:500]}); "
                              "Mamba uses the pure-PyTorch fused scan, several times slower.", stacklevel=2)
        _cache["lib"] = lib
    return _cache["lib"]


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _rows(x: torch.Tensor) -> torch.Tensor:
    """(B, X, L) -> (B, L, X) contiguous: no copy when ``x`` is a transposed view of (B, L, X) memory,
    as Mamba's activations are."""
    return x.transpose(1, 2).contiguous()


def _z_rows(z: torch.Tensor) -> tuple[torch.Tensor, int]:
    """z as (B, L, D) whose rows lie ``ldz`` apart, and ``ldz``: a slice of Mamba's in_proj output is
    taken as it lies; anything else is copied to contiguous rows (ldz = D)."""
    zt = z.transpose(1, 2)
    batch, L, dim = zt.shape
    ld = zt.stride(1)
    if batch > 1 and L > 1 and zt.stride(2) == 1 and ld >= dim and zt.stride(0) == L * ld:
        return zt, ld
    return zt.contiguous(), dim


def _call(name: str, dtype: torch.dtype, **fields) -> None:
    ptrs = {k: (_ptr(v) if isinstance(v, torch.Tensor) or v is None else v) for k, v in fields.items()}
    args = ScanArgs(**ptrs, threads=torch.get_num_threads())
    getattr(library(), f"{name}_{'f64' if dtype == torch.float64 else 'f32'}")(ctypes.byref(args))


class _CompiledScanFn(torch.autograd.Function):
    """The whole selective scan (delta bias and softplus, the recurrence, D skip, SiLU(z) gate, last
    state) as one autograd node, both directions in the compiled kernel."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        batch, dim, L = u.shape
        N = A.shape[1]
        ut, dt_raw, Bt, Ct = _rows(u), _rows(delta), _rows(B), _rows(C)  # (B, L, D|N)
        At = A.t().contiguous()  # (N, D)
        zt, ldz = _z_rows(z) if z is not None else (None, 0)
        bias = delta_bias.contiguous() if delta_bias is not None else None
        Dc = D.contiguous() if D is not None else None
        y, last = u.new_empty(batch, L, dim), u.new_empty(batch, N, dim)
        shapes = dict(B=batch, L=L, D=dim, N=N, ldz=ldz,
                      softplus=int(bool(delta_softplus)))
        _call("scan_forward", u.dtype, **shapes, delta=dt_raw, bias=bias, u=ut, At=At, Bm=Bt, Cm=Ct, Dskip=Dc,
              z=zt, y=y, last=last)
        ctx.shapes = shapes
        ctx.save_for_backward(dt_raw, bias, ut, At, Bt, Ct, Dc, zt)
        ctx.set_materialize_grads(False)
        return y.transpose(1, 2), last.transpose(1, 2).contiguous()  # (B, D, L) in (B, L, D) memory, (B, D, N)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_last):
        dt_raw, bias, ut, At, Bt, Ct, Dc, zt = ctx.saved_tensors
        gout = grad_out.transpose(1, 2).contiguous() if grad_out is not None else None  # (B, L, D)
        dlast = grad_last.transpose(1, 2).contiguous() if grad_last is not None else None  # (B, N, D)
        du, ddelta = torch.empty_like(ut), torch.empty_like(ut)
        dz = torch.empty_like(ut) if zt is not None else None
        dB, dC, dAt = torch.empty_like(Bt), torch.empty_like(Ct), torch.empty_like(At)
        dD = torch.empty_like(Dc) if Dc is not None else None
        dbias = torch.empty_like(bias) if bias is not None else None
        _call("scan_backward", ut.dtype, **ctx.shapes, delta=dt_raw, bias=bias, u=ut, At=At, Bm=Bt, Cm=Ct,
              Dskip=Dc, z=zt, gout=gout, dlast=dlast, du=du, ddelta=ddelta, dz=dz, dB=dB, dC=dC, dAt=dAt, dD=dD,
              dbias=dbias)
        return (du.transpose(1, 2), ddelta.transpose(1, 2), dAt.t(), dB.transpose(1, 2), dC.transpose(1, 2), dD,
                dz.transpose(1, 2) if dz is not None else None, dbias, None)


def apply_upcast(function: type[torch.autograd.Function], return_last_state: bool, u, delta, A, B, C, D, z,
                 delta_bias, *rest):
    """``function.apply`` on the scan's tensors in at least float32 (float64 stays float64), autocast
    off (it would put the scan's products back in half precision); y back in u's dtype."""
    dtype_in = u.dtype
    dtype = torch.promote_types(u.dtype, torch.float32)
    tensors = (t if t is None else t.to(dtype) for t in (u, delta, A, B, C, D, z, delta_bias))
    with torch.autocast(u.device.type, enabled=False):
        y, last = function.apply(*tensors, *rest)
    y = y.to(dtype_in)
    return (y, last) if return_last_state else y


def supports(u: torch.Tensor, A: torch.Tensor) -> bool:
    """Whether the compiled scan can take these inputs: on CPU, state size <= its maximum, and built."""
    lib = library() if u.device.type == "cpu" else None
    return lib is not None and A.shape[1] <= lib.scan_max_state()


def selective_scan_compiled(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                            return_last_state=False):
    """The scan of ``selective_scan_ref`` on the compiled CPU kernel (float32, or float64 with an exact
    exp; other dtypes are computed in float32). Raises where :func:`supports` is False."""
    if not supports(u, A):
        raise RuntimeError("the compiled selective scan needs CPU tensors, d_state <= "
                           f"{library().scan_max_state() if library() else '?'}, and a built kernel")
    return apply_upcast(_CompiledScanFn, return_last_state, u, delta, A, B, C, D, z, delta_bias, delta_softplus)
