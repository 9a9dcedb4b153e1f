"""The einstein runner's schema: which worlds and learners, how many instances, which anomaly counts.

    worlds:   [w1_velocity, {name: w2_kinetic, query: inverse, key: w2_inverse}, ...]
    learners: [oracle, {name: mdl, beam: 2}, {name: text, adapter: {name: openai, ...}}, ...]

An entry is a name (its defaults) or a mapping of its config; ``key`` (default: the name) names the
entry in results and must be unique. ``world_options.<key>`` and ``learner_options.<key>`` override
fields of one entry from the command line (``learner_options.mdl.beam=2``); a world entry may carry
its own ``anomaly_counts``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from framework.config import RunConfig


@dataclass
class EinsteinConfig(RunConfig):
    runner: str = "einstein"
    worlds: List[Any] = field(default_factory=list)
    learners: List[Any] = field(default_factory=list)
    n_instances: int = 5  # world instances per (world, learner); every score's stderr is over these
    # Anomaly points given per fit, for the anomaly curve (the full set is always added, and gives the
    # main scores); null: 0, 1, 2, 4, ... and all.
    anomaly_counts: Optional[List[int]] = None
    world_options: Dict[str, Any] = field(default_factory=dict)  # world key -> field overrides
    learner_options: Dict[str, Any] = field(default_factory=dict)  # learner key -> field overrides
