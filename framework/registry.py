"""Name -> (config dataclass, implementation) registries, shared by tasks and models.

A config arrives as its dataclass, or as a mapping (a dict or a Hydra node added without a schema);
either way it leaves as the registered dataclass, so that its ``__post_init__`` checks have run.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from framework.errors import ConfigError


def config_from(registry: dict[str, tuple[type, type]], config: Any, kind: str) -> Any:
    """The registered config dataclass for ``config``; a ConfigError names the bad field."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        name, values = getattr(config, "name", "?"), dataclasses.asdict(config)
    elif isinstance(config, Mapping):
        name, values = config.get("name", "?"), dict(config)
    else:
        raise TypeError(f"expected a {kind} config dataclass or a mapping, got {type(config).__name__}")
    if name not in registry:
        raise ConfigError("name", f"unknown {kind} {name!r}; choose one of: {', '.join(registry)}")
    config_cls = registry[name][0]
    if type(config) is config_cls:
        return config
    allowed = {f.name for f in dataclasses.fields(config_cls)}
    for key in values:
        if key not in allowed:
            raise ConfigError(str(key), f"not a field of the {name} {kind}; fields: {', '.join(sorted(allowed))}")
    return config_cls(**values)
