"""The architecture taxonomy: which inference primitive each architecture realises, read off its scores.

The talk behind Aggarwal, Dalal & Misra (arXiv 2512.22471) sorts Bayesian inference in context into
three primitives, each isolated by a wind tunnel:

* accumulation: adding up evidence over the context (bijection elimination, task identification);
* transport: pushing a belief through known dynamics (HMM filtering);
* binding: random-access retrieval of what was stored with a key (associative recall).

An architecture realises a primitive when it solves every task that tests it: KL to Bayes at most
``max_kl_bits``, or, for tasks scored by accuracy, accuracy at least ``min_accuracy``. Nothing here
is decided in advance; the verdicts are computed from the run's held-out scores.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

from framework.errors import require


@dataclass
class TaxonomyConfig:
    # primitive -> the task keys that test it, e.g. {binding: [recall]}
    primitives: Dict[str, List[str]] = field(default_factory=dict)
    max_kl_bits: float = 0.1  # a task scored in bits is solved at or below this KL (bits per position)
    min_accuracy: float = 0.9  # a task scored by accuracy is solved at or above this share of the Bayes accuracy
    by_accuracy: List[str] = field(default_factory=list)  # task keys scored by accuracy (recall)

    def __post_init__(self) -> None:
        require(self.max_kl_bits > 0, "max_kl_bits", f"must be > 0, got {self.max_kl_bits}")
        require(0 < self.min_accuracy <= 1, "min_accuracy", f"must be in (0, 1], got {self.min_accuracy}")


def solved(run: dict, settings: TaxonomyConfig) -> bool:
    if run["task_key"] in settings.by_accuracy:
        # against the Bayes-optimal guess's accuracy, the ceiling (below 1 when some answers are uncertain)
        return run["accuracy"] >= settings.min_accuracy * run.get("bayes_accuracy", 1.0)
    return run["kl_bits"] <= settings.max_kl_bits


def classify(runs: list[dict], settings: TaxonomyConfig) -> dict:
    """Per model: the tasks it solves and the primitives it realises (all of their tasks solved)."""
    by_model: dict[str, dict[str, dict]] = {}
    for run in runs:
        by_model.setdefault(run["model_key"], {})[run["task_key"]] = run
    verdicts = {}
    for model_key, tasks in by_model.items():
        solved_tasks = {task_key: solved(run, settings) for task_key, run in tasks.items()}
        # a primitive is judged on the tasks of this run that test it; with none of them, it is untested
        tested = {p: [k for k in keys if k in solved_tasks] for p, keys in settings.primitives.items()}
        realised = [p for p, keys in tested.items() if keys and all(solved_tasks[k] for k in keys)]
        verdicts[model_key] = {"solved": solved_tasks, "primitives": realised,
                               "untested": [p for p, keys in tested.items() if not keys]}
    return {"criteria": {"max_kl_bits": settings.max_kl_bits, "min_accuracy": settings.min_accuracy,
                         "by_accuracy": list(settings.by_accuracy), "primitives": dict(settings.primitives)},
            "models": verdicts}
