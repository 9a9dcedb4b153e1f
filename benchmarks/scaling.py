"""Scaling: training-step time and memory against sequence length, per architecture.

Each architecture of ``experiment=demo`` (sized as the demo builds it, capacity-matched to the demo
transformer) takes training steps on bijection with replacement (V=10; keys may repeat, so any
length works) at sequence lengths T = 2L - 1 from 31 to 1023, batch 16. One fresh process per
architecture runs the lengths in increasing order, so the process's resident high-water mark after
each length is that length's peak (CPU has no allocator statistics; on CUDA it is
``max_memory_allocated``). The slope of log time on log T says how the cost grows: attention should
show its quadratic part at long T, the scans (Mamba, LSTM) should be linear. ``slope_top`` fits the
three longest lengths, where the asymptotic term dominates; ``slope_all`` fits every length.
Writes benchmarks/results/scaling.json and scaling.png (log-log).
"""
from __future__ import annotations

from dataclasses import replace

import torch

from benchmarks.common import (
    QUICK, device, loglog_slope, max_rss_bytes, median_seconds, plan, pyplot, rss_bytes, run_worker, save,
    save_figure, worker_args
)
from framework.models import build_model
from framework.tasks import BijectionConfig, build_task
from framework.training.loop import make_optimizer, train_step

ARCHS = ("transformer", "mamba", "lstm", "mlp")
KEYS = (16, 32, 64, 128, 256, 512)  # L; T = 2L - 1
BATCH = 16


def worker(payload: dict) -> dict:
    dev = device()
    job = next(j for j in plan("demo", ["~tasks.hmm"]) if j.model_key == payload["arch"])
    train_cfg = replace(job.train, batch_size=BATCH)
    baseline = rss_bytes()
    rows = []
    for L in payload["keys"]:
        task = build_task(BijectionConfig(V=10, L=L, replacement=True))
        torch.manual_seed(0)
        model = build_model(job.model_config, task.vocab_size, task.n_classes, task.seq_len).to(dev)
        optimizer = make_optimizer(model, train_cfg)
        generator = torch.Generator(dev).manual_seed(0)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        seconds = median_seconds(
            lambda: train_step(model, model, optimizer, task.sample(BATCH, generator), train_cfg),
            repeats=payload["repeats"], warmup=3 if L == payload["keys"][0] else 1)  # the first also warms the process
        peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else max_rss_bytes() - baseline
        rows.append({"T": task.seq_len, "step_seconds": seconds, "peak_mem_mb": peak / 2**20,
                     "params": sum(p.numel() for p in model.parameters())})
        del model, optimizer
    return {"arch": payload["arch"], "rows": rows}


def main(argv=None) -> None:
    args = worker_args(__doc__, 2 if QUICK else 5, worker, argv)
    if args is None:  # this process was a worker
        return
    keys = KEYS[:3] if QUICK else KEYS
    results = {}
    for arch in ARCHS:
        out = run_worker("benchmarks.scaling", {"arch": arch, "keys": list(keys), "repeats": args.repeats})
        rows = out["rows"]
        Ts, times = [r["T"] for r in rows], [r["step_seconds"] for r in rows]
        results[arch] = {"rows": rows, "slope_all": loglog_slope(Ts, times),
                         "slope_top": loglog_slope(Ts[-3:], times[-3:]),
                         "mem_slope_top": loglog_slope(Ts[-3:], [max(r["peak_mem_mb"], 1e-3) for r in rows[-3:]])}
        print(f"{arch}: " + ", ".join(f"T={r['T']} {1e3 * r['step_seconds']:.1f} ms" for r in rows)
              + f"; slope {results[arch]['slope_all']:.2f} (top {results[arch]['slope_top']:.2f})", flush=True)
    path = save("scaling", {"what": f"training step vs sequence length, batch {BATCH}", "batch": BATCH,
                            "archs": results})
    plot(results)
    print(f"wrote {path}")


def plot(results: dict) -> None:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for arch, r in results.items():
        Ts = [row["T"] for row in r["rows"]]
        left.plot(Ts, [row["step_seconds"] for row in r["rows"]], "o-",
                  label=f"{arch} (slope {r['slope_all']:.2f}, top {r['slope_top']:.2f})")
        right.plot(Ts, [max(row["peak_mem_mb"], 1e-3) for row in r["rows"]], "o-", label=arch)
    left.set(xscale="log", yscale="log", xlabel="sequence length T", ylabel="training step (s)",
             title=f"step time, batch {BATCH}")
    right.set(xscale="log", yscale="log", xlabel="sequence length T", ylabel="peak memory rise (MB)",
              title="peak memory")
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    save_figure(fig, "scaling")


if __name__ == "__main__":
    main()
