"""Training and scoring the jobs of a wind-tunnel plan.

Each job keeps its own folder (checkpoint, JSONL log, TensorBoard events, result.json); a job whose
result.json exists is not redone when ``resume=true``, provided it was finished with the same
settings (its ``settings_hash``). With ``runtime.workers`` > 1 the jobs are trained side by side in
spawned worker processes (each job is seeded on its own, so the order they finish in changes
nothing); the results come back in the plan's order.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, replace
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
from framework.runtime import RuntimeConfig, apply_runtime, pick_device, threads_per_job
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
        # what the steps ran in: train.precision resolved ("auto": bfloat16 on CUDA and on CPUs with
        # native bf16), or for a resumed job the precision its checkpoint was trained in
        "precision": outcome.precision,
        # Everything that depends on the machine's speed, and nothing else, sits here: the rest of
        # an entry is identical between two runs with the same config and seed on CPUs of one kind.
        "timing": {"train_seconds": round(outcome.train_seconds, 3), "val_seconds": round(outcome.val_seconds, 3),
                   "eval_seconds": round(eval_seconds, 3)},
    }
    write_json(result_path, result)
    return result


def _log_done(number: int, total: int, job: Job, result: dict) -> None:
    log.info("job %d/%d: %s: kl_bits=%.4g entropy_mae_bits=%.4g", number, total, job.name,
             result["kl_bits"], result["entropy_mae_bits"])


def _run_in_worker(job: Job, run_dir: Path, seed: int, resume: bool, probe_options: dict | None,
                   runtime: RuntimeConfig) -> dict:
    """One job in a worker process: its own thread count, its own evaluation sets (the same ones the
    parent would make: they are drawn from the run's seed)."""
    apply_runtime(runtime)
    return run_job(job, run_dir, seed, resume, _eval_sets(job, seed), probe_options, runtime=runtime)


def _run_side_by_side(plan: WindTunnelPlan, run_dir: Path, workers: int) -> list[dict]:
    """Every job on a pool of ``workers`` spawned processes (spawn, not fork: a forked child of a
    process whose OpenMP pool has run can hang), one bar over the jobs instead of one per job."""
    from tqdm.auto import tqdm

    settings = plan.settings
    threads = settings.runtime.threads or threads_per_job(workers)
    runtime = replace(settings.runtime, threads=threads, progress=False)
    log.info("%d jobs on %d workers, %d thread(s) each", len(plan.jobs), workers, threads)
    results: dict[int, dict] = {}
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = {pool.submit(_run_in_worker, job, run_dir, settings.seed, settings.resume,
                               settings.probe_options, runtime): i for i, job in enumerate(plan.jobs)}
        with tqdm(total=len(futures), desc="jobs", disable=not settings.runtime.progress) as bar:
            for future in as_completed(futures):
                i = futures[future]
                results[i] = future.result()  # a worker's error is raised here, by its own type
                _log_done(i + 1, len(plan.jobs), plan.jobs[i], results[i])
                bar.update(1)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)  # the running jobs finish or fail; none start
        raise
    pool.shutdown()
    return [results[i] for i in range(len(plan.jobs))]


def run_plan(plan: WindTunnelPlan, run_dir: Path) -> dict:
    """Train and score each job of the plan, one task's evaluation sets in memory at a time (or on
    ``runtime.workers`` processes side by side)."""
    settings = plan.settings
    workers = min(settings.runtime.workers, len(plan.jobs))
    if workers > 1:
        results = _run_side_by_side(plan, run_dir, workers)
    else:
        results, eval_sets = [], {}
        for number, job in enumerate(plan.jobs, 1):
            t = job.train
            key = (job.task_key, t.val_sequences, t.eval_sequences, t.eval_batch_size)
            if key not in eval_sets:
                eval_sets = {key: _eval_sets(job, settings.seed)}
            log.info("job %d/%d: %s (%s, %d steps)", number, len(plan.jobs), job.name, job.model_config, t.steps)
            result = run_job(job, run_dir, settings.seed, settings.resume, eval_sets[key], settings.probe_options,
                             runtime=settings.runtime)
            _log_done(number, len(plan.jobs), job, result)
            results.append(result)
    metrics = {"runs": results}
    if settings.taxonomy.primitives:
        metrics["taxonomy"] = classify(results, settings.taxonomy)
    return metrics
