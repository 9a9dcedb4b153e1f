"""The plasticity-methods leaderboard: a sweep of continual runs -> leaderboard.md, .csv and a plot.

``windtunnel experiment=continual/leaderboard`` runs every strategy and plasticity method (the
``method`` group) x the streams x seeds as a Hydra multirun through the content-addressed sweep
(``multirun/<experiment>/<config hash>``), so a killed leaderboard reruns only its missing jobs;
:class:`LeaderboardCallback` (``hydra.callbacks`` in the experiment) writes the leaderboard when the
sweep ends. ``python -m framework.runners.continual.leaderboard <sweep_dir>`` writes it for any sweep
folder, finished or not (unfinished jobs are listed).

The aggregation is ``framework.sweep_report.aggregate``: one group per (stream, strategy, plugins,
model) and settings other than the seed, each metric as mean ± standard error over seeds, and the
mean compute time. On top of it, per stream, methods are ranked by ACC (average final error, bits,
lower is better); a method's overall rank is its mean rank over the streams it ran on.
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from framework.io import write_json, write_text
from framework.sweep_report import aggregate

RANK_BY = "acc_bits"
SHOWN = ("acc_bits", "bwt_bits", "fwt_bits", "forgetting_bits", "plasticity_ratio_mean", "late_plasticity_ratio")


def _method(row: dict) -> str:
    plugins = row.get("plugins") or "none"
    return row["strategy"] + ("" if plugins == "none" else f"+{plugins}")


def leaderboard(sweep_dir: Path) -> dict:
    summary = aggregate(Path(sweep_dir))
    rows = []
    for group in summary["groups"]:
        if group["runner"] != "continual":
            continue
        row = {"stream": group["stream"], "method": _method(group), "model": group["model"], "n_seeds": group["n_seeds"],
               "train_seconds": group.get("timing", {}).get("train_seconds", float("nan"))}
        for metric in group["metrics"]:
            row[metric], row[f"{metric}_stderr"] = group[metric], group[f"{metric}_stderr"]
        rows.append(row)
    by_stream = defaultdict(list)
    for row in rows:
        by_stream[(row["stream"], row["model"])].append(row)
    for group in by_stream.values():
        ranked = sorted(group, key=lambda r: (math.isnan(r[RANK_BY]), r[RANK_BY]))
        for rank, row in enumerate(ranked, 1):
            row["rank"] = rank
    ranks = defaultdict(list)
    for row in rows:
        ranks[(row["method"], row["model"])].append(row["rank"])
    overall = sorted(({"method": m, "model": model, "mean_rank": sum(r) / len(r), "streams": len(r)}
                      for (m, model), r in ranks.items()), key=lambda o: o["mean_rank"])
    rows.sort(key=lambda r: (r["stream"], r["model"], r["rank"]))
    return {"sweep_dir": str(sweep_dir), "jobs": summary["jobs"], "finished": len(summary["finished"]),
            "missing": summary["missing"], "rows": rows, "overall": overall, "rank_by": RANK_BY}


def _cell(row: dict, metric: str) -> str:
    value, se = row.get(metric, float("nan")), row.get(f"{metric}_stderr", float("nan"))
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.4g} ± {se:.2g}" if not math.isnan(se) else f"{value:.4g}"


def render(board: dict) -> str:
    lines = ["# Continual-learning leaderboard", "",
             f"{board['finished']} of {board['jobs']} jobs finished (sweep `{board['sweep_dir']}`). Values are mean ± "
             "standard error over seeds, in bits from the exact posterior: lower is better for every column. BWT and "
             "forgetting > 0 mean forgetting; FWT < 0 means earlier experiences helped; a plasticity ratio > 1 means a "
             "fresh model learns the experience better in the same budget. Rank: by ACC within each stream.", "",
             "## Overall ranking (mean rank over streams)", "", "| # | method | model | mean rank | streams |",
             "|---:|---|---|---:|---:|"]
    for i, o in enumerate(board["overall"], 1):
        lines.append(f"| {i} | {o['method']} | {o['model']} | {o['mean_rank']:.2f} | {o['streams']} |")
    stream = None
    head = ["rank", "method", "model", "seeds", *SHOWN, "train s"]
    for row in board["rows"]:
        if row["stream"] != stream:
            stream = row["stream"]
            lines += ["", f"## {stream}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines.append("| " + " | ".join([str(row["rank"]), row["method"], row["model"], str(row["n_seeds"]),
                                        *(_cell(row, m) for m in SHOWN), f"{row['train_seconds']:.1f}"]) + " |")
    lines += ["", "![leaderboard](leaderboard.png)", "", "## Jobs not finished", ""]
    lines += [f"- {m}" for m in board["missing"]] or ["none"]
    return "\n".join(lines) + "\n"


def to_csv(board: dict) -> str:
    out = io.StringIO()
    fields = ["stream", "method", "model", "rank", "n_seeds", *(f for m in SHOWN for f in (m, f"{m}_stderr")),
              "train_seconds"]
    writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for row in board["rows"]:
        writer.writerow(row)
    return out.getvalue()


def plot(board: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = board["rows"]
    if not rows:
        return
    methods = sorted({r["method"] for r in rows}, key=lambda m: next(
        (i for i, o in enumerate(board["overall"]) if o["method"] == m), 0))
    streams = sorted({r["stream"] for r in rows})
    panels = [*SHOWN[:4], "plasticity_ratio_mean", "train_seconds"]
    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5))
    width = 0.8 / max(1, len(streams))
    x = np.arange(len(methods))
    for ax, metric in zip(axes.flat, panels):
        for k, stream in enumerate(streams):
            values, errors = [], []
            for m in methods:
                row = next((r for r in rows if r["method"] == m and r["stream"] == stream), None)
                v = row.get(metric) if row else None
                e = row.get(f"{metric}_stderr") if row else None
                values.append(np.nan if v is None else v)
                errors.append(0 if e is None or (isinstance(e, float) and math.isnan(e)) else e)
            ax.bar(x + (k - (len(streams) - 1) / 2) * width, values, width, yerr=errors, capsize=2, label=stream)
        ax.set_xticks(x, methods, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{metric} (lower is better)" if metric != "train_seconds" else "compute: training seconds per run",
                     fontsize=9)
        if metric in ("bwt_bits", "fwt_bits", "forgetting_bits"):
            ax.axhline(0, color="black", lw=0.7)
        if metric in ("plasticity_ratio_mean",):
            ax.axhline(1, color="black", lw=0.7, ls="--")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("continual leaderboard: mean ± s.e. over seeds; methods in overall rank order", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_leaderboard(sweep_dir: Path) -> dict:
    sweep_dir = Path(sweep_dir)
    board = leaderboard(sweep_dir)
    write_json(sweep_dir / "leaderboard.json", board)
    write_text(sweep_dir / "leaderboard.md", render(board))
    write_text(sweep_dir / "leaderboard.csv", to_csv(board))
    plot(board, sweep_dir / "leaderboard.png")
    return board


try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover
    Callback = object


class LeaderboardCallback(Callback):
    """``hydra.callbacks.leaderboard._target_: framework.runners.continual.leaderboard.LeaderboardCallback``:
    writes the leaderboard into the sweep folder when the multirun ends."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        board = write_leaderboard(Path(config.hydra.sweep.dir))
        print(f"wrote {Path(config.hydra.sweep.dir) / 'leaderboard.md'} ({board['finished']} of {board['jobs']} jobs)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m framework.runners.continual.leaderboard",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"leaderboard: {args.sweep_dir} is not a folder", file=sys.stderr)
        return 2
    print(render(write_leaderboard(args.sweep_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
