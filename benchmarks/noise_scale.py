"""Why sampled labels need more sequences than the exact posterior: the gradient noise scale.

Along one run of the default settings with ``train.target=label`` (the demo transformer, snapshots
every few hundred steps), the gradient of each objective is measured at the same parameters on the
same fresh sequences: ``micro`` micro-batches of ``b`` sequences each. From them, per objective:

* ``grad_sq``: |G|^2, the squared norm of the true gradient, unbiased (|mean|^2 minus the variance of
  the mean);
* ``trace_cov``: tr(Sigma), the trace of the per-sequence gradient covariance (``b`` x the micro-batch
  gradients' covariance);
* ``b_simple`` = tr(Sigma) / |G|^2, in sequences: the simple noise scale of McCandlish, Kaplan,
  Amodei et al. ("An Empirical Model of Large-Batch Training", arXiv 1812.06162). A batch well below
  it is noise-dominated: the steps to a target then grow as S_min (1 + B_noise / B), so the
  sequences needed stop falling with the batch, and an optimizer or schedule cannot buy them back.

Both objectives have the same expected gradient (cross-entropy is linear in its target, and the
label's expectation given the context is the posterior), so |G|^2 agrees between them up to the
estimate's noise; what differs is tr(Sigma), the label's sampling noise on top of the context's.

Writes benchmarks/results/noise_scale.json and noise_scale.png (``b_simple`` against the snapshot's
validation bits, with the training batch size marked).
"""
from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from benchmarks.common import QUICK, no_minor_log_labels, pyplot, save, save_figure
from benchmarks.time_to_target import CASES, DEFAULT_STEPS, job_for, seeded_train
from framework.metrics import evaluate
from framework.seeds import derive_seed
from framework.training.checkpoint import SNAPSHOTS
from framework.training.loop import loss_on
from framework.tasks.base import Task

OBJECTIVES = ("label", "posterior")


def gradient_statistics(model: torch.nn.Module, task: Task, micro: int, b: int, seed: int) -> dict[str, dict]:
    """|G|^2, tr(Sigma) per sequence and their ratio for each objective, from ``micro`` micro-batches of
    ``b`` fresh sequences (the same sequences for both objectives)."""
    params = [p for p in model.parameters() if p.requires_grad]
    dev = params[0].device
    generator = torch.Generator("cpu").manual_seed(seed)  # the same sequences on any device
    sums = {o: torch.zeros(sum(p.numel() for p in params), dtype=torch.float64, device=dev) for o in OBJECTIVES}
    sq_norms = {o: 0.0 for o in OBJECTIVES}
    model.train()
    for _ in range(micro):
        batch = task.sample(b, generator).to(dev)
        for objective in OBJECTIVES:
            grads = torch.autograd.grad(loss_on(model, batch, objective), params)
            flat = torch.cat([g.reshape(-1) for g in grads]).double()
            sums[objective] += flat
            sq_norms[objective] += flat.square().sum().item()
    out = {}
    for objective in OBJECTIVES:
        mean = sums[objective] / micro
        var_of_micro = (sq_norms[objective] - micro * mean.square().sum().item()) / (micro - 1)  # tr Cov(g_micro)
        grad_sq = mean.square().sum().item() - var_of_micro / micro
        trace_cov = b * var_of_micro
        # A true gradient drowned by the noise can estimate at or below zero: no finite noise scale (None).
        out[objective] = {"grad_sq": grad_sq, "trace_cov": trace_cov,
                          "b_simple": trace_cov / grad_sq if grad_sq > 0 else None}
    return out


def run_case(name: str, micro: int, b: int, snapshot_every: int, seed: int) -> dict:
    case = CASES[name]
    job = job_for(case, "demo")
    cfg = replace(job.train, target="label", steps=DEFAULT_STEPS[job.task_key] if not QUICK else 100,
                  snapshot_every=snapshot_every, eval_every=snapshot_every, time_limit_s=0.0,
                  target_kl_bits=0.0, target_entropy_mae_bits=0.0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model, val, out = seeded_train(job, cfg, seed, Path(tmp), progress=True)
        snapshots = sorted((Path(tmp) / SNAPSHOTS).glob("step_*.pt"))
        for path in tqdm(snapshots, desc=f"{name}: noise scale", leave=False):
            snap = torch.load(path, weights_only=True)
            model.load_state_dict(snap["model"])
            scores = evaluate(model, val)
            stats = gradient_statistics(model, job.task, micro, b, derive_seed(seed, job.task_key, "noise"))
            rows.append({"step": snap["step"], case.metric: scores[case.metric], **stats})
    return {"case": name, "metric": case.metric, "batch_size": cfg.batch_size, "steps": out.steps,
            "micro_batches": micro, "micro_batch_size": b, "snapshots": rows}


def plot(payload: dict, name: str) -> None:
    plt = pyplot()
    cells = list(payload["results"].values())
    fig, axes = plt.subplots(1, len(cells), figsize=(4.5 * len(cells), 3.8), squeeze=False)
    for ax, cell in zip(axes[0], cells):
        bits = [r[cell["metric"]] for r in cell["snapshots"]]
        for objective, color in zip(OBJECTIVES, ("tab:red", "tab:blue")):
            scales = [r[objective]["b_simple"] or float("nan") for r in cell["snapshots"]]
            ax.plot(bits, scales, "o-", color=color, label=f"target={objective}")
        ax.axhline(cell["batch_size"], color="k", ls="--", lw=0.8, label=f"batch {cell['batch_size']}")
        ax.set(xscale="log", yscale="log", xlabel=f"validation {cell['metric']} (label-trained snapshot)",
               ylabel="noise scale B_simple (sequences)", title=cell["case"])
        ax.invert_xaxis()
        no_minor_log_labels(ax)
        ax.legend(fontsize=7)
    save_figure(fig, name)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="bijection_v10,hmm_k20")
    parser.add_argument("--micro-batches", type=int, default=16 if QUICK else 256)
    parser.add_argument("--micro-batch-size", type=int, default=8)
    parser.add_argument("--snapshot-every", type=int, default=50 if QUICK else 500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="noise_scale")
    args = parser.parse_args(argv)
    payload = {"what": "gradient noise scale of both objectives along a label-trained run", "results": {}}
    for name in args.cases.split(","):
        cell = run_case(name, args.micro_batches, args.micro_batch_size, args.snapshot_every, args.seed)
        for row in cell["snapshots"]:
            scales = ", ".join(f"{o} B_simple {row[o]['b_simple'] or float('inf'):.1f}" for o in OBJECTIVES)
            print(f"{name} step {row['step']}: {cell['metric']} {row[cell['metric']]:.4f}, {scales}", flush=True)
        payload["results"][name] = cell
        save(args.out, payload)  # after every case: a run that dies keeps what it measured
    plot(payload, args.out)


if __name__ == "__main__":
    main()
