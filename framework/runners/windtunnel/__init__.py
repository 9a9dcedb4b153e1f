"""The wind-tunnel runner: train and score every (task, model) job of an experiment (SPEC §3).

    plan     every task and model built and capacity-matched, every extra checked (plan.py)
    run      each job trained, scored on fresh held-out sequences, and optionally probed (jobs.py)
    report   report.md with the table, a reading of it, and the calibration plots (report.py)

Each entry of ``metrics.json``'s ``runs`` is one job: ``task_key``, ``model_key``, ``params``,
``steps``, ``kl_bits``, ``entropy_mae_bits``, ``accuracy`` (each with its stderr), ``per_position``,
``history`` and the configs, plus ``evaluate_at`` / ``matrix`` / ``probes`` when asked for.
"""
from __future__ import annotations

from pathlib import Path

from framework.runners.base import Runner, register_runner
from framework.runners.windtunnel.config import WindTunnelConfig
from framework.runners.windtunnel.jobs import check_resumable, run_plan
from framework.runners.windtunnel.plan import Job, WindTunnelPlan, resolve


@register_runner
class WindTunnelRunner(Runner):
    name = "windtunnel"
    config = WindTunnelConfig
    metrics = {"kl_bits": "lower", "entropy_mae_bits": "lower", "accuracy": "higher"}
    labels = ("task_key", "model_key")
    hints = {**{f"train.{name}": f"it is a run-wide setting now: runtime.{name}"
                for name in ("device", "threads", "deterministic", "progress")},
             "checkpoint": "a saved job is probed by the probe runner: experiment=probe/<name> checkpoint=<job folder>"}

    def plan(self, settings: WindTunnelConfig) -> WindTunnelPlan:
        return resolve(settings)

    def check_resume(self, plan: WindTunnelPlan, run_dir: Path) -> None:
        check_resumable(plan, run_dir)

    def run(self, plan: WindTunnelPlan, run_dir: Path) -> dict:
        return run_plan(plan, Path(run_dir))

    def report(self, metrics: dict, run_dir: Path) -> None:
        from framework.runners.windtunnel.report import write_report  # matplotlib only when plotting

        write_report(metrics, Path(run_dir))

    def summary(self, entry: dict) -> str:
        return (f"{entry['task_key']:>12} {entry['model_key']:>12}  params={entry['params']:>9,}  "
                f"entropy_mae_bits={entry['entropy_mae_bits']:.4g}  kl_bits={entry['kl_bits']:.4g}")


__all__ = ["Job", "WindTunnelConfig", "WindTunnelPlan", "WindTunnelRunner", "resolve"]
