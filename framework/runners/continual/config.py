"""The continual runner's schema: one stream, one strategy (+ plasticity plugins), one or more models.

``configs/runner/continual.yaml`` puts it at the root of the composed config, so
``windtunnel experiment=continual/permuted strategy.name=ewc plugins='[{name: cbp}]'`` reads as a
sentence. The stream, strategy and plugins are mappings checked by the library's own config classes
(framework.continual) in the plan, so a bad one is refused before compute with its dotted path.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from framework.config import RunConfig
from framework.errors import require


@dataclass
class BudgetConfig:
    """What every experience gets to train on: the same for the stream and for the fresh baseline."""

    epochs: int = 1  # passes over the experience's n_train sequences
    batch_size: int = 32  # sequences per step: steps per experience = epochs * ceil(n_train / batch_size)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            require(isinstance(value, int) and not isinstance(value, bool) and value >= 1, name,
                    f"must be an integer >= 1, got {value!r}")


@dataclass
class ContinualConfig(RunConfig):
    runner: str = "continual"
    stream: Dict[str, Any] = field(default_factory=dict)  # a stream config (group stream/): name, n_experiences, ...
    strategy: Dict[str, Any] = field(default_factory=lambda: {"name": "naive"})  # framework.continual.StrategyConfig
    plugins: List[Any] = field(default_factory=list)  # plasticity methods: [{name: cbp, replacement_rate: 1e-4}, ...]
    models: Dict[str, Any] = field(default_factory=dict)  # key -> a model config (group model/)
    match_to: Optional[str] = None  # the model whose parameter count the match_params models take
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    eval_batch_size: int = 128
    # The fresh-model baseline F_j (plasticity ratios): a fresh model trained on experience j alone.
    fresh_baseline: bool = True
    # Share F_j between the runs of one folder of runs (a sweep: every method of a leaderboard needs
    # the same F_j), in <run_dir>/../.fresh/<hash of what decides it>.json. Same numbers either way.
    fresh_cache: bool = False
    # A step checkpoint every this many training steps inside an experience (0: only after each
    # experience), so a killed run resumes at the step (jobs.py). One costs about two steps of the
    # CPU-size models (measured: ~3 ms to encode, ~20 ms to write and fsync, against ~10 ms a step
    # with Replay on 2 busy cores), so 200 keeps the overhead near 1%; the shipped CPU experiments
    # (64 steps an experience) then resume at the experience, redoing about a second.
    checkpoint_every: int = 200
    probe_sequences: int = 128  # test sequences of the experience just trained that the feature statistics read
    dormant_tau: float = 0.025  # ReDo's measuring threshold for the dormant fraction
