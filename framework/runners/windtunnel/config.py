"""The wind-tunnel runner's schema: which tasks and models to train and score, and how.

``configs/runner/windtunnel.yaml`` puts it at the root of the composed config (with the ``train``
group), so ``windtunnel experiment=smoke tasks.bijection.L=6`` reads as it always has.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from framework.config import RunConfig
from framework.runners.windtunnel.taxonomy import TaxonomyConfig
from framework.training.config import TrainConfig


@dataclass
class WindTunnelConfig(RunConfig):
    runner: str = "windtunnel"
    tasks: Dict[str, Any] = field(default_factory=dict)  # key -> a task config (group task/)
    models: Dict[str, Any] = field(default_factory=dict)  # key -> a model config (group model/)
    # The model key whose parameter count the `match_params: true` models take; null: the first
    # model that does not match (the transformer in every shipped experiment).
    match_to: Optional[str] = None
    train: TrainConfig = field(default_factory=TrainConfig)
    # Deltas on `train` for some jobs, keyed by a task key, a model key or a job name
    # (`<task>_<model>`), applied in that order: {hmm: {steps: 3000}, hmm_mamba: {batch_size: 64}}.
    train_by: Dict[str, Any] = field(default_factory=dict)
    # Extra held-out evaluations of a trained task under changed settings, keyed by task key and a
    # name: {hmm: {K50: {K: 50}}} scores the K=20-trained models on K=50 (length generalisation).
    evaluate_at: Dict[str, Any] = field(default_factory=dict)
    matrix: List[str] = field(default_factory=list)  # task keys scored on every prompt (small tasks only)
    probes: List[str] = field(default_factory=list)  # probes run on each trained model that has the parts
    probe_options: Dict[str, Any] = field(default_factory=dict)  # probe name -> its keyword options
    # Which inference primitive each architecture realises, from the scores (experiment=taxonomy).
    # (Not Optional[...] = None: OmegaConf cannot merge a mapping into a None-valued dataclass field.)
    taxonomy: TaxonomyConfig = field(default_factory=TaxonomyConfig)
