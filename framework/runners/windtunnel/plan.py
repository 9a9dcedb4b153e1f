"""The wind-tunnel plan: every (task, model) job of a config, validated and sized before any compute.

Every task and model is built (each model by size, for capacity matching) here, so an impossible
setting stops the run with a one-line ConfigError that names the field before anything trains.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from typing import Dict, List

from framework.config import registered
from framework.errors import ConfigError
from framework.models import MODELS, ModelConfig, build_model
from framework.models.capacity import matched, size_reference
from framework.probes.running import check_request, snapshots_needed
from framework.runners.windtunnel.config import WindTunnelConfig
from framework.tasks import TASKS, Task, TaskConfig, build_task
from framework.training.config import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One (task, model) pair to train and score, fully validated."""

    task_key: str
    model_key: str
    task_config: TaskConfig
    model_config: ModelConfig
    train: TrainConfig
    task: Task
    variants: Dict[str, Task] = field(default_factory=dict)  # evaluate_at: name -> the changed task
    matrix: bool = False
    probes: List[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.task_key}_{self.model_key}"

    def build_model(self):
        """The model, sized for the task's training length."""
        return build_model(self.model_config, self.task.vocab_size, self.task.n_classes, self.task.seq_len)


@dataclass
class WindTunnelPlan:
    settings: WindTunnelConfig
    jobs: List[Job]


def _train_for(settings: WindTunnelConfig, task_key: str, model_key: str) -> TrainConfig:
    """``train`` with the ``train_by`` deltas for this task, then this model, then this job."""
    train, source = settings.train, "train"
    for key in (task_key, model_key, f"{task_key}_{model_key}"):
        delta = settings.train_by.get(key)
        if delta is None:
            continue
        if not isinstance(delta, dict):
            raise ConfigError(f"train_by.{key}", f"must be a mapping of train settings, got {delta!r}")
        known = list(asdict(train))
        for name in delta:
            if name not in known:
                raise ConfigError(f"train_by.{key}.{name}", f"not a train setting; settings: {', '.join(known)}")
        source = f"train_by.{key}"
        try:
            train = replace(train, **delta)
        except ConfigError as err:
            raise err.under(source) from None
    return train


def _variants(settings: WindTunnelConfig, task_key: str, task_config: TaskConfig, task: Task) -> Dict[str, Task]:
    """The ``evaluate_at`` variants of one task, each checked to share its vocabulary and classes."""
    variants = {}
    deltas = settings.evaluate_at.get(task_key) or {}
    if not isinstance(deltas, dict):
        raise ConfigError(f"evaluate_at.{task_key}", f"must map variant names to task settings, got {deltas!r}")
    for name, delta in deltas.items():
        path = f"evaluate_at.{task_key}.{name}"
        if not isinstance(delta, dict):
            raise ConfigError(path, f"must be a mapping of task settings, got {delta!r}")
        if "name" in delta:
            raise ConfigError(f"{path}.name", "a variant changes settings of the trained task, not the task itself")
        variant_config = registered(TASKS, {**asdict(task_config), **delta}, path, "task")
        try:
            variant = build_task(variant_config)
        except ConfigError as err:
            raise err.under(path) from None
        if (variant.vocab_size, variant.n_classes) != (task.vocab_size, task.n_classes):
            raise ConfigError(path, f"changes the vocabulary or classes ({variant.vocab_size} tokens, "
                                    f"{variant.n_classes} classes vs {task.vocab_size}, {task.n_classes}); "
                                    "a trained model cannot be scored on it")
        variants[name] = variant
    return variants


def _check_extras(settings: WindTunnelConfig) -> None:
    """evaluate_at, matrix, taxonomy and probes name tasks and probes that exist."""
    # As with train_by: removing a task (`~tasks.bijection`) leaves its extras behind; said, not fatal.
    for key in [*settings.evaluate_at, *settings.matrix]:
        if key not in settings.tasks:
            log.warning("evaluate_at / matrix name task '%s', which this run does not have (tasks: %s); ignored",
                        key, ", ".join(settings.tasks))
    taxonomy = settings.taxonomy
    if taxonomy.primitives:
        named = [*taxonomy.by_accuracy, *(k for keys in taxonomy.primitives.values() for k in keys)]
        for key in sorted(set(named) - set(settings.tasks)):
            # As with train_by: removing a task (`~tasks.hmm`) leaves the primitive it tests untested.
            log.warning("taxonomy names task '%s', which this run does not have (tasks: %s); the primitives it "
                        "tests are judged on the remaining tasks", key, ", ".join(settings.tasks))
    check_request(settings.probes, settings.probe_options)


def _check_snapshots(job: Job) -> None:
    """Probes that compare weight snapshots (their declaration says how many) need this job to write them."""
    needed = snapshots_needed(job.probes)
    every = job.train.snapshot_every
    written = 0 if not every else job.train.steps // every + (job.train.steps % every > 0)  # and the last step
    if written < needed:
        raise ConfigError("train.snapshot_every", f"probes {', '.join(job.probes)} compare {needed} weight snapshots, "
                          f"and job {job.name} ({job.train.steps} steps, snapshot_every={every}) would write "
                          f"{written}; set train.snapshot_every to at most half the steps (e.g. the eval_every value)")


def resolve(settings: WindTunnelConfig) -> WindTunnelPlan:
    """Every (task, model) job of ``settings``, validated and sized; raises ConfigError before compute."""
    _check_extras(settings)
    if not settings.tasks:
        raise ConfigError("tasks", "no task selected; pick an experiment (experiment=smoke) or add one")
    if not settings.models:
        raise ConfigError("models", "no model selected; pick an experiment (experiment=smoke) or add one")
    job_keys = {*settings.tasks, *settings.models, *(f"{t}_{m}" for t in settings.tasks for m in settings.models)}
    for key in settings.train_by:
        if key not in job_keys:
            # Not an error: removing a task or model (`~models.mlp`) leaves the experiment's deltas for
            # it behind, and they should not block the run. Said loudly, so a misspelt key is seen.
            log.warning("train_by.%s matches no task, model or job of this run (%s); ignored",
                        key, ", ".join(sorted(job_keys)))
    model_configs = {key: registered(MODELS, node, f"models.{key}", "model") for key, node in settings.models.items()}
    reference = size_reference(model_configs, settings.match_to)
    jobs = []
    for task_key, node in settings.tasks.items():
        task_config = registered(TASKS, node, f"tasks.{task_key}", "task")
        try:
            task = build_task(task_config)
        except ConfigError as err:
            raise err.under(f"tasks.{task_key}") from None
        variants = _variants(settings, task_key, task_config, task)
        if task_key in settings.matrix:
            try:
                task.all_sequences()
            except ValueError as err:
                raise ConfigError("matrix", f"task '{task_key}': {err}") from None
        at_task = matched(model_configs, reference, task.vocab_size, task.n_classes, task.seq_len)
        for model_key, model_config in at_task.items():
            jobs.append(Job(task_key, model_key, task_config, model_config, _train_for(settings, task_key, model_key),
                            task, variants, task_key in settings.matrix, list(settings.probes)))
            _check_snapshots(jobs[-1])
    return WindTunnelPlan(settings, jobs)
