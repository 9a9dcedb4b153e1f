"""Run-wide settings: how a run uses the machine, never what it computes.

They apply to a whole run, not to a job (one process has one thread pool and one determinism mode),
so they live in one ``runtime`` section that every runner shares. On one device they never change a
result, so they are left out of the config hash that names a sweep job's folder: a job resumed with
fewer threads, or without a progress bar, continues the same work. (Across devices, CPU against
CUDA, the numbers differ in their last bits; each result records the device it ran on.)
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from framework.errors import ConfigError, require

DEVICES = ("auto", "cpu", "cuda")


@dataclass
class RuntimeConfig:
    device: str = "auto"  # auto = cuda when present
    threads: int = 0  # torch CPU threads; 0 keeps torch's default (sweeps on joblib set it per job)
    # Jobs of one run trained side by side, each in its own process with `threads` threads (0: the
    # cores / workers). 1: one after another in this process. A model this small gains little from a
    # second thread: `make demo` took 5 min 30 s one job at a time on 2 threads and 4 min 26 s two
    # at a time on one thread each, quiet, on this project's 2-core machine (`experiment=demo` sets 2).
    workers: int = 1
    # CUDA: ask torch for deterministic kernels (torch.use_deterministic_algorithms, warn_only) and
    # set CUBLAS_WORKSPACE_CONFIG. CPU runs are deterministic without it.
    deterministic: bool = False
    progress: bool = True  # tqdm bars

    def __post_init__(self) -> None:
        require(self.device in DEVICES, "device", f"must be one of {', '.join(DEVICES)}; got '{self.device}'")
        require(self.threads >= 0, "threads", f"must be >= 0, got {self.threads}")
        require(isinstance(self.workers, int) and not isinstance(self.workers, bool) and self.workers >= 1,
                "workers", f"must be an integer >= 1, got {self.workers!r}")


def threads_per_job(jobs: int) -> int:
    """Torch threads for each of ``jobs`` processes sharing this machine's cores."""
    return max(1, (os.cpu_count() or 1) // jobs)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("runtime.device", "cuda was asked for but no CUDA device is available")
    return torch.device(name)


def apply_runtime(runtime: RuntimeConfig) -> torch.device:
    """Set the process-wide settings once, before any compute; returns the device to run on."""
    if runtime.threads:
        torch.set_num_threads(runtime.threads)
    if runtime.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS reads it at its first call
        # warn_only: kernels with no deterministic version (e.g. some attention backwards) warn, not fail
        torch.use_deterministic_algorithms(True, warn_only=True)
    return pick_device(runtime.device)
