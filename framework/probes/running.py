"""Running probes as part of a run: checking the request before compute, the probe set, the results.

Shared by the runners that probe: the wind-tunnel runner probes each model at the end of its
training, the probe runner probes a saved checkpoint; both read the same fixed probe set.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from framework.errors import ConfigError, ProbeError
from framework.metrics.evaluate import EvalSet
from framework.probes import PROBES, run_probe
from framework.probes.base import check_applies, merge_options
from framework.seeds import derive_seed
from framework.tasks import Task


def check_request(names: list[str], options: dict) -> None:
    """Every probe named (to run, or given options) exists and its options are valid; a ConfigError
    names the field."""
    for name in [*names, *options]:
        if name not in PROBES:
            raise ConfigError("probes", f"no probe '{name}'; probes: {', '.join(PROBES)}")
    for name in {*names, *options}:
        if not isinstance(options.get(name) or {}, dict):
            raise ConfigError(f"probe_options.{name}", f"must be a mapping of option: value, got {options[name]!r}")
        try:
            merge_options(PROBES[name], options.get(name))
        except ProbeError as err:
            raise ConfigError(f"probe_options.{name}", str(err)) from None


def snapshots_needed(names: list[str]) -> int:
    """The most weight snapshots any of the named probes declares it needs."""
    return max((PROBES[name].needs_snapshots for name in names), default=0)


def run_probes(names: list[str], model: torch.nn.Module, task: Task, batches: list, out_dir: Path, *,
               snapshots: list[Path], options: dict | None = None) -> dict:
    """Each named probe's numbers; a probe the architecture cannot take is recorded as skipped, with why.

    Only that refusal is a skip: any other ProbeError (a bad layer or site, missing snapshots) stops
    the run, so a run never ends looking complete with a probe silently missing.
    """
    results = {}
    for name in names:
        try:
            check_applies(PROBES[name], model)
        except ProbeError as err:
            results[name] = {"skipped": str(err)}
            continue
        results[name] = run_probe(name, model, task, batches, Path(out_dir), snapshots=snapshots,
                                  options=(options or {}).get(name))
    return results


def probe_set(task: Task, names: list[str], options: dict | None, seed: int, batch_size: int = 512) -> list:
    """The sequences probes read: fresh, from a seed fixed by the run's seed and the task, as many as the
    most any of the probes asks for (``max_sequences``), so both modes probe a model on the same data."""
    wanted = max(merge_options(PROBES[n], (options or {}).get(n)).get("max_sequences", 512) for n in names)
    task_id = json.dumps(asdict(task.config), sort_keys=True)
    return EvalSet.generate(task, wanted, derive_seed(seed, "probe", task_id), batch_size).batches


def scalars(result: dict, prefix: str = "") -> list[str]:
    """The scalar numbers of a probe result, flattened for a report: lists and plots stay in metrics.json."""
    out = []
    for key, value in result.items():
        if isinstance(value, dict):
            out += scalars(value, f"{prefix}{key}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append(f"{prefix}{key}={value:.4g}")
        elif isinstance(value, str) and key == "skipped":
            out.append(f"skipped ({value})")
    return out
