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
from framework.metrics.boundary import variant_rows  # noqa: E402
from framework.models import color  # noqa: E402
from framework.probes.running import scalars  # noqa: E402


def by_task(metrics: dict) -> dict[str, list[dict]]:
    groups = defaultdict(list)
    for run in metrics["runs"]:
        groups[run["task_key"]].append(run)
    return dict(groups)


SPARE_COLORS = ("tab:purple", "tab:brown", "tab:pink", "tab:gray", "tab:olive", "tab:cyan")


def model_colors(runs: list[dict]) -> dict[str, str]:
    """model key -> colour: an architecture's own (from the model registry) for its first model, spare
    colours for further models of the same architecture and for architectures without one."""
    own = {run["model"]: color(run["model"]) for run in runs}
    spare = [c for c in SPARE_COLORS if c not in own.values()]
    shades, taken = {}, set()
    for run in runs:
        mine = own[run["model"]]
        if mine and run["model"] not in taken:
            shades[run["model_key"]] = mine
        else:
            shades[run["model_key"]] = spare[len(shades) % len(spare)] if spare else "black"
        taken.add(run["model"])
    return shades


def save(fig, path: Path, axes) -> None:
    """Legend and grid on every axis, then write the figure and free it."""
    for ax in axes:
        if ax.get_legend() is None:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_calibration(task_key: str, runs: list[dict], path: Path) -> None:
    """Per-position model entropy against Bayes entropy (the paper's calibration figure), and KL."""
    fig, (ax_h, ax_kl) = plt.subplots(1, 2, figsize=(11, 4.2))
    positions = range(1, len(runs[0]["per_position"]["h_bayes"]) + 1)
    ax_h.plot(positions, runs[0]["per_position"]["h_bayes"], "k--", lw=2.5, label="Bayes (exact)")
    shades = model_colors(runs)
    for run in runs:
        label = f"{run['model_key']} ({run['params'] / 1e3:.0f}k)"
        ax_h.plot(positions, run["per_position"]["h_model"], "o-", ms=3, color=shades[run["model_key"]], label=label)
        ax_kl.semilogy(positions, [max(v, 1e-6) for v in run["per_position"]["kl_bits"]], "o-", ms=3,
                       color=shades[run["model_key"]], label=run["model_key"])
    ax_h.set(xlabel="scored position", ylabel="predictive entropy (bits)", title=f"{task_key}: entropy vs Bayes")
    ax_kl.set(xlabel="scored position", ylabel="KL(Bayes || model) (bits)", title=f"{task_key}: KL per position")
    save(fig, path, (ax_h, ax_kl))


def plot_lengths(task_key: str, runs: list[dict], path: Path) -> None:
    """Length generalisation: per-position KL at the trained length and at each evaluate_at variant."""
    runs = [r for r in runs if "evaluate_at" in r]
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 3.8), squeeze=False, sharey=True)
    for ax, run in zip(axes[0], runs):
        curves = {"trained": run["per_position"]["kl_bits"]}
        curves.update({f"{name} (T={v['seq_len']})": v["per_position"]["kl_bits"]
                       for name, v in run["evaluate_at"].items() if "per_position" in v})
        for label, kl in curves.items():
            ax.semilogy(range(1, len(kl) + 1), [max(x, 1e-6) for x in kl], "o-", ms=2.5, label=label)
        ax.axvline(len(run["per_position"]["kl_bits"]) + 0.5, color="grey", ls=":", lw=1)
        ax.set(title=f"{task_key}: {run['model_key']}", xlabel="scored position")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("KL(Bayes || model) (bits)")
    save(fig, path, axes[0])


def plot_task_posterior(task_key: str, task_config: dict, path: Path, n_sequences: int = 2048) -> bool:
    """The exact posterior over tasks as examples accumulate (tasks that expose ``task_posterior``)."""
    import torch

    from framework.tasks import build_task

    task = build_task(task_config)
    if not hasattr(task, "task_posterior"):
        return False
    batch = task.sample(n_sequences, torch.Generator().manual_seed(0))
    posterior = task.task_posterior(batch.tokens)  # (N, K, M)
    fig, (ax_one, ax_all) = plt.subplots(1, 2, figsize=(11, 4))
    examples = range(posterior.shape[1])
    # the sequence whose posterior stays split longest: where the evidence is slowest to decide
    shown = int((1 - posterior.max(-1).values).sum(-1).argmax())
    for m in range(posterior.shape[2]):
        ax_one.plot(examples, posterior[shown, :, m], "o-", ms=3, label=f"task {m}")
    ax_one.set(xlabel="examples seen", ylabel="P(task | examples)", title=f"{task_key}: the most ambiguous sequence")
    ax_one.legend(fontsize=7, ncol=2)
    top = posterior.max(-1).values  # (N, K)
    h = -(posterior * posterior.clamp_min(1e-300).log2()).sum(-1)  # (N, K) bits
    ax_all.plot(examples, top.mean(0), "o-", label="mean max P(task)")
    ax_all.plot(examples, h.mean(0), "s-", label="mean H(task posterior) (bits)")
    ax_all.set(xlabel="examples seen", title=f"{task_key}: over {n_sequences} sequences")
    save(fig, path, (ax_one, ax_all))
    return True


def _fmt(value: float, stderr: float) -> str:
    return f"{value:.4g} ± {stderr:.2g}"


def length_rows(groups: dict[str, list[dict]]) -> list[str]:
    rows = []
    for task_key, runs in groups.items():
        for r in runs:
            for name, v in r.get("evaluate_at", {}).items():
                score = (f"{_fmt(v['kl_bits'], v['kl_bits_stderr'])} | {_fmt(v['entropy_mae_bits'], v['entropy_mae_bits_stderr'])}"
                         if "kl_bits" in v else f"skipped: {v['skipped']} |")
                rows.append(f"| {task_key} | {r['model_key']} | {name} | {v['seq_len']} | {score} |")
    if not rows:
        return []
    return ["## Length generalisation", "", "Trained models scored on changed settings of their task "
            "(fresh fixed-seed sequences).", "",
            "| task | model | variant | T | KL (bits) | entropy MAE (bits) |", "|---|---|---|---:|---|---|", *rows, ""]


def matrix_rows(groups: dict[str, list[dict]]) -> list[str]:
    rows = [f"| {task_key} | {r['model_key']} | {m['params']:,} | {m['n_prompts']:,} | {m['n_distinct_rows']:,} | "
            f"{m['kl_bits_mean']:.4g} | {m['kl_bits_max']:.4g} |"
            for task_key, runs in groups.items() for r in runs if (m := r.get("matrix"))]
    if not rows:
        return []
    return ["## Whole-matrix view", "", "Every prompt of the task against its exact next-token row: exact "
            "numbers, no sampling error.", "",
            "| task | model | params | prompts (rows) | distinct exact rows | mean KL (bits) | worst KL (bits) |",
            "|---|---|---:|---:|---:|---:|---:|", *rows, ""]


def probe_rows(groups: dict[str, list[dict]]) -> list[str]:
    rows = [f"- {task_key} / {r['model_key']} / **{name}**: {', '.join(scalars(result)[:12])}"
            for task_key, runs in groups.items() for r in runs for name, result in r.get("probes", {}).items()]
    return ["## Probes", "", *rows, ""] if rows else []


def taxonomy_rows(metrics: dict, groups: dict[str, list[dict]]) -> list[str]:
    taxonomy = metrics.get("taxonomy")
    if not taxonomy:
        return []
    criteria = taxonomy["criteria"]
    tasks = list(groups)
    header = "| model | " + " | ".join(tasks) + " | primitives realised |"
    rows = [header, "|---|" + "---|" * len(tasks) + "---|"]
    for model_key, verdict in taxonomy["models"].items():
        cells = []
        for task_key in tasks:
            run = next((r for r in groups[task_key] if r["model_key"] == model_key), None)
            if run is None:
                cells.append("-")
                continue
            mark = "✓" if verdict["solved"][task_key] else "✗"
            score = (f"{100 * run['accuracy']:.1f}% acc" if task_key in criteria["by_accuracy"]
                     else f"{run['kl_bits']:.3g} bits")
            cells.append(f"{score} {mark}")
        rows.append(f"| {model_key} | " + " | ".join(cells) + f" | {', '.join(verdict['primitives']) or 'none'} |")
    tests = "; ".join(f"{p}: {', '.join(keys)}" for p, keys in criteria["primitives"].items())
    return ["## Architecture taxonomy", "",
            f"A task is solved at KL ≤ {criteria['max_kl_bits']} bits per position, or accuracy ≥ "
            f"{100 * criteria['min_accuracy']:.0f}% for {', '.join(criteria['by_accuracy']) or 'no'} task(s). "
            f"A primitive is realised when every task testing it is solved ({tests}).", "", *rows, ""]


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
    rows = ["| task | model | params | steps | train s | entropy MAE (bits) | KL (bits) | accuracy (Bayes) |",
            "|---|---|---:|---:|---:|---|---|---|"]
    plots = []
    for task_key, runs in groups.items():
        plot_calibration(task_key, runs, run_dir / f"calibration_{task_key}.png")
        plots.append(f"calibration_{task_key}.png")
        if any("evaluate_at" in r for r in runs):
            plot_lengths(task_key, runs, run_dir / f"lengths_{task_key}.png")
            plots.append(f"lengths_{task_key}.png")
        if plot_task_posterior(task_key, runs[0]["task_config"], run_dir / f"task_posterior_{task_key}.png"):
            plots.append(f"task_posterior_{task_key}.png")
        for r in runs:
            for result in r.get("probes", {}).values():
                plots += [f"{task_key}_{r['model_key']}/probes/{name}" for name in result.get("plots", [])]
            rows.append(f"| {task_key} | {r['model_key']} | {r['params']:,} | {r['steps']} | {r['timing']['train_seconds']:.1f} | "
                        f"{_fmt(r['entropy_mae_bits'], r['entropy_mae_bits_stderr'])} | "
                        f"{_fmt(r['kl_bits'], r['kl_bits_stderr'])} | "
                        f"{100 * r['accuracy']:.1f}% ({100 * r['bayes_accuracy']:.1f}%) |")
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
        *taxonomy_rows(metrics, groups),
        *length_rows(groups),
        *variant_rows(metrics["runs"]),
        *matrix_rows(groups),
        *probe_rows(groups),
        "## Plots",
        "",
        *(f"![{name[:-4]}]({name})" for name in plots),
        "",
    ])
    write_text(run_dir / "report.md", text)
