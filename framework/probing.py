"""Running geometry probes on trained models: at the end of training, or on a saved checkpoint.

``windtunnel experiment=probe/<name> checkpoint=<job folder or checkpoint.pt>`` rebuilds the task and
the model from the checkpoint's own record of them, so a probe always reads the model it was given;
a file that is not a wind-tunnel checkpoint, or whose weights do not fit the model it names, is
refused, as is a checkpoint of another task or model than the run names.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from framework.config import derive_seed
from framework.errors import ConfigError
from framework.io import CheckpointError, load_torch, write_json, write_text
from framework.metrics.evaluate import EvalSet
from framework.models import MODELS, build_model, count_params
from framework.registry import config_from
from framework.tasks import TASKS, Task, build_task
from framework.training import pick_device
from framework.training.loop import CHECKPOINT, SNAPSHOTS


def run_probes(names: list[str], model: torch.nn.Module, task: Task, batches: list, out_dir: Path, *,
               snapshots: list[Path], options: dict | None = None) -> dict:
    """Each named probe's numbers; a probe the architecture cannot take is recorded as skipped, with why.

    Only that refusal is a skip: any other ProbeError (a bad layer or site, missing snapshots) stops
    the run, so a run never ends looking complete with a probe silently missing.
    """
    from framework.probes import PROBES, ProbeError, run_probe
    from framework.probes.base import check_applies

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
    from framework.probes import PROBES
    from framework.probes.base import merge_options

    wanted = max(merge_options(PROBES[n], (options or {}).get(n)).get("max_sequences", 512) for n in names)
    task_id = json.dumps(asdict(task.config), sort_keys=True)
    return EvalSet.generate(task, wanted, derive_seed(seed, "probe", task_id), batch_size).batches


def load_trained(path: str | Path) -> tuple[torch.nn.Module, Task, dict, Path]:
    """(model with its trained weights, task, checkpoint record, checkpoint file) from a job's checkpoint."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.exists():
        raise ConfigError("checkpoint", f"no checkpoint at {path} (give a job folder or its checkpoint.pt)")
    state = load_torch(path)
    meta = state.get("meta") if isinstance(state, dict) else None
    if not isinstance(meta, dict) or not {"task", "model"} <= set(meta) or "model" not in state:
        raise CheckpointError(f"refusing checkpoint {path}: not a checkpoint of a wind-tunnel job")
    try:
        task = build_task(config_from(TASKS, meta["task"], "task"))
        model_config = config_from(MODELS, meta["model"], "model")
    except (ConfigError, TypeError) as err:
        raise CheckpointError(f"refusing checkpoint {path}: its task or model record is invalid ({err})") from None
    model = build_model(model_config, task.vocab_size, task.n_classes, task.seq_len)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        reason = str(err).splitlines()[0]
        raise CheckpointError(f"refusing checkpoint {path}: its weights do not fit a {model_config.name} "
                              f"({reason})") from None
    return model, task, state, path


def _check_matches(cfg: DictConfig, kind: str, recorded: dict, path: Path) -> None:
    """A run that names its task or model only probes a checkpoint of that task or model."""
    named = OmegaConf.to_container(cfg[f"{kind}s"], resolve=True)
    for key, config in named.items():
        registry = TASKS if kind == "task" else MODELS
        wanted = asdict(config_from(registry, config, kind))
        # normalised, so a checkpoint written before a field with a default existed still matches
        if wanted != asdict(config_from(registry, recorded, kind)):
            raise CheckpointError(f"checkpoint {path} holds a {kind} {recorded}, not the {kind} '{key}' this run "
                                  f"names ({wanted}); refusing to probe it")


def check_checkpoint(cfg: DictConfig) -> None:
    """Before any folder or compute: the checkpoint loads, fits its model, and suits every probe."""
    from framework.probes import PROBES, ProbeError
    from framework.probes.base import check_applies

    model, _, state, path = load_trained(cfg.checkpoint)
    _check_matches(cfg, "task", state["meta"]["task"], path)
    _check_matches(cfg, "model", state["meta"]["model"], path)
    found = len(snapshots_in(path.parent))
    for name in cfg.probes:  # (their options were checked with the rest of the config)
        check_applies(PROBES[name], model)
        if found < PROBES[name].needs_snapshots:
            raise ProbeError(f"probe '{name}' compares weight snapshots and needs at least "
                             f"{PROBES[name].needs_snapshots}; {path.parent / SNAPSHOTS} has {found}. Train with "
                             "train.snapshot_every > 0")


def snapshots_in(job_dir: Path) -> list[Path]:
    """A job's weight snapshots, oldest first (the training loop clears them when a job starts afresh)."""
    return sorted((Path(job_dir) / SNAPSHOTS).glob("step_*.pt"))


def probe_checkpoint(cfg: DictConfig, run_dir: Path) -> dict:
    """Probe mode: run ``cfg.probes`` on the checkpoint and write metrics.json and the plots."""
    from framework.probes import run_probe

    started = time.perf_counter()
    model, task, state, path = load_trained(cfg.checkpoint)  # resolve_plan has checked it: check_checkpoint
    device = pick_device(cfg.train.device)
    model.to(device)
    options = OmegaConf.to_container(cfg.probe_options, resolve=True)
    batches = probe_set(task, list(cfg.probes), options, cfg.seed, cfg.train.eval_batch_size)
    snapshots = snapshots_in(path.parent)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    # Asked for by name, so a probe the model cannot take stops the run (ProbeError) rather than skipping.
    results = {name: run_probe(name, model, task, batches, run_dir, snapshots=snapshots, options=options.get(name))
               for name in cfg.probes}
    run = {"task": task.name, "model": state["meta"]["model"]["name"], "checkpoint": str(path),
           "step": state.get("step"), "params": count_params(model), "task_config": state["meta"]["task"],
           "model_config": state["meta"]["model"], "probes": results}
    metrics = {"experiment": cfg.experiment, "runs": [run],
               "timing": {"wall_seconds": round(time.perf_counter() - started, 3)}}
    write_json(run_dir / "metrics.json", metrics)
    return metrics
