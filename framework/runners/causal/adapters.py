"""Which adapter a scoring run asks: the shared text adapters plus two that only the harness has.

``callable``, ``hf`` and ``openai`` are ``framework.adapters``' own; ``oracle`` is the exact answer
with noise (a baseline that needs the query set, :mod:`.baselines`); ``job`` is a model trained here
(:mod:`.job`). The plan checks what it can without compute: the config's fields, the callable's
import, the model folder, the job's checkpoint, and whether an endpoint answers at all (one GET of
``<base_url>/models``), so a bad adapter stops before any folder is made.
"""
from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from framework.adapters import ADAPTERS, Adapter, AdapterConfig, CallableAdapter, build_adapter
from framework.adapters.base import EndpointUnreachable, one_line
from framework.adapters.callable import resolve
from framework.causal.queryset import CausalQuery
from framework.errors import ConfigError, FrameworkError, require
from framework.registry import config_from
from framework.runners.causal.baselines import NoisyOracle
from framework.runners.causal.job import JobAdapter, JobConfig
from framework.seeds import digest


@dataclass
class OracleConfig(AdapterConfig):
    name: str = "oracle"
    flip: float = 0.0  # probability that a yes/no answer is flipped
    noise: float = 0.0  # standard deviation of the Gaussian noise added to a number
    seed: int = 0

    def __post_init__(self) -> None:
        require(0 <= self.flip <= 1, "flip", f"must be in [0, 1], got {self.flip}")
        require(self.noise >= 0, "noise", f"must be >= 0, got {self.noise}")


KINDS: dict[str, tuple[type, Any]] = {**ADAPTERS, "oracle": (OracleConfig, None), "job": (JobConfig, JobAdapter)}


def adapter_config(node: Mapping[str, Any] | None) -> AdapterConfig:
    """The adapter's own config dataclass; every problem a ConfigError under ``adapter``."""
    if not node:
        raise ConfigError("adapter", f"scoring needs an adapter: adapter=<{'|'.join(KINDS)}>")
    if "name" not in node:
        raise ConfigError("adapter.name", f"missing; choose one of: {', '.join(KINDS)}")
    try:
        return config_from(KINDS, dict(node), "adapter")
    except ConfigError as err:
        raise err.under("adapter") from None
    except TypeError as err:
        raise ConfigError("adapter", one_line(err)) from None


def check_reachable(base_url: str, timeout_s: float) -> None:
    """One GET of ``<base_url>/models``: any HTTP answer (even 404) is reachable; no answer is not."""
    url = base_url.rstrip("/") + "/models"
    try:
        with urllib.request.urlopen(url, timeout=min(timeout_s, 10.0)):
            pass
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise EndpointUnreachable(f"openai endpoint {base_url} cannot be reached: {one_line(reason)}") from None


def prepare_adapter(config: AdapterConfig) -> Adapter | None:
    """The cheap checks, before any folder; a job adapter (its checkpoint loaded) is returned built."""
    try:
        if config.name == "callable":
            resolve(config.function)
        elif config.name == "hf":
            folder = Path(config.path).expanduser()
            if not (folder / "config.json").is_file():
                raise ConfigError("path", f"{folder} is not a saved model folder (no config.json); "
                                          "hub ids are refused: nothing may be downloaded")
            try:
                import transformers  # noqa: F401
            except ImportError:
                raise FrameworkError("the hf adapter needs transformers: pip install 'bayesian-windtunnel[hf]'") from None
        elif config.name == "openai":
            check_reachable(config.base_url, config.timeout_s)
        elif config.name == "job":
            return JobAdapter(config)
    except ConfigError as err:
        if err.field.startswith("adapter"):
            raise
        raise err.under("adapter") from None
    return None


def make_adapter(config: AdapterConfig, queries: Sequence[CausalQuery], prepared: Adapter | None
                 ) -> tuple[Adapter, dict[str, str]]:
    """(the adapter, {query id: why it cannot be asked}) for ``queries``."""
    if config.name == "job":
        adapter = prepared or JobAdapter(config)
        return adapter, adapter.bind(queries)
    if config.name == "oracle":
        fn = NoisyOracle(queries, config.flip, config.noise, config.seed)
        tag = digest({"flip": float(config.flip), "noise": float(config.noise), "seed": config.seed})
        return CallableAdapter(fn=fn, tag=f"oracle:{tag}"), {}
    try:
        return build_adapter(config), {}
    except ConfigError as err:
        raise err.under("adapter") from None


def adapter_inputs(config: AdapterConfig, prepared: Adapter | None) -> Any:
    """What the answers depend on beyond the config: a job's checkpoint contents."""
    return prepared.settings["checkpoint"] if isinstance(prepared, JobAdapter) else None
