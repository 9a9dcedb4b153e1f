"""The continual plan: the stream, the strategy, its plugins and every model, checked before compute.

Every field is checked by the library's own config classes and errors are placed under their dotted
path (``stream.n_experiences``, ``strategy.mem_size``, ``plugins[0].replacement_rate``). Combinations
that cannot work are refused here too, with the reason:

* continual backprop or ReDo on a model with no unit they may reset: an LSTM with one layer
  (its only layer feeds the final LayerNorm, which mixes every unit, so a reset unit cannot be
  removed without changing the function; framework.continual.units), where they would silently
  do nothing;
* a plasticity method with ``joint``: Joint trains once on the union of the stream, so there is
  no "later experience" whose plasticity could be kept, and no R beyond its single row;
* GDumb with a buffer smaller than the number of experiences: its experience-balanced buffer
  would hold nothing of some experiences, and it retrains from scratch on the buffer alone;
* budget keys given inside ``strategy`` (``train_epochs``, ``train_mb_size``, ``eval_mb_size``):
  they live in ``budget`` and ``eval_batch_size``, shared with the fresh baseline.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, List

from framework.config import registered
from framework.continual.plasticity import PLASTICITY, build_plasticity
from framework.continual.strategies import StrategyConfig, strategy_config
from framework.continual.streams import StreamConfig, WindTunnelStream, build_stream, sequence_model, stream_config
from framework.continual.units import find_units
from framework.errors import ConfigError
from framework.models import MODELS, ModelConfig, article, build_model, count_params
from framework.models.capacity import matched, size_reference
from framework.runners.continual.config import ContinualConfig

BUDGET_KEYS = {"train_epochs": "budget.epochs", "train_mb_size": "budget.batch_size", "eval_mb_size": "eval_batch_size"}
RESETTING = ("cbp", "redo")  # plasticity methods that reset units


@dataclass
class ContinualJob:
    model_key: str
    model_config: ModelConfig
    params: int

    def name(self, plan: "ContinualPlan") -> str:
        return f"{plan.stream_config.name}_{plan.method}_{self.model_key}"


@dataclass
class ContinualPlan:
    settings: ContinualConfig
    stream_config: StreamConfig
    stream: WindTunnelStream
    strategy: StrategyConfig  # with the budget in it
    plugins: List[Any]  # plasticity config dataclasses
    jobs: List[ContinualJob] = field(default_factory=list)

    @property
    def plugin_names(self) -> str:
        return "+".join(p.name for p in self.plugins) or "none"

    @property
    def method(self) -> str:
        """strategy[+plugins]: how a job, a report and a leaderboard row name what was run."""
        return self.strategy.name + "".join(f"+{p.name}" for p in self.plugins)

    @property
    def steps_per_experience(self) -> int:
        return self.strategy.train_epochs * math.ceil(self.stream_config.n_train / self.strategy.train_mb_size)

    def make_model(self, job: ContinualJob):
        """A fresh model for ``job`` (the caller seeds the RNG), prepared for the stream."""
        s = self.stream
        return s.prepare_model(build_model(job.model_config, s.vocab_size, s.n_classes, s.seq_len))


def _strategy(settings: ContinualConfig) -> StrategyConfig:
    node = dict(settings.strategy or {})
    for key, where in BUDGET_KEYS.items():
        if key in node:
            raise ConfigError(f"strategy.{key}", f"the per-experience budget is set in {where} (shared with the fresh "
                                                 "baseline), not in strategy")
    node.setdefault("name", "naive")
    node.update(train_epochs=settings.budget.epochs, train_mb_size=settings.budget.batch_size,
                eval_mb_size=settings.eval_batch_size)
    try:
        return strategy_config(node)
    except ConfigError as err:
        raise err.under("strategy") from None


def _plugins(settings: ContinualConfig) -> list:
    if not isinstance(settings.plugins, (list, tuple)):
        raise ConfigError("plugins", f"must be a list of plasticity methods ({', '.join(PLASTICITY)}), got {settings.plugins!r}")
    configs, seen = [], set()
    for i, node in enumerate(settings.plugins):
        where = f"plugins[{i}]"
        if not isinstance(node, dict):
            raise ConfigError(where, f"must be a mapping with a name ({', '.join(PLASTICITY)}), got {node!r}")
        try:
            plugin = build_plasticity(dict(node))
        except ConfigError as err:
            raise err.under(where) from None
        if plugin.config.name in seen:
            raise ConfigError(where, f"{plugin.config.name} is listed twice")
        seen.add(plugin.config.name)
        configs.append(plugin.config)
    return configs


def _check_combination(plan: ContinualPlan, job: ContinualJob) -> None:
    s, strategy = plan.stream, plan.strategy
    for i, plugin in enumerate(plan.plugins):
        if plugin.name in RESETTING:
            with_meta = build_model(job.model_config, s.vocab_size, s.n_classes, s.seq_len)
            groups = find_units(with_meta)
            if not any(g.resettable for g in groups):
                reason = ("its only layer feeds the final LayerNorm, which mixes every unit, so no unit can be reset "
                          "without changing the function; use n_layers >= 2") if job.model_config.name == "lstm" else \
                         "it has no unit layer that can be reset"
                raise ConfigError(f"plugins[{i}]", f"{plugin.name} cannot act on models.{job.model_key} "
                                                   f"({article(job.model_config.name)}): {reason}")
    if strategy.name == "joint" and plan.plugins:
        raise ConfigError("plugins", f"joint trains once on the union of the stream: there is no later experience "
                                     f"for {plan.plugin_names} to keep plastic; use cumulative for the upper bound")


def resolve(settings: ContinualConfig) -> ContinualPlan:
    if not settings.stream:
        raise ConfigError("stream", "no stream selected; pick one (stream=permuted_tokens) or an experiment "
                                    "(experiment=continual/smoke)")
    if not settings.models:
        raise ConfigError("models", "no model selected; pick an experiment (experiment=continual/smoke) or add one")
    for name in ("eval_batch_size", "probe_sequences"):
        value = getattr(settings, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(name, f"must be an integer >= 1, got {value!r}")
    if not isinstance(settings.checkpoint_every, int) or isinstance(settings.checkpoint_every, bool) \
            or settings.checkpoint_every < 0:
        raise ConfigError("checkpoint_every", "must be an integer >= 0 (training steps between checkpoints inside "
                                              f"an experience; 0: only after each experience), got "
                                              f"{settings.checkpoint_every!r}")
    if not (isinstance(settings.dormant_tau, (int, float)) and 0 <= settings.dormant_tau < 1):
        raise ConfigError("dormant_tau", f"must be in [0, 1), got {settings.dormant_tau!r}")
    try:
        config = stream_config(dict(settings.stream))
        stream = build_stream(config)
    except ConfigError as err:
        raise err.under("stream") from None
    strategy = _strategy(settings)
    if strategy.name == "gdumb" and strategy.mem_size < config.n_experiences:
        raise ConfigError("strategy.mem_size", f"gdumb's buffer ({strategy.mem_size}) must hold at least one sequence "
                                               f"of each of the {config.n_experiences} experiences")
    plan = ContinualPlan(settings, config, stream, strategy, _plugins(settings))
    model_configs = {key: registered(MODELS, node, f"models.{key}", "model") for key, node in settings.models.items()}
    sizes = (stream.vocab_size, stream.n_classes, stream.seq_len)
    at_stream = matched(model_configs, size_reference(model_configs, settings.match_to), *sizes)
    for key, model_config in at_stream.items():
        try:
            params = count_params(build_model(model_config, *sizes))
        except ConfigError as err:
            raise err.under(f"models.{key}") from None
        job = ContinualJob(key, model_config, params)
        _check_combination(plan, job)
        plan.jobs.append(job)
    return plan


def describe(plan: ContinualPlan) -> dict:
    """What a run entry records of its settings."""
    return {"stream_config": dataclasses.asdict(plan.stream_config), "strategy_config": dataclasses.asdict(plan.strategy),
            "plugin_configs": [dataclasses.asdict(p) for p in plan.plugins]}


__all__ = ["ContinualJob", "ContinualPlan", "describe", "resolve", "sequence_model"]
