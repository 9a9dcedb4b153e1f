"""Running one (stream, strategy + plugins, model) job: the fresh baseline, the stream, checkpoints.

A job keeps its own folder: ``fresh.json`` (the fresh-model baseline F_j, one experience at a time),
``state.pt`` (the strategy's whole state after the last finished experience:
framework.continual.state), ``step.pt`` (a step checkpoint inside the experience after that one:
framework.continual.steps; ``fresh_step.pt`` likewise inside the fresh baseline's), Avalanche's logs
(``log.txt`` from its TextLogger, ``csv/`` from its CSVLogger, ``tb/`` from its TensorboardLogger)
and ``result.json``, written last. Every file is written atomically (framework.io).

Resume granularity: the training step. Inside an experience a step checkpoint is written before
every ``checkpoint_every``-th step (0: none), and ``state.pt`` after the experience (then the step
checkpoint is removed; one left by a kill between the two is stale and ignored). A run killed at any
point and rerun with ``resume=true`` continues from the last checkpoint: the experience it was in
restarts from its starting state (``state.pt``, RNGs included, or the run's initial state), so
Avalanche makes its data loaders and Replay's and A-GEM's memory loaders as before; the steps done
are replayed without training, drawing only their batches and memory samples (with the RNG states
they saw), then the step checkpoint is loaded and training goes on from the step after it. At most
``checkpoint_every`` - 1 steps are trained again, and the final metrics equal an uninterrupted run's
on CPU (tests/test_continual_resume.py kills every strategy and plugin inside an experience). The
fresh baseline resumes the same way, per experience j.

Seeds: the model's initial weights come from derive_seed(seed, "init", model key); the stream's
data order (Avalanche's loaders and buffers draw from the global RNGs) from derive_seed(seed,
"train", model key); the fresh model of experience j, and its data order, from derive_seed(seed,
"fresh", j). Each is set where it is used, so a cached fresh baseline changes nothing else.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from avalanche.evaluation.metric_definitions import PluginMetric
from avalanche.evaluation.metric_results import MetricValue
from avalanche.logging import CSVLogger, TensorboardLogger, TextLogger
from avalanche.training.plugins import EvaluationPlugin, SupervisedPlugin
from tqdm.auto import tqdm

from framework.continual.metrics import SIGN, ContinualRecorder, experience_bits
from framework.continual.plasticity import build_plasticity
from framework.continual.state import load_strategy_state, strategy_state
from framework.continual.steps import StepCheckpoints
from framework.continual.strategies import build_strategy
from framework.errors import CheckpointError, ConfigError
from framework.io import load_torch, save_torch, write_json
from framework.runners.continual.plan import ContinualJob, ContinualPlan, describe
from framework.runtime import pick_device
from framework.seeds import derive_seed, digest

log = logging.getLogger(__name__)
STATE = "state.pt"
STEP = "step.pt"  # inside the experience after the last finished one (framework.continual.steps)
FRESH = "fresh.json"
FRESH_STEP = "fresh_step.pt"


# ---------------------------------------------------------------- Avalanche loggers and progress

class BitsMetric(PluginMetric):
    """Feeds Avalanche's loggers: the mean training loss per epoch (nats, soft cross-entropy; named as
    Avalanche names its loss, so its CSVLogger records it) and, after each experience, the new row of
    R and the feature statistics from the recorder. Replaces the default accuracy evaluator."""

    def __init__(self, recorder: ContinualRecorder):
        super().__init__()
        self.recorder = recorder
        self._sum, self._n = None, 0

    def reset(self) -> None:
        self._sum, self._n = None, 0

    def result(self):
        return None

    def after_training_iteration(self, strategy):
        loss = strategy.loss.detach()
        self._sum = loss if self._sum is None else self._sum + loss  # on the device: no sync per step
        self._n += 1

    def after_training_epoch(self, strategy):
        if not self._n:
            return None
        value = float(self._sum) / self._n
        self.reset()
        return [MetricValue(self, "Loss_Epoch/train_phase/train_stream/Task000", value, strategy.clock.train_iterations)]

    def step_state(self) -> dict:
        return {"sum": None if self._sum is None else self._sum.detach().cpu(), "n": self._n}

    def load_step_state(self, state: dict, strategy) -> None:
        self._sum = None if state["sum"] is None else state["sum"].to(strategy.device)
        self._n = state["n"]

    def after_training_exp(self, strategy):
        i = len(self.recorder.rows) - 1
        out = [MetricValue(self, f"KL_bits_Exp/eval_phase/test_stream/Task000/Exp{j:03d}", v, i)
               for j, v in zip(self.recorder.columns, self.recorder.rows[-1])]
        d = self.recorder.diagnostics[-1]
        for name, value in (("DormantFraction", d["dormant"]["fraction"]), ("DeadFraction", d["dead_fraction"]),
                            ("EffectiveRank", d["effective_rank"]), ("WeightNorm", d["weight_norm"]),
                            ("MeanAbsWeight", d["mean_abs_weight"])):
            out.append(MetricValue(self, f"{name}/train_phase/train_stream", value, i))
        return out

    def __str__(self) -> str:
        return "BitsMetric"


class ExperienceBar(SupervisedPlugin):
    """The inner progress bar: the steps of the experience in training."""

    stateless = True  # framework.continual.state leaves it out of checkpoints

    def __init__(self, enabled: bool, desc: str):
        super().__init__()
        self.enabled, self.desc, self.bar = enabled, desc, None

    def before_training_exp(self, strategy, **kwargs):
        try:
            total = len(strategy.dataloader) * strategy.train_epochs
        except TypeError:
            total = None
        index = strategy.clock.train_exp_counter
        self.bar = tqdm(total=total, desc=f"{self.desc} exp {index}", disable=not self.enabled, leave=False,
                        dynamic_ncols=True, position=1)

    def after_training_iteration(self, strategy, **kwargs):
        self.bar.update(1)

    def step_state(self) -> dict:
        return {"n": int(self.bar.n)}

    def load_step_state(self, state: dict, strategy) -> None:
        """Resumed inside an experience (framework.continual.steps): the steps done before."""
        self.bar.update(state["n"] - self.bar.n)

    def after_training_exp(self, strategy, **kwargs):
        self.bar.close()


def evaluator_for(recorder: ContinualRecorder, job_dir: Path) -> tuple[EvaluationPlugin, list]:
    text = (job_dir / "log.txt").open("a")
    loggers = [TextLogger(text), CSVLogger(str(job_dir / "csv")), TensorboardLogger(str(job_dir / "tb"))]
    return EvaluationPlugin(BitsMetric(recorder), loggers=loggers), [text, *loggers]


def _close(handles: list) -> None:
    for h in handles:
        try:
            h.close()
        except Exception:  # a logger that was never opened fully; nothing to keep
            pass


# ---------------------------------------------------------------- seeds, hashes, baselines

def seed_all(seed: int) -> None:
    seed = seed % 2**31
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def settings_hash(plan: ContinualPlan, job: ContinualJob) -> str:
    """What decides a job's results: a job's state or result is reused only if this matches."""
    s = plan.settings
    return digest({**describe(plan), "model": dataclasses.asdict(job.model_config), "seed": s.seed,
                   "fresh_baseline": s.fresh_baseline, "probe_sequences": s.probe_sequences,
                   "dormant_tau": s.dormant_tau,
                   "runtime": {"device": s.runtime.device, "deterministic": s.runtime.deterministic}}, 16)


def fresh_hash(plan: ContinualPlan, job: ContinualJob) -> str:
    """What decides F_j: the stream, the model, the budget and optimiser, the seed (not the method)."""
    t, s = plan.strategy, plan.settings
    return digest({"stream": dataclasses.asdict(plan.stream_config), "model": dataclasses.asdict(job.model_config),
                   "optim": [t.lr, t.weight_decay, t.betas_2, t.grad_clip, t.train_epochs, t.train_mb_size,
                             t.eval_mb_size], "seed": s.seed,
                   "runtime": {"device": s.runtime.device, "deterministic": s.runtime.deterministic}}, 16)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def step_checkpoint(path: Path, key: str, experience: int, strict: bool = True):
    """The step checkpoint at ``path`` if it continues ``experience`` (the first unfinished one), else
    None: one left from an experience that finished since (killed between the two writes) is stale,
    and so, unless ``strict``, is one written with other settings (as fresh.json is)."""
    if not path.exists():
        return None
    state = load_torch(path)
    if not isinstance(state, dict) or state.get("settings_hash") != key:
        if not strict:
            path.unlink()
            return None
        raise CheckpointError(f"{path} was written with other settings than this run's; resume it with the "
                              "settings it was run with, or use a new hydra.run.dir")
    if state.get("experience") != experience:
        path.unlink()
        return None
    return state


def fresh_row(plan: ContinualPlan, job: ContinualJob, job_dir: Path, device, progress: bool) -> tuple[list, float]:
    """F_j for every experience j (a fresh model trained on j alone, same budget), resumable per j."""
    key = fresh_hash(plan, job)
    n = len(plan.stream)
    cache = job_dir.parent.parent / ".fresh" / f"{key}.json" if plan.settings.fresh_cache else None  # beside the run folder
    if cache is not None:
        cached = _read_json(cache)
        if cached and cached.get("hash") == key and len(cached.get("kl_bits", [])) == n:
            return cached["kl_bits"], 0.0
    path = job_dir / FRESH
    done = _read_json(path) if plan.settings.resume else None
    values = done["kl_bits"] if done and done.get("hash") == key else []
    seconds = done.get("seconds", 0.0) if done and done.get("hash") == key else 0.0
    naive = dataclasses.replace(plan.strategy, name="naive")
    step_path = job_dir / FRESH_STEP
    within = step_checkpoint(step_path, key, len(values), strict=False) if plan.settings.resume else None
    if not plan.settings.resume:
        step_path.unlink(missing_ok=True)
    for j in tqdm(range(len(values), n), desc=f"{job.model_key} fresh baseline", disable=not progress, leave=False,
                  dynamic_ncols=True):
        started = time.perf_counter()
        before = seconds if within is None else within["seconds"]
        steps = StepCheckpoints(plan.settings.checkpoint_every, save=lambda c, j=j, t0=started, before=before: save_torch(
            step_path, {"settings_hash": key, "experience": j, "seconds": before + time.perf_counter() - t0, **c}))
        steps.resume, within = within, None
        seed_all(derive_seed(plan.settings.seed, "fresh", j))
        model = plan.make_model(job).to(device)
        strategy = build_strategy(naive, model, plugins=[steps], device=device)
        strategy.train(plan.stream.train_stream[j])
        values.append(experience_bits(strategy.model, plan.stream.test_stream[j].dataset, device,
                                      plan.strategy.eval_mb_size)["kl_bits"])
        seconds = before + time.perf_counter() - started
        write_json(path, {"hash": key, "kl_bits": values, "seconds": seconds})
        step_path.unlink(missing_ok=True)
    if cache is not None:
        write_json(cache, {"hash": key, "kl_bits": values})
    return values, seconds


# ---------------------------------------------------------------- one job

def _finite(x):
    """NaN (a metric undefined for this run, e.g. BWT of Joint's single row) -> None in JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, list):
        return [_finite(v) for v in x]
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    return x


def _features(diagnostics: list) -> dict:
    """The feature statistics per experience, as lists along the stream."""
    keys = ("dead_fraction", "effective_rank", "approximate_rank", "stable_rank", "mean_abs_weight", "weight_norm",
            "distance_from_init")
    out = {"experience": [d["experience"] for d in diagnostics],
           "dormant_fraction": [d["dormant"]["fraction"] for d in diagnostics]}
    for k in keys:
        out[k] = [d.get(k) for d in diagnostics]
    out["dormant_tau"] = diagnostics[0]["dormant"]["tau"] if diagnostics else None
    return out


def run_job(plan: ContinualPlan, job: ContinualJob, run_dir: Path) -> dict:
    settings = plan.settings
    job_dir = run_dir / job.name(plan)
    job_dir.mkdir(parents=True, exist_ok=True)
    for stale in job_dir.glob(".*.tmp"):  # what a write killed mid-way left; the real files are intact
        stale.unlink()
    expected = settings_hash(plan, job)
    result_path = job_dir / "result.json"
    if settings.resume and result_path.exists():
        done = _read_json(result_path)
        if done and done.get("settings_hash") == expected:
            return done
    device = pick_device(settings.runtime.device)
    progress = settings.runtime.progress
    stream = plan.stream
    started = time.perf_counter()

    fresh, fresh_seconds = (fresh_row(plan, job, job_dir, device, progress) if settings.fresh_baseline else (None, 0.0))

    seed_all(derive_seed(settings.seed, "init", job.model_key))
    model = plan.make_model(job).to(device)
    recorder = ContinualRecorder(stream, device=device, batch_size=settings.eval_batch_size,
                                 n_probe=settings.probe_sequences, tau=settings.dormant_tau)
    plasticity = [build_plasticity(dataclasses.asdict(p)) for p in plan.plugins]
    evaluator, handles = evaluator_for(recorder, job_dir)
    steps = StepCheckpoints(settings.checkpoint_every)
    strategy = build_strategy(plan.strategy, model, plugins=[*plasticity, recorder,
                                                             ExperienceBar(progress, job.name(plan)), steps],
                              device=device, evaluator=evaluator)
    experiences = [stream.train_stream] if plan.strategy.name == "joint" else list(stream.train_stream)
    state_path = job_dir / STATE
    start, train_seconds = 0, 0.0
    if settings.resume and state_path.exists():
        state = load_torch(state_path)
        if not isinstance(state, dict) or state.get("settings_hash") != expected:
            raise CheckpointError(f"{state_path} was written with other settings than this run's; resume it with the "
                                  "settings it was run with, or use a new hydra.run.dir")
        load_strategy_state(strategy, state["strategy"], stream)
        start, train_seconds = state["experience"], state["train_seconds"]
    else:
        seed_all(derive_seed(settings.seed, "train", job.model_key))
    step_path = job_dir / STEP
    if settings.resume:
        steps.resume = step_checkpoint(step_path, expected, start)
    else:
        step_path.unlink(missing_ok=True)
    if steps.resume is not None:
        train_seconds = steps.resume["train_seconds"]
        log.info("%s: resuming experience %d at step %d", job.name(plan), start, steps.resume["step"])
    try:
        bar = tqdm(total=len(experiences), initial=start, desc=f"{job.name(plan)} stream", disable=not progress,
                   leave=False, dynamic_ncols=True, position=0)
        for e in range(start, len(experiences)):
            t0 = time.perf_counter()
            steps.save = lambda c, e=e, t0=t0, before=train_seconds: save_torch(step_path, {
                "settings_hash": expected, "experience": e, "train_seconds": before + time.perf_counter() - t0, **c})
            strategy.train(experiences[e])
            train_seconds += time.perf_counter() - t0
            save_torch(state_path, {"settings_hash": expected, "experience": e + 1, "train_seconds": train_seconds,
                                    "strategy": strategy_state(strategy)})
            step_path.unlink(missing_ok=True)  # after state.pt: a kill between the two leaves a stale one
            bar.update(1)
            if recorder.rows:
                bar.set_postfix(kl_bits=f"{np.mean(recorder.rows[-1]):.4f}")
        bar.close()
    finally:
        _close(handles)
    summary = recorder.summary(fresh=fresh)
    ratios = summary.get("plasticity_ratio") or []
    late = ratios[len(ratios) // 2:] if len(ratios) >= 2 else []
    resets = sum(getattr(p, "resets", 0) for p in plasticity)
    entry = {
        "stream": plan.stream_config.name,
        "strategy": plan.strategy.name,
        "plugins": plan.plugin_names,
        "model": job.model_key,
        "architecture": job.model_config.name,
        "method": plan.method,
        "params": job.params,
        "n_experiences": len(stream),
        "steps_per_experience": plan.steps_per_experience,
        "settings_hash": expected,
        "sign": SIGN,
        "matrix": summary["R_kl_bits"],
        "acc_bits": summary.get("average_error_bits"),
        "bwt_bits": summary.get("bwt_bits"),
        "fwt_bits": summary.get("fwt_bits"),
        "forgetting_bits": summary.get("forgetting_bits"),  # Chaudhry et al.: best since learned minus last
        "forgetting_first_last_bits": summary.get("forgetting_first_last_bits"),  # Avalanche's: first minus last
        "forgetting_per_experience_bits": summary.get("forgetting_per_experience_bits"),
        "learned_bits": summary.get("learned_bits"),  # R[j][j]
        "initial_kl_bits": summary.get("initial_kl_bits"),  # b_j, the FWT baseline
        "fresh_kl_bits": summary.get("fresh_kl_bits"),  # F_j
        "plasticity": ratios,  # R[j][j] / F_j per experience
        "plasticity_ratio_mean": summary.get("plasticity_ratio_mean"),
        "late_plasticity_ratio": float(np.mean(late)) if late else None,  # the second half of the stream
        "intransigence_bits": summary.get("intransigence_bits"),
        "features": _features(summary["diagnostics"]),
        "resets": resets,
        **describe(plan),
        "model_config": dataclasses.asdict(job.model_config),
        "device": str(device),
        "timing": {"train_seconds": round(train_seconds, 3), "fresh_seconds": round(fresh_seconds, 3),
                   "wall_seconds": round(time.perf_counter() - started, 3)},
    }
    entry = _finite(entry)
    write_json(result_path, entry)
    return entry


def check_resumable(plan: ContinualPlan, run_dir: Path) -> None:
    """Before any compute: every job state in ``run_dir`` was written with this run's settings."""
    for job in plan.jobs:
        for name in ("result.json",):
            path = Path(run_dir) / job.name(plan) / name
            done = _read_json(path) if path.exists() else None
            if done is not None and done.get("settings_hash") != settings_hash(plan, job):
                raise ConfigError("resume", f"job {job.name(plan)} in {run_dir} finished with other settings than this "
                                            "run's; resume it with the settings it was run with, or use a new "
                                            "hydra.run.dir")


def run_plan(plan: ContinualPlan, run_dir: Path) -> dict:
    runs = []
    for number, job in enumerate(plan.jobs, 1):
        log.info("job %d/%d: %s (%d experiences x %d steps)", number, len(plan.jobs), job.name(plan), len(plan.stream),
                 plan.steps_per_experience)
        entry = run_job(plan, job, Path(run_dir))
        log.info("job %d/%d: %s: acc_bits=%.4g bwt_bits=%s", number, len(plan.jobs), job.name(plan),
                 entry["acc_bits"], entry["bwt_bits"])
        runs.append(entry)
    return {"runs": runs, "sign": SIGN}
