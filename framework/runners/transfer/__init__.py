"""The transfer runner: train each model through a sequence of (task, train settings) phases and score
every phase's task after every phase, in bits against the exact posterior.

    plan     tasks built and padded to one vocabulary and class count, models capacity-matched at that
             size, phases checked (plan.py)
    run      each model through the phases, the matrix R[i][j] = kl_bits on task j after phase i,
             forgetting and transfer (jobs.py, which states the definitions and their signs)
    report   report.md with R per model, forgetting and transfer, and transfer_<model>.png (report.py)

``windtunnel experiment=boundary/modulus_transfer`` trains at p = 17 (CPU size: a smaller prime),
then fine-tunes at the next prime; a model built for the larger modulus reads both (PaddedTask).
The continual-learning package will add strategies; this runner is the plain sequence of phases.
"""
from __future__ import annotations

from pathlib import Path

from framework.runners.base import Runner, register_runner
from framework.runners.transfer.config import TransferConfig
from framework.runners.transfer.jobs import check_resumable, run_plan
from framework.runners.transfer.plan import TransferPlan, resolve


@register_runner
class TransferRunner(Runner):
    name = "transfer"
    config = TransferConfig
    metrics = {"final_kl_bits": "lower", "mean_forgetting_bits": "lower", "mean_transfer_bits": "higher"}
    labels = ("model_key",)

    def plan(self, settings: TransferConfig) -> TransferPlan:
        return resolve(settings)

    def check_resume(self, plan: TransferPlan, run_dir: Path) -> None:
        check_resumable(plan, Path(run_dir))

    def run(self, plan: TransferPlan, run_dir: Path) -> dict:
        return run_plan(plan, Path(run_dir))

    def report(self, metrics: dict, run_dir: Path) -> None:
        from framework.runners.transfer.report import write_report  # matplotlib only when plotting

        write_report(metrics, Path(run_dir))

    def summary(self, entry: dict) -> str:
        R = entry["R_kl_bits"]
        f, t = entry["mean_forgetting_bits"], entry["mean_transfer_bits"]
        return (f"{entry['model_key']:>12}  params={entry['params']:>9,}  final R={[round(x, 4) for x in R[-1]]}  "
                f"forgetting={f if f is None else round(f, 4)}  transfer={t if t is None else round(t, 4)}")


__all__ = ["TransferConfig", "TransferPlan", "TransferRunner", "resolve"]
