"""Time to target: steps and seconds until the transformer is within kl_bits <= 0.05 of Bayes.

The headline figure of the suite. Each run is the framework's own ``train()`` with
``target_kl_bits`` set, validated every ``eval_every`` steps on 512 fixed-seed sequences, and
stopped at the first validation pass at or under the target; the stopped model is then scored on
2048 fresh test sequences (SPEC §3), so a lucky validation set cannot fake a hit.

* bijection V=10, L=10, the demo transformer (d_model 64, 2 layers, 4 heads, d_ff 256): the demo's
  settings (``experiment=demo``: batch 128, lr 2e-3, warmup 100, an 800-step cosine) as the
  baseline, against ``experiment=fast_bijection`` (batch 32, lr 3e-3, warmup 10, a 300-step
  cosine), over three seeds each; both validated every 10 steps so their step counts compare.
  Target: at most 15 s on 2 CPU cores.
* HMM S=O=5, K=20, the same transformer with the demo's HMM settings (batch 128, lr 2e-3, 1500
  steps), validated every 50 steps, within a training-time budget; "not reached" is a result.
* On CUDA only: ``experiment=paper/bijection_v20`` to kl_bits <= 0.01.

Seconds: ``train_seconds`` is the optimisation steps alone (data, forward, backward, update);
``wall_seconds`` is the whole ``train()`` call: setup, steps, validation passes and the final
checkpoint. Writes benchmarks/results/time_to_target.json and time_to_target.png.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks.common import QUICK, device, plan, pyplot, save, save_figure
from framework.seeds import derive_seed
from framework.metrics import EvalSet, evaluate
from framework.training import train

TARGET = 0.05
JUST_TRANSFORMER = ["~models.mamba", "~models.lstm", "~models.mlp", "~models.mlp_token"]


def run_once(job, seed: int, **train_overrides) -> dict:
    """Train one job to its target (or its step or time budget) and score it on fresh test sequences."""
    dev = device()
    cfg = replace(job.train, **train_overrides)
    torch.manual_seed(derive_seed(seed, job.task_key, job.model_key, "init"))
    model = job.build_model().to(dev)
    val = EvalSet.generate(job.task, cfg.val_sequences, derive_seed(seed, job.task_key, "val"), cfg.eval_batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        out = train(model, job.task, cfg, Path(tmp), seed=derive_seed(seed, job.task_key, "data"), val_set=val,
                    meta={"job": job.name}, desc=job.name, progress=False)
        wall = time.perf_counter() - started
    test = EvalSet.generate(job.task, 2048, derive_seed(seed, job.task_key, "test"), cfg.eval_batch_size)
    scores = evaluate(model, test, dev)
    row = {
        "seed": seed, "reached": out.reached_target, "steps": out.steps,
        "train_seconds": out.train_seconds, "val_seconds": out.val_seconds, "wall_seconds": wall,
        "step_ms": 1e3 * out.train_seconds / out.steps, "test_kl_bits": scores["kl_bits"],
        "test_kl_bits_stderr": scores["kl_bits_stderr"], "history": out.history,
        "train": {k: getattr(cfg, k) for k in ("batch_size", "lr", "warmup_steps", "steps", "eval_every",
                                               "val_sequences", "target", "target_kl_bits", "time_limit_s")},
    }
    status = f"reached at step {out.steps}" if out.reached_target else f"NOT reached in {out.steps} steps"
    print(f"  {job.name} seed {seed}: {status}, train {out.train_seconds:.1f} s + validation "
          f"{out.val_seconds:.1f} s (wall {wall:.1f} s), test kl {scores['kl_bits']:.4f}", flush=True)
    return row


def summary(rows: list[dict]) -> dict:
    """Medians over seeds, from the runs that reached the target (all of them, when all did)."""
    hit = [r for r in rows if r["reached"]]
    med = (lambda key: statistics.median(r[key] for r in hit)) if hit else (lambda key: None)
    return {"reached": f"{len(hit)}/{len(rows)}", "steps": med("steps"), "train_seconds": med("train_seconds"),
            "wall_seconds": med("wall_seconds"), "step_ms": med("step_ms"), "test_kl_bits": med("test_kl_bits")}


def bijection(seeds: list[int]) -> dict:
    [baseline_job] = plan("demo", JUST_TRANSFORMER + ["~tasks.hmm"])
    [tuned_job] = plan("fast_bijection")
    runs = {
        "demo settings": [run_once(baseline_job, s, target_kl_bits=TARGET, eval_every=10) for s in seeds],
        "fast_bijection": [run_once(tuned_job, s, target_kl_bits=TARGET) for s in seeds],
    }
    result = {name: {"summary": summary(rows), "runs": rows} for name, rows in runs.items()}
    base, fast = result["demo settings"]["summary"], result["fast_bijection"]["summary"]
    if base["steps"] and fast["steps"]:
        result["ratio"] = {"steps": base["steps"] / fast["steps"], "wall_seconds": base["wall_seconds"] / fast["wall_seconds"],
                           "step_ms": base["step_ms"] / fast["step_ms"]}
    result["target_15s_met"] = bool(fast["wall_seconds"] and fast["wall_seconds"] <= 15)
    return result


def hmm(budget_s: float) -> dict:
    [job] = plan("demo", JUST_TRANSFORMER + ["~tasks.bijection"])
    rows = [run_once(job, 0, target_kl_bits=TARGET, eval_every=50, time_limit_s=budget_s)]
    return {"budget_train_seconds": budget_s, "summary": summary(rows), "runs": rows}


def paper_bijection() -> dict:
    [job] = plan("paper/bijection_v20")
    rows = [run_once(job, 0, target_kl_bits=0.01, time_limit_s=3600)]
    return {"target_kl_bits": 0.01, "summary": summary(rows), "runs": rows}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1 if QUICK else 3)
    parser.add_argument("--hmm-budget", type=float, default=10 if QUICK else 240, help="training seconds for HMM")
    args = parser.parse_args(argv)
    payload = {"what": f"steps and seconds to kl_bits <= {TARGET}", "target_kl_bits": TARGET}
    print("bijection V=10 L=10, demo transformer:")
    payload["bijection"] = bijection(list(range(args.seeds)))
    print("hmm S=O=5 K=20, demo transformer:")
    payload["hmm"] = hmm(args.hmm_budget)
    if torch.cuda.is_available() and not QUICK:
        print("paper/bijection_v20 to 0.01 bits:")
        payload["paper_bijection_v20"] = paper_bijection()
    path = save("time_to_target", payload)
    plot(payload)
    print(f"wrote {path}")


def plot(payload: dict) -> None:
    plt = pyplot()
    panels = [("bijection V=10", payload["bijection"]["demo settings"]["runs"] + payload["bijection"]["fast_bijection"]["runs"]),
              ("HMM K=20", payload["hmm"]["runs"])]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (title, rows) in zip(axes, panels):
        for row in rows:
            seconds_per_step = row["train_seconds"] / row["steps"]
            t = [h["step"] * seconds_per_step for h in row["history"]]
            label = f"batch {row['train']['batch_size']}, lr {row['train']['lr']:g}, seed {row['seed']}"
            ax.plot(t, [h["kl_bits"] for h in row["history"]], "-", label=label)
        ax.axhline(TARGET, color="k", ls="--", lw=0.8)
        ax.set(yscale="log", xlabel="training seconds (validation excluded)", ylabel="validation kl_bits", title=title)
        ax.legend(fontsize=7)
    save_figure(fig, "time_to_target")


if __name__ == "__main__":
    main()
