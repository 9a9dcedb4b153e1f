"""Einstein-test learners, registered by name: ``build_learner(config)``."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from framework.errors import ConfigError
from framework.registry import config_from
from framework.einstein.learners.base import (
    NEVER,
    REFERENCE_ONLY,
    VISIBLE,
    FitData,
    Laws,
    Learner,
    LearnerConfig,
    check_visibility,
)
from framework.einstein.learners.correlational import (
    KNNConfig,
    KNNLearner,
    MLPConfig,
    MLPLearner,
    PolyConfig,
    PolyLearner,
    SplineConfig,
    SplineLearner,
)
from framework.einstein.learners.gp import GPLearnConfig, GPLearner
from framework.einstein.learners.mdl import MDLConfig, MDLLearner
from framework.einstein.learners.pfn import PFNConfig, PFNLearner
from framework.einstein.learners.reference import OldTheoryConfig, OldTheoryLearner, OracleConfig, OracleLearner
from framework.einstein.learners.text import TextConfig, TextLearner

LEARNERS: dict[str, tuple[type[LearnerConfig], type[Learner]]] = {
    "old_theory": (OldTheoryConfig, OldTheoryLearner),
    "oracle": (OracleConfig, OracleLearner),
    "poly": (PolyConfig, PolyLearner),
    "spline": (SplineConfig, SplineLearner),
    "knn": (KNNConfig, KNNLearner),
    "mlp": (MLPConfig, MLPLearner),
    "mdl": (MDLConfig, MDLLearner),
    "gplearn": (GPLearnConfig, GPLearner),
    "pfn": (PFNConfig, PFNLearner),
    "text": (TextConfig, TextLearner),
}


def learner_config(config: LearnerConfig | Mapping[str, Any] | str) -> LearnerConfig:
    if isinstance(config, str):
        config = {"name": config}
    try:
        return config_from(LEARNERS, config, "learner")
    except ConfigError as err:
        raise err.under("learner") from None


def build_learner(config: LearnerConfig | Mapping[str, Any] | str) -> Learner:
    """A learner from its config, its declared view checked (ConfigError before any compute)."""
    config = learner_config(config)
    learner = LEARNERS[config.name][1](config)
    check_visibility(learner)
    return learner


__all__ = [
    "LEARNERS",
    "NEVER",
    "REFERENCE_ONLY",
    "VISIBLE",
    "FitData",
    "Laws",
    "Learner",
    "LearnerConfig",
    "build_learner",
    "check_visibility",
    "learner_config",
]
