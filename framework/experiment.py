"""``run(cfg, run_dir) -> metrics``: train and score every (task, model) job of an experiment.

The Hydra entry point (``framework.cli``) is a thin shell around this function, and tests call it
directly. Each job keeps its own folder (checkpoint, JSONL log, TensorBoard events, result.json);
a job whose result.json exists is not redone when ``resume=true``. ``metrics.json`` is written once,
atomically, when every job has finished.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from framework.config import RESULT_NEUTRAL_TRAIN, Job, config_hash, derive_seed, digest, resolve_plan
from framework.errors import ConfigError
from framework.io import write_json, write_text
from framework.metrics.evaluate import EvalSet, evaluate
from framework.metrics.matrix import matrix_view
from framework.models import count_params
from framework.probing import probe_checkpoint, probe_set, run_probes, snapshots_in
from framework.tasks import Task
from framework.taxonomy import TaxonomyConfig, classify
from framework.training import pick_device, train

log = logging.getLogger(__name__)


def _container(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node or {})


def _eval_sets(job: Job, seed: int) -> tuple[EvalSet, EvalSet]:
    """Validation (during training) and test (reported) sets: fixed seeds, disjoint from training."""
    t = job.train
    val = EvalSet.generate(job.task, t.val_sequences, derive_seed(seed, job.task_key, "val"), t.eval_batch_size)
    test = EvalSet.generate(job.task, t.eval_sequences, derive_seed(seed, job.task_key, "test"), t.eval_batch_size)
    return val, test


def at_length(job: Job, model: torch.nn.Module, T: int, seed: int) -> torch.nn.Module | None:
    """The trained model, able to read ``T`` tokens: itself, a copy with more positions, or None.

    Models are built and trained at the task's own length, so what a run evaluates never changes what
    it trains. A longer variant gets a copy with a longer position table: learned rows past the
    training length were never trained and are drawn fresh from their own seed (sinusoidal and absent
    encodings are defined at every length; recurrences have none). The MLP's prefix read has one
    weight block per position and cannot be extended: None.
    """
    if T <= job.task.seq_len:
        return model
    if job.model_config.name == "mlp":
        return None
    device = next(model.parameters()).device
    torch.manual_seed(derive_seed(seed, job.task_key, job.model_key, "positions", T))
    longer = job.build_model(max_len=T).to(device)
    state = model.state_dict()
    if "pos_emb.weight" in state:
        rows = longer.pos_emb.weight.detach().clone()
        rows[: job.task.seq_len] = state["pos_emb.weight"]
        state = {**state, "pos_emb.weight": rows}
    longer.load_state_dict(state)
    return longer


def _score_variant(job: Job, model: torch.nn.Module, variant: Task, seed: int, name: str, device) -> dict:
    """The trained model on an ``evaluate_at`` variant of its task (fresh fixed-seed sequences)."""
    scorer = at_length(job, model, variant.seq_len, seed)
    if scorer is None:
        return {"seq_len": variant.seq_len, "skipped": f"{job.model_config.name} reads a fixed-width prefix of "
                f"{job.task.seq_len} tokens and has no weights for longer sequences"}
    t = job.train
    test = EvalSet.generate(variant, t.eval_sequences, derive_seed(seed, job.task_key, name, "test"), t.eval_batch_size)
    return {"seq_len": variant.seq_len, **evaluate(scorer, test, device)}


def settings_hash(job: Job, probe_options: dict | None) -> str:
    """What decides a job's result.json: a finished job is reused on resume only if this matches."""
    # threads too: resuming a job on fewer threads (a busy machine) continues the same training
    train = {k: v for k, v in asdict(job.train).items() if k not in RESULT_NEUTRAL_TRAIN | {"threads"}}
    settings = {"task": asdict(job.task_config), "model": asdict(job.model_config), "train": train,
                "evaluate_at": {name: asdict(v.config) for name, v in job.variants.items()}, "matrix": job.matrix,
                "probes": {name: (probe_options or {}).get(name) for name in job.probes}}
    return digest(settings, 16)


def check_resumable(jobs: list[Job], run_dir: Path, probe_options: dict | None) -> None:
    """Before any compute: every finished job in ``run_dir`` was finished with this run's settings."""
    for job in jobs:
        path = run_dir / job.name / "result.json"
        if path.exists() and json.loads(path.read_text()).get("settings_hash") != settings_hash(job, probe_options):
            raise ConfigError("resume", f"job {job.name} in {run_dir} finished with other settings than this run's; "
                                        "resume it with the settings it was run with, or use a new hydra.run.dir")


def run_job(job: Job, run_dir: Path, seed: int, resume: bool, eval_sets: tuple[EvalSet, EvalSet],
            probe_options: dict | None = None) -> dict:
    job_dir = run_dir / job.name
    result_path = job_dir / "result.json"
    if resume and result_path.exists():
        return json.loads(result_path.read_text())
    device = pick_device(job.train.device)
    torch.manual_seed(derive_seed(seed, job.task_key, job.model_key, "init"))
    model = job.build_model().to(device)
    params = count_params(model)
    meta = {"task": asdict(job.task_config), "model": asdict(job.model_config), "params": params}
    val_set, test_set = eval_sets
    outcome = train(model, job.task, job.train, job_dir, seed=derive_seed(seed, job.task_key, "data"),
                    val_set=val_set, meta=meta, resume=resume, desc=job.name)
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
        "settings_hash": settings_hash(job, probe_options),
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


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Validate everything, then train and score each job; returns (and writes) the metrics."""
    jobs = resolve_plan(cfg)  # raises ConfigError before any compute
    run_dir = Path(run_dir)
    if cfg.checkpoint:
        return probe_checkpoint(cfg, run_dir)
    this_run = config_hash(cfg)
    if cfg.resume:
        check_resumable(jobs, run_dir, _container(cfg.probe_options))
        done = run_dir / "metrics.json"
        if done.exists() and json.loads(done.read_text()).get("config_hash") == this_run:
            log.info("%s is complete; nothing to do", run_dir)
            return json.loads(done.read_text())
    threads = jobs[0].train.threads
    if threads:
        torch.set_num_threads(threads)
    if jobs[0].train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS reads it at its first call
        # warn_only: kernels with no deterministic version (e.g. some attention backwards) warn, not fail
        torch.use_deterministic_algorithms(True, warn_only=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    started = time.perf_counter()
    results, eval_sets = [], {}
    for number, job in enumerate(jobs, 1):
        t = job.train
        key = (job.task_key, t.val_sequences, t.eval_sequences, t.eval_batch_size)
        if key not in eval_sets:
            eval_sets = {key: _eval_sets(job, cfg.seed)}  # one task's sets in memory at a time
        log.info("job %d/%d: %s (%s, %d steps)", number, len(jobs), job.name, job.model_config, job.train.steps)
        result = run_job(job, run_dir, cfg.seed, cfg.resume, eval_sets[key], _container(cfg.probe_options))
        log.info("job %d/%d: %s: kl_bits=%.4g entropy_mae_bits=%.4g", number, len(jobs), job.name,
                 result["kl_bits"], result["entropy_mae_bits"])
        results.append(result)
    metrics = {"experiment": cfg.experiment, "config_hash": this_run, "runs": results}
    if cfg.taxonomy.primitives:
        metrics["taxonomy"] = classify(results, TaxonomyConfig(**_container(cfg.taxonomy)))
    metrics["timing"] = {"wall_seconds": round(time.perf_counter() - started, 3)}
    if cfg.report:
        from framework.report import write_report  # matplotlib import only when plotting

        write_report(metrics, run_dir)
    write_json(run_dir / "metrics.json", metrics)
    return metrics
