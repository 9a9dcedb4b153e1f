"""report.md (R per model, forgetting and transfer, a reading computed from the numbers) and transfer.png."""
from __future__ import annotations

from pathlib import Path

from framework.io import write_text


def _fmt(x, se=None) -> str:
    if x is None:
        return "-"
    return f"{x:.4g}" if se is None else f"{x:.4g} ± {se:.2g}"


def _signed(x) -> str:
    return "-" if x is None else f"{x:+.4g}"


def model_section(run: dict) -> list[str]:
    tasks, phases = run["tasks"], run["phases"]
    lines = [f"### {run['model_key']} ({run['model']}, {run['params']:,} parameters; steps {run['steps']})", "",
             "| after | " + " | ".join(f"{t} KL (bits)" for t in tasks) + " |",
             "|---|" + "---|" * len(tasks),
             "| init | " + " | ".join(_fmt(x) for x in run["R_init_kl_bits"]) + " |"]
    for i, name in enumerate(phases):
        cells = [_fmt(x, se) for x, se in zip(run["R_kl_bits"][i], run["R_kl_bits_stderr"][i])]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| phase | task | forgetting (bits) | transfer vs scratch (bits) | scratch KL (bits) | "
                  "zero-shot transfer (bits) |", "|---|---|---|---|---|---|"]
    for i, (name, task) in enumerate(zip(phases, run["phase_tasks"])):
        scratch = run["scratch"].get(str(i))
        lines.append(f"| {name} | {task} | {_signed(run['forgetting_bits'].get(str(i)))} | "
                     f"{_signed(run['transfer_bits'].get(str(i)))} | "
                     f"{_fmt(scratch['kl_bits'], scratch['kl_bits_stderr']) if scratch else '-'} | "
                     f"{_signed(run['zero_shot_transfer_bits'].get(str(i)))} |")
    return lines + [""]


def reading(runs: list[dict]) -> list[str]:
    lines = []
    for run in runs:
        parts = []
        for i, f in run["forgetting_bits"].items():
            task = run["phase_tasks"][int(i)]
            j = run["tasks"].index(task)
            best = min(run["R_kl_bits"][l][j] for l in range(int(i), len(run["phases"]) - 1))
            parts.append(f"{task}: {best:.3g} -> {run['R_kl_bits'][-1][j]:.3g} bits by the end "
                         f"({f'forgot {f:.3g} bits' if f > 0 else 'no forgetting'})")
        for i, t in run["transfer_bits"].items():
            task = run["phase_tasks"][int(i)]
            parts.append(f"{task} after the earlier phases {run['R_kl_bits'][int(i)][run['tasks'].index(task)]:.3g} "
                         f"bits against {run['scratch'][i]['kl_bits']:.3g} from scratch "
                         f"({'positive' if t > 0 else 'negative'} transfer, {t:+.3g} bits)")
        lines.append(f"- **{run['model_key']}**: " + "; ".join(parts) + ".")
    return lines


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.6 * len(runs), 3.9), layout="constrained")
    axes = fig.subplots(1, len(runs), squeeze=False, sharey=True)[0]
    for ax, run in zip(axes, runs):
        tasks = run["tasks"]
        if run["curve"]:
            for task in tasks:
                xs = [p["global_step"] for p in run["curve"]]
                ax.semilogy(xs, [max(p["kl_bits"][task], 1e-6) for p in run["curve"]], "o-", ms=2.5, label=task)
            bounds, total = [], 0
            for steps in run["steps"][:-1]:
                total += steps
                bounds.append(total)
            for b in bounds:
                ax.axvline(b, color="grey", ls=":", lw=1)
            ends = [*bounds, sum(run["steps"])]
            for j, line in enumerate(ax.get_lines()[: len(tasks)]):  # R itself (test sets) at each phase's end
                ax.semilogy(ends, [max(row[j], 1e-6) for row in run["R_kl_bits"]], "s", ms=7, mfc="none",
                            color=line.get_color())
            ax.set_xlabel("training step (all phases)")
            fig.suptitle("lines: validation sets along the way; squares: R on the test sets; stars: from scratch",
                         fontsize=8)
        else:
            xs = range(len(run["phases"]) + 1)
            for j, task in enumerate(tasks):
                ys = [run["R_init_kl_bits"][j]] + [row[j] for row in run["R_kl_bits"]]
                ax.semilogy(xs, [max(y, 1e-6) for y in ys], "o-", label=task)
            ax.set_xticks(list(xs), ["init", *run["phases"]], fontsize=7)
            ax.set_xlabel("after")
        x_end = sum(run["steps"]) if run["curve"] else len(run["phases"])
        for i, s in run["scratch"].items():
            ax.semilogy([x_end], [max(s["kl_bits"], 1e-6)], "*", ms=10, color="k",
                        label=f"{s['task_key']} from scratch")
        ax.set_title(f"{run['model_key']} ({run['params'] / 1e3:.0f}k)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("KL(Bayes || model) (bits)")
    fig.savefig(path, dpi=120)


def write_report(metrics: dict, run_dir: Path) -> None:
    runs = metrics["runs"]
    plot(runs, run_dir / "transfer.png")
    text = "\n".join([
        f"# Transfer report: {metrics['experiment']}", "",
        "Each model is trained through the phases in order (weights carried over, a fresh optimizer and "
        "schedule per phase); after every phase every task is scored on its fixed-seed held-out set. "
        f"R[i][j] = KL(Bayes || model) in bits per scored position on task j after phase i (mean ± stderr). "
        f"One model reads every task: it is built for {metrics['sizes'][0]} tokens and {metrics['sizes'][1]} "
        "classes, and a task with fewer classes has them at probability exactly 0 in its exact posterior "
        "(framework.tasks.padded).", "",
        "Signs: **forgetting** = KL on the phase's task at the end minus its best KL from that phase on "
        "(positive = forgotten). **Transfer** = KL of a fresh model (same initial weights) trained on that "
        "phase alone with the same settings, minus KL after the sequence (positive = the earlier phases "
        "helped). **Zero-shot transfer** = KL at initialisation minus KL before the phase's own training.", "",
        "## Reading", "", *reading(runs), "",
        "## Per model", "", *(line for run in runs for line in model_section(run)),
        "## Plots", "", "![transfer](transfer.png)", "",
    ])
    write_text(run_dir / "report.md", text)
