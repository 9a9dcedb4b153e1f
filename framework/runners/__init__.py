"""Runners, one per kind of experiment, registered by name (``framework.runners.base``).

    windtunnel   train and score (task, model) jobs (the default)
    probe        geometry probes on a saved job (experiment=probe/<name> checkpoint=...)

A new kind of experiment is a package of its own under ``framework/runners/`` (or anywhere, found
through entry points or ``$WINDTUNNEL_PLUGINS``) that subclasses :class:`Runner` and registers it;
it imports the shared layers (tasks, models, training, metrics, probes, config, errors, io) and
never another runner's package. Every module under this package is imported (and so registered)
with it; nothing here lists them.
"""
from __future__ import annotations

import importlib
import pkgutil

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from framework.config import config_hash
from framework.models import MODELS
from framework.runners.base import RUNNERS, Runner, get_runner, load_plugins, mark_stored, register_runner, store_schema
from framework.tasks import TASKS
from framework.training.config import TrainConfig


def _import_builtin() -> None:
    """Every module and package under framework/runners/ registers its runner when imported."""
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base":
            importlib.import_module(f"{__name__}.{module.name}")


_import_builtin()


def register_schemas() -> None:
    """Store every schema the configs compose against: runners (plugins too), train, tasks, models."""
    load_plugins()
    if not OmegaConf.has_resolver("config_hash"):
        OmegaConf.register_new_resolver("config_hash", lambda *, _root_: config_hash(_root_))
    cs = ConfigStore.instance()
    cs.store(group="train", name="train_schema", node=TrainConfig)
    for name, (config_cls, _) in TASKS.items():
        cs.store(group="task", name=f"{name}_schema", node=config_cls)
    for name, (config_cls, _) in MODELS.items():
        cs.store(group="model", name=f"{name}_schema", node=config_cls)
    for runner in RUNNERS.values():
        store_schema(runner)
    mark_stored()


__all__ = ["RUNNERS", "Runner", "get_runner", "load_plugins", "register_runner", "register_schemas"]
