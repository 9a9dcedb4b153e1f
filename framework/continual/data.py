"""Wind-tunnel experiences as Avalanche datasets that make their sequences from seeds when indexed.

One item of every experience is ``(tokens, target, task_label)``, the shape Avalanche's supervised
template expects (``mb_x = mbatch[0]``, ``mb_y = mbatch[1]``, ``mb_task_id = mbatch[-1]``, all
tensors):

* ``tokens`` (T,) long: the sequence, in the stream's shared vocabulary;
* ``target`` (T, C) float64: at every scored position the exact posterior over the C shared
  classes, and an all-zero row at every other position. A zero row is how the loss and the
  metrics find the scored positions, so sequences with different scored positions (a bijection
  and an HMM experience in one replay minibatch) batch together with no extra fields, and every
  plugin that calls ``strategy._criterion(model(x), y)`` (EWC, GEM, A-GEM) scores exactly those
  positions. The exact posterior is kept in float64, as the tasks return it;
* ``task_label``: the experience index, as an Avalanche ``DataAttribute`` appended in getitem.

Nothing is stored: item ``i`` belongs to chunk ``i // CHUNK``, and a chunk is generated in one
vectorised ``Task.sample`` call on the CPU from a seed fixed by (stream seed, experience, split,
chunk). A module-wide LRU bounded in bytes (``CACHE_BYTES``) keeps the chunks in use, so a
200-experience stream (whose experience objects Avalanche keeps) holds seeds, not sequences, and
makes the same sequences on every machine. A chunk does not depend on the dataset's size, so a
smaller experience is a prefix of a larger one.

Random access over more data than the cache holds regenerates chunks (correct, but a whole chunk
per item): replay buffers therefore hold materialised copies of their few sequences
(:func:`materialise`, used by the strategies' buffers), and the cache is sized for a shuffled
pass over an experience or a cumulative union of a few.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from avalanche.benchmarks.utils import DataAttribute, make_avalanche_dataset
from avalanche.benchmarks.utils.data import AvalancheDataset
from avalanche.benchmarks.utils.flat_data import ConstantSequence

from framework.seeds import derive_seed
from framework.tasks.base import Task

CHUNK = 64  # sequences generated per seed: one vectorised sample() call
CACHE_BYTES = 256 * 2**20  # chunks kept across all experiences (HMM K=20: ~60k sequences)
TRAIN, TEST = 0, 1  # the split enters the seed: a test set is never a train set


@dataclass(eq=False)
class ExperienceTask:
    """One experience's task, placed in the stream's shared token and class spaces.

    ``token_map[t]`` is the shared id of the base task's token ``t`` (an offset range for
    vocab_shift and task_sequence, a permutation for permuted_tokens). Sequences shorter than the
    stream's ``seq_len`` are right-padded with ``pad_token`` (causal models never see the padding
    from an earlier position); classes past the base task's ``n_classes`` get probability 0.
    """

    base: Task
    token_map: torch.Tensor  # (base.vocab_size,) long
    seq_len: int  # the stream's common T
    n_classes: int  # the stream's common C
    pad_token: int
    key: tuple  # identifies the experience's data in the chunk cache
    label: str = ""  # a short description for reports ("bijection V=6 tokens 0..11")

    def __post_init__(self) -> None:
        if self.base.seq_len > self.seq_len or self.base.n_classes > self.n_classes:
            raise ValueError(f"{self.label}: the base task does not fit the stream's shapes")

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, T) long tokens and (n, T, C) float64 targets (zero rows off the scored positions)."""
        batch = self.base.sample(n, generator)
        T0 = batch.tokens.shape[1]
        tokens = torch.full((n, self.seq_len), self.pad_token, dtype=torch.long)
        tokens[:, :T0] = self.token_map[batch.tokens.cpu()]
        target = torch.zeros(n, self.seq_len, self.n_classes, dtype=torch.float64)
        target[:, batch.positions.cpu(), : self.base.n_classes] = batch.posterior.cpu()
        return tokens, target

    @property
    def scored_positions(self) -> torch.Tensor:
        return self.base.positions()


_cache: "OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor]]" = OrderedDict()
_cached_bytes = 0


def _nbytes(made: tuple[torch.Tensor, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in made)


def _chunk(task: ExperienceTask, seed: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    global _cached_bytes
    key = (task.key, seed, index)
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    generator = torch.Generator("cpu").manual_seed(derive_seed(seed, index))
    made = task.sample(CHUNK, generator)
    _cache[key] = made
    _cached_bytes += _nbytes(made)
    while _cached_bytes > CACHE_BYTES and len(_cache) > 1:
        _cached_bytes -= _nbytes(_cache.popitem(last=False)[1])
    return made


def clear_cache() -> None:
    global _cached_bytes
    _cache.clear()
    _cached_bytes = 0


def cached_bytes() -> int:
    return _cached_bytes


class SeededSequences(torch.utils.data.Dataset):
    """``n`` sequences of ``task``, made on demand from ``seed`` (nothing stored but the seed)."""

    def __init__(self, task: ExperienceTask, n: int, seed: int):
        self.task, self.n, self.seed = task, n, seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < self.n:
            raise IndexError(i)
        tokens, target = _chunk(self.task, self.seed, i // CHUNK)
        return tokens[i % CHUNK], target[i % CHUNK]

    def materialise(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All n items at once (tests, small evaluation sets)."""
        chunks = [_chunk(self.task, self.seed, c) for c in range((self.n + CHUNK - 1) // CHUNK)]
        tokens = torch.cat([c[0] for c in chunks])[: self.n]
        return tokens, torch.cat([c[1] for c in chunks])[: self.n]


def experience_dataset(task: ExperienceTask, n: int, seed: int, task_label: int) -> AvalancheDataset:
    """An Avalanche dataset of ``n`` lazily made sequences whose items are (tokens, target, task_label)."""
    labels = DataAttribute(ConstantSequence(task_label, n), "targets_task_labels", use_in_getitem=True)
    return make_avalanche_dataset(SeededSequences(task, n, seed), data_attributes=[labels])


def materialise(dataset: AvalancheDataset) -> AvalancheDataset:
    """The same items as tensors in memory (a replay buffer's few sequences), task labels kept."""
    rows = [dataset[i] for i in range(len(dataset))]
    if not rows:
        return dataset
    tokens = torch.stack([r[0] for r in rows])
    target = torch.stack([r[1] for r in rows])
    labels = DataAttribute([int(r[2]) for r in rows], "targets_task_labels", use_in_getitem=True)
    return make_avalanche_dataset(torch.utils.data.TensorDataset(tokens, target), data_attributes=[labels])


def source_of(dataset: AvalancheDataset) -> SeededSequences:
    """The SeededSequences under an experience dataset (tests and reports)."""
    inner = dataset._flat_data._datasets[0]
    while not isinstance(inner, SeededSequences):
        inner = inner._datasets[0]
    return inner
