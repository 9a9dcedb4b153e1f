"""``windtunnel-report <sweep_dir>``: aggregate every job of a sweep, of any runner, into tables and a plot.

A job is a folder holding Hydra's ``.hydra/config.yaml``; it is finished when its ``metrics.json``
exists. Its runner (``metrics.json``'s ``runner``) says which keys of a run entry are metrics, with
their direction, and which name an entry (``labels``). Entries are grouped by runner, labels and
everything in their config except the seed and the result-neutral settings, and each group reports
mean ± standard error over seeds with the seed count; the best group per metric is marked. Jobs
that have not finished are listed, not hidden, so a half-done sweep is visible as such.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import logging

import yaml

from framework.config import result_settings
from framework.io import write_json, write_text
from framework.runners import RUNNERS, register_schemas

ARROW = {"lower": "↓", "higher": "↑"}
log = logging.getLogger(__name__)


def find_jobs(sweep_dir: Path) -> list[Path]:
    return sorted(p.parent.parent for p in Path(sweep_dir).rglob(".hydra/config.yaml"))


def _mean_se(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def _flat(node: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _differing(configs: list[dict]) -> list[str]:
    """Dotted settings whose value differs between groups: the columns worth showing."""
    flat = [_flat(c) for c in configs]
    keys = sorted({k for f in flat for k in f})
    return [k for k in keys if len({json.dumps(f.get(k)) for f in flat}) > 1]


def aggregate(sweep_dir: Path) -> dict:
    register_schemas()  # loads plugin runners, so their sweeps aggregate too
    jobs = find_jobs(sweep_dir)
    groups: dict[str, dict] = defaultdict(lambda: {"seeds": [], "values": defaultdict(list), "timing": defaultdict(list)})
    finished, missing = [], []
    for job in jobs:
        metrics_path = job / "metrics.json"
        if not metrics_path.exists():
            missing.append(str(job.relative_to(sweep_dir)))
            continue
        config = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        metrics = json.loads(metrics_path.read_text())
        finished.append(str(job.relative_to(sweep_dir)))
        name = metrics.get("runner", "windtunnel")  # sweeps from before runners were all wind tunnels
        runner = RUNNERS.get(name)
        if runner is None:
            log.warning("%s: runner '%s' is not loaded, so its metrics are unknown; name its module in "
                        "$WINDTUNNEL_PLUGINS", job, name)
        declared, labels = (runner.metrics, runner.labels) if runner else ({}, ())
        settings = {k: v for k, v in result_settings(config).items() if k != "seed"}
        for run in metrics["runs"]:
            # lists, not mappings, where the order is the runner's (labels, metrics): sort_keys keeps it
            key = json.dumps({"runner": name, "labels": [[k, run.get(k)] for k in labels], "settings": settings,
                              "metrics": list(declared.items())}, sort_keys=True)
            group = groups[key]
            group["seeds"].append(config.get("seed"))
            for metric in declared:
                group["values"][metric].append(run.get(metric, float("nan")))  # runs from before a metric existed
            for name, seconds in (run.get("timing") or {}).items():  # compute cost per group, beside the metrics
                if isinstance(seconds, (int, float)):
                    group["timing"][name].append(seconds)
    rows = []
    for key, group in groups.items():
        meta = json.loads(key)
        labels, declared = dict(meta["labels"]), dict(meta["metrics"])
        row = {"runner": meta["runner"], **labels, "labels": list(labels), "settings": meta["settings"],
               "n_seeds": len(group["seeds"]), "metrics": declared}
        for metric in declared:
            row[metric], row[f"{metric}_stderr"] = _mean_se(group["values"][metric])
        row["timing"] = {name: _mean_se(values)[0] for name, values in group["timing"].items()}  # mean seconds
        rows.append(row)
    rows.sort(key=lambda r: (r["runner"], [str(r[k]) for k in r["labels"]], json.dumps(r["settings"], sort_keys=True)))
    return {"sweep_dir": str(sweep_dir), "jobs": len(jobs), "finished": finished, "missing": missing, "groups": rows}


def _best(rows: list[dict], metric: str, direction: str) -> float | None:
    values = [r[metric] for r in rows if not math.isnan(r[metric])]
    if not values:
        return None
    return min(values) if direction == "lower" else max(values)


def render(summary: dict) -> str:
    lines = [f"# Sweep report: {summary['sweep_dir']}", "",
             f"{len(summary['finished'])} of {summary['jobs']} jobs finished; values are mean ± standard error over "
             "seeds; ↓ lower is better, ↑ higher is better; **bold** is the best group.", ""]
    by_runner = defaultdict(list)
    for row in summary["groups"]:
        by_runner[row["runner"]].append(row)
    for name, rows in by_runner.items():
        labels, declared = rows[0]["labels"], rows[0]["metrics"]
        columns = _differing([r["settings"] for r in rows]) if len(rows) > 1 else []
        head = [*labels, *columns, "seeds", *(f"{m} {ARROW[d]}" for m, d in declared.items())]
        best = {m: _best(rows, m, d) for m, d in declared.items()}
        lines += [f"## Runner: {name}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            settings = _flat(r["settings"])
            cells = [*(str(r[k]) for k in labels), *(str(settings.get(c)) for c in columns), str(r["n_seeds"])]
            for metric in declared:
                cell = f"{r[metric]:.4g} ± {r[metric + '_stderr']:.2g}"
                cells.append(f"**{cell}**" if r[metric] == best[metric] and len(rows) > 1 else cell)
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Jobs not finished", ""]
    lines += [f"- {m}" for m in summary["missing"]] or ["none"]
    return "\n".join(lines) + "\n"


def plot(summary: dict, sweep_dir: Path) -> None:
    """summary_<metric>.png: the first declared metric of each group, mean ± s.e. over seeds (log scale
    when all are positive)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in summary["groups"] if r["metrics"]]
    if not rows:
        return
    metric = next(iter(rows[0]["metrics"]))
    rows = [r for r in rows if metric in r["metrics"]]
    labels = ["/".join(str(r[k]) for k in r["labels"]) + f"#{i}" for i, r in enumerate(rows)]
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(rows) + 2), 4))
    errors = [0 if math.isnan(r[f"{metric}_stderr"]) else r[f"{metric}_stderr"] for r in rows]
    values = [r[metric] for r in rows]
    ax.bar(range(len(rows)), values, yerr=errors, capsize=3)
    if all(v > 0 for v in values):
        ax.set_yscale("log")
    ax.set_xticks(range(len(rows)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel(f"{metric} ({rows[0]['metrics'][metric]} is better; mean ± s.e. over seeds)")
    fig.tight_layout()
    fig.savefig(Path(sweep_dir) / f"summary_{metric}.png", dpi=120)
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
    plot(summary, args.sweep_dir)
    print(render(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
