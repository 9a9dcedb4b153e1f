"""Wind-tunnel tasks, registered by name: ``build_task(config)`` turns a task config into a sampler."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from framework.errors import ConfigError
from framework.tasks.base import Batch, Task, TaskConfig
from framework.tasks.bijection import BijectionConfig, BijectionTask
from framework.tasks.hmm import HMMConfig, HMMTask

TASKS: dict[str, tuple[type[TaskConfig], type[Task]]] = {
    "bijection": (BijectionConfig, BijectionTask),
    "hmm": (HMMConfig, HMMTask),
}


def build_task(config: TaskConfig | Mapping[str, Any]) -> Task:
    """A task from its config: a config dataclass, or a mapping (dict, Hydra DictConfig) with ``name``.

    A mapping is turned into the registered config class, so its ``__post_init__`` validation runs.
    """
    if isinstance(config, TaskConfig):
        name, values = config.name, dataclasses.asdict(config)
    elif isinstance(config, Mapping):
        name, values = config.get("name", "?"), dict(config)
    else:
        raise TypeError(f"build_task expects a TaskConfig or a mapping, got {type(config).__name__}")
    if name not in TASKS:
        raise ConfigError("name", f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    config_cls, task_cls = TASKS[name]
    if type(config) is not config_cls:
        allowed = {f.name for f in dataclasses.fields(config_cls)}
        for key in values:
            if key not in allowed:
                raise ConfigError(str(key), f"not a field of the {name} task; fields: {', '.join(sorted(allowed))}")
        config = config_cls(**values)
    return task_cls(config)


__all__ = [
    "TASKS",
    "Batch",
    "BijectionConfig",
    "BijectionTask",
    "HMMConfig",
    "HMMTask",
    "Task",
    "TaskConfig",
    "build_task",
]
