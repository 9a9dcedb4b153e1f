"""The Einstein-test worlds W1..W5, registered by name: ``build_world(config)``."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from framework.errors import ConfigError
from framework.registry import config_from
from framework.einstein.worlds.base import PROBE_SIGMA, TRAIN_SIGMA, Instance, World, WorldConfig
from framework.einstein.worlds.kinetic import KineticConfig, KineticWorld
from framework.einstein.worlds.planets import PlanetsConfig, PlanetsWorld
from framework.einstein.worlds.precession import PrecessionConfig, PrecessionWorld
from framework.einstein.worlds.velocity import VelocityConfig, VelocityWorld
from framework.einstein.worlds.yukawa import YukawaConfig, YukawaWorld

WORLDS: dict[str, tuple[type[WorldConfig], type[World]]] = {
    "w1_velocity": (VelocityConfig, VelocityWorld),
    "w2_kinetic": (KineticConfig, KineticWorld),
    "w3_precession": (PrecessionConfig, PrecessionWorld),
    "w4_yukawa": (YukawaConfig, YukawaWorld),
    "w5_planets": (PlanetsConfig, PlanetsWorld),
}


def world_config(config: WorldConfig | Mapping[str, Any] | str) -> WorldConfig:
    """The registered config dataclass; a bare name means the defaults. ConfigError names a bad field."""
    if isinstance(config, str):
        config = {"name": config}
    try:
        return config_from(WORLDS, config, "world")
    except ConfigError as err:
        raise err.under("world") from None


def build_world(config: WorldConfig | Mapping[str, Any] | str) -> World:
    config = world_config(config)
    return WORLDS[config.name][1](config)


__all__ = [
    "PROBE_SIGMA",
    "TRAIN_SIGMA",
    "WORLDS",
    "Instance",
    "World",
    "WorldConfig",
    "build_world",
    "world_config",
]
