"""A task read through a larger vocabulary and class set: how one model reads tasks of several sizes.

A model has one embedding table and one head, so a model that meets program identification at p = 17
and then at p = 19 (the modulus-transfer experiment) is built for 19 tokens and 19 classes.
:class:`PaddedTask` presents a task at such a size without changing a single sequence: the tokens are
the task's own (ids past its vocabulary simply never occur), and the exact posterior gets classes
``task.n_classes .. n_classes - 1`` with probability exactly zero. That is still the exact posterior:
for a p = 17 sequence, residues 17 and 18 cannot come next. So ``kl_bits`` on the padded task is the
model's full error, mass put on impossible classes included, and training against it (soft labels or
sampled labels alike) teaches the model that those classes do not occur; nothing is masked or
renormalised after the fact.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from framework.errors import ConfigError
from framework.tasks.base import Batch, Task


class PaddedTask(Task):
    def __init__(self, task: Task, vocab_size: int, n_classes: int):
        if vocab_size < task.vocab_size or n_classes < task.n_classes:
            raise ConfigError("vocab_size" if vocab_size < task.vocab_size else "n_classes",
                              f"padding {task.name} ({task.vocab_size} tokens, {task.n_classes} classes) to "
                              f"{vocab_size} tokens and {n_classes} classes would shrink it")
        self.task = task
        self.config = task.config
        self.name = task.name
        self.vocab_size, self.n_classes, self.seq_len = vocab_size, n_classes, task.seq_len
        self._extra = n_classes - task.n_classes

    def positions(self) -> torch.Tensor:
        return self.task.positions()

    def _pad(self, posterior: torch.Tensor) -> torch.Tensor:
        return F.pad(posterior, (0, self._extra)) if self._extra else posterior  # (B, P, C) zeros appended

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        batch = self.task.sample(batch_size, generator)
        return Batch(batch.tokens, batch.positions, self._pad(batch.posterior), batch.labels)

    def posterior(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._pad(self.task.posterior(tokens))

    def posterior_reference(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._pad(self.task.posterior_reference(tokens))

    def count_sequences(self) -> int:
        return self.task.count_sequences()

    def all_sequences(self) -> torch.Tensor:
        return self.task.all_sequences()

    def __getattr__(self, name: str):
        # what else the wrapped task offers (program_posterior, residues, p, ...), read through
        if name == "task":  # not yet set (copy / unpickle): no recursion
            raise AttributeError(name)
        return getattr(self.task, name)
