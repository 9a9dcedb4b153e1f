"""Training and scoring the jobs of a wind-tunnel plan.

Each job keeps its own folder (checkpoint, JSONL log, TensorBoard events, result.json); a job whose
result.json exists is not redone when ``resume=true``, provided it was finished with the same
settings (its ``settings_hash``).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import torch

from framework.errors import ConfigError
from framework.io import write_json
from framework.metrics.evaluate import EvalSet, evaluate
from framework.metrics.matrix import matrix_view
from framework.models import count_params
from framework.probes.running import probe_set, run_probes
from framework.runners.windtunnel.plan import Job, WindTunnelPlan
from framework.runners.windtunnel.taxonomy import classify
from framework.runtime import RuntimeConfig, pick_device
from framework.seeds import derive_seed, digest
from framework.tasks import Task
from framework.training import train
from framework.training.checkpoint import snapshots_in

log = logging.getLogger(__name__)


def _eval_sets(job: Job, seed: int) -> tuple[EvalSet, EvalSet]:
    """Validation (during training) and test (reported) sets: fixed seeds, disjoint from training."""
    t = job.train
    val = EvalSet.generate(job.task, t.val_sequences, derive_seed(seed, job.task_key, "val"), t.eval_batch_size)
    test = EvalSet.generate(job.task, t.eval_sequences, derive_seed(seed, job.task_key, "test"), t.eval_batch_size)
    return val, test


def at_length(job: Job, model: torch.nn.Module, T: int, seed: int) -> torch.nn.Module | None:
    """The trained model, able to read ``T`` tokens (``SequenceModel.at_length``), or None.

    Models are built and trained at the task's own length, so what a run evaluates never changes what
    it trains; rows a longer copy adds are drawn from a seed of their own.
    """
    if T <= job.task.seq_len:
        return model
    torch.manual_seed(derive_seed(seed, job.task_key, job.model_key, "positions", T))
    return model.at_length(T)


def _score_variant(job: Job, model: torch.nn.Module, variant: Task, seed: int, name: str, device) -> dict:
    """The trained model on an ``evaluate_at`` variant of its task (fresh fixed-seed sequences)."""
    scorer = at_length(job, model, variant.seq_len, seed)
    if scorer is None:
        return {"seq_len": variant.seq_len, "skipped": f"{job.model_config.name} {model.fixed_length} "
                f"(trained at {job.task.seq_len} tokens)"}
    t = job.train
    test = EvalSet.generate(variant, t.eval_sequences, derive_seed(seed, job.task_key, name, "test"), t.eval_batch_size)
    return {"seq_len": variant.seq_len, **evaluate(scorer, test, device)}


def settings_hash(job: Job, probe_options: dict | None, runtime: RuntimeConfig) -> str:
    """What decides a job's result.json: a finished job is reused on resume only if this matches."""
    settings = {"task": asdict(job.task_config), "model": asdict(job.model_config), "train": asdict(job.train),
                "runtime": {"device": runtime.device, "deterministic": runtime.deterministic},
                "evaluate_at": {name: asdict(v.config) for name, v in job.variants.items()}, "matrix": job.matrix,
                "probes": {name: (probe_options or {}).get(name) for name in job.probes}}
    return digest(settings, 16)


def check_resumable(plan: WindTunnelPlan, run_dir: Path) -> None:
    """Before any compute: every finished job in ``run_dir`` was finished with this run's settings."""
    for job in plan.jobs:
        path = run_dir / job.name / "result.json"
        expected = settings_hash(job, plan.settings.probe_options, plan.settings.runtime)
        if path.exists() and json.loads(path.read_text()).get("settings_hash") != expected:
            raise ConfigError("resume", f"job {job.name} in {run_dir} finished with other settings than this run's "
                                        "(or by a version of the framework before runners, whose settings differ); "
                                        "resume it with the settings it was run with, or use a new hydra.run.dir")


def run_job(job: Job, run_dir: Path, seed: int, resume: bool, eval_sets: tuple[EvalSet, EvalSet],
            probe_options: dict | None = None, *, runtime: RuntimeConfig) -> dict:
    job_dir = run_dir / job.name
    result_path = job_dir / "result.json"
    if resume and result_path.exists():
        return json.loads(result_path.read_text())
    device = pick_device(runtime.device)
    torch.manual_seed(derive_seed(seed, job.task_key, job.model_key, "init"))
    model = job.build_model().to(device)
    params = count_params(model)
    meta = {"task": asdict(job.task_config), "model": asdict(job.model_config), "params": params}
    val_set, test_set = eval_sets
    outcome = train(model, job.task, job.train, job_dir, seed=derive_seed(seed, job.task_key, "data"),
                    val_set=val_set, meta=meta, resume=resume, desc=job.name, progress=runtime.progress)
    started = time.perf_counter()
    scores = evaluate(model, test_set, device)
    extras = {}
    if job.variants:
        extras["evaluate_at"] = {name: _score_variant(job, model, variant, seed, name, device)
                                 for name, variant in job.variants.items()}
    if job.matrix:
        extras["matrix"] = matrix_view(model, job.task, device)
    eval_seconds = time.perf_counter() - started
    if job.probes:
        batches = probe_set(job.task, job.probes, probe_options, seed, job.train.eval_batch_size)
        extras["probes"] = run_probes(job.probes, model, job.task, batches, job_dir / "probes",
                                      snapshots=snapshots_in(job_dir), options=probe_options)
    result = {
        "task": job.task_config.name,
        "model": job.model_config.name,
        "task_key": job.task_key,
        "model_key": job.model_key,
        "params": params,
        "steps": outcome.steps,
        "settings_hash": settings_hash(job, probe_options, runtime),
        "reached_target": outcome.reached_target,  # train.target_kl_bits met on validation (if set)
        **scores,
        **extras,
        "history": outcome.history,
        "task_config": meta["task"],
        "model_config": meta["model"],
        "train_config": asdict(job.train),
        "device": str(device),
        # Everything that depends on the machine's speed, and nothing else, sits here: the rest of
        # an entry is identical between two runs with the same config and seed on CPU.
        "timing": {"train_seconds": round(outcome.train_seconds, 3), "val_seconds": round(outcome.val_seconds, 3),
                   "eval_seconds": round(eval_seconds, 3)},
    }
    write_json(result_path, result)
    return result


def run_plan(plan: WindTunnelPlan, run_dir: Path) -> dict:
    """Train and score each job of the plan, one task's evaluation sets in memory at a time."""
    settings = plan.settings
    probe_options = settings.probe_options
    results, eval_sets = [], {}
    for number, job in enumerate(plan.jobs, 1):
        t = job.train
        key = (job.task_key, t.val_sequences, t.eval_sequences, t.eval_batch_size)
        if key not in eval_sets:
            eval_sets = {key: _eval_sets(job, settings.seed)}
        log.info("job %d/%d: %s (%s, %d steps)", number, len(plan.jobs), job.name, job.model_config, t.steps)
        result = run_job(job, run_dir, settings.seed, settings.resume, eval_sets[key], probe_options,
                         runtime=settings.runtime)
        log.info("job %d/%d: %s: kl_bits=%.4g entropy_mae_bits=%.4g", number, len(plan.jobs), job.name,
                 result["kl_bits"], result["entropy_mae_bits"])
        results.append(result)
    metrics = {"runs": results}
    if settings.taxonomy.primitives:
        metrics["taxonomy"] = classify(results, settings.taxonomy)
    return metrics
