"""Mamba's training step over the transformer's, at equal parameters, with each CPU selective scan.

``experiment=demo``'s transformer and its capacity-matched Mamba (``match_params``), on both demo
tasks, at the demo size and the middle size of ``benchmarks/time_to_target.py``, under the default
training settings (Muon with AdamW, batch 32). One process times the framework's own training step
(``train_step``: sampling, forward, backward, clipping, optimizer) of the transformer and of Mamba
with the compiled scan and with the pure-PyTorch fused scan (the path before it), interleaved, so the
ratios are same-run ratios. One thread by default (``--threads``), as the sweeps run.
Writes benchmarks/results/mamba_step.json and mamba_step.png.
"""
from __future__ import annotations

import argparse

import torch

from benchmarks.common import QUICK, grouped_bars, interleaved_medians, plan, pyplot, save, save_figure
from benchmarks.time_to_target import SIZES
from framework.training.loop import make_optimizer, train_step

SCANS = ("compiled", "fused")
OTHER_TASK = {"bijection": "~tasks.hmm", "hmm": "~tasks.bijection"}


def steps_for(task: str, size: str, batch_size: int = 0) -> tuple[dict, int]:
    """name -> a zero-argument training step, for the transformer and for Mamba under each scan (at the
    default batch size, or ``batch_size`` where given); and the batch size used."""
    sizes = [f"models.transformer.{k}={v}" for k, v in SIZES[size].items()]
    batch = [f"train.batch_size={batch_size}"] if batch_size else []
    jobs = plan("demo", [OTHER_TASK[task], "~models.lstm", "~models.mlp", "~models.mlp_token", "~train_by", *sizes,
                         *batch])
    steps = {}
    for job in jobs:
        for scan in SCANS if job.model_key == "mamba" else ("",):
            torch.manual_seed(0)
            model = job.build_model()
            if scan:
                model.scan_impl = scan
            optimizer = make_optimizer(model, job.train)
            generator = torch.Generator().manual_seed(0)
            name = f"{job.model_key} {scan}".strip()
            steps[name] = (lambda m=model, o=optimizer, g=generator, j=job:
                           train_step(m, m, o, j.task.sample(j.train.batch_size, g), j.train))
    return steps, jobs[0].train.batch_size


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="demo" if QUICK else "demo,mid")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3 if QUICK else 15)
    parser.add_argument("--batch-size", type=int, default=0, help="instead of the default training batch")
    parser.add_argument("--out", default="mamba_step", help="results file name (under benchmarks/results)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for size in args.sizes.split(","):
        for task in OTHER_TASK:
            steps, batch_size = steps_for(task, size, args.batch_size)
            seconds = interleaved_medians(steps, repeats=args.repeats, warmup=3)
            row = {"size": size, "task": task, "batch_size": batch_size, "step_seconds": seconds,
                   "ratio": {scan: seconds[f"mamba {scan}"] / seconds["transformer"] for scan in SCANS}}
            rows.append(row)
            print(f"{size} {task}: transformer {1e3 * seconds['transformer']:.1f} ms; Mamba " + ", ".join(
                f"{scan} {1e3 * seconds[f'mamba {scan}']:.1f} ms ({row['ratio'][scan]:.2f}x)" for scan in SCANS),
                flush=True)
    path = save(args.out, {"what": "Mamba training step / transformer training step, equal parameters",
                           "threads": args.threads, "rows": rows})
    plot(rows, args.out)
    print(f"wrote {path}")


def plot(rows: list[dict], name: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    grouped_bars(ax, [f"{r['task']}\n{r['size']}" for r in rows],
                 {f"Mamba, {scan} scan": [r["ratio"][scan] for r in rows] for scan in SCANS})
    ax.axhline(1.5, color="k", lw=0.8, ls="--", label="1.5x (the goal)")
    ax.set(ylabel="step seconds / transformer's", title="Mamba's training step over the transformer's (CPU)")
    ax.legend()
    save_figure(fig, name)


if __name__ == "__main__":
    main()
