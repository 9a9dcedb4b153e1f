"""Evaluation cost: ``evaluate()`` time against the number of eval sequences, and what batching buys.

For the demo transformer on both demo tasks (untrained weights: the cost does not depend on them):

* ``by_n``: median seconds of ``evaluate`` (batched, under ``inference_mode``, float64 bits) and of
  ``EvalSet.generate`` for 256 to 4096 sequences, with the log-log slope (1 = linear, as it should be);
* ``metric_overhead``: the model's forward passes alone against the whole ``evaluate`` at 2048
  sequences: the share spent on the float64 KL and entropies;
* ``cpu_chunks``: one eval batch of 512 sequences run as one forward pass against chunks of
  ``CPU_CHUNK`` sequences (what ``evaluate`` does on a CPU: large batches spill the caches);
* ``batching``: ``evaluate`` on the same 512 sequences stored in batches of 1, 64 and 512, as a
  speed-up over one sequence at a time.

Writes benchmarks/results/eval_cost.json and eval_cost.png.
"""
from __future__ import annotations

import argparse

import importlib

import torch

from benchmarks.common import (
    QUICK, device, interleaved_medians, loglog_slope, median_seconds, plan, pyplot, save, save_figure
)
from framework.metrics import EvalSet, evaluate

evaluate_module = importlib.import_module("framework.metrics.evaluate")  # `evaluate` is also the function
JUST_TRANSFORMER = ["~models.mamba", "~models.lstm", "~models.mlp", "~models.mlp_token"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    dev = device()
    sizes = (256, 512) if QUICK else (256, 512, 1024, 2048, 4096)
    results = {}
    for job in plan("demo", JUST_TRANSFORMER)[:1] if QUICK else plan("demo", JUST_TRANSFORMER):
        torch.manual_seed(0)
        model = job.build_model().to(dev)
        rows = []
        for n in sizes:
            eval_set = EvalSet.generate(job.task, n, seed=1, batch_size=job.train.eval_batch_size)
            rows.append({"n": n,
                         "evaluate_seconds": median_seconds(lambda: evaluate(model, eval_set, dev), args.repeats, 1),
                         "generate_seconds": median_seconds(lambda: EvalSet.generate(job.task, n, seed=1),
                                                            args.repeats, 1)})
        ns = [r["n"] for r in rows]
        entry = {"by_n": rows, "evaluate_slope": loglog_slope(ns, [r["evaluate_seconds"] for r in rows]),
                 "generate_slope": loglog_slope(ns, [r["generate_seconds"] for r in rows])}

        n = 512 if QUICK else 2048
        eval_set = EvalSet.generate(job.task, n, seed=1, batch_size=job.train.eval_batch_size)

        def forward_only():  # the forward passes evaluate() makes, chunked the same way
            chunk = evaluate_module.CPU_CHUNK if dev.type == "cpu" else 10**9
            with torch.inference_mode():
                for batch in eval_set.batches:
                    for tokens in batch.tokens.to(dev).split(chunk):
                        model(tokens)

        seconds = interleaved_medians({"forward": forward_only, "evaluate": lambda: evaluate(model, eval_set, dev)},
                                      repeats=args.repeats, warmup=1)
        entry["metric_overhead"] = {"n": n, "seconds": seconds,
                                    "fraction": 1 - seconds["forward"] / seconds["evaluate"]}

        if dev.type == "cpu":  # the same 512-sequence batch in one forward pass, and in CPU_CHUNK chunks
            whole = EvalSet.generate(job.task, 512, seed=1, batch_size=512)

            def one_pass():
                chunk, evaluate_module.CPU_CHUNK = evaluate_module.CPU_CHUNK, 10**9
                try:
                    evaluate(model, whole, dev)
                finally:
                    evaluate_module.CPU_CHUNK = chunk

            seconds = interleaved_medians({"one pass": one_pass, "chunks": lambda: evaluate(model, whole, dev)},
                                          repeats=args.repeats + 2, warmup=1)
            entry["cpu_chunks"] = {"n": 512, "chunk": evaluate_module.CPU_CHUNK, "seconds": seconds,
                                   "speedup": seconds["one pass"] / seconds["chunks"]}

        sets = {b: EvalSet.generate(job.task, 512, seed=1, batch_size=b) for b in (1, 64, 512)}
        seconds = interleaved_medians({f"batch {b}": (lambda s=s: evaluate(model, s, dev)) for b, s in sets.items()},
                                      repeats=max(1, args.repeats // 2), warmup=1)
        entry["batching"] = {"n": 512, "seconds": seconds,
                             "speedup_vs_batch_1": {k: seconds["batch 1"] / v for k, v in seconds.items()}}
        results[job.task_key] = entry
        print(f"{job.name}: " + ", ".join(f"n={r['n']} {1e3 * r['evaluate_seconds']:.0f} ms" for r in rows)
              + f"; slope {entry['evaluate_slope']:.2f}; metrics {100 * entry['metric_overhead']['fraction']:.0f}% "
              f"of evaluate; batch 512 vs 1: {entry['batching']['speedup_vs_batch_1']['batch 512']:.0f}x; chunks vs one pass "
              f"{entry.get('cpu_chunks', {}).get('speedup', float('nan')):.2f}x", flush=True)
    path = save("eval_cost", {"what": "evaluate() time vs number of sequences (demo transformer)", "tasks": results})
    plot(results)
    print(f"wrote {path}")


def plot(results: dict) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for task, entry in results.items():
        ns = [r["n"] for r in entry["by_n"]]
        ax.plot(ns, [r["evaluate_seconds"] for r in entry["by_n"]], "o-",
                label=f"{task}: evaluate (slope {entry['evaluate_slope']:.2f})")
        ax.plot(ns, [r["generate_seconds"] for r in entry["by_n"]], "s--",
                label=f"{task}: generate the set (slope {entry['generate_slope']:.2f})")
    ax.set(xscale="log", yscale="log", xlabel="eval sequences", ylabel="seconds", title="evaluation cost")
    ax.legend(fontsize=8)
    save_figure(fig, "eval_cost")


if __name__ == "__main__":
    main()
