"""The causal runner's settings: one schema for its three actions (generate, score, tunnel).

``queries`` is either a path to a query-set JSONL file (score only) or the settings of a set to
generate (the fields of :class:`framework.causal.querygen.QueryGenSettings`), so
``queries=runs/x/queries.jsonl`` and ``queries.count=200`` both work on the command line. ``adapter``
is a mapping with a ``name``; ``configs/adapter/<name>.yaml`` gives each adapter's defaults
(``adapter=<name>``), and the plan turns it into the adapter's own config dataclass, so a misspelt
field is refused there by name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List

from framework.config import RunConfig
from framework.errors import require

ACTIONS = ("generate", "score", "tunnel")


@dataclass
class ScoringConfig:
    number_tol: float = 0.01  # a number answer within this absolute distance of the exact value is right
    kl_eps: float = 1e-6  # a stated probability is clipped to [eps, 1 - eps] before kl_bits (0 and 1 are infinite)
    by: List[str] = field(default_factory=lambda: ["rung", "query_type", "source", "graph", "names", "answer_kind"])

    def __post_init__(self) -> None:
        require(self.number_tol >= 0, "number_tol", f"must be >= 0, got {self.number_tol}")
        require(0 < self.kl_eps < 0.5, "kl_eps", f"must be in (0, 0.5), got {self.kl_eps}")


@dataclass
class TunnelConfig:
    jobs: List[str] = field(default_factory=list)  # trained causal_samples job folders, or run folders holding them
    eval_sequences: int = 2048  # fresh held-out sequences, the same for every job (seed below)
    batch_size: int = 512
    min_gap: float = 0.05  # a position enters the association gap where the two answers differ by more (total variation)

    def __post_init__(self) -> None:
        require(self.eval_sequences >= 1, "eval_sequences", f"must be >= 1, got {self.eval_sequences}")
        require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        require(0 <= self.min_gap < 1, "min_gap", f"must be in [0, 1), got {self.min_gap}")


@dataclass
class CausalRunConfig(RunConfig):
    runner: str = "causal"
    action: str = "score"  # generate | score | tunnel
    # A query-set file (score), or the settings of a set to generate in the run folder (generate, score).
    queries: Any = field(default_factory=dict)
    workers: int = 1  # processes generating queries (the set does not depend on it)
    adapter: Dict[str, Any] = field(default_factory=dict)  # score: {name: callable | oracle | hf | openai | job, ...}
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    tunnel: TunnelConfig = field(default_factory=TunnelConfig)

    def __post_init__(self) -> None:
        require(self.action in ACTIONS, "action", f"must be one of {', '.join(ACTIONS)}, got {self.action!r}")
        require(self.workers >= 1, "workers", f"must be >= 1, got {self.workers}")
