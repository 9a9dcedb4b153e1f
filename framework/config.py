"""Hydra schemas and the validation of a composed config into typed, checked objects.

Every config group is backed by a dataclass in the ConfigStore, so a misspelt key or a wrong type
fails at compose time. Ranges and cross-field rules live in each dataclass's ``__post_init__``;
:func:`resolve_plan` builds every one of them (and every model, by size) before any training, so an
impossible setting stops the run with a one-line :class:`ConfigError` that names the field.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from framework.errors import ConfigError
from framework.registry import config_from
from framework.models import MODELS, ModelConfig, build_model, count_params, match_params
from framework.models.transformer import TransformerConfig
from framework.tasks import TASKS, Task, TaskConfig, build_task
from framework.taxonomy import TaxonomyConfig
from framework.training.config import TrainConfig

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
log = logging.getLogger(__name__)


@dataclass
class RunConfig:
    experiment: str = "default"
    seed: int = 0
    resume: bool = False  # continue from the checkpoints in hydra.run.dir
    tasks: Dict[str, Any] = field(default_factory=dict)  # key -> a task config (group task/)
    models: Dict[str, Any] = field(default_factory=dict)  # key -> a model config (group model/)
    train: TrainConfig = field(default_factory=TrainConfig)
    # Deltas on `train` for some jobs, keyed by a task key, a model key or a job name
    # (`<task>_<model>`), applied in that order: {hmm: {steps: 3000}, hmm_mamba: {batch_size: 64}}.
    train_by: Dict[str, Any] = field(default_factory=dict)
    report: bool = True  # write report.md and the calibration plots
    # Extra held-out evaluations of a trained task under changed settings, keyed by task key and a
    # name: {hmm: {K50: {K: 50}}} scores the K=20-trained models on K=50 (length generalisation).
    evaluate_at: Dict[str, Any] = field(default_factory=dict)
    matrix: List[str] = field(default_factory=list)  # task keys scored on every prompt (small tasks only)
    probes: List[str] = field(default_factory=list)  # probes run on each trained model that has the parts
    probe_options: Dict[str, Any] = field(default_factory=dict)  # probe name -> its keyword options
    # Which inference primitive each architecture realises, from the scores (experiment=taxonomy).
    # (Not Optional[...] = None: OmegaConf cannot merge a mapping into a None-valued dataclass field.)
    taxonomy: TaxonomyConfig = field(default_factory=TaxonomyConfig)
    # Probe mode: score this trained job (its checkpoint.pt, or the job folder) instead of training.
    checkpoint: Optional[str] = None


# Settings that never change a result: left out of the config hash that names a sweep job's folder.
RESULT_NEUTRAL = {"hydra", "resume"}
RESULT_NEUTRAL_TRAIN = {"progress"}


def config_hash(cfg: Any) -> str:
    """A short, stable hash of the settings that decide a run's results (``${config_hash:}`` in configs)."""
    data = {key: OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]
            for key in cfg if key not in RESULT_NEUTRAL}
    if isinstance(data.get("train"), dict):
        data["train"] = {k: v for k, v in data["train"].items() if k not in RESULT_NEUTRAL_TRAIN}
    return digest(data)


def digest(data: Any, length: int = 12) -> str:
    """A short, stable hash of JSON-able settings (key order does not matter)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:length]


def register_schemas() -> None:
    if not OmegaConf.has_resolver("config_hash"):
        OmegaConf.register_new_resolver("config_hash", lambda *, _root_: config_hash(_root_))
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    cs.store(group="train", name="train_schema", node=TrainConfig)
    for name, (config_cls, _) in TASKS.items():
        cs.store(group="task", name=f"{name}_schema", node=config_cls)
    for name, (config_cls, _) in MODELS.items():
        cs.store(group="model", name=f"{name}_schema", node=config_cls)


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

    def build_model(self, max_len: int | None = None):
        """The model, sized for the training length (or ``max_len``, to score longer variants)."""
        return build_model(self.model_config, self.task.vocab_size, self.task.n_classes, max_len or self.task.seq_len)


def derive_seed(*parts: Any) -> int:
    """A stable seed from any parts (Python's hash() differs between processes)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _to_object(node: Any, path: str, registry: dict, kind: str):
    """A config node -> its registered dataclass, checked by the dataclass itself; errors carry ``path``."""
    try:
        obj = OmegaConf.to_object(node) if OmegaConf.is_config(node) else node
        return config_from(registry, obj, kind)
    except ConfigError as err:
        raise err.under(path) from None
    except OmegaConfBaseException as err:
        raise ConfigError(path, str(err).splitlines()[0]) from None


def _train_for(cfg: DictConfig, task_key: str, model_key: str) -> TrainConfig:
    """``train`` with the ``train_by`` deltas for this task, then this model, then this job."""
    values = OmegaConf.to_container(cfg.train, resolve=True)
    source = "train"
    for key in (task_key, model_key, f"{task_key}_{model_key}"):
        delta = cfg.train_by.get(key)
        if delta is None:
            continue
        delta = OmegaConf.to_container(delta, resolve=True) if OmegaConf.is_config(delta) else delta
        if not isinstance(delta, dict):
            raise ConfigError(f"train_by.{key}", f"must be a mapping of train settings, got {delta!r}")
        for name in delta:
            if name not in values:
                raise ConfigError(f"train_by.{key}.{name}", f"not a train setting; settings: {', '.join(values)}")
        values.update(delta)
        source = f"train_by.{key}"
    try:
        return TrainConfig(**values)
    except ConfigError as err:
        raise err.under(source) from None


def _variants(cfg: DictConfig, task_key: str, task_config: TaskConfig, task: Task) -> Dict[str, Task]:
    """The ``evaluate_at`` variants of one task, each checked to share its vocabulary and classes."""
    variants = {}
    for name, delta in (cfg.evaluate_at.get(task_key) or {}).items():
        path = f"evaluate_at.{task_key}.{name}"
        delta = OmegaConf.to_container(delta, resolve=True) if OmegaConf.is_config(delta) else delta
        if not isinstance(delta, dict):
            raise ConfigError(path, f"must be a mapping of task settings, got {delta!r}")
        if "name" in delta:
            raise ConfigError(f"{path}.name", "a variant changes settings of the trained task, not the task itself")
        variant_config = _to_object({**asdict(task_config), **delta}, path, TASKS, "task")
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


def _check_extras(cfg: DictConfig) -> None:
    """evaluate_at, matrix and probes name tasks and probes that exist."""
    # As with train_by: removing a task (`~tasks.bijection`) leaves its extras behind; said, not fatal.
    for key in [*cfg.evaluate_at, *cfg.matrix]:
        if key not in cfg.tasks:
            log.warning("evaluate_at / matrix name task '%s', which this run does not have (tasks: %s); ignored",
                        key, ", ".join(cfg.tasks))
    try:
        TaxonomyConfig(**OmegaConf.to_container(cfg.taxonomy, resolve=True))
    except ConfigError as err:
        raise err.under("taxonomy") from None
    if cfg.taxonomy.primitives:
        named = [*cfg.taxonomy.by_accuracy, *(k for keys in cfg.taxonomy.primitives.values() for k in keys)]
        for key in sorted(set(named) - set(cfg.tasks)):
            # As with train_by: removing a task (`~tasks.hmm`) leaves the primitive it tests untested.
            log.warning("taxonomy names task '%s', which this run does not have (tasks: %s); the primitives it "
                        "tests are judged on the remaining tasks", key, ", ".join(cfg.tasks))
    if cfg.probes or cfg.probe_options:
        from framework.probes import PROBES, ProbeError
        from framework.probes.base import merge_options

        for name in [*cfg.probes, *cfg.probe_options]:
            if name not in PROBES:
                raise ConfigError("probes", f"no probe '{name}'; probes: {', '.join(PROBES)}")
        options = OmegaConf.to_container(cfg.probe_options, resolve=True)
        for name in cfg.probes:
            try:
                merge_options(PROBES[name], options.get(name))
            except ProbeError as err:
                raise ConfigError(f"probe_options.{name}", str(err)) from None


def _check_snapshots(job: "Job") -> None:
    """The dynamics probe compares weight snapshots: this job must write at least two."""
    every = job.train.snapshot_every
    if "dynamics" not in job.probes:
        return
    written = 0 if not every else job.train.steps // every + (job.train.steps % every > 0)  # and the last step
    if written < 2:
        raise ConfigError("train.snapshot_every", f"the dynamics probe compares weight snapshots, and job {job.name} "
                          f"({job.train.steps} steps, snapshot_every={every}) would write {written}; set "
                          "train.snapshot_every to at most half the steps (e.g. the eval_every value)")


def resolve_plan(cfg: DictConfig) -> list[Job]:
    """Every (task, model) job of the config, validated and sized; raises ConfigError before compute.

    In probe mode (``checkpoint`` set) there is nothing to train and the plan is empty.
    """
    known = {f.name for f in fields(RunConfig)} | {"hydra"}
    for key in cfg:
        if key not in known:
            raise ConfigError(str(key), f"not a setting; settings: {', '.join(sorted(known - {'hydra'}))}")
    _check_extras(cfg)
    if cfg.probes and not cfg.tasks and not cfg.checkpoint:
        raise ConfigError("checkpoint", "this experiment probes a trained model; give checkpoint=<job folder or "
                                        "its checkpoint.pt>, e.g. checkpoint=runs/demo/bijection_transformer")
    if cfg.checkpoint:
        if not cfg.probes:
            raise ConfigError("probes", "a checkpoint is scored by probes; pick one (experiment=probe/<name>)")
        from framework.probing import check_checkpoint  # it builds models through this module's imports

        check_checkpoint(cfg)
        return []
    if not cfg.tasks:
        raise ConfigError("tasks", "no task selected; pick an experiment (experiment=smoke) or add one")
    if not cfg.models:
        raise ConfigError("models", "no model selected; pick an experiment (experiment=smoke) or add one")
    job_keys = {*cfg.tasks, *cfg.models, *(f"{t}_{m}" for t in cfg.tasks for m in cfg.models)}
    for key in cfg.train_by:
        if key not in job_keys:
            # Not an error: removing a task or model (`~models.mlp`) leaves the experiment's deltas for
            # it behind, and they should not block the run. Said loudly, so a misspelt key is seen.
            log.warning("train_by.%s matches no task, model or job of this run (%s); ignored",
                        key, ", ".join(sorted(job_keys)))
    model_configs = {key: _to_object(node, f"models.{key}", MODELS, "model") for key, node in cfg.models.items()}
    reference = next((m for m in model_configs.values() if m.name == "transformer"), TransformerConfig())
    jobs = []
    for task_key, node in cfg.tasks.items():
        task_config = _to_object(node, f"tasks.{task_key}", TASKS, "task")
        try:
            task = build_task(task_config)
        except ConfigError as err:
            raise err.under(f"tasks.{task_key}") from None
        variants = _variants(cfg, task_key, task_config, task)
        if task_key in cfg.matrix:
            try:
                task.all_sequences()
            except ValueError as err:
                raise ConfigError("matrix", f"task '{task_key}': {err}") from None
        sizes = (task.vocab_size, task.n_classes, task.seq_len)
        target = count_params(build_model(reference, *sizes))
        for model_key, model_config in model_configs.items():
            if model_config.match_params:
                try:
                    model_config = match_params(model_config, target, *sizes)
                except ConfigError as err:
                    raise err.under(f"models.{model_key}") from None
            jobs.append(Job(task_key, model_key, task_config, model_config, _train_for(cfg, task_key, model_key), task,
                            variants, task_key in cfg.matrix, list(cfg.probes)))
            _check_snapshots(jobs[-1])
    return jobs
