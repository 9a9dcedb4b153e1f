"""``run(cfg, run_dir) -> metrics``: any experiment, through its runner's plan, run and report.

The Hydra entry point (``framework.cli``) is a thin shell around this function, and tests call it
directly. ``metrics.json`` is written once, atomically, when the runner has finished:
``{"experiment", "runner", "config_hash", "runs": [...], ..., "timing"}``. With ``resume=true`` a
run whose metrics.json has this config's hash is complete and is not redone.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from framework.config import RunConfig, config_hash
from framework.io import write_json, write_text
from framework.seeds import digest
from framework.runners import get_runner
from framework.runners.base import Runner
from framework.runtime import apply_runtime, pick_device

log = logging.getLogger(__name__)


def prepare(cfg: Any) -> tuple[Runner, RunConfig, Any]:
    """The config's runner, its typed settings and its plan: every check, before any compute or folder."""
    runner = get_runner(cfg.get("runner", "windtunnel"))
    settings = runner.settings(cfg)
    pick_device(settings.runtime.device)  # cuda asked for on a machine without it: refused here
    return runner, settings, runner.plan(settings)


def plan(cfg: Any) -> Any:
    """The runner's plan of ``cfg`` (the wind tunnels': ``.jobs``); raises before any compute."""
    return prepare(cfg)[2]


def run(cfg: Any, run_dir: Path) -> dict:
    """Validate everything, then do the runner's work; returns (and writes) the metrics."""
    runner, settings, the_plan = prepare(cfg)  # raises before any compute
    run_dir = Path(run_dir)
    inputs = runner.inputs(the_plan)
    this_run = config_hash(cfg) if inputs is None else digest([config_hash(cfg), inputs])
    done = run_dir / "metrics.json"
    if settings.resume:
        runner.check_resume(the_plan, run_dir)
        if done.exists() and json.loads(done.read_text()).get("config_hash") == this_run:
            log.info("%s is complete; nothing to do", run_dir)
            return json.loads(done.read_text())
    apply_runtime(settings.runtime)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True) if OmegaConf.is_config(cfg)
               else json.dumps(cfg, indent=2, default=str))
    started = time.perf_counter()
    out = runner.run(the_plan, run_dir)
    metrics = {"experiment": settings.experiment, "runner": runner.name, "config_hash": this_run, **out,
               "timing": {"wall_seconds": round(time.perf_counter() - started, 3)}}
    if settings.report:
        runner.report(metrics, run_dir)
    write_json(done, metrics)
    return metrics
