"""The training step in float32 against bfloat16 mixed precision (``train.precision``), per architecture.

``experiment=demo``'s four models (the transformer and its capacity-matched Mamba, LSTM and MLP) on
both demo tasks, at the sizes of ``benchmarks/time_to_target.py`` (the transformer's; the others
matched to it), under the default training settings. One process times the framework's own training
step (``train_step``: sampling, forward, backward, clipping, optimizer) in each precision,
interleaved, so the ratios are same-run ratios; one thread by default (``--threads``), as the sweeps
run. Whether bfloat16 reaches the same bits is ``time_to_target.py``'s question (its "default,
float32" setting). Writes benchmarks/results/precision_step.json and precision_step.png.
"""
from __future__ import annotations

import argparse
from dataclasses import replace

import torch

from benchmarks.common import QUICK, grouped_bars, interleaved_medians, plan, pyplot, save, save_figure
from benchmarks.time_to_target import SIZES
from framework.training.loop import make_optimizer, train_step

PRECISIONS = ("float32", "bfloat16")
OTHER_TASK = {"bijection": "~tasks.hmm", "hmm": "~tasks.bijection"}


def steps_for(task: str, size: str, models: tuple[str, ...]) -> dict:
    """(model, precision) name -> a zero-argument training step of that model in that precision."""
    sizes = [f"models.transformer.{k}={v}" for k, v in SIZES[size].items()]
    dropped = [f"~models.{m}" for m in ("mamba", "lstm", "mlp", "mlp_token") if m not in models]
    steps = {}
    for job in plan("demo", [OTHER_TASK[task], "~train_by", *dropped, *sizes]):
        for precision in PRECISIONS:
            cfg = replace(job.train, precision=precision)
            torch.manual_seed(0)
            model = job.build_model()
            optimizer = make_optimizer(model, cfg)
            generator = torch.Generator().manual_seed(0)
            steps[f"{job.model_key} {precision}"] = (lambda m=model, o=optimizer, g=generator, c=cfg, j=job:
                                                     train_step(m, m, o, j.task.sample(c.batch_size, g), c))
    return steps


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="demo" if QUICK else "demo,mid,paper")
    parser.add_argument("--models", default="transformer,mamba,lstm,mlp",
                        help="the transformer always; the others matched to it")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3 if QUICK else 11)
    parser.add_argument("--out", default="precision_step", help="results file name (under benchmarks/results)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = tuple(m for m in args.models.split(",") if m)
    rows = []
    for size in args.sizes.split(","):
        for task in OTHER_TASK:
            seconds = interleaved_medians(steps_for(task, size, models), repeats=args.repeats, warmup=3)
            for model in sorted({name.split()[0] for name in seconds}):
                fp32, bf16 = seconds[f"{model} float32"], seconds[f"{model} bfloat16"]
                rows.append({"size": size, "task": task, "model": model, "float32_s": fp32, "bfloat16_s": bf16,
                             "speedup": fp32 / bf16})
                print(f"{size} {task} {model}: float32 {1e3 * fp32:.1f} ms, bfloat16 {1e3 * bf16:.1f} ms "
                      f"({fp32 / bf16:.2f}x)", flush=True)
    path = save(args.out, {"what": "training step seconds, float32 / bfloat16 mixed precision (train.precision)",
                           "threads": args.threads, "rows": rows})
    plot(rows, args.out)
    print(f"wrote {path}")


def plot(rows: list[dict], name: str) -> None:
    plt = pyplot()
    models = sorted({r["model"] for r in rows}, key=["transformer", "mamba", "lstm", "mlp", "mlp_token"].index)
    cells = sorted({(r["size"], r["task"]) for r in rows}, key=lambda c: (list(SIZES).index(c[0]), c[1]))
    fig, ax = plt.subplots(figsize=(8, 4))
    speedup = {(r["model"], r["size"], r["task"]): r["speedup"] for r in rows}
    grouped_bars(ax, [f"{task}\n{size}" for size, task in cells],
                 {model: [speedup.get((model, *c), 0.0) for c in cells] for model in models})
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set(ylabel="float32 step / bfloat16 step", title="Mixed precision's training step speed-up (CPU)")
    ax.legend()
    save_figure(fig, name)


if __name__ == "__main__":
    main()
