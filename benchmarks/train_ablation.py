"""Training-setting ablations: time to target for one change at a time from the default settings.

Each variant changes one field of ``configs/train/default.yaml`` (``VARIANTS``): the optimizer (AdamW alone
instead of Muon on the hidden matrices with AdamW on the rest, ``framework.training.muon``), Paper II's EM-like
schedule (``value_lr_mult=10``, Aggarwal, Dalal & Misra, arXiv 2512.22473), the batch size at the
same learning rate and with the learning rate scaled by the square root of the batch ratio (the
rule for Adam, Malladi et al. 2022), half and double the learning rate, AdamW's betas, a long warmup,
weight decay, and a shorter or longer cosine. On the demo transformer, over three seeds, with the
objective stated: bijection V=10, L=10 to ``entropy_mae_bits`` <= 0.01 for ``train.target=label`` and
``posterior``, and HMM S=O=5, K=20 to ``kl_bits`` <= 0.05 (posterior; ``--hmm-variants`` picks which).

Seconds are steps to the target x the variant's step time, measured for all variants interleaved in
one process (benchmarks/time_to_target.py explains why); measured training seconds are kept too.
Writes benchmarks/results/train_ablation.json and train_ablation.png (``--out`` names another file).
"""
from __future__ import annotations

import argparse
import math
from dataclasses import replace

from tqdm.auto import tqdm

from benchmarks.common import QUICK, pyplot, save, save_figure
from benchmarks.time_to_target import CASES, DEFAULT_STEPS, job_for, run_once, step_seconds, summarise

VARIANTS = {
    "default": {},
    "optimizer=adamw": {"optimizer": "adamw"},
    # The default before lr 6e-3 (3e-3), on AdamW and with the EM-like schedule (the demo's HMM setting).
    "adamw, lr x0.5": {"optimizer": "adamw", "lr_scale": 0.5},
    "lr x0.5, value_lr_mult=10": {"lr_scale": 0.5, "value_lr_mult": 10.0},
    "value_lr_mult=10": {"value_lr_mult": 10.0},
    "lr x0.5, value_lr_mult=30": {"lr_scale": 0.5, "value_lr_mult": 30.0},
    "lr x0.5, value_lr_mult=10, batch /2": {"lr_scale": 0.5, "value_lr_mult": 10.0, "batch_scale": 0.5},
    "batch x4, same lr": {"batch_scale": 4},
    "batch x4, lr x2 (sqrt rule)": {"batch_scale": 4, "lr_scale": 2.0},
    "batch /2, same lr": {"batch_scale": 0.5},
    "lr x0.5": {"lr_scale": 0.5},
    "lr x2": {"lr_scale": 2.0},
    "betas_2=0.99": {"betas_2": 0.99},
    "betas_1=0.8": {"betas_1": 0.8},
    "warmup 100": {"warmup_steps": 100},
    "weight_decay=0": {"weight_decay": 0.0},
    "steps x0.5": {"steps_scale": 0.5},
    "steps x2": {"steps_scale": 2.0},
    "muon_momentum=0.98": {"muon_momentum": 0.98},
    "muon_momentum=0.98, steps x0.625": {"muon_momentum": 0.98, "steps_scale": 0.625},
    "muon_momentum=0.99": {"muon_momentum": 0.99},
}


def fields_for(job, variant: dict, objective: str) -> dict:
    """TrainConfig fields of a variant, relative to the job's (default) settings."""
    base = job.train
    fields = {"target": objective, "steps": DEFAULT_STEPS[job.task_key]}
    for key, value in variant.items():
        if key == "batch_scale":
            fields["batch_size"] = max(1, round(base.batch_size * value))
        elif key == "lr_scale":
            fields["lr"] = base.lr * value
        elif key == "steps_scale":
            fields["steps"] = round(DEFAULT_STEPS[job.task_key] * value)
        else:
            fields[key] = value
    return fields


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1 if QUICK else 3)
    parser.add_argument("--variants", default=";".join(VARIANTS),
                        help="names of VARIANTS run on bijection, separated by ';' ('' for none)")
    parser.add_argument("--hmm-variants", default="default;value_lr_mult=10;batch x4, same lr;lr x2",
                        help="the variants also run on HMM (separated by ';'; '' for none)")
    parser.add_argument("--objectives", default="label,posterior")
    parser.add_argument("--budget-scale", type=float, default=0.05 if QUICK else 1.0)
    parser.add_argument("--out", default="train_ablation", help="results file name (under benchmarks/results)")
    args = parser.parse_args(argv)
    names = [n for n in args.variants.split(";") if n]
    hmm_names = [n for n in args.hmm_variants.split(";") if n]
    unknown = sorted(set(names + hmm_names) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {'; '.join(VARIANTS)}")
    cells = [("bijection_v10", o, names) for o in args.objectives.split(",") if names]
    if hmm_names:
        cells.append(("hmm_k20", "posterior", hmm_names))

    jobs = {c: job_for(CASES[c], "demo") for c, _, _ in cells}
    settings = {f"{c}/{o}/{n}": (jobs[c], fields_for(jobs[c], VARIANTS[n], o)) for c, o, ns in cells for n in ns}
    print(f"timing one step of {len(settings)} variants, interleaved", flush=True)
    step_s = step_seconds(settings, repeats=3 if QUICK else 7)

    payload = {"what": "one-change ablations of the default training settings: seconds to target",
               "variants": VARIANTS, "results": {}}
    bar = tqdm(total=sum(len(ns) for _, _, ns in cells) * args.seeds, desc="ablations", dynamic_ncols=True)
    for c, o, ns in cells:
        case = replace(CASES[c], targets=CASES[c].targets[:1], budget_s=CASES[c].budget_s * args.budget_scale)
        target = str(case.targets[0])
        cell = {"case": c, "objective": o, "metric": case.metric, "target": case.targets[0], "variants": {}}
        for name in ns:
            job, fields = settings[f"{c}/{o}/{name}"]
            rows = []
            for seed in range(args.seeds):
                rows.append(run_once(job, case, seed, fields, eval_every=25))
                bar.update(1)
            seconds_per_step = step_s[f"{c}/{o}/{name}"]
            hits = [r["steps_to"][target] for r in rows]
            summary = summarise(rows, case.targets, seconds_per_step)[target]
            seconds = [None if h is None else h * seconds_per_step for h in hits]
            cell["variants"][name] = {
                "train": fields, "step_seconds": seconds_per_step, "runs": rows, "reached": summary["reached"],
                "steps": hits, "seconds": seconds, "median_seconds": summary["seconds"],
            }
            print(f"{c} {o} {name}: reached {summary['reached']}, seconds {seconds}", flush=True)
        default = cell["variants"].get("default", {}).get("median_seconds")
        for data in cell["variants"].values():
            data["vs_default"] = (data["median_seconds"] / default) if default and data["median_seconds"] else None
        payload["results"][f"{c}/{o}"] = cell
        save(args.out, payload)
    bar.close()
    path = save(args.out, payload)
    plot(payload, args.out)
    print(f"wrote {path}")


def plot(payload: dict, name: str) -> None:
    plt = pyplot()
    cells = list(payload["results"].values())
    fig, axes = plt.subplots(1, len(cells), figsize=(5 * len(cells), 4.5), squeeze=False)
    for ax, cell in zip(axes[0], cells):
        names = list(cell["variants"])
        for y, variant in enumerate(names):  # not `name`: that is the file's
            seconds = cell["variants"][variant]["seconds"]
            budget = max([s for v in cell["variants"].values() for s in v["seconds"] if s is not None] or [1.0])
            xs = [s if s is not None else budget * 1.5 for s in seconds]
            ax.scatter(xs, [y] * len(xs), c=["tab:blue" if s is not None else "tab:red" for s in seconds], s=14)
            if cell["variants"][variant]["median_seconds"]:
                ax.plot([cell["variants"][variant]["median_seconds"]] * 2, [y - 0.3, y + 0.3], "k-", lw=1.5)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_xscale("log")
        ax.set(xlabel=f"seconds to {cell['metric']} <= {cell['target']} (red: not reached)",
               title=f"{cell['case']}, target={cell['objective']}")
        ax.axvline(cell["variants"].get("default", {}).get("median_seconds") or math.nan, color="tab:blue", lw=0.8)
    save_figure(fig, name)


if __name__ == "__main__":
    main()
