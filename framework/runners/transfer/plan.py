"""The transfer plan: every task, model and phase built and checked before any compute.

One model reads every task of a run, so it is built for the largest vocabulary, class count and
length among them, and each task is presented at that size by :class:`PaddedTask` (zero-probability
classes appended to the exact posterior; tokens unchanged). Capacity matching happens at that size.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Dict, List

from framework.config import container, registered
from framework.errors import ConfigError
from framework.models import MODELS, ModelConfig, build_model
from framework.models.capacity import matched, size_reference
from framework.runners.transfer.config import TransferConfig
from framework.tasks import TASKS, Task, TaskConfig, build_task
from framework.tasks.padded import PaddedTask
from framework.training.config import TrainConfig

log = logging.getLogger(__name__)

PHASE_KEYS = ("task", "train")


@dataclass
class Phase:
    index: int
    task_key: str
    train: TrainConfig

    @property
    def name(self) -> str:
        return f"phase{self.index}_{self.task_key}"


@dataclass
class TransferPlan:
    settings: TransferConfig
    task_configs: Dict[str, TaskConfig]
    tasks: Dict[str, Task]  # padded to the shared sizes
    models: Dict[str, ModelConfig]  # capacity-matched
    phases: Dict[str, List[Phase]]  # model key -> its phases (train_by applied)
    sizes: tuple[int, int, int]  # vocab_size, n_classes, seq_len every model is built for

    def build_model(self, key: str):
        return build_model(self.models[key], *self.sizes)


def _delta(train: TrainConfig, delta, path: str) -> TrainConfig:
    if not isinstance(delta, Mapping):
        raise ConfigError(path, f"must be a mapping of train settings, got {delta!r}")
    known = list(asdict(train))
    for name in delta:
        if name not in known:
            raise ConfigError(f"{path}.{name}", f"not a train setting; settings: {', '.join(known)}")
    try:
        return replace(train, **delta)
    except ConfigError as err:
        raise err.under(path) from None


def _for_model(settings: TransferConfig, model_key: str, phase: Phase) -> Phase:
    """The phase with the ``train_by`` deltas of this model, then of this model's phase."""
    train = phase.train
    for key in (model_key, f"{model_key}_phase{phase.index}"):
        if key in settings.train_by:
            train = _delta(train, container(settings.train_by[key]) or {}, f"train_by.{key}")
    if settings.curve_every:
        train = replace(train, snapshot_every=settings.curve_every)
    return Phase(phase.index, phase.task_key, train)


def _phase(settings: TransferConfig, index: int, node) -> Phase:
    path = f"phases[{index}]"
    node = container(node)
    if not isinstance(node, Mapping):
        raise ConfigError(path, f"must be a mapping {{task: <task key>, train: {{...}}}}, got {node!r}")
    for key in node:
        if key not in PHASE_KEYS:
            raise ConfigError(f"{path}.{key}", f"not a phase setting; settings: {', '.join(PHASE_KEYS)}")
    task_key = node.get("task")
    if task_key not in settings.tasks:
        raise ConfigError(f"{path}.task", f"names no task of this run ({task_key!r}); tasks: "
                                          f"{', '.join(settings.tasks) or 'none'}")
    return Phase(index, str(task_key), _delta(settings.train, node.get("train") or {}, f"{path}.train"))


def _matched(settings: TransferConfig, sizes: tuple[int, int, int]) -> Dict[str, ModelConfig]:
    configs = {key: registered(MODELS, node, f"models.{key}", "model") for key, node in settings.models.items()}
    return matched(configs, size_reference(configs, settings.match_to), *sizes)


def resolve(settings: TransferConfig) -> TransferPlan:
    """Every task, model and phase of ``settings``, validated and sized; raises ConfigError before compute."""
    if not settings.tasks:
        raise ConfigError("tasks", "no task selected; add the tasks the phases train on (tasks.<key>: ...)")
    if not settings.models:
        raise ConfigError("models", "no model selected; add one (+model@models.transformer=transformer)")
    if len(settings.phases) < 2:
        raise ConfigError("phases", f"needs at least two phases (train, then continue on another task) to measure "
                                    f"forgetting and transfer; got {len(settings.phases)}")
    if settings.curve_every < 0:
        raise ConfigError("curve_every", f"must be >= 0 (0: score only after each phase), got {settings.curve_every}")
    task_configs, raw = {}, {}
    for key, node in settings.tasks.items():
        task_configs[key] = registered(TASKS, node, f"tasks.{key}", "task")
        try:
            raw[key] = build_task(task_configs[key])
        except ConfigError as err:
            raise err.under(f"tasks.{key}") from None
    phases = [_phase(settings, i, node) for i, node in enumerate(settings.phases)]
    names = {*settings.models, *(f"{m}_phase{p.index}" for m in settings.models for p in phases)}
    for key in settings.train_by:
        if key not in names:
            # As in the wind-tunnel runner: removing a model (`~models.mamba`) leaves the experiment's
            # deltas for it behind, and they should not block the run. Said loudly, so a typo is seen.
            log.warning("train_by.%s matches no model or <model>_phase<i> of this run (%s); ignored",
                        key, ", ".join(sorted(names)))
    per_model = {m: [_for_model(settings, m, p) for p in phases] for m in settings.models}
    unused = sorted(set(settings.tasks) - {p.task_key for p in phases})
    if unused:
        log.info("tasks %s are trained in no phase; they are scored after every phase", ", ".join(unused))
    sizes = (max(t.vocab_size for t in raw.values()), max(t.n_classes for t in raw.values()),
             max(t.seq_len for t in raw.values()))
    tasks = {key: PaddedTask(task, sizes[0], sizes[1]) for key, task in raw.items()}
    return TransferPlan(settings, task_configs, tasks, _matched(settings, sizes), per_model, sizes)
