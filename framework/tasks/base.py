"""The task interface: a sampler of whole batches plus the exact posterior at every scored position.

A task is anything with an exact oracle. Training, evaluation, continual-learning streams and
causal or physics tasks all consume the same :class:`Batch`, so a new task plugs in by
subclassing :class:`Task` and registering its config in ``framework.tasks``.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass

import torch


@dataclass
class TaskConfig:
    """Fields every task config carries. Subclasses add their own and validate in ``__post_init__``."""

    name: str = "?"


@dataclass
class Batch:
    tokens: torch.Tensor  # (B, T) long: the model's input
    positions: torch.Tensor  # (P,) long: scored positions, the same for every sequence
    posterior: torch.Tensor  # (B, P, C) float64: exact posterior over the C classes at each scored position
    labels: torch.Tensor  # (B, P) long: the realised class (true value, true hidden state)

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(*(t.to(device) for t in (self.tokens, self.positions, self.posterior, self.labels)))

    def __len__(self) -> int:
        return self.tokens.shape[0]


class Task(abc.ABC):
    """A wind tunnel: sequences whose Bayes-optimal prediction is known in closed form."""

    name: str
    vocab_size: int  # input tokens are 0..vocab_size-1
    n_classes: int  # the model predicts a distribution over 0..n_classes-1 at each scored position
    seq_len: int  # T

    @abc.abstractmethod
    def positions(self) -> torch.Tensor:
        """(P,) long: the scored positions."""

    @abc.abstractmethod
    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        """A fresh batch on ``generator.device``, vectorised (no Python loop per sequence)."""

    @abc.abstractmethod
    def posterior(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, P, C) float64: the exact posterior, computed from the visible tokens alone (fast)."""

    @abc.abstractmethod
    def posterior_reference(self, tokens: torch.Tensor) -> torch.Tensor:
        """The same as :meth:`posterior` by a slow, obviously correct method (enumeration, plain loops)."""

    def count_sequences(self) -> int:
        """How many sequences :meth:`all_sequences` lists (computed without listing them where possible)."""
        raise ValueError(f"task '{self.name}' does not enumerate its sequences")

    def all_sequences(self) -> torch.Tensor:
        """(N, T) long: every sequence the task produces with nonzero probability, each once.

        Small configurations only: it backs the whole-matrix view (every prompt against its exact
        row). Tasks that cannot be enumerated raise ValueError saying why.
        """
        raise ValueError(f"task '{self.name}' does not enumerate its sequences")


MAX_ENUMERATED = 200_000  # all_sequences() refuses to list more sequences than this
