"""Continual-learning streams of wind-tunnel experiences, as real Avalanche 0.6.0 benchmarks.

``build_stream(config)`` returns a :class:`WindTunnelStream`: an Avalanche ``CLScenario`` made by
``benchmark_from_datasets(train=[...], test=[...])`` (one experience per dataset; every experience
has a held-out test set from its own seed, never trained on), plus the shapes a model needs.
Each dataset is a :mod:`framework.continual.data` experience dataset: items (tokens, target, task
label) made from seeds when indexed, so an experience object costs a few hundred bytes and a
200-experience stream is cheap to build and the same on every machine.

Streams (SPEC §4):

* ``vocab_shift``: the same wind tunnel (bijection or task identification) over a new, disjoint
  token range per experience: experience e uses tokens e*V0 .. (e+1)*V0 - 1 of one shared
  vocabulary (V0 = the base task's vocabulary). Task identification draws a new task family per
  experience. The classes are shared (class j is value j of whichever range is in use).
* ``prior_shift``: HMM filtering whose T/E rows come from a different prior per experience
  (sticky, cyclic, sparse emissions, ...; :mod:`framework.continual.hmm_prior`), cycling through
  ``priors``. Same tokens and classes throughout; what shifts is the distribution of parameters,
  observations and exact posteriors. With ``hidden: true`` each experience instead draws ONE HMM
  from its prior (seed ``derive_seed(seed, e, 2)``), keeps it for train and test, and shows only
  the observations (``[SEP] ([OBS] o_t) x K``, same vocabulary and classes): the exact posterior is
  the forward filter under that fixed HMM, so experiences differ and forgetting is measurable.
* ``task_sequence``: bijection, then HMM, then recall, then task identification (``tasks``,
  cycled), in one model. How one model reads them: every task gets its own disjoint token range
  in one shared vocabulary (offsets in the order of ``tasks``) and one PAD token after them;
  every sequence is right-padded to the longest task's length (a causal model's output at a
  scored position never sees the padding after it); the output head has C = the largest class
  count, and :class:`ClassMasked` sets the logits of classes a task does not have to -1e4 (so
  they get probability 0 exactly), choosing the task from the first token of the sequence, whose
  range names it. The mask is a fixed function of the visible tokens, not learned, and the exact
  posterior puts 0 on those classes, so KL and the loss are over the task's own classes.
  Revisiting a task (experience e and e + len(tasks)) reuses its token range.
* ``permuted_tokens``: a fixed random permutation of the base task's vocabulary per experience,
  the Permuted-MNIST analogue (experience 0 is the unpermuted task); runs 50-200 experiences.

Seeds: experience e's train set uses ``derive_seed(seed, e, TRAIN)``, its test set
``derive_seed(seed, e, TEST)``, and what the experience itself draws (a permutation, a task family)
``derive_seed(seed, e, 2)``.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from avalanche.benchmarks import benchmark_from_datasets
from avalanche.benchmarks.scenarios.generic_scenario import CLScenario
from torch import nn

from framework.continual.data import TEST, TRAIN, ExperienceTask, derive_seed, experience_dataset
from framework.continual.hmm_prior import PRIORS, HiddenPriorHMMTask, HMMPriorConfig, PriorHMMTask
from framework.errors import ConfigError, require
from framework.models.base import SequenceModel
from framework.registry import config_from
from framework.tasks import HMMConfig, Task, build_task

MASKED_LOGIT = -1e4  # softmax gives exactly 0 in float32, and 0 * MASKED_LOGIT = 0 in the soft loss
MAX_EXPERIENCES = 10_000


@dataclass
class StreamConfig:
    """Fields every stream carries. Sizes are per experience."""

    name: str = "?"
    n_experiences: int = 4
    n_train: int = 256  # training sequences per experience (one epoch = n_train / train_mb_size steps)
    n_test: int = 128  # held-out sequences per experience, from their own seed
    seed: int = 0  # fixes every experience: its task, its train set and its test set

    def __post_init__(self) -> None:
        require(_is_int(self.n_experiences) and 2 <= self.n_experiences <= MAX_EXPERIENCES, "n_experiences",
                f"a stream needs at least 2 experiences (and at most {MAX_EXPERIENCES}), got {self.n_experiences!r}")
        require(_is_int(self.n_train) and self.n_train >= 1, "n_train", f"must be an integer >= 1, got {self.n_train!r}")
        require(_is_int(self.n_test) and self.n_test >= 1, "n_test", f"must be an integer >= 1, got {self.n_test!r}")
        require(_is_int(self.seed) and self.seed >= 0, "seed", f"must be an integer >= 0, got {self.seed!r}")


@dataclass
class VocabShiftConfig(StreamConfig):
    name: str = "vocab_shift"
    task: str = "bijection"  # "bijection" or "taskid"
    task_options: dict = field(default_factory=dict)  # overrides of the base task's config (e.g. {"V": 6, "L": 6})

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.task in ("bijection", "taskid"), "task", f"must be 'bijection' or 'taskid', got {self.task!r}")
        _check_task(self.task, self.task_options, "task_options")


@dataclass
class PriorShiftConfig(StreamConfig):
    name: str = "prior_shift"
    priors: list = field(default_factory=lambda: ["uniform", "sticky", "cyclic", "sparse_emissions"])  # cycled
    kappa: float = 10.0  # structured Dirichlet mass (sticky, cyclic, diagonal_emissions)
    alpha_sparse: float = 0.1  # concentration of the sparse priors
    hmm: dict = field(default_factory=dict)  # HMM sizes: S, O, K (defaults: the paper's 5, 5, 20)
    hidden: bool = False  # one fixed HMM per experience, parameters not in context (HiddenPriorHMMTask)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(isinstance(self.hidden, bool), "hidden", f"must be true or false, got {self.hidden!r}")
        require(isinstance(self.priors, (list, tuple)) and len(self.priors) >= 1, "priors",
                f"must be a non-empty list of {', '.join(PRIORS)}; got {self.priors!r}")
        for prior in self.priors:
            require(prior in PRIORS, "priors", f"unknown prior {prior!r}; choose from {', '.join(PRIORS)}")
        HMMPriorConfig(self.priors[0], self.kappa, self.alpha_sparse)  # checks kappa and alpha_sparse
        _check_task("hmm", self.hmm, "hmm")


TASK_SEQUENCE_TASKS = ("bijection", "hmm", "recall", "taskid")


@dataclass
class TaskSequenceConfig(StreamConfig):
    name: str = "task_sequence"
    tasks: list = field(default_factory=lambda: list(TASK_SEQUENCE_TASKS))  # experience e is tasks[e % len]
    task_options: dict = field(default_factory=dict)  # per task name: overrides of its config

    def __post_init__(self) -> None:
        super().__post_init__()
        require(isinstance(self.tasks, (list, tuple)) and len(self.tasks) >= 1, "tasks",
                f"must be a non-empty list of {', '.join(TASK_SEQUENCE_TASKS)}; got {self.tasks!r}")
        for task in self.tasks:
            require(task in TASK_SEQUENCE_TASKS, "tasks", f"unknown task {task!r}; choose from {', '.join(TASK_SEQUENCE_TASKS)}")
        require(len(set(self.tasks)) == len(self.tasks), "tasks", f"each task once (repeats come from cycling): {self.tasks!r}")
        require(isinstance(self.task_options, Mapping), "task_options", "must map task names to config overrides")
        for name, options in self.task_options.items():
            require(name in self.tasks, "task_options", f"{name!r} is not one of tasks {self.tasks!r}")
            _check_task(name, options, f"task_options.{name}")


@dataclass
class PermutedTokensConfig(StreamConfig):
    name: str = "permuted_tokens"
    n_experiences: int = 10
    task: str = "bijection"  # any registered wind tunnel
    task_options: dict = field(default_factory=dict)
    identity_first: bool = True  # experience 0 is the task as published; later ones are permuted

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_task(self.task, self.task_options, "task_options")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_task(name: str, options: Any, where: str) -> Task:
    require(isinstance(options, Mapping), where, f"must be a mapping of {name} config fields, got {options!r}")
    try:
        return build_task({"name": name, **options})
    except ConfigError as err:
        raise err.under(where) from None


class ClassMasked(nn.Module):
    """A model whose logits outside the task's own classes are MASKED_LOGIT; the task is read from
    each sequence's first token (``classes_of_token[t]``: the class count of the task owning t)."""

    def __init__(self, inner: nn.Module, classes_of_token: torch.Tensor):
        super().__init__()
        self.inner = inner
        self.register_buffer("classes_of_token", classes_of_token.long(), persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        logits = self.inner(tokens)  # (B, T, C)
        n = self.classes_of_token[tokens[:, 0]]  # (B,)
        invalid = torch.arange(logits.shape[-1], device=logits.device)[None, :] >= n[:, None]  # (B, C)
        return logits.masked_fill(invalid[:, None, :], MASKED_LOGIT)


def sequence_model(model: nn.Module) -> SequenceModel:
    """The framework model inside ``model`` (itself, or the one a wrapper such as ClassMasked holds)."""
    for module in model.modules():
        if isinstance(module, SequenceModel):
            return module
    raise TypeError(f"no framework SequenceModel inside {type(model).__name__}")


@dataclass
class WindTunnelStream:
    """A built stream: the Avalanche benchmark, the experiences' tasks, and the model's shapes."""

    config: StreamConfig
    benchmark: CLScenario  # .train_stream and .test_stream, experience e at index e of each
    tasks: list  # ExperienceTask per experience
    vocab_size: int  # build the model with these three
    n_classes: int
    seq_len: int
    classes_of_token: Optional[torch.Tensor] = None  # task_sequence: the class count per token

    @property
    def train_stream(self):
        return self.benchmark.train_stream

    @property
    def test_stream(self):
        return self.benchmark.test_stream

    def __len__(self) -> int:
        return len(self.tasks)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """The model as the strategies should see it: masked to each task's classes where they differ."""
        if self.classes_of_token is None:
            return model
        return ClassMasked(model, self.classes_of_token)

    def describe(self) -> list[str]:
        return [task.label for task in self.tasks]


def _assemble(config: StreamConfig, tasks: list[ExperienceTask], vocab_size: int, n_classes: int,
              seq_len: int, classes_of_token: Optional[torch.Tensor] = None) -> WindTunnelStream:
    train = [experience_dataset(t, config.n_train, derive_seed(config.seed, e, TRAIN), e) for e, t in enumerate(tasks)]
    test = [experience_dataset(t, config.n_test, derive_seed(config.seed, e, TEST), e) for e, t in enumerate(tasks)]
    benchmark = benchmark_from_datasets(train=train, test=test)
    return WindTunnelStream(config, benchmark, tasks, vocab_size, n_classes, seq_len, classes_of_token)


def _key(config: StreamConfig, e: int) -> tuple:
    # the chunk cache key: everything that decides the experience's sequences (not its size);
    # prior_shift's hidden=False is left out so that the key is what it was before the option existed
    values = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("n_train", "n_test")
              and not (k == "hidden" and v is False)}
    return (repr(sorted(values.items())), e)


def _task_seed(config: StreamConfig, e: int) -> int:
    return derive_seed(config.seed, e, 2) % 2**31


def vocab_shift(config: VocabShiftConfig) -> WindTunnelStream:
    tasks = []
    for e in range(config.n_experiences):
        options = dict(config.task_options)
        if config.task == "taskid":
            options["family_seed"] = _task_seed(config, e)  # a new family of tasks to identify
        base = build_task({"name": config.task, **options})
        V0 = base.vocab_size
        tasks.append(ExperienceTask(base, e * V0 + torch.arange(V0), base.seq_len, base.n_classes, 0, _key(config, e),
                                    f"{config.task} tokens {e * V0}..{(e + 1) * V0 - 1}"))
    first = tasks[0].base
    return _assemble(config, tasks, config.n_experiences * first.vocab_size, first.n_classes, first.seq_len)


def prior_shift(config: PriorShiftConfig) -> WindTunnelStream:
    hmm = HMMConfig(**config.hmm)
    tasks = []
    for e in range(config.n_experiences):
        prior = HMMPriorConfig(config.priors[e % len(config.priors)], config.kappa, config.alpha_sparse)
        if config.hidden:  # one HMM per experience, drawn from derive_seed(seed, e, 2), never shown
            base = HiddenPriorHMMTask(hmm, prior, _task_seed(config, e))
            label = f"hmm prior={prior.prior} hidden"
        else:
            base, label = PriorHMMTask(hmm, prior), f"hmm prior={prior.prior}"
        tasks.append(ExperienceTask(base, torch.arange(base.vocab_size), base.seq_len, base.n_classes, 0,
                                    _key(config, e), label))
    first = tasks[0].base
    return _assemble(config, tasks, first.vocab_size, first.n_classes, first.seq_len)


def task_sequence(config: TaskSequenceConfig) -> WindTunnelStream:
    bases = {name: build_task({"name": name, **config.task_options.get(name, {})}) for name in config.tasks}
    offsets, start = {}, 0
    for name in config.tasks:
        offsets[name], start = start, start + bases[name].vocab_size
    pad = start  # one PAD token after every task's range
    vocab_size = pad + 1
    seq_len = max(b.seq_len for b in bases.values())
    n_classes = max(b.n_classes for b in bases.values())
    classes_of_token = torch.full((vocab_size,), n_classes, dtype=torch.long)
    for name, base in bases.items():
        classes_of_token[offsets[name] : offsets[name] + base.vocab_size] = base.n_classes
    tasks = []
    for e in range(config.n_experiences):
        name = config.tasks[e % len(config.tasks)]
        base, lo = bases[name], offsets[name]
        tasks.append(ExperienceTask(base, lo + torch.arange(base.vocab_size), seq_len, n_classes, pad, _key(config, e),
                                    f"{name} tokens {lo}..{lo + base.vocab_size - 1} classes {base.n_classes}"))
    return _assemble(config, tasks, vocab_size, n_classes, seq_len, classes_of_token)


def permuted_tokens(config: PermutedTokensConfig) -> WindTunnelStream:
    base = build_task({"name": config.task, **config.task_options})
    V0 = base.vocab_size
    tasks = []
    for e in range(config.n_experiences):
        if e == 0 and config.identity_first:
            perm = torch.arange(V0)
        else:
            perm = torch.randperm(V0, generator=torch.Generator().manual_seed(_task_seed(config, e)))
        tasks.append(ExperienceTask(base, perm, base.seq_len, base.n_classes, 0, _key(config, e),
                                    f"{config.task} permutation {e}" if e or not config.identity_first else config.task))
    return _assemble(config, tasks, V0, base.n_classes, base.seq_len)


STREAMS: dict[str, tuple[type[StreamConfig], Callable[[Any], WindTunnelStream]]] = {
    "vocab_shift": (VocabShiftConfig, vocab_shift),
    "prior_shift": (PriorShiftConfig, prior_shift),
    "task_sequence": (TaskSequenceConfig, task_sequence),
    "permuted_tokens": (PermutedTokensConfig, permuted_tokens),
}


# Tiny presets: every stream in well under a second on a CPU (tests, demos, the runner's smoke runs).
TINY_STREAMS: dict[str, dict] = {
    "vocab_shift": {"name": "vocab_shift", "n_experiences": 2, "n_train": 16, "n_test": 8, "task_options": {"V": 4, "L": 4}},
    "prior_shift": {"name": "prior_shift", "n_experiences": 2, "n_train": 16, "n_test": 8, "hmm": {"S": 3, "O": 3, "K": 4}},
    "task_sequence": {"name": "task_sequence", "n_experiences": 2, "n_train": 16, "n_test": 8, "task_options": {
        "bijection": {"V": 4, "L": 4}, "hmm": {"S": 3, "O": 3, "K": 4},
        "recall": {"N": 2, "n_keys": 4, "n_values": 4, "filler": 1, "filler_vocab": 1, "Q": 2},
        "taskid": {"M": 3, "n_x": 3, "n_y": 3, "K": 3}}},
    "permuted_tokens": {"name": "permuted_tokens", "n_experiences": 2, "n_train": 16, "n_test": 8, "task_options": {"V": 4, "L": 4}},
}


def stream_config(config: StreamConfig | Mapping[str, Any]) -> StreamConfig:
    """The registered config dataclass for a config or a mapping with ``name`` (checks every field)."""
    return config_from(STREAMS, _plain(config) if isinstance(config, Mapping) else config, "stream")


def build_stream(config: StreamConfig | Mapping[str, Any]) -> WindTunnelStream:
    config = stream_config(config)
    return STREAMS[config.name][1](config)


def _plain(value: Any) -> Any:
    """Hydra containers -> dicts and lists (so configs from YAML compare and print as plain data)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(v) for v in value]
    return value
