"""``windtunnel-report <sweep_dir>``: aggregate every job of a sweep into one table and plot.

A job is a folder holding Hydra's ``.hydra/config.yaml``; it is finished when its ``metrics.json``
exists. Runs are grouped by everything in their config except the seed, and each group reports
mean ± standard error over seeds with the seed count. Jobs that have not finished are listed, not
hidden, so a half-done sweep is visible as such.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import yaml

from framework.config import RESULT_NEUTRAL, RESULT_NEUTRAL_TRAIN
from framework.io import write_json, write_text

METRICS = ("kl_bits", "entropy_mae_bits", "accuracy")


def find_jobs(sweep_dir: Path) -> list[Path]:
    return sorted(p.parent.parent for p in Path(sweep_dir).rglob(".hydra/config.yaml"))


def _group_key(config: dict, run: dict) -> str:
    """What distinguishes a group: every setting but the seed and the result-neutral ones."""
    settings = {k: v for k, v in config.items() if k not in RESULT_NEUTRAL | {"seed"}}
    for key in RESULT_NEUTRAL_TRAIN:
        settings.get("train", {}).pop(key, None)
    return json.dumps({"settings": settings, "task": run["task_key"], "model": run["model_key"]}, sort_keys=True)


def _mean_se(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def _differing(configs: list[dict]) -> list[str]:
    """Dotted settings whose value differs between groups: the columns worth showing."""
    flat = []
    for config in configs:
        items = {}

        def walk(node, prefix=""):
            for key, value in node.items():
                if isinstance(value, dict):
                    walk(value, f"{prefix}{key}.")
                else:
                    items[f"{prefix}{key}"] = value

        walk(config)
        flat.append(items)
    keys = sorted({k for f in flat for k in f})
    return [k for k in keys if len({json.dumps(f.get(k)) for f in flat}) > 1]


def aggregate(sweep_dir: Path) -> dict:
    jobs = find_jobs(sweep_dir)
    groups: dict[str, dict] = defaultdict(lambda: {"seeds": [], **{m: [] for m in METRICS}})
    finished, missing = [], []
    for job in jobs:
        metrics_path = job / "metrics.json"
        if not metrics_path.exists():
            missing.append(str(job.relative_to(sweep_dir)))
            continue
        config = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        finished.append(str(job.relative_to(sweep_dir)))
        for run in json.loads(metrics_path.read_text())["runs"]:
            group = groups[_group_key(config, run)]
            group["seeds"].append(config.get("seed"))
            for metric in METRICS:
                group[metric].append(run.get(metric, float("nan")))  # runs from before a metric existed
    rows = []
    for key, group in groups.items():
        meta = json.loads(key)
        row = {"task": meta["task"], "model": meta["model"], "settings": meta["settings"], "n_seeds": len(group["seeds"])}
        for metric in METRICS:
            row[metric], row[f"{metric}_stderr"] = _mean_se(group[metric])
        rows.append(row)
    rows.sort(key=lambda r: (r["task"], r["model"], json.dumps(r["settings"], sort_keys=True)))
    return {"sweep_dir": str(sweep_dir), "jobs": len(jobs), "finished": finished, "missing": missing, "groups": rows}


def render(summary: dict) -> str:
    rows = summary["groups"]
    columns = _differing([r["settings"] for r in rows]) if len(rows) > 1 else []
    head = ["task", "model", *columns, "seeds", "KL (bits)", "entropy MAE (bits)", "accuracy"]
    lines = [f"# Sweep report: {summary['sweep_dir']}", "",
             f"{len(summary['finished'])} of {summary['jobs']} jobs finished; values are mean ± standard error over seeds.",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def lookup(settings, dotted):
        node = settings
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node

    for r in rows:
        cells = [r["task"], r["model"], *(str(lookup(r["settings"], c)) for c in columns), str(r["n_seeds"]),
                 f"{r['kl_bits']:.4g} ± {r['kl_bits_stderr']:.2g}",
                 f"{r['entropy_mae_bits']:.4g} ± {r['entropy_mae_bits_stderr']:.2g}",
                 f"{r['accuracy']:.4g} ± {r['accuracy_stderr']:.2g}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Jobs not finished", ""]
    lines += [f"- {m}" for m in summary["missing"]] or ["none"]
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["groups"]
    if not rows:
        return
    labels = [f"{r['task']}/{r['model']}#{i}" for i, r in enumerate(rows)]
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(rows) + 2), 4))
    errors = [0 if math.isnan(r["kl_bits_stderr"]) else r["kl_bits_stderr"] for r in rows]
    ax.bar(range(len(rows)), [r["kl_bits"] for r in rows], yerr=errors, capsize=3)
    ax.set_yscale("log")
    ax.set_xticks(range(len(rows)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("KL(Bayes || model), bits (mean ± s.e. over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="windtunnel-report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"windtunnel-report: {args.sweep_dir} is not a folder", file=sys.stderr)
        return 2
    summary = aggregate(args.sweep_dir)
    write_json(args.sweep_dir / "summary.json", summary)
    write_text(args.sweep_dir / "summary.md", render(summary))
    plot(summary, args.sweep_dir / "summary_kl.png")
    print(render(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
