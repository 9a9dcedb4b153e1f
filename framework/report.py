"""report.md (the table and a reading of it) and calibration_<task>.png for a finished experiment.

The reading is computed from the numbers, never written in advance: which architecture is closest to
Bayes on each task, and how far behind the others are.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from framework.io import write_text  # noqa: E402

COLORS = {"transformer": "tab:blue", "mamba": "tab:orange", "lstm": "tab:green", "mlp": "tab:red",
          "mlp_token": "tab:purple"}


def by_task(metrics: dict) -> dict[str, list[dict]]:
    groups = defaultdict(list)
    for run in metrics["runs"]:
        groups[run["task_key"]].append(run)
    return dict(groups)


def plot_calibration(task_key: str, runs: list[dict], path: Path) -> None:
    """Per-position model entropy against Bayes entropy (the paper's calibration figure), and KL."""
    fig, (ax_h, ax_kl) = plt.subplots(1, 2, figsize=(11, 4.2))
    positions = range(1, len(runs[0]["per_position"]["h_bayes"]) + 1)
    ax_h.plot(positions, runs[0]["per_position"]["h_bayes"], "k--", lw=2.5, label="Bayes (exact)")
    for run in runs:
        color = COLORS.get(run["model_key"], COLORS.get(run["model"]))
        label = f"{run['model_key']} ({run['params'] / 1e3:.0f}k)"
        ax_h.plot(positions, run["per_position"]["h_model"], "o-", ms=3, color=color, label=label)
        ax_kl.semilogy(positions, [max(v, 1e-6) for v in run["per_position"]["kl_bits"]], "o-", ms=3,
                       color=color, label=run["model_key"])
    ax_h.set(xlabel="scored position", ylabel="predictive entropy (bits)", title=f"{task_key}: entropy vs Bayes")
    ax_kl.set(xlabel="scored position", ylabel="KL(Bayes || model) (bits)", title=f"{task_key}: KL per position")
    ax_h.legend(fontsize=8)
    ax_kl.legend(fontsize=8)
    for ax in (ax_h, ax_kl):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fmt(value: float, stderr: float) -> str:
    return f"{value:.4g} ± {stderr:.2g}"


def reading(task_key: str, runs: list[dict]) -> str:
    ranked = sorted(runs, key=lambda r: r["kl_bits"])
    best = ranked[0]
    lines = [f"- **{task_key}**: closest to Bayes is **{best['model_key']}** with KL {best['kl_bits']:.4g} bits "
             f"and entropy MAE {best['entropy_mae_bits']:.4g} bits per scored position."]
    for run in ranked[1:]:
        ratio = run["kl_bits"] / max(best["kl_bits"], 1e-12)
        lines.append(f"  - {run['model_key']}: {ratio:.3g}× the KL of {best['model_key']} "
                     f"({run['kl_bits']:.4g} bits).")
    return "\n".join(lines)


def write_report(metrics: dict, run_dir: Path) -> None:
    groups = by_task(metrics)
    rows = ["| task | model | params | steps | train s | entropy MAE (bits) | KL (bits) |",
            "|---|---|---:|---:|---:|---|---|"]
    for task_key, runs in groups.items():
        plot_calibration(task_key, runs, run_dir / f"calibration_{task_key}.png")
        for r in runs:
            rows.append(f"| {task_key} | {r['model_key']} | {r['params']:,} | {r['steps']} | {r['timing']['train_seconds']:.1f} | "
                        f"{_fmt(r['entropy_mae_bits'], r['entropy_mae_bits_stderr'])} | "
                        f"{_fmt(r['kl_bits'], r['kl_bits_stderr'])} |")
    n_eval = metrics["runs"][0]["n_sequences"]
    text = "\n".join([
        f"# Wind-tunnel report: {metrics['experiment']}",
        "",
        f"Scores are on {n_eval} fresh held-out sequences per task (fixed seed, never trained on), as "
        "mean ± standard error over sequences. Lower is better; 0 is exact Bayesian inference.",
        "",
        *rows,
        "",
        "## Reading",
        "",
        *(reading(task_key, runs) for task_key, runs in groups.items()),
        "",
        "## Plots",
        "",
        *(f"![calibration {t}](calibration_{t}.png)" for t in groups),
        "",
    ])
    write_text(run_dir / "report.md", text)
