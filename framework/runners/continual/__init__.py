"""The continual runner: a stream of wind-tunnel experiences x a strategy (+ plasticity plugins) x
models, on Avalanche, scored in exact bits (SPEC §4; framework.continual is the library).

    plan     the stream, strategy, plugins and models built and checked (plan.py)
    run      per model: the fresh baseline, then the stream, checkpointed every checkpoint_every steps
             inside an experience and after every experience; resumed at the step (jobs.py)
    report   report.md, a heatmap of R per job, plasticity and feature statistics along the stream (report.py)

A run entry of ``metrics.json`` carries ``stream``, ``strategy``, ``plugins``, ``model``, ``matrix``
(R, kl_bits), ``acc_bits``, ``bwt_bits``, ``fwt_bits``, ``forgetting_bits`` (Chaudhry's) and
``forgetting_first_last_bits`` (Avalanche's), ``plasticity`` (R[j][j] / F_j per experience), the
feature statistics per experience (``features``) and the sign convention (``sign``).
The leaderboard (framework.runners.continual.leaderboard) aggregates a sweep of such runs.
"""
from __future__ import annotations

from pathlib import Path

from framework.runners.base import Runner, register_runner
from framework.runners.continual.config import BudgetConfig, ContinualConfig

# The plan and the jobs import Avalanche (about 7 s); every `windtunnel` command imports this module
# to register the runner, so they are imported when a continual run needs them, not before.

METRICS = {"acc_bits": "lower", "bwt_bits": "lower", "fwt_bits": "lower", "forgetting_bits": "lower",
           "forgetting_first_last_bits": "lower", "plasticity_ratio_mean": "lower", "late_plasticity_ratio": "lower"}


@register_runner
class ContinualRunner(Runner):
    name = "continual"
    config = ContinualConfig
    metrics = METRICS
    labels = ("stream", "strategy", "plugins", "model")

    def plan(self, settings: ContinualConfig) -> "ContinualPlan":
        from framework.runners.continual.plan import resolve

        return resolve(settings)

    def check_resume(self, plan: "ContinualPlan", run_dir: Path) -> None:
        from framework.runners.continual.jobs import check_resumable

        check_resumable(plan, Path(run_dir))

    def run(self, plan: "ContinualPlan", run_dir: Path) -> dict:
        from framework.runners.continual.jobs import run_plan

        return run_plan(plan, Path(run_dir))

    def report(self, metrics: dict, run_dir: Path) -> None:
        from framework.runners.continual.report import write_report  # matplotlib only when plotting

        write_report(metrics, Path(run_dir))

    def summary(self, entry: dict) -> str:
        def f(x):
            return "n/a" if x is None else f"{x:.4g}"

        return (f"{entry['stream']:>15} {entry['method']:>18} {entry['model']:>12}  acc_bits={f(entry['acc_bits'])}  "
                f"bwt_bits={f(entry['bwt_bits'])}  fwt_bits={f(entry['fwt_bits'])}  "
                f"plasticity={f(entry['plasticity_ratio_mean'])}")


__all__ = ["BudgetConfig", "ContinualConfig", "ContinualRunner"]
