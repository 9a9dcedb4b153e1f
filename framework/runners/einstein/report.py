"""The Einstein-test report: einstein_report.md (world x learner table and a reading computed from the
numbers), one figure per world (probes against both laws and every learner, and the anomaly curves),
and report.md pointing to it."""
from __future__ import annotations

import json
import math
from pathlib import Path

from framework.io import write_text

COLUMNS = (("t_median", "median t"), ("frac_t_gt_half", "frac t>0.5"), ("nmse", "nMSE"),
           ("in_regime_fit", "in-regime fit (sd)"), ("symbolic_recovery", "recovered"))
PASS = 0.8  # frac t > 0.5 at which a learner counts as having found the new theory (the issue's bar)
REFERENCE = ("oracle", "old_theory")  # they see the laws: no anomaly needed
FITS = 1.5  # in-regime rms error, in noise sds, under which a learner fits the regime it was trained on


def _cell(row: dict, key: str) -> str:
    v, se = row.get(key), row.get(f"{key}_stderr")
    if v is None:
        return "–"
    text = f"{v:.3g}"
    if se is not None and not (isinstance(se, float) and math.isnan(se)):
        text += f" ± {se:.2g}"
    return text


def _curve(row: dict) -> str:
    return " → ".join(f"{c['t_median']:.2f}" if c["t_median"] is not None else "–" for c in row["anomaly_curve"])


def reading(runs: list[dict]) -> list[str]:
    """Sentences computed from the numbers: who found the new theory where, and who failed at fitting."""
    lines = []
    worlds = list(dict.fromkeys(r["world"] for r in runs))
    learners = list(dict.fromkeys(r["learner"] for r in runs))
    for name in learners:
        rows = [r for r in runs if r["learner"] == name]
        passed = [r["world"] for r in rows if (r["frac_t_gt_half"] or 0) >= PASS]
        recovered = [r["world"] for r in rows if (r["symbolic_recovery"] or 0) > 0]
        unfit = [r["world"] for r in rows if r["in_regime_fit"] is None or r["in_regime_fit"] > FITS]
        zero_start = [r["world"] for r in rows if r["learner_name"] not in REFERENCE and r["anomaly_curve"] and (r["anomaly_curve"][0]["t_median"] or 0) > 0.5]
        text = f"- **{name}**: prefers the new theory (frac t>0.5 >= {PASS}) on {len(passed)} of {len(rows)} worlds"
        text += f" ({', '.join(passed)})" if passed else ""
        if any(r["symbolic_recovery"] is not None for r in rows):
            text += f"; recovers the new law symbolically on {len(recovered)}" + (f" ({', '.join(recovered)})" if recovered else "")
        if unfit:
            text += (f"; fails the in-regime control (rms > {FITS} noise sd) on {', '.join(unfit)}, so there it failed "
                     "at fitting, not only at discovery")
        overshot = [r["world"] for r in rows if (r["frac_t_gt_half"] or 0) >= PASS and (r["nmse"] or 0) >= 1]
        if overshot and name not in REFERENCE:
            text += (f"; on {', '.join(overshot)} its high t comes with nMSE >= 1: t is clipped at 1, so a prediction "
                     "that moves past the new law away from the old one (a flat extrapolation, say) counts as t = 1")
        if zero_start:
            text += (f"; with no anomaly at all its median t is already > 0.5 on {', '.join(zero_start)} (the new theory "
                     "is not identifiable there: that is its inductive bias, not evidence)")
        lines.append(text + ".")
    for world in worlds:
        rows = [r for r in runs if r["world"] == world and r["learner_name"] not in REFERENCE]
        if rows:
            best = max(rows, key=lambda r: (r["frac_t_gt_half"] or 0, -(r["nmse"] if r["nmse"] is not None else math.inf)))
            lines.append(f"- {world}: the best non-reference learner is {best['learner']} (frac t>0.5 "
                         f"{_cell(best, 'frac_t_gt_half')}, nMSE {_cell(best, 'nmse')}).")
    return lines


def write_report(metrics: dict, run_dir: Path) -> None:
    from framework.einstein.plots import plot_world

    runs = metrics["runs"]
    lines = [f"# Einstein test: {metrics['experiment']}", ""]
    if runs:
        r0 = runs[0]
        lines += [f"{r0['n_instances']} instances per (world, learner), seed {metrics.get('seed', '?')}; scores are "
                  "mean ± standard error over instances. t: theory preference on the probes (0 = the old law, "
                  "1 = the new); nMSE against the new law on the probes; in-regime fit: rms error on fresh "
                  "training-regime points in noise sds (the control); recovered: SRBench symbolic recovery "
                  "(– for learners without a formula).", ""]
    header = "| world | learner | " + " | ".join(label for _, label in COLUMNS) + " | anomaly curve (median t) |"
    lines += [header, "|" + "---|" * (len(COLUMNS) + 3)]
    for r in runs:
        lines.append(f"| {r['world']} | {r['learner']} | " + " | ".join(_cell(r, k) for k, _ in COLUMNS)
                     + f" | {_curve(r)} |")
    lines += ["", "Anomaly curve: median t after " + ", ".join(
        f"{r['world']} {r['anomaly_counts']}" for r in {r["world"]: r for r in runs}.values()) + " anomaly points.", "",
        "## Reading", "", *reading(runs), ""]
    pairs = Path(run_dir) / "pairs"
    for world in dict.fromkeys(r["world"] for r in runs):
        results = []
        for r in runs:
            path = pairs / f"{r['world']}__{r['learner']}.json"
            if r["world"] == world and path.exists():
                result = json.loads(path.read_text())["result"]
                results.append({**result, "learner": r["learner"]})
        if results:
            plot_world(results, Path(run_dir) / f"einstein_{world}.png")
            lines += [f"## {results[0]['title']} ({world})", "", f"![{world}](einstein_{world}.png)", ""]
    write_text(Path(run_dir) / "einstein_report.md", "\n".join(lines))
    write_text(Path(run_dir) / "report.md", f"# {metrics['experiment']}\n\nThe Einstein-test report is "
               "[einstein_report.md](einstein_report.md): the world x learner table, a reading of it, and per world "
               "the probes against both laws and every learner, with the anomaly curves.\n")
