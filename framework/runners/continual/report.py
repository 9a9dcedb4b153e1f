"""report.md and the plots of a continual run: R as a heatmap per job, and plasticity and feature
statistics along the stream, every job on one axis."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from framework.io import write_text
from framework.models import color


def _fmt(x, digits: int = 4) -> str:
    return "—" if x is None else f"{x:.{digits}g}"


def _slug(entry: dict) -> str:
    return f"{entry['stream']}_{entry['method']}_{entry['model']}"


def heatmap(entry: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    R = np.asarray(entry["matrix"], dtype=float)
    fig, ax = plt.subplots(figsize=(min(12, 2 + 0.35 * R.shape[1]), min(10, 1.6 + 0.35 * R.shape[0])))
    im = ax.imshow(R, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xlabel("test experience j")
    ax.set_ylabel("trained through experience i")
    ax.set_title(f"R[i][j] = kl_bits ({entry['method']}, {entry['model']}, {entry['stream']}); lower is better",
                 fontsize=9)
    fig.colorbar(im, ax=ax, label="KL(posterior || model), bits")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def curves(runs: list, path: Path) -> None:
    import matplotlib.pyplot as plt

    panels = [("plasticity", "plasticity ratio R[j][j] / F_j\n(> 1: lost plasticity)"),
              ("learned_bits", "R[j][j]: error reached on\nthe new experience (bits)"),
              ("dormant_fraction", "dormant fraction (ReDo tau)"), ("effective_rank", "effective rank of features"),
              ("weight_norm", "weight norm (L2)"), ("distance_from_init", "distance from init (L2)")]
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    for ax, (key, label) in zip(axes.flat, panels):
        for entry in runs:
            values = entry.get(key) if key in ("plasticity", "learned_bits") else entry["features"].get(key)
            if not values:
                continue
            ax.plot(range(len(values)), values, marker="." if len(values) < 30 else None,
                    label=f"{entry['method']} {entry['model']}", color=color(entry.get("architecture", "")))
            if key == "learned_bits" and entry.get("fresh_kl_bits"):
                ax.plot(range(len(entry["fresh_kl_bits"])), entry["fresh_kl_bits"], ls=":", color="grey",
                        label="fresh model, same budget" if entry is runs[0] else None)
        if key == "plasticity":
            ax.axhline(1.0, color="black", lw=0.8, ls="--")
        ax.set_xlabel("experience")
        ax.set_ylabel(label, fontsize=8)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"along the stream ({runs[0]['stream']}); bits: lower is better", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(metrics: dict, run_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    run_dir = Path(run_dir)
    runs = metrics["runs"]
    lines = [f"# Continual run: {metrics['experiment']}", "",
             f"Sign convention: {metrics.get('sign', runs[0]['sign'] if runs else '')}.", "",
             "| stream | method | model | params | experiences x steps | ACC bits | BWT bits | FWT bits | "
             "forgetting (Chaudhry) | forgetting (first-last) | plasticity ratio (mean / late) | final dormant | "
             "final eff. rank | train s |",
             "|---|---|---|---:|---|---|---|---|---|---|---|---|---|---:|"]
    for r in runs:
        f = r["features"]
        lines.append(
            f"| {r['stream']} | {r['method']} | {r['model']} | {r['params']:,} | {r['n_experiences']} x "
            f"{r['steps_per_experience']} | {_fmt(r['acc_bits'])} | {_fmt(r['bwt_bits'])} | {_fmt(r['fwt_bits'])} | "
            f"{_fmt(r['forgetting_bits'])} | {_fmt(r['forgetting_first_last_bits'])} | "
            f"{_fmt(r['plasticity_ratio_mean'], 3)} / {_fmt(r['late_plasticity_ratio'], 3)} | "
            f"{_fmt(f['dormant_fraction'][-1] if f['dormant_fraction'] else None, 3)} | "
            f"{_fmt(f['effective_rank'][-1] if f['effective_rank'] else None, 3)} | {r['timing']['train_seconds']:.1f} |")
    lines += ["", "Reading: BWT > 0 is forgetting (the error on earlier experiences grew after later training); "
              "FWT < 0 means earlier experiences lowered the error on a new one before training on it; a plasticity "
              "ratio > 1 means a fresh model reaches a lower error on that experience in the same budget "
              "(loss of plasticity).", "", "![along the stream](curves.png)", ""]
    for r in runs:
        name = f"R_{_slug(r)}.png"
        heatmap(r, run_dir / name)
        lines.append(f"![R {r['method']} {r['model']}]({name})")
    curves(runs, run_dir / "curves.png")
    write_text(run_dir / "report.md", "\n".join(lines) + "\n")
