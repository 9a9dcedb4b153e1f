"""Capacity matching: resize an architecture to a target parameter count.

The paper compares architectures at equal capacity (MLPs "parameter count matched to the
transformer within 1%"). Each config class names one integer ``size_field`` (the count grows
monotonically with it; mamba and lstm: d_model, mlp: hidden), and we keep the value whose built
model is closest to the target. An architecture without one (the transformer) is left as it is.

Counts come from building the model on the ``meta`` device: exact by construction (no formula to
drift from the model code) and fast, since meta tensors allocate no memory and init is a no-op.

The MLP's count is dominated by its prefix read (max_len * d_model * hidden weights), so one step
of ``hidden`` can exceed the tolerance when max_len is large (about 4.6% per step at max_len 153,
d_model 32, against a 117k target). Only then do we also move its ``width_field`` (``d_model``), to
the nearest width (closest to the configured one) that has a ``hidden`` within tolerance.
"""
from __future__ import annotations

import dataclasses

import torch

from framework.errors import ConfigError
from framework.models.base import ModelConfig, count_params

_MAX_SIZE = 1 << 16


def param_count(config: ModelConfig, vocab_size: int, n_classes: int, max_len: int) -> int:
    """The exact trainable-parameter count of ``build_model(config, ...)``, without allocating it."""
    from framework.models import build_model  # here, not at the top: framework.models imports us

    with torch.device("meta"):
        return count_params(build_model(config, vocab_size, n_classes, max_len))


def _closest_size(config: ModelConfig, field: str, target: int, counts) -> tuple[int, int]:
    """The size in 1.._MAX_SIZE whose count is closest to ``target`` (the smaller one on a tie),
    by bisection on the monotone count. Returns (size, count)."""
    def count(size: int) -> int:
        return counts(dataclasses.replace(config, **{field: size}))

    lo, hi = 1, 1
    while hi < _MAX_SIZE and count(hi) < target:  # exponential search for an upper bracket
        lo, hi = hi, min(2 * hi, _MAX_SIZE)
    while lo < hi:  # smallest size with count >= target
        mid = (lo + hi) // 2
        if count(mid) < target:
            lo = mid + 1
        else:
            hi = mid
    best = min((s for s in (lo - 1, lo) if s >= 1), key=lambda s: (abs(count(s) - target), s))
    return best, count(best)


def match_params(
    config: ModelConfig,
    target_params: int,
    vocab_size: int,
    n_classes: int,
    max_len: int,
    tolerance: float = 0.02,
) -> ModelConfig:
    """A copy of ``config`` resized so its model has ``target_params`` parameters within
    ``tolerance`` (relative). Deterministic: the same inputs give the same config.

    Raises ConfigError("match_params", ...) when no size is close enough.
    """
    field = config.size_field
    if field is None:  # not resizable (the transformer): it sets targets, it does not meet them
        return config
    if target_params < 1:
        raise ConfigError("match_params", f"target parameter count must be >= 1, got {target_params}")

    cache: dict[tuple, int] = {}

    def counts(cfg: ModelConfig) -> int:
        key = dataclasses.astuple(cfg)
        if key not in cache:
            cache[key] = param_count(cfg, vocab_size, n_classes, max_len)
        return cache[key]

    def within(n: int) -> bool:
        return abs(n - target_params) <= tolerance * target_params

    size, n = _closest_size(config, field, target_params, counts)
    if within(n):
        return dataclasses.replace(config, **{field: size})
    closest = f"{field}={size} gives {n}"

    if config.width_field:  # widths nearest the configured one first, the smaller on a tie
        d0 = getattr(config, config.width_field)
        for d in sorted(range(1, 4 * d0 + 1), key=lambda d: (abs(d - d0), d)):
            candidate = dataclasses.replace(config, **{config.width_field: d})
            d_size, d_n = _closest_size(candidate, field, target_params, counts)
            if within(d_n):
                return dataclasses.replace(candidate, **{field: d_size})

    raise ConfigError(
        "match_params",
        f"no {config.name} {field} gives {target_params} parameters within {tolerance:.1%} "
        f"(closest: {closest})",
    )


def size_reference(configs: dict[str, ModelConfig], match_to: str | None) -> ModelConfig | None:
    """The model (of a run's ``models``) whose parameter count the ``match_params`` ones take:
    ``match_to`` when set, else the first model that does not match; None when nothing matches."""
    if match_to is not None:
        if match_to not in configs:
            raise ConfigError("match_to", f"no model '{match_to}' in this run; models: {', '.join(configs)}")
        return configs[match_to]
    reference = next((m for m in configs.values() if not m.match_params), None)
    if reference is None and any(m.match_params for m in configs.values()):
        raise ConfigError("match_to", "every model asks to be matched (match_params) and none is the size "
                                      "reference; set match_to=<model key> or add a model without match_params")
    return reference


def matched(configs: dict[str, ModelConfig], reference: ModelConfig | None, vocab_size: int, n_classes: int,
            max_len: int) -> dict[str, ModelConfig]:
    """A run's models at one task's sizes: each ``match_params`` one resized to the reference's count
    (errors under ``models.<key>``), the others as they are."""
    from framework.models import build_model

    target = None
    out = {}
    for key, config in configs.items():
        if config.match_params and config is not reference:
            if target is None:
                target = count_params(build_model(reference, vocab_size, n_classes, max_len))
            try:
                config = match_params(config, target, vocab_size, n_classes, max_len)
            except ConfigError as err:
                raise err.under(f"models.{key}") from None
        out[key] = config
    return out
