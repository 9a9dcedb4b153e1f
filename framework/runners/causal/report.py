"""report.md and plots of the causal runner: a query set's make-up, a scoring run's strata, mode B's gap."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from framework.io import write_text


def _g(value, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}g}"


def _pm(entry: dict, key: str) -> str:
    value, se = entry.get(key), entry.get(f"{key}_stderr")
    if value is None:
        return "–"
    return f"{value:.4g} ± {_g(se, 2)}"


def report_generate(metrics: dict, run_dir: Path) -> None:
    entry = metrics["runs"][0]
    lines = [f"# Causal query set: {metrics['experiment']}", "",
             f"`{entry['path']}`: {entry['count']:,} queries, generated in {entry['generation_seconds']:.1f} s "
             f"({entry['workers']} worker(s)); content hash `{entry['content_hash'][:16]}`.", ""]
    for key in ("rung", "query_type", "source", "graph", "names", "answer_kind"):
        lines += [f"## By {key}", "", "| " + key + " | queries |", "|---|---:|"]
        lines += [f"| {k} | {v:,} |" for k, v in entry["make_up"][key].items()] + [""]
    write_text(run_dir / "report.md", "\n".join(lines))


def report_score(metrics: dict, run_dir: Path) -> None:
    runs = metrics["runs"]
    top = runs[0]
    info = metrics["scoring"]
    lines = [f"# Causal scoring: {metrics['experiment']}", "",
             f"Adapter `{top['adapter']}` (identity `{info['adapter_identity']}`) on `{info['queries']}` "
             f"({info['count']:,} queries, content hash `{info['content_hash'][:16]}`).", "",
             f"- asked: {top['asked']:,} queries; not answerable by this adapter: {top['not_answerable']:,}; "
             f"prompts sent this run: {info['asked_now']:,}, read from the answer store: {info['from_store']:,} "
             f"({info['seconds']:.1f} s)",
             f"- call failures (after retries): {top['call_failures']:,}; unparseable answers: {top['parse_failures']:,} "
             "(both scored wrong)",
             f"- accuracy {_pm(top, 'accuracy')}; a number is right within {info['number_tol']:g}; "
             "abs error and kl_bits are over the parsed numbers (kl_bits: probabilities only)", ""]
    if info.get("not_answerable_reasons"):
        lines += ["Why not answerable:", ""] + [f"- {n:,}: {r}" for r, n in info["not_answerable_reasons"].items()] + [""]
    head = "| {} | n | asked | accuracy | abs error (n) | kl_bits (n) | parse fail | call fail | not answerable |"
    for by in dict.fromkeys(r["by"] for r in runs):
        rows = [r for r in runs if r["by"] == by]
        lines += [f"## By {by}", "", head.format(by), "|---|---:|---:|---|---|---|---:|---:|---:|"]
        for r in rows:
            lines.append(f"| {r['stratum']} | {r['n']:,} | {r['asked']:,} | {_pm(r, 'accuracy')} | "
                         f"{_pm(r, 'abs_error')} ({r['n_numbers']}) | {_pm(r, 'kl_bits')} ({r['n_distributions']}) | "
                         f"{r['parse_failures']} | {r['call_failures']} | {r['not_answerable']} |")
        lines.append("")
    plot = plot_score(runs, run_dir)
    if plot:
        lines += [f"![accuracy]({plot})", ""]
    write_text(run_dir / "report.md", "\n".join(lines))


def plot_score(runs: list[dict], run_dir: Path) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(by, [r for r in runs if r["by"] == by and r["accuracy"] is not None]) for by in ("rung", "query_type")]
    panels = [(by, rows) for by, rows in panels if rows]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4 + 5 * len(panels), 4), squeeze=False,
                             gridspec_kw={"width_ratios": [max(3, len(r)) for _, r in panels]})
    for ax, (by, rows) in zip(axes[0], panels):
        ax.bar(range(len(rows)), [r["accuracy"] for r in rows], yerr=[r["accuracy_stderr"] or 0 for r in rows], capsize=3)
        ax.set_xticks(range(len(rows)), [f"{r['stratum']}\n(n={r['asked']})" for r in rows], rotation=45 if by != "rung" else 0,
                      ha="right" if by != "rung" else "center", fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy (± s.e.)")
        ax.set_title(f"by {by}")
    fig.suptitle(runs[0]["adapter"], fontsize=9)
    fig.tight_layout()
    fig.savefig(run_dir / "accuracy.png", dpi=120)
    plt.close(fig)
    return "accuracy.png"


def report_tunnel(metrics: dict, run_dir: Path) -> None:
    runs = metrics["runs"]
    overall = [r for r in runs if r["by"] == "all"]
    info = metrics["tunnel"]
    lines = [f"# Causal wind tunnel, mode B: {metrics['experiment']}", "",
             f"{info['eval_sequences']:,} fresh held-out sequences (seed {info['seed']}). kl_bits is KL(P(Y | do(x), data) "
             "|| model); the association gap t (SPEC §6) is 0 where the model answers with the observational "
             "P(Y | X=x, data) and 1 where it answers with the interventional one, over the positions where they "
             f"differ by more than {info['min_gap']:g} (total variation). "
             "`KL(obs ‖ model)` says how close the model is to the observational answer; "
             "`obs predictor` is the kl_bits of answering with the observational predictive.", "",
             "| model | params | kl_bits | KL(obs ‖ model) | obs predictor kl_bits | gap t (mean) | median | t > 0.5 | gap positions |",
             "|---|---:|---|---|---|---|---:|---:|---:|"]
    for r in overall:
        lines.append(f"| {r['adapter']} | {r['params']:,} | {_pm(r, 'kl_bits')} | {_pm(r, 'kl_obs_bits')} | "
                     f"{_pm(r, 'observational_kl_bits')} | {_pm(r, 'association_gap')} | {_g(r['association_gap_median'], 3)} | "
                     f"{_g(r['association_gap_above_half'], 3)} | {r['gap_positions']:,} |")
    lines += ["", "## Per number of samples seen", "",
              "| model | samples seen | kl_bits | obs predictor kl_bits | gap t | gap positions |", "|---|---:|---|---|---|---:|"]
    for r in runs:
        if r["by"] == "samples_seen":
            lines.append(f"| {r['adapter']} | {r['stratum']} | {_pm(r, 'kl_bits')} | {_pm(r, 'observational_kl_bits')} | "
                         f"{_pm(r, 'association_gap')} | {r['gap_positions']:,} |")
    lines += ["", f"![tunnel]({plot_tunnel(runs, run_dir)})", ""]
    write_text(run_dir / "report.md", "\n".join(lines))


def plot_tunnel(runs: list[dict], run_dir: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    curves = [r for r in runs if r["by"] == "samples_seen"]
    names = list(dict.fromkeys(r["adapter"] for r in curves))
    for name in names:
        rows = [r for r in curves if r["adapter"] == name]
        x = [int(r["stratum"]) for r in rows]
        left.errorbar(x, [r["kl_bits"] for r in rows], yerr=[r["kl_bits_stderr"] or 0 for r in rows], marker="o",
                      capsize=2, label=name)
        gap = [(xi, r) for xi, r in zip(x, rows) if r["association_gap"] is not None]
        right.errorbar([xi for xi, _ in gap], [r["association_gap"] for _, r in gap],
                       yerr=[r["association_gap_stderr"] or 0 for _, r in gap], marker="o", capsize=2, label=name)
    if names:
        rows = [r for r in curves if r["adapter"] == names[0]]
        base = [(int(r["stratum"]), r["observational_kl_bits"]) for r in rows if (r["observational_kl_bits"] or 0) > 0]
        left.plot([x for x, _ in base], [y for _, y in base], "k--", label="observational predictive")
    left.set_xlabel("samples seen")
    left.set_ylabel("kl_bits vs P(Y | do(x), data)")
    left.set_yscale("log")
    left.legend(fontsize=7)
    right.set_xlabel("samples seen")
    right.set_ylabel("association gap t (0 = P(y|x), 1 = P(y|do(x)))")
    right.set_ylim(-0.05, 1.05)
    right.axhline(0.5, color="grey", lw=0.5)
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(run_dir / "tunnel.png", dpi=120)
    plt.close(fig)
    return "tunnel.png"


def make_up(queries) -> dict:
    keys = ("rung", "query_type", "source", "graph", "names", "answer_kind")
    return {k: dict(sorted(Counter(str(getattr(q, k)) for q in queries).items())) for k in keys}
