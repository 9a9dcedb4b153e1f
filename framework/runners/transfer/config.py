"""The transfer runner's schema: tasks, models, and the sequence of phases every model is trained through.

    tasks:   {p17: {name: program, p: 17}, p19: {name: program, p: 19}}   key -> a task config
    models:  {transformer: {...}, lstm: {..., match_params: true}}        key -> a model config
    phases:  [{task: p17}, {task: p19, train: {steps: 400}}]             trained in this order
    train:   the settings every phase starts from; a phase's `train` holds its deltas
    train_by: {mamba: {batch_size: 64}, mamba_phase0: {steps: 300}}     deltas for some models

Every task is scored after every phase (a task no phase trains is scored too: a bystander whose
bits show what training elsewhere does to it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from framework.config import RunConfig
from framework.training.config import TrainConfig


@dataclass
class TransferConfig(RunConfig):
    runner: str = "transfer"
    tasks: Dict[str, Any] = field(default_factory=dict)  # key -> a task config (group task/)
    models: Dict[str, Any] = field(default_factory=dict)  # key -> a model config (group model/)
    # The model key whose parameter count the `match_params: true` models take; null: the first
    # model that does not match (as in the wind-tunnel runner).
    match_to: Optional[str] = None
    train: TrainConfig = field(default_factory=TrainConfig)
    # [{task: <task key>, train: {<train deltas>}}, ...]: each model is trained through these in order,
    # its weights carried from one phase into the next (a fresh optimizer and schedule per phase).
    phases: List[Any] = field(default_factory=list)
    # Deltas on a phase's train settings for some models, keyed by a model key (all its phases) or
    # `<model key>_phase<i>` (one phase), applied in that order: {mamba_phase0: {steps: 300}}.
    train_by: Dict[str, Any] = field(default_factory=dict)
    # Also train a fresh model (the same initial weights) on each phase after the first, with that
    # phase's settings: the baseline that transfer is measured against.
    scratch: bool = True
    # Score every task on a weight snapshot every this many steps of each phase (its validation-size
    # set), for curves of forgetting and learning along the way; 0: only after each phase.
    curve_every: int = 0
