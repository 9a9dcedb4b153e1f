"""Plasticity methods as Avalanche plugins, composable with any strategy (SPEC §4).

* :class:`ContinualBackpropPlugin`: continual backprop (Dohare et al., Nature 2024; their public
  ``GnT`` code). After every update, for every unit (:mod:`framework.continual.units`): running
  mean activation m <- eta m + (1-eta) E[h] and contribution utility
  u <- eta u + (1-eta) mean|w_out| * E|h|, both bias-corrected by 1 - eta^age. Units older than
  the maturity are eligible; rho * (eligible count) units are replaced per step (the fractional
  part carries over), lowest corrected utility first: next-layer bias absorbs the unit's mean
  contribution, fresh incoming weights, zero outgoing weights, zeroed optimizer state, age 0.
* :class:`ShrinkPerturbPlugin`: shrink-and-perturb (Ash & Adams 2020): w <- (1 - shrink) w +
  sigma * N(0, 1) on every parameter, after every step (Dohare et al.'s continual form: weight
  decay plus noise) or at the start of every experience after the first (Ash & Adams' form;
  their "shrink by lambda" keeps lambda of the weight, i.e. shrink = 1 - lambda here).
* :class:`L2InitPlugin`: L2 regularisation towards the initial parameters (Kumar et al. 2023):
  loss += strength * sum ||theta - theta_0||^2, theta_0 the parameters when training began.
* :class:`ReDoPlugin`: recycling dormant neurons (Sokar et al. 2023): every ``every`` steps a
  unit is tau-dormant when E|h_i| / mean_j E|h_j| <= tau over its layer on that step's minibatch;
  dormant units get fresh incoming weights, zero outgoing weights and zeroed optimizer state
  (no bias absorption in ReDo).

Activations are recorded only during the strategy's own training forward (armed between
``before_forward`` and ``after_forward``), never during GEM's memory passes, LwF's teacher or an
evaluation. If a strategy replaces its model (GDumb retrains from a copy of the initial model),
the units are found again and their statistics restart.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

import torch
from avalanche.training.plugins import SupervisedPlugin

from framework.continual.units import ActivationStats, find_units, reset_units
from framework.errors import ConfigError, require


def _rate(value: Any, field: str) -> None:
    require(isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1, field,
            f"must be a rate in (0, 1], got {value!r}")


def _count(value: Any, field: str, least: int = 1) -> None:
    require(isinstance(value, int) and not isinstance(value, bool) and value >= least, field,
            f"must be an integer >= {least}, got {value!r}")


@dataclass
class ContinualBackpropConfig:
    name: str = "cbp"
    replacement_rate: float = 1e-4  # rho; Dohare et al.: 1e-4 .. 1e-6 on Permuted MNIST
    decay: float = 0.99  # eta, of the utility and mean-activation running averages
    maturity: int = 100  # steps a unit is protected after it is (re)born
    seed: int = 0  # fresh weights are drawn from a generator with this seed

    def __post_init__(self) -> None:
        _rate(self.replacement_rate, "replacement_rate")
        _rate(self.decay, "decay")
        require(self.decay < 1, "decay", f"must be < 1 (the bias correction divides by 1 - decay^age), got {self.decay}")
        _count(self.maturity, "maturity", 0)
        _count(self.seed, "seed", 0)


@dataclass
class ShrinkPerturbConfig:
    name: str = "shrink_perturb"
    shrink: float = 1e-4  # fraction of every weight removed at each application
    sigma: float = 1e-5  # std of the Gaussian noise added at each application
    at: str = "step"  # "step" (after every update) or "experience" (before every experience but the first)
    seed: int = 0

    def __post_init__(self) -> None:
        _rate(self.shrink, "shrink")
        require(isinstance(self.sigma, (int, float)) and math.isfinite(self.sigma) and self.sigma >= 0, "sigma",
                f"must be a finite number >= 0, got {self.sigma!r}")
        require(self.at in ("step", "experience"), "at", f"must be 'step' or 'experience', got {self.at!r}")
        _count(self.seed, "seed", 0)


@dataclass
class L2InitConfig:
    name: str = "l2_init"
    strength: float = 1e-2  # lambda; Kumar et al. sweep 1e-2 .. 1e-4

    def __post_init__(self) -> None:
        require(isinstance(self.strength, (int, float)) and not isinstance(self.strength, bool)
                and math.isfinite(self.strength) and self.strength > 0, "strength",
                f"must be a finite number > 0, got {self.strength!r}")


@dataclass
class ReDoConfig:
    name: str = "redo"
    tau: float = 0.1  # dormancy threshold on E|h_i| / layer mean; Sokar et al.: 0.025 to measure, 0.1 to recycle
    every: int = 100  # steps between recycling passes
    seed: int = 0

    def __post_init__(self) -> None:
        _rate(self.tau, "tau")
        _count(self.every, "every")
        _count(self.seed, "seed", 0)


class _UnitPlugin(SupervisedPlugin):
    """Finds the units of the strategy's model, keeps them current, records the training forward."""

    def __init__(self, seed: int):
        super().__init__()
        self.generator = torch.Generator().manual_seed(seed)
        self._model = None
        self.groups: list = []
        self.stats: Optional[ActivationStats] = None
        self.resets = 0  # units reset so far (reports)

    def _attach(self, strategy) -> None:
        if strategy.model is self._model:
            return
        if self.stats is not None:
            self.stats.remove()
        self._model = strategy.model
        self.groups = find_units(strategy.model)
        self.stats = ActivationStats(self.groups)
        self.on_attach()

    def on_attach(self) -> None:
        pass

    def on_restore(self, strategy) -> None:
        """After a checkpoint's attributes were loaded (framework.continual.state): hook the units of
        the restored model again, keeping the statistics the checkpoint holds."""
        saved = self.__dict__.get("state")
        if self.stats is not None:  # the hooks of the model's units before the restore (a step checkpoint)
            self.stats.remove()
        self._model, self.stats = None, None
        self._attach(strategy)
        if saved is not None:
            self.state = saved

    def arm(self, strategy) -> bool:
        return True

    def before_forward(self, strategy, **kwargs):
        self._attach(strategy)
        self.stats.reset()
        self.stats.armed = self.arm(strategy)

    def after_forward(self, strategy, **kwargs):
        self.stats.armed = False


class ContinualBackpropPlugin(_UnitPlugin):
    def __init__(self, config: ContinualBackpropConfig = ContinualBackpropConfig()):
        super().__init__(config.seed)
        self.config = config

    def on_attach(self) -> None:
        self.state = {g.name: {"utility": torch.zeros(g.size), "mean": torch.zeros(g.size),
                               "age": torch.zeros(g.size, dtype=torch.long), "pending": 0.0}
                      for g in self.groups if g.resettable}

    @torch.no_grad()
    def after_update(self, strategy, **kwargs):
        eta, rho, m = self.config.decay, self.config.replacement_rate, self.config.maturity
        for group in self.groups:
            mean_abs = self.stats.mean_abs(group.name)
            if not group.resettable or mean_abs is None:
                continue
            s = self.state[group.name]
            s["age"] += 1
            s["mean"].mul_(eta).add_((1 - eta) * self.stats.mean(group.name).cpu())
            w_out = group.outgoing_weights().abs().mean(0).cpu()  # (size,)
            s["utility"].mul_(eta).add_((1 - eta) * w_out * mean_abs.cpu())
            correction = 1 - eta ** s["age"].double()
            eligible = (s["age"] > m).nonzero().flatten()
            s["pending"] += rho * eligible.numel()
            k = int(s["pending"])
            if k == 0:
                continue
            s["pending"] -= k
            utility = (s["utility"].double() / correction)[eligible]
            chosen = eligible[utility.argsort()[:k]]
            mean_h = (s["mean"].double() / correction).float()
            reset_units(group, chosen, mean_h, strategy.optimizer, self.generator)
            s["utility"][chosen] = 0.0
            s["mean"][chosen] = 0.0
            s["age"][chosen] = 0
            self.resets += chosen.numel()


class ReDoPlugin(_UnitPlugin):
    def __init__(self, config: ReDoConfig = ReDoConfig()):
        super().__init__(config.seed)
        self.config = config

    def arm(self, strategy) -> bool:
        return (strategy.clock.train_iterations + 1) % self.config.every == 0

    @torch.no_grad()
    def after_update(self, strategy, **kwargs):
        if not self.arm(strategy):
            return
        for group in self.groups:
            mean_abs = self.stats.mean_abs(group.name)
            if not group.resettable or mean_abs is None:
                continue
            score = mean_abs / mean_abs.mean().clamp_min(1e-12)
            dormant = (score <= self.config.tau).nonzero().flatten().cpu()
            reset_units(group, dormant, None, strategy.optimizer, self.generator)
            self.resets += dormant.numel()


class ShrinkPerturbPlugin(SupervisedPlugin):
    def __init__(self, config: ShrinkPerturbConfig = ShrinkPerturbConfig()):
        super().__init__()
        self.config = config
        self.generator = torch.Generator().manual_seed(config.seed)

    @torch.no_grad()
    def apply(self, model: torch.nn.Module) -> None:
        for p in model.parameters():
            p.mul_(1 - self.config.shrink)
            if self.config.sigma > 0:
                p.add_(torch.randn(p.shape, generator=self.generator).to(p) * self.config.sigma)

    def after_update(self, strategy, **kwargs):
        if self.config.at == "step":
            self.apply(strategy.model)

    def before_training_exp(self, strategy, **kwargs):
        if self.config.at == "experience" and strategy.clock.train_exp_counter > 0:
            self.apply(strategy.model)


class L2InitPlugin(SupervisedPlugin):
    def __init__(self, config: L2InitConfig = L2InitConfig()):
        super().__init__()
        self.config = config
        self.initial: Optional[dict] = None

    def before_training(self, strategy, **kwargs):
        if self.initial is None:
            self.initial = {n: p.detach().clone() for n, p in strategy.model.named_parameters()}

    def penalty(self, model: torch.nn.Module) -> torch.Tensor:
        return sum(((p - self.initial[n]) ** 2).sum() for n, p in model.named_parameters() if n in self.initial)

    def before_backward(self, strategy, **kwargs):
        strategy.loss += self.config.strength * self.penalty(strategy.model)


PLASTICITY: dict[str, tuple[type, type]] = {
    "cbp": (ContinualBackpropConfig, ContinualBackpropPlugin),
    "shrink_perturb": (ShrinkPerturbConfig, ShrinkPerturbPlugin),
    "l2_init": (L2InitConfig, L2InitPlugin),
    "redo": (ReDoConfig, ReDoPlugin),
}


def build_plasticity(config: Any) -> SupervisedPlugin:
    """A plasticity plugin from its config dataclass or a mapping with ``name``."""
    if isinstance(config, Mapping):
        name = config.get("name", "?")
        if name not in PLASTICITY:
            raise ConfigError("name", f"unknown plasticity method {name!r}; choose one of: {', '.join(PLASTICITY)}")
        cls = PLASTICITY[name][0]
        allowed = {f.name for f in dataclasses.fields(cls)}
        for key in config:
            if key not in allowed:
                raise ConfigError(str(key), f"not a field of {name}; fields: {', '.join(sorted(allowed))}")
        config = cls(**dict(config))
    name = getattr(config, "name", "?")
    if name not in PLASTICITY or not isinstance(config, PLASTICITY[name][0]):
        raise ConfigError("name", f"unknown plasticity method {name!r}; choose one of: {', '.join(PLASTICITY)}")
    return PLASTICITY[name][1](config)
