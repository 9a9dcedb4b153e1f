"""Wind-tunnel tasks, registered by name: ``build_task(config)`` turns a task config into a sampler."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from framework.registry import config_from
from framework.tasks.base import Batch, Task, TaskConfig
from framework.tasks.bijection import BijectionConfig, BijectionTask
from framework.tasks.causal_mechanisms import CausalMechanismsConfig, CausalMechanismsTask
from framework.tasks.causal_samples import CausalSamplesConfig, CausalSamplesTask
from framework.tasks.hmm import HMMConfig, HMMTask
from framework.tasks.program import ProgramConfig, ProgramTask
from framework.tasks.recall import RecallConfig, RecallTask
from framework.tasks.regression_context import RegressionContextConfig, RegressionContextTask
from framework.tasks.taskid import TaskIDConfig, TaskIDTask

TASKS: dict[str, tuple[type[TaskConfig], type[Task]]] = {
    "bijection": (BijectionConfig, BijectionTask),
    "hmm": (HMMConfig, HMMTask),
    "program": (ProgramConfig, ProgramTask),
    "recall": (RecallConfig, RecallTask),
    "regression_context": (RegressionContextConfig, RegressionContextTask),
    "taskid": (TaskIDConfig, TaskIDTask),
    "causal_mechanisms": (CausalMechanismsConfig, CausalMechanismsTask),
    "causal_samples": (CausalSamplesConfig, CausalSamplesTask),
}


def build_task(config: TaskConfig | Mapping[str, Any]) -> Task:
    """A task from its config: a config dataclass, or a mapping (dict, Hydra DictConfig) with ``name``."""
    config = config_from(TASKS, config, "task")
    return TASKS[config.name][1](config)


__all__ = [
    "TASKS",
    "Batch",
    "BijectionConfig",
    "BijectionTask",
    "CausalMechanismsConfig",
    "CausalMechanismsTask",
    "CausalSamplesConfig",
    "CausalSamplesTask",
    "HMMConfig",
    "HMMTask",
    "ProgramConfig",
    "ProgramTask",
    "RecallConfig",
    "RecallTask",
    "RegressionContextConfig",
    "RegressionContextTask",
    "Task",
    "TaskConfig",
    "TaskIDConfig",
    "TaskIDTask",
    "build_task",
]
