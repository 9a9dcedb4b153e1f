"""What every geometry probe shares: its declaration, the error it raises, and reading hook points.

The geometry diagnostics of Aggarwal, Dalal & Misra, "The Bayesian Geometry of Transformer
Attention" (arXiv 2512.22471), read activations of a trained model. The models expose them as
named ``nn.Identity`` hook points (TransformerLens's idea); a probe registers forward hooks on
them, runs the model, and removes the hooks, so no model code changes for a probe.

A :class:`Probe` declares the architectures it applies to; ``run_probe`` checks that, and the
probe's options, before any compute and raises :class:`ProbeError` with the reason.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from framework.errors import ProbeError
from framework.models import article
from framework.tasks.base import Batch, Task

@dataclass
class ProbeContext:
    model: nn.Module
    task: Task
    batches: list[Batch]
    out_dir: Path
    options: dict[str, Any]
    snapshots: list[Path] | None
    device: torch.device

    def iter_batches(self, max_sequences: int | None = None) -> Iterator[Batch]:
        """The probe's batches on the model's device, stopping after ``max_sequences`` sequences."""
        left = math.inf if max_sequences is None else max_sequences
        for batch in self.batches:
            if left <= 0:
                return
            if len(batch) > left:
                batch = Batch(batch.tokens[: int(left)], batch.positions, batch.posterior[: int(left)],
                              batch.labels[: int(left)])
            left -= len(batch)
            yield batch.to(self.device)


@dataclass(frozen=True)
class Probe:
    name: str
    run: Callable[[ProbeContext], dict]
    requires: tuple[str, ...]  # the architectures (model config names) it applies to
    reads: str  # what it reads, for the refusal: "attention queries and keys"
    part: str  # what a refused model lacks: "attention"
    options: dict[str, Any] = field(default_factory=dict)  # every option with its default
    needs_snapshots: int = 0  # the fewest snapshot files it needs
    # A hook point that is enough on its own: any architecture exposing it takes the probe (a fifth
    # architecture with hook_features gets value_manifold without being listed in `requires`).
    hook: str | None = None
    summary: str = ""


def architecture(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    return getattr(config, "name", None) or type(model).__name__.lower()


def check_applies(probe: Probe, model: nn.Module) -> None:
    arch = architecture(model)
    if arch not in probe.requires and not (probe.hook and hasattr(model, probe.hook)):
        who = article(arch)
        also = f", or any model with a {probe.hook} hook point" if probe.hook else ""
        raise ProbeError(f"probe '{probe.name}' reads {probe.reads}; {who} has no {probe.part}. "
                         f"It applies to: {', '.join(probe.requires)}{also}")


# Options shared by several probes, checked before any compute: name -> (test, what is allowed).
_COUNTS = ("max_sequences", "attention_sequences", "top_k", "dims", "random_draws", "silhouette_points")
OPTION_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    **{name: (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1")
       for name in _COUNTS},
    "untrained_seed": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an integer >= 0"),
    "positions": (lambda v: v in ("scored", "all"), "'scored' or 'all'"),
    "settle_fraction": (lambda v: isinstance(v, (int, float)) and 0 < v <= 1, "a number in (0, 1]"),
    "tie_margin": (lambda v: isinstance(v, (int, float)) and v >= 0, "a number >= 0"),
    "compare_sites": (lambda v: isinstance(v, bool), "true or false"),
    "site": (lambda v: isinstance(v, str), "a site name such as features or z:-1"),
}


def merge_options(probe: Probe, options: dict | None) -> dict[str, Any]:
    """The probe's defaults overridden by ``options``; an unknown name or a bad value is refused."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(probe.options))
    if unknown:
        known = ", ".join(sorted(probe.options)) or "none"
        raise ProbeError(f"probe '{probe.name}' has no option {', '.join(map(repr, unknown))}; its options: {known}")
    for name, value in options.items():
        if name in OPTION_CHECKS and not OPTION_CHECKS[name][0](value):
            raise ProbeError(f"probe '{probe.name}': option {name} must be {OPTION_CHECKS[name][1]}, got {value!r}")
    return {**probe.options, **options}


@contextlib.contextmanager
def capture(modules: dict[str, nn.Module]) -> Iterator[dict[str, torch.Tensor]]:
    """Record the output of each named module (a hook point) on every forward pass inside the block."""
    store: dict[str, torch.Tensor] = {}
    handles = [
        module.register_forward_hook(lambda _m, _inp, out, key=key: store.__setitem__(key, out.detach()))
        for key, module in modules.items()
    ]
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


def run_with(model: nn.Module, tokens: torch.Tensor, modules: dict[str, nn.Module]) -> tuple[torch.Tensor, dict]:
    """One forward pass; returns the logits and the named hook outputs."""
    with capture(modules) as store:
        logits = model(tokens)
    return logits, dict(store)


def layer_index(model: nn.Module, layer: int, option: str = "layer") -> int:
    """A layer index into ``model.blocks``; negative counts from the end, as in Python."""
    n = len(model.blocks)
    if not isinstance(layer, int) or isinstance(layer, bool) or not -n <= layer < n:
        raise ProbeError(f"option {option}={layer!r} is not a layer of this {n}-layer model (use 0..{n - 1} or -1)")
    return layer % n


def resolve_site(model: nn.Module, site: str) -> tuple[nn.Module, str]:
    """A hook point by short name: ``features``, ``resid_post:<i>``, ``resid_mid:<i>``, ``v:<i>``, ``z:<i>``.

    Returns the module and the kind of tensor it emits: ``"btd"`` (B, T, d) or ``"bhtd"`` (B, H, T, dh).
    """
    if site == "features":
        return model.hook_features, "btd"
    name, _, index = site.partition(":")
    places = {"resid_post": ("hook_resid_post", False), "resid_mid": ("hook_resid_mid", False),
              "q": ("hook_q", True), "k": ("hook_k", True), "v": ("hook_v", True), "z": ("hook_z", True)}
    try:
        i = int(index) if index else -1
    except ValueError:
        i = None
    if name not in places or i is None:
        raise ProbeError(f"unknown site {site!r}; use features, resid_post:<layer>, resid_mid:<layer>, "
                         "q:<layer>, k:<layer>, v:<layer> or z:<layer> (layer may be -1 for the last)")
    attr, in_attention = places[name]
    if not hasattr(model, "blocks"):
        raise ProbeError(f"site {site!r}: {article(architecture(model))} has no residual blocks; "
                         "use site=features")
    block = model.blocks[layer_index(model, i, "site")]
    holder = block.attn if in_attention and hasattr(block, "attn") else block
    if not hasattr(holder, attr):
        raise ProbeError(f"site {site!r}: {article(architecture(model))} has no {attr} hook point")
    return getattr(holder, attr), "bhtd" if in_attention else "btd"


def as_features(x: torch.Tensor, kind: str) -> torch.Tensor:
    """A hook output as (B, T, features): heads of a (B, H, T, dh) tensor are concatenated."""
    if kind == "bhtd":
        B, H, T, dh = x.shape
        return x.transpose(1, 2).reshape(B, T, H * dh)
    return x


def plot_sample(n: int, limit: int = 4000, seed: int = 0) -> torch.Tensor:
    """At most ``limit`` random indices out of n, for a scatter plot. (A stride would alias with the
    P scored positions per sequence and show only some of them.)"""
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=generator)[:limit]


def finite_or_none(x: float) -> float | None:
    """JSON has no NaN: an undefined number (a correlation with a constant) is reported as null."""
    return float(x) if math.isfinite(x) else None


def new_figure(ncols: int = 1, width: float = 5.0, height: float = 4.0):
    """A figure drawn with the Agg canvas, without pyplot's global state."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def save_figure(fig, out_dir: Path, name: str) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / name, dpi=110)
    return name
