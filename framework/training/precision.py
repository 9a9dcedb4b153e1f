"""The number format a training step computes in: ``train.precision``.

``bfloat16`` is mixed precision: the parameters, the optimizer state, the loss and the output head
stay in float32; the hidden layers' matrix products run under bf16 autocast, and Muon's
Newton-Schulz iteration runs in bfloat16, as its authors run it. On the CPU, attention stays in
float32 (``framework.models.transformer``): the CPU flash-attention kernel's bf16 backward is slower
than its float32 one. Evaluation always runs in float32 on the CPU, so the reported bits are those of
the trained weights, not of a rounding.

``auto`` (the default) picks bfloat16 where matrices multiply natively in it: CUDA, and CPUs with
AVX512-BF16 or AMX (a batch-32 training step 1.3x to 3.2x faster on this project's EPYC, from the
demo transformer to the paper's; benchmarks/README.md), and float32 elsewhere, where bf16 is emulated
and slower. A model in float64 (the tests' exact checks) is never cast down.
"""
from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

PRECISIONS = ("auto", "float32", "bfloat16")
_NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


def native_bf16_in(cpuinfo: str) -> bool:
    """Whether a /proc/cpuinfo text's first ``flags`` line names AVX512-BF16 or AMX-BF16."""
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return bool(_NATIVE_BF16_FLAGS & set(flags))


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (False where /proc/cpuinfo is not)."""
    try:
        return native_bf16_in(Path("/proc/cpuinfo").read_text())
    except OSError:
        return False


def resolve_precision(precision: str, device: torch.device | str) -> torch.dtype:
    """The dtype ``precision`` means on ``device``: float32 or bfloat16."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got '{precision}'")
    if precision == "auto":
        native = torch.device(device).type == "cuda" or cpu_has_native_bf16()
        return torch.bfloat16 if native else torch.float32
    return getattr(torch, precision)


def training_autocast(dtype: torch.dtype, device: torch.device):
    """The context a training step's forward runs in: bf16 autocast for bfloat16, nothing for float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
