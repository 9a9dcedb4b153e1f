"""Continual-learning strategies on Avalanche 0.6.0, trained on the exact posterior (SPEC §4).

:class:`PosteriorStrategy` is Avalanche's ``SupervisedTemplate`` with what our data needs: the
criterion is :class:`PosteriorLoss`, soft cross-entropy against the exact posterior at the scored
positions (the rows of the target that are not all zero; see :mod:`framework.continual.data`);
it is passed as ``criterion=`` rather than by overriding ``criterion()`` because GEM, A-GEM and
EWC call ``strategy._criterion(model(x), y)`` directly. No default evaluator (its accuracy takes
the argmax of the targets, meaningless here; the bits metrics live in
:mod:`framework.continual.metrics`), a real minibatch size by default (Avalanche's is 1), and
gradient clipping before every step as in the wind-tunnel training recipe.

Strategies, by name (``build_strategy``): naive, ewc, si, mas, lwf, replay, gem, agem, gdumb,
cumulative, joint. What had to change from Avalanche as shipped, on soft-target sequence data:

* LwF: Avalanche's needs class targets (it distils only "previously active units", read from
  ``dataset.targets``) and treats dim 1 as classes. :class:`PosteriorLwFPlugin` distils the
  previous model's tempered predictive into the current one at the scored positions of the
  current minibatch: KL(softmax(old/T) || softmax(new/T)) averaged over scored positions, times
  alpha (Avalanche's convention: no T^2 factor).
* MAS: Avalanche's importance is the gradient of the squared L2 norm of the whole output, which
  here includes every unscored position; :class:`PosteriorMASPlugin` takes the norm over the
  scored positions only.
* GDumb: Avalanche's buffer is class-balanced over class targets, which we do not have;
  :class:`PosteriorGDumbPlugin` keeps an experience-balanced reservoir buffer instead.
* GEM: needs ``quadprog`` (installed) and reads the task id from the last minibatch element,
  which our items carry; it runs unchanged.
* Replay, A-GEM, GDumb: their buffers hold materialised copies of their sequences
  (:class:`MaterialisedBuffer`), since a few items from many lazily made experiences would each
  regenerate a chunk; the sampling is Avalanche's.

Avalanche's buffers (replay, GDumb, A-GEM) sample with the global torch/python RNGs: seed those
(``torch.manual_seed``, ``random.seed``) for a reproducible run.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import random
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from avalanche.benchmarks.utils.data_loader import GroupBalancedInfiniteDataLoader
from avalanche.core import BasePlugin
from avalanche.training.plugins import (
    AGEMPlugin,
    EvaluationPlugin,
    EWCPlugin,
    GDumbPlugin,
    GEMPlugin,
    MASPlugin,
    ReplayPlugin,
    SupervisedPlugin,
    SynapticIntelligencePlugin,
)
from avalanche.training.storage_policy import ExperienceBalancedBuffer
from avalanche.training.supervised import Cumulative, JointTraining
from avalanche.training.templates import SupervisedTemplate
from avalanche.training.utils import zerolike_params_dict
from torch import nn
from torch.utils.data import DataLoader

from framework.continual.data import materialise
from framework.errors import ConfigError, require
from framework.metrics.bits import soft_cross_entropy
from framework.training.loop import make_optimizer

STRATEGIES = ("naive", "ewc", "si", "mas", "lwf", "replay", "gem", "agem", "gdumb", "cumulative", "joint")


def scored(target: torch.Tensor) -> torch.Tensor:
    """(B, T) bool: the positions whose target row is a distribution (unscored rows are all zero)."""
    return target.sum(-1) > 0


class PosteriorLoss:
    """Soft cross-entropy (nats) against the exact posterior, averaged over the scored positions.

    ``logits`` (B, T, C) from the model, ``target`` (B, T, C) from the dataset. Its excess over the
    posterior's entropy is KL(posterior || model), so minimising it targets the exact posterior.
    """

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mask = scored(target)
        return soft_cross_entropy(target[mask], logits[mask])  # (N, C) rows of scored positions


@dataclass
class StrategyConfig:
    name: str = "naive"  # one of STRATEGIES
    lr: float = 1e-3  # AdamW (framework.training.loop.make_optimizer: decay on matrices only)
    weight_decay: float = 0.0
    betas_2: float = 0.99
    grad_clip: Optional[float] = 1.0  # max gradient norm before each step; None: no clipping
    train_mb_size: int = 32
    train_epochs: int = 1  # passes over each experience: the per-experience budget
    eval_mb_size: int = 128
    ewc_lambda: float = 10.0
    si_lambda: float = 1.0
    mas_lambda: float = 1.0
    mas_alpha: float = 0.5  # weight of the previous importance when MAS merges experiences
    lwf_alpha: float = 1.0
    lwf_temperature: float = 2.0
    mem_size: int = 200  # replay and GDumb buffer, in sequences
    patterns_per_exp: int = 64  # GEM and A-GEM memory per experience
    gem_strength: float = 0.5  # GEM's gamma
    agem_sample_size: int = 64  # A-GEM's reference minibatch

    def __post_init__(self) -> None:
        require(self.name in STRATEGIES, "name", f"unknown strategy {self.name!r}; choose one of: {', '.join(STRATEGIES)}")
        for name in ("lr", "lwf_temperature"):
            value = getattr(self, name)
            require(_number(value) and value > 0, name, f"must be a finite number > 0, got {value!r}")
        for name in ("weight_decay", "ewc_lambda", "si_lambda", "mas_lambda", "lwf_alpha", "gem_strength"):
            value = getattr(self, name)
            require(_number(value) and value >= 0, name, f"must be a finite number >= 0, got {value!r}")
        require(_number(self.betas_2) and 0 <= self.betas_2 < 1, "betas_2", f"must be in [0, 1), got {self.betas_2!r}")
        require(_number(self.mas_alpha) and 0 <= self.mas_alpha <= 1, "mas_alpha", f"must be in [0, 1], got {self.mas_alpha!r}")
        require(self.grad_clip is None or (_number(self.grad_clip) and self.grad_clip > 0), "grad_clip",
                f"must be None or a number > 0, got {self.grad_clip!r}")
        for name in ("train_mb_size", "train_epochs", "eval_mb_size", "mem_size", "patterns_per_exp", "agem_sample_size"):
            value = getattr(self, name)
            require(isinstance(value, int) and not isinstance(value, bool) and value >= 1, name,
                    f"must be an integer >= 1, got {value!r}")


def strategy_config(config: "StrategyConfig | Mapping[str, Any]") -> StrategyConfig:
    """A StrategyConfig from itself or a mapping (a Hydra node); an unknown key is a ConfigError."""
    if isinstance(config, StrategyConfig):
        return config
    if not isinstance(config, Mapping):
        raise TypeError(f"expected a StrategyConfig or a mapping, got {type(config).__name__}")
    allowed = {f.name for f in dataclasses.fields(StrategyConfig)}
    for key in config:
        if key not in allowed:
            raise ConfigError(str(key), f"not a field of the strategy config; fields: {', '.join(sorted(allowed))}")
    return StrategyConfig(**dict(config))


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


class PosteriorStrategy(SupervisedTemplate):
    """SupervisedTemplate on exact-posterior targets; plugins add the continual-learning method."""

    # Max gradient norm before each step (None: off). An attribute, not an __init__ argument:
    # Avalanche's misspelled-kwargs check rejects arguments Cumulative/JointTraining do not list.
    grad_clip: Optional[float] = 1.0

    def __init__(self, *, model: nn.Module, optimizer: torch.optim.Optimizer, criterion=None,
                 train_mb_size: int = 32, train_epochs: int = 1, eval_mb_size: int = 128,
                 device="cpu", plugins: Optional[Sequence[BasePlugin]] = None, evaluator=None, **kwargs):
        if evaluator is None:
            with warnings.catch_warnings():  # "no loggers": there are none on purpose
                warnings.simplefilter("ignore")
                evaluator = EvaluationPlugin(loggers=[])
        super().__init__(model=model, optimizer=optimizer, criterion=criterion or PosteriorLoss(),
                         train_mb_size=train_mb_size, train_epochs=train_epochs, eval_mb_size=eval_mb_size,
                         device=device, plugins=plugins, evaluator=evaluator, **kwargs)

    def optimizer_step(self):
        # after the plugins' gradient edits (GEM / A-GEM projections happen in after_backward)
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()


class PosteriorCumulative(Cumulative, PosteriorStrategy):
    """Avalanche's Cumulative (train on every experience so far) on exact-posterior targets."""


class PosteriorJoint(JointTraining, PosteriorStrategy):
    """Avalanche's JointTraining (one pass over the union of all experiences): the offline reference."""


class PosteriorLwFPlugin(SupervisedPlugin):
    """Learning without Forgetting (Li & Hoiem 2017) at the scored positions of the current minibatch."""

    def __init__(self, alpha: float = 1.0, temperature: float = 2.0):
        super().__init__()
        self.alpha, self.temperature = alpha, temperature
        self.prev_model: Optional[nn.Module] = None

    def distillation(self, logits: torch.Tensor, prev_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean over scored positions of KL(softmax(prev/T) || softmax(new/T)) (nats)."""
        mask = scored(target)
        log_new = F.log_softmax(logits[mask].float() / self.temperature, -1)  # (N, C)
        log_old = F.log_softmax(prev_logits[mask].float() / self.temperature, -1)
        return (log_old.exp() * (log_old - log_new)).sum(-1).mean()

    def before_backward(self, strategy, **kwargs):
        if self.prev_model is None or self.alpha == 0:
            return
        with torch.no_grad():
            prev_logits = self.prev_model(strategy.mb_x)
        strategy.loss += self.alpha * self.distillation(strategy.mb_output, prev_logits, strategy.mb_y)

    def after_training_exp(self, strategy, **kwargs):
        self.prev_model = copy.deepcopy(strategy.model).eval()
        for p in self.prev_model.parameters():
            p.requires_grad_(False)


class PosteriorMASPlugin(MASPlugin):
    """MAS (Aljundi et al. 2018) with the output norm taken over the scored positions only."""

    def _get_importance(self, strategy):
        importance = dict(zerolike_params_dict(strategy.model))
        dataset = strategy.experience.dataset
        loader = DataLoader(dataset, batch_size=strategy.train_mb_size, collate_fn=getattr(dataset, "collate_fn", None))
        strategy.model.train()
        for batch in loader:
            x, target = batch[0].to(strategy.device), batch[1].to(strategy.device)
            strategy.optimizer.zero_grad()
            out = strategy.model(x)[scored(target)]  # (N, C)
            out.pow(2).sum(-1).mean().backward()  # squared L2 norm of the output, per scored position
            for name, param in strategy.model.named_parameters():
                if param.requires_grad and param.grad is not None:
                    importance[name].data += param.grad.abs()
        strategy.optimizer.zero_grad()
        for k in importance:
            importance[k].data /= float(len(loader))
        return importance


class MaterialisedBuffer(ExperienceBalancedBuffer):
    """Avalanche's experience-balanced reservoir buffer (Replay's default), holding its sequences
    in memory: a buffer draws a few items from many experiences, which from the lazy datasets
    would regenerate a whole chunk per item (framework.continual.data)."""

    def post_adapt(self, agent, exp):
        super().post_adapt(agent, exp)
        for group in self.buffer_groups.values():
            if not getattr(group, "materialised", False):
                group.buffer = materialise(group.buffer)
                group.materialised = True


class PosteriorAGEMPlugin(AGEMPlugin):
    """A-GEM (Chaudhry et al. 2019) as shipped, with each experience's memory held in memory."""

    rng_tape = None  # framework.continual.steps: its memory draws are draw points of the experience

    def on_restore(self, strategy) -> None:
        """After a checkpoint (framework.continual.state): the memory loader, as update_memory makes
        it (its iterator is lazy, so making it draws nothing from the RNGs). Within an experience (a
        step checkpoint) the loader the experience has been drawing from is kept."""
        if self.buffers and self.buffer_dataloader is None:
            self.buffer_dataloader = GroupBalancedInfiniteDataLoader(
                self.buffers, batch_size=self.sample_size // len(self.buffers), num_workers=0, pin_memory=False,
                persistent_workers=False)
            self.buffer_dliter = iter(self.buffer_dataloader)

    def sample_from_memory(self):
        if self.rng_tape is None:
            return super().sample_from_memory()
        with self.rng_tape.draw():
            return super().sample_from_memory()

    def skip_iteration(self, strategy) -> None:
        """A step replayed without training (framework.continual.steps): its memory draw only."""
        if len(self.buffers) > 0:
            self.sample_from_memory()

    def update_memory(self, dataset, num_workers=0, **kwargs):
        if len(dataset) > self.patterns_per_experience:
            indices = list(range(len(dataset)))
            random.shuffle(indices)  # Avalanche's own draw
            dataset = dataset.subset(indices[: self.patterns_per_experience])
        super().update_memory(materialise(dataset), num_workers=num_workers, **kwargs)


class PosteriorGDumbPlugin(GDumbPlugin):
    """GDumb (Prabhu et al. 2020): retrain from the initial model on a buffer, here balanced over
    experiences (reservoir sampling within each) since there are no class targets to balance."""

    def __init__(self, mem_size: int = 200):
        super().__init__(mem_size)
        self.storage_policy = MaterialisedBuffer(max_size=mem_size, adaptive_size=True)

    def after_train_dataset_adaptation(self, strategy, **kwargs):
        # GDumbPlugin calls the buffer's deprecated update(); post_adapt is the same step
        self.storage_policy.post_adapt(strategy, strategy.experience)
        strategy.adapted_dataset = self.storage_policy.buffer


def strategy_plugins(config: StrategyConfig) -> list[BasePlugin]:
    """The Avalanche plugins that make ``config.name`` out of the template."""
    c = config
    return {
        "naive": [], "cumulative": [], "joint": [],
        "ewc": [EWCPlugin(ewc_lambda=c.ewc_lambda)],
        "si": [SynapticIntelligencePlugin(si_lambda=c.si_lambda)],
        "mas": [PosteriorMASPlugin(lambda_reg=c.mas_lambda, alpha=c.mas_alpha)],
        "lwf": [PosteriorLwFPlugin(alpha=c.lwf_alpha, temperature=c.lwf_temperature)],
        "replay": [ReplayPlugin(mem_size=c.mem_size, storage_policy=MaterialisedBuffer(max_size=c.mem_size))],
        "gem": [GEMPlugin(patterns_per_experience=c.patterns_per_exp, memory_strength=c.gem_strength)],
        "agem": [PosteriorAGEMPlugin(patterns_per_experience=c.patterns_per_exp, sample_size=c.agem_sample_size)],
        "gdumb": [PosteriorGDumbPlugin(mem_size=c.mem_size)],
    }[c.name]


def build_strategy(config: StrategyConfig, model: nn.Module, *, plugins: Sequence[BasePlugin] = (),
                   device="cpu", optimizer: Optional[torch.optim.Optimizer] = None,
                   evaluator: Optional[EvaluationPlugin] = None) -> PosteriorStrategy:
    """A ready strategy: ``strategy.train(experience)`` for each experience of a stream's train_stream
    (``joint``: ``strategy.train(stream.train_stream)`` once). ``plugins`` adds plasticity methods
    and recorders (:mod:`framework.continual.plasticity`, :mod:`framework.continual.metrics`); ``evaluator``
    an EvaluationPlugin with loggers (None: one with no metrics and no loggers)."""
    optimizer = optimizer or make_optimizer(model, config)  # type: ignore[arg-type]  (reads lr, weight_decay, betas_2)
    cls = {"cumulative": PosteriorCumulative, "joint": PosteriorJoint}.get(config.name, PosteriorStrategy)
    strategy = cls(model=model, optimizer=optimizer, criterion=PosteriorLoss(), train_mb_size=config.train_mb_size,
                   train_epochs=config.train_epochs, eval_mb_size=config.eval_mb_size, device=device,
                   plugins=[*strategy_plugins(config), *plugins], evaluator=evaluator)
    strategy.grad_clip = config.grad_clip
    return strategy
