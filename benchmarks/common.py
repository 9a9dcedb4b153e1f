"""Shared benchmark plumbing: medians of repeats, the environment, and atomic JSON results.

Every benchmark reports ratios against a baseline measured in the same run, because these machines
are noisy; absolute times are recorded too, with the environment they were measured in.
"""
from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

from framework.io import write_json

RESULTS = Path(__file__).resolve().parent / "results"


def environment() -> dict:
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
        "python": platform.python_version(),
    }


def median_seconds(fn: Callable[[], object], repeats: int = 7, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        started = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def save(name: str, payload: dict) -> Path:
    path = RESULTS / f"{name}.json"
    write_json(path, {"benchmark": name, "environment": environment(), **payload})
    return path
