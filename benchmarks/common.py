"""Shared benchmark plumbing: medians of repeats, the environment, and atomic JSON results.

Every benchmark reports ratios against a baseline measured in the same run, because these machines
are noisy (the numbers in README.md came from a 2-core machine shared with other jobs); absolute times
are recorded too, with the environment they were measured in, including the load average at the
time of writing. ``BENCH_QUICK=1`` shrinks every benchmark to a smoke run (fewer sizes and repeats)
that checks the code paths, not the speed.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from framework.io import write_json

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
# A smoke run must not overwrite the measured results: it writes beside them, under results/quick/.
RESULTS = Path(__file__).resolve().parent / "results" / ("quick" if QUICK else "")


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def environment() -> dict:
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
        "python": platform.python_version(),
        # 1/5/15-minute load averages: above the number of CPUs, other jobs were competing for them.
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "quick": QUICK,
    }


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def median_seconds(fn: Callable[[], object], repeats: int = 7, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        started = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int = 7, warmup: int = 2) -> dict[str, float]:
    """Median seconds of each function, timed round-robin so that load from other jobs hits all alike.

    Comparing A with B by timing all of A and then all of B lets a burst of background load land on
    one of them; interleaving spreads it, which is what makes same-run ratios trustworthy here.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            started = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(t) for name, t in times.items()}


def matmul_peak_flops(dev: torch.device | None = None, repeats: int = 5) -> dict:
    """The machine's float32 matmul FLOP/s: the best median over square sizes (the roofline's top)."""
    dev = dev or device()
    sizes = (512, 1024, 2048) if dev.type == "cpu" else (2048, 4096, 8192)
    by_size = {}
    for n in sizes[:2] if QUICK else sizes:
        a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
        by_size[n] = 2 * n**3 / median_seconds(lambda: a @ b, repeats=repeats, warmup=1)
    return {"flops": max(by_size.values()), "by_size": by_size}


def loglog_slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y on log x: 1 is linear, 2 quadratic."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def rss_bytes() -> int:
    """Resident memory of this process now (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def max_rss_bytes() -> int:
    """The high-water mark of this process's resident memory (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def worker_args(doc: str, repeats: int, worker: Callable[[dict], dict], argv=None) -> argparse.Namespace | None:
    """The command line of a benchmark that measures in fresh processes (``run_worker``): ``--repeats``,
    and the hidden ``--worker JSON`` side, which runs ``worker`` here, prints its JSON and returns None."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return None
    return args


def run_worker(module: str, payload: dict) -> dict:
    """Run ``python -m module --worker JSON`` in a fresh process and return the JSON it prints last.

    CPU memory has no allocator statistics, so a peak is the process's high-water mark, and that
    only means something in a process that has run nothing else.
    """
    out = subprocess.run([sys.executable, "-m", module, "--worker", json.dumps(payload)], check=True,
                         capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def plan(experiment: str, overrides: list[str] | None = None):
    """The validated jobs of ``windtunnel experiment=<experiment> [overrides]``, as the CLI builds them."""
    from hydra import compose, initialize_config_dir

    from framework.config import CONFIG_DIR
    from framework.experiment import plan as resolve
    from framework.runners import register_schemas

    register_schemas()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={experiment}", *(overrides or [])])
    quiet = logging.getLogger("framework.runners.windtunnel.plan")  # removing models leaves train_by keys that match nothing
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        return resolve(cfg).jobs
    finally:
        quiet.setLevel(level)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def no_minor_log_labels(ax) -> None:
    """No labels on a log axis's minor ticks: over about a decade matplotlib writes them as 2x10^1,
    3x10^1, ..., which collide."""
    from matplotlib.ticker import NullFormatter

    for axis in (ax.xaxis, ax.yaxis):
        if axis.get_scale() == "log":
            axis.set_minor_formatter(NullFormatter())


def grouped_bars(ax, groups: list[str], series: dict[str, list[float]]) -> None:
    """One bar per series in each of ``groups`` (the x tick labels), side by side; ``series`` maps a
    legend label to its values, one per group."""
    width = 0.8 / len(series)
    for k, (label, values) in enumerate(series.items()):
        ax.bar([i + (k - (len(series) - 1) / 2) * width for i in range(len(groups))], values, width, label=label)
    ax.set_xticks(range(len(groups)), groups)


def save_figure(fig, name: str) -> Path:
    """results/<name>.png, and the figure freed."""
    path = RESULTS / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return path


def save(name: str, payload: dict) -> Path:
    path = RESULTS / f"{name}.json"
    write_json(path, {"benchmark": name, "environment": environment(), **payload})
    return path
