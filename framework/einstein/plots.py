"""One figure per world: the probes of one instance against both laws and every learner, and the
anomaly curves (t against the number of anomaly points given) of every learner, with stderr bars.
Matplotlib's object API only (``Figure``, Agg canvas), so it runs headless and thread-safely.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


def _positive_span(values) -> bool:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    return bool(len(v) and np.all(v > 0) and v.max() / v.min() > 30)


def plot_world(results: list[dict], path: str | Path | None = None, instance: int = 0) -> Figure:
    """``results``: protocol results for one world (one per learner). Saves to ``path`` when given."""
    if not results:
        raise ValueError("plot_world needs at least one result")
    worlds = {r["world"] for r in results}
    if len(worlds) != 1:
        raise ValueError(f"plot_world takes results of one world, got {sorted(worlds)}")
    fig = Figure(figsize=(11, 4.2), constrained_layout=True)
    ax_probe, ax_curve = fig.subplots(1, 2)
    first = results[0]["instances"][instance]
    probes = first["probes"]
    x = np.asarray(probes["x"], dtype=float)[:, 0]
    order = np.argsort(x)
    ax_probe.plot(x[order], np.asarray(probes["y_new"], dtype=float)[order], "k-", lw=2, label="new law")
    ax_probe.plot(x[order], np.asarray(probes["y_old"], dtype=float)[order], "--", color="0.5", lw=2, label="old law")
    for r in results:
        y_hat = np.asarray([np.nan if v is None else v for v in r["instances"][instance]["probes"]["y_hat"]], dtype=float)
        ax_probe.plot(x[order], y_hat[order], "o", ms=3.5, alpha=0.8, label=r["learner"])
    if _positive_span(x):
        ax_probe.set_xscale("log")
    if _positive_span(probes["y_new"]) and _positive_span(probes["y_old"]):
        ax_probe.set_yscale("log")
    ax_probe.set_xlabel(f"{first['variables'][0]} (probe input; other inputs vary)")
    ax_probe.set_ylabel(first["output"])
    ax_probe.set_title(f"probes, instance seed {first['seed']}")
    ax_probe.legend(fontsize=7)
    for r in results:
        ks = [c["n_anomalies"] for c in r["anomaly_curve"]]
        mean = np.array([np.nan if c["t_mean"]["mean"] is None else c["t_mean"]["mean"] for c in r["anomaly_curve"]])
        err = np.array([0.0 if c["t_mean"]["stderr"] is None else c["t_mean"]["stderr"] for c in r["anomaly_curve"]])
        ax_curve.errorbar(ks, mean, yerr=err, marker="o", ms=4, capsize=3, label=r["learner"])
    ax_curve.set_ylim(-0.05, 1.05)
    ax_curve.set_xlabel("anomaly points given")
    ax_curve.set_ylabel("theory preference t (mean over probes)")
    ax_curve.set_title("anomaly curve (mean ± stderr over instances)")
    ax_curve.legend(fontsize=7)
    fig.suptitle(results[0]["title"])
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig
