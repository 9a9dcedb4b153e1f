"""The probe runner: geometry probes on a saved, trained wind-tunnel job.

``windtunnel experiment=probe/<name> checkpoint=<job folder or checkpoint.pt>`` rebuilds the task and
the model from the checkpoint's own record of them, so a probe always reads the model it was given.
Before any folder or compute, the plan refuses a file that is not a torch checkpoint or not a
wind-tunnel job, weights that do not fit the model they name, a checkpoint of another task or model
than the run names, a probe the architecture cannot take, and too few weight snapshots.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from framework.config import RunConfig, registered
from framework.errors import CheckpointError, ConfigError, ProbeError
from framework.io import write_text
from framework.models import MODELS, count_params
from framework.probes import PROBES, run_probe
from framework.probes.base import check_applies
from framework.probes.running import check_request, probe_set, scalars
from framework.runners.base import Runner, register_runner
from framework.runtime import pick_device
from framework.tasks import TASKS, Task
from framework.training.checkpoint import SNAPSHOTS, load_trained, snapshots_in


@dataclass
class ProbeRunConfig(RunConfig):
    runner: str = "probe"
    checkpoint: Optional[str] = None  # required: the trained job to probe (its folder or its checkpoint.pt)
    probes: List[str] = field(default_factory=list)
    probe_options: Dict[str, Any] = field(default_factory=dict)  # probe name -> its keyword options
    # Optional: the task and model the checkpoint must hold (a run that names them probes only those).
    tasks: Dict[str, Any] = field(default_factory=dict)
    models: Dict[str, Any] = field(default_factory=dict)
    batch_size: int = 512  # sequences per forward pass of the probe set


def file_digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()[:16]


@dataclass
class ProbePlan:
    settings: ProbeRunConfig
    model: torch.nn.Module
    task: Task
    state: dict  # the checkpoint's record: meta, step
    path: Path
    snapshots: List[Path]


def _check_matches(named: dict, kind: str, recorded: dict, path: Path) -> None:
    """A run that names its task or model only probes a checkpoint of that task or model."""
    registry = TASKS if kind == "task" else MODELS
    for key, config in named.items():
        wanted = asdict(registered(registry, config, f"{kind}s.{key}", kind))
        # normalised, so a checkpoint written before a field with a default existed still matches
        if wanted != asdict(registered(registry, recorded, "checkpoint", kind)):
            raise CheckpointError(f"checkpoint {path} holds a {kind} {recorded}, not the {kind} '{key}' this run "
                                  f"names ({wanted}); refusing to probe it")


@register_runner
class ProbeRunner(Runner):
    name = "probe"
    config = ProbeRunConfig
    labels = ("task", "model")

    def plan(self, settings: ProbeRunConfig) -> ProbePlan:
        check_request(settings.probes, settings.probe_options)
        if not settings.checkpoint:
            raise ConfigError("checkpoint", "this experiment probes a trained model; give checkpoint=<job folder or "
                                            "its checkpoint.pt>, e.g. checkpoint=runs/demo/bijection_transformer")
        if not settings.probes:
            raise ConfigError("probes", "a checkpoint is scored by probes; pick one (experiment=probe/<name>)")
        if settings.batch_size < 1:
            raise ConfigError("batch_size", f"must be >= 1, got {settings.batch_size}")
        model, task, state, path = load_trained(settings.checkpoint)
        _check_matches(settings.tasks, "task", state["meta"]["task"], path)
        _check_matches(settings.models, "model", state["meta"]["model"], path)
        snapshots = snapshots_in(path.parent)
        for name in settings.probes:
            check_applies(PROBES[name], model)
            if len(snapshots) < PROBES[name].needs_snapshots:
                raise ProbeError(f"probe '{name}' compares weight snapshots and needs at least "
                                 f"{PROBES[name].needs_snapshots}; {path.parent / SNAPSHOTS} has {len(snapshots)}. "
                                 "Train with train.snapshot_every > 0")
        return ProbePlan(settings, model, task, state, path, snapshots)

    def inputs(self, plan: ProbePlan) -> dict:
        """The checkpoint's and snapshots' contents: a retrained job is probed anew, not read from before."""
        return {str(path): file_digest(path) for path in (plan.path, *plan.snapshots)}

    def run(self, plan: ProbePlan, run_dir: Path) -> dict:
        settings = plan.settings
        model = plan.model.to(pick_device(settings.runtime.device))
        options = settings.probe_options
        batches = probe_set(plan.task, settings.probes, options, settings.seed, settings.batch_size)
        # Asked for by name, so a probe the model cannot take stops the run (ProbeError) rather than skipping.
        results = {name: run_probe(name, model, plan.task, batches, Path(run_dir), snapshots=plan.snapshots,
                                   options=options.get(name))
                   for name in settings.probes}
        meta = plan.state["meta"]
        return {"runs": [{"task": plan.task.name, "model": meta["model"]["name"], "checkpoint": str(plan.path),
                          "step": plan.state.get("step"), "params": count_params(model), "task_config": meta["task"],
                          "model_config": meta["model"], "probes": results}]}

    def report(self, metrics: dict, run_dir: Path) -> None:
        lines = [f"# Probe report: {metrics['experiment']}", ""]
        for run in metrics["runs"]:
            lines += [f"Checkpoint `{run['checkpoint']}` (step {run['step']}): a {run['model']} on {run['task']}, "
                      f"{run['params']:,} parameters.", ""]
            for name, result in run["probes"].items():
                lines += [f"## {name}", "", *(f"- {item}" for item in scalars(result)), "",
                          *(f"![{plot}]({plot})" for plot in result.get("plots", [])), ""]
        write_text(Path(run_dir) / "report.md", "\n".join(lines))

    def summary(self, entry: dict) -> str:
        return f"{entry['task']} {entry['model']} (step {entry['step']}): probes {', '.join(entry['probes'])}"
