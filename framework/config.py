"""The settings every run shares, and the strict reading of a composed config into typed objects.

A run's schema is its runner's config dataclass, a subclass of :class:`RunConfig`; the runner's entry
in ``configs/runner/`` puts it at the root of the composed config, so a misspelt key or a wrong type
fails at compose time. Keys added with ``+`` (which Hydra accepts anywhere) are caught by
:func:`to_config`, which builds the dataclass tree and refuses any key a dataclass does not have,
naming its dotted path; ranges and cross-field rules live in each dataclass's ``__post_init__``.
"""
from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from framework.errors import ConfigError
from framework.registry import config_from
from framework.runtime import RuntimeConfig
from framework.seeds import digest

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

# Settings that never change a result: left out of the config hash that names a sweep job's folder
# and out of the settings a finished job is compared on. The one definition of them. (runtime.device
# and runtime.deterministic do change results: CUDA runs under bf16 autocast.) checkpoint_every is
# the continual runner's step-checkpoint interval: a resumed run ends the same whatever it was.
RESULT_NEUTRAL = frozenset({"hydra", "resume", "runtime.threads", "runtime.progress", "checkpoint_every"})


@dataclass
class RunConfig:
    """What every run has, whatever its runner. A runner's schema subclasses this."""

    runner: str = "windtunnel"  # set by the runner's schema (configs/runner/<name>.yaml); not a user setting
    experiment: str = "default"
    seed: int = 0
    resume: bool = False  # continue from what is in hydra.run.dir
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    report: bool = True  # write report.md and the plots


def container(node: Any) -> Any:
    """A Hydra node as plain Python (dicts, lists), resolved; anything else as it is."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def result_settings(cfg: Any) -> dict:
    """The settings that decide a run's results: everything but :data:`RESULT_NEUTRAL` (dotted paths)."""
    settings = {key: container(cfg[key]) for key in cfg if key not in RESULT_NEUTRAL}
    for path in RESULT_NEUTRAL:
        *parents, leaf = path.split(".")
        node = settings
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if parents and isinstance(node, dict):
            node.pop(leaf, None)
    return settings


def config_hash(cfg: Any) -> str:
    """A short, stable hash of the settings that decide a run's results (``${config_hash:}`` in configs)."""
    return digest(result_settings(cfg))


def _dataclass_type(hint: Any) -> type | None:
    """The dataclass a field holds (``X`` or ``Optional[X]``), or None."""
    for candidate in (hint, *typing.get_args(hint)):
        if isinstance(candidate, type) and dataclasses.is_dataclass(candidate):
            return candidate
    return None


def to_config(cls: type, values: Any, path: str = "") -> Any:
    """``cls`` built from ``values`` (a mapping or a Hydra node), nested dataclasses included.

    A key that ``cls`` (or a nested dataclass) lacks is refused with its dotted path, however it was
    added; an error from a ``__post_init__`` check is placed under ``path``.
    """
    values = container(values)
    if dataclasses.is_dataclass(values):
        values = {f.name: getattr(values, f.name) for f in dataclasses.fields(values)}
    if not isinstance(values, Mapping):
        raise ConfigError(path or cls.__name__, f"must be a mapping of settings, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in names:
            kind = "setting" if not path else f"field of {path}"
            raise ConfigError(where, f"not a {kind}; {'settings' if not path else 'fields'}: {', '.join(names)}")
        nested = _dataclass_type(hints[key])
        kwargs[key] = to_config(nested, value, where) if nested is not None and value is not None else value
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise err.under(path) from None


def registered(registry: dict, node: Any, path: str, kind: str) -> Any:
    """A config node -> its registered dataclass (a task, a model), checked; errors carry ``path``."""
    value = container(node)
    if not isinstance(value, Mapping) and not dataclasses.is_dataclass(value):
        raise ConfigError(path, f"must be a {kind} config (a mapping with its name, e.g. a /{kind} group option), "
                                f"got {value!r}")
    try:
        return config_from(registry, value, kind)
    except ConfigError as err:
        raise err.under(path) from None
    except OmegaConfBaseException as err:
        raise ConfigError(path, str(err).splitlines()[0]) from None
