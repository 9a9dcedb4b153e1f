"""Training each model through the phases, and scoring every task after every phase.

For each model: its initial weights are scored on every task (row ``init``), then each phase trains
it (``framework.training.train``, a fresh AdamW and schedule per phase, the weights carried over) and
every task is scored again on its fixed-seed held-out set (2048+ fresh sequences), giving

    R[i][j] = kl_bits (mean KL(Bayes || model) per scored position) on task j after phase i.

From R, in bits, lower-is-better scores turned so that each number reads as its name says:

* forgetting of phase i's task (every phase but the last): R[last][j] - min_{i <= l < last} R[l][j],
  j = task of phase i (Chaudhry et al. 2018's forgetting, in bits): how far its KL has risen at the
  end above the best it had from phase i on. Positive: forgotten; 0: kept.
* transfer to phase i's task (every phase but the first), with ``scratch``: S[i] - R[i][j], where S[i]
  is the KL of a fresh model from the same initial weights trained on phase i alone with the same
  settings. Positive: the earlier phases helped (fewer bits at the same budget); negative: they hurt
  (interference, lost plasticity).
* zero-shot transfer to phase i's task: R_init[j] - R[i-1][j], the bits earlier phases gained on it
  before it was ever trained on.

Each model's folder holds one sub-folder per phase (checkpoint, log, TensorBoard, snapshots with
``curve_every``) and per scratch baseline, and ``result.json``, reused on ``resume=true`` when its
settings match.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import torch

from framework.errors import ConfigError
from framework.io import load_torch, write_json
from framework.metrics.evaluate import EvalSet, evaluate
from framework.models import count_params
from framework.runners.transfer.plan import Phase, TransferPlan
from framework.runtime import pick_device
from framework.seeds import derive_seed, digest
from framework.training import train
from framework.training.checkpoint import snapshots_in

log = logging.getLogger(__name__)

SCORES = ("kl_bits", "kl_bits_stderr", "entropy_mae_bits", "entropy_mae_bits_stderr", "accuracy", "bayes_accuracy")


def settings_hash(plan: TransferPlan, model_key: str) -> str:
    s = plan.settings
    return digest({"tasks": {k: asdict(c) for k, c in plan.task_configs.items()},
                   "model": asdict(plan.models[model_key]),
                   "phases": [(p.task_key, asdict(p.train)) for p in plan.phases[model_key]],
                   "scratch": s.scratch, "curve_every": s.curve_every, "sizes": plan.sizes}, 16)


def check_resumable(plan: TransferPlan, run_dir: Path) -> None:
    for key in plan.models:
        path = Path(run_dir) / key / "result.json"
        if path.exists() and json.loads(path.read_text()).get("settings_hash") != settings_hash(plan, key):
            raise ConfigError("resume", f"model {key} in {run_dir} finished with other settings than this run's; "
                                        "resume it with the settings it was run with, or use a new hydra.run.dir")


def _sets(plan: TransferPlan, seed: int) -> tuple[dict, dict]:
    """Validation-size and test sets of every task, fixed seeds, disjoint from every phase's training data."""
    t = plan.settings.train
    val = {k: EvalSet.generate(task, t.val_sequences, derive_seed(seed, "transfer", k, "val"), t.eval_batch_size)
           for k, task in plan.tasks.items()}
    test = {k: EvalSet.generate(task, t.eval_sequences, derive_seed(seed, "transfer", k, "test"), t.eval_batch_size)
            for k, task in plan.tasks.items()}
    return val, test


def _row(model, sets: dict, device) -> dict:
    return {key: {name: s[name] for name in SCORES} | {"per_position_kl_bits": s["per_position"]["kl_bits"]}
            for key, s in ((key, evaluate(model, eval_set, device)) for key, eval_set in sets.items())}


def _meta(plan: TransferPlan, model_key: str, phase: Phase, params: int, kind: str) -> dict:
    return {"task": asdict(plan.task_configs[phase.task_key]), "model": asdict(plan.models[model_key]),
            "params": params, "phase": phase.index, "kind": kind, "sizes": list(plan.sizes)}


def _train_phase(plan, model_key, model, phase, folder, val, params, kind, device, seed):
    s = plan.settings
    return train(model, plan.tasks[phase.task_key], phase.train, folder,
                 seed=derive_seed(seed, "transfer", phase.index, phase.task_key, "data"), val_set=val[phase.task_key],
                 meta=_meta(plan, model_key, phase, params, kind), resume=s.resume, desc=f"{model_key} {folder.name}",
                 progress=s.runtime.progress)


def _curve(plan, model_key, phase, folder, val, offset, device) -> list[dict]:
    """Every task scored (validation-size sets) on each weight snapshot of a phase."""
    points = []
    scorer = plan.build_model(model_key).to(device)
    for path in snapshots_in(folder):
        state = load_torch(path)
        scorer.load_state_dict(state["model"])
        scores = {k: evaluate(scorer, v, device)["kl_bits"] for k, v in val.items()}
        points.append({"phase": phase.index, "step": state["step"], "global_step": offset + state["step"],
                       "kl_bits": scores})
    return points


def run_model(plan: TransferPlan, model_key: str, run_dir: Path, sets: tuple[dict, dict], device) -> dict:
    s = plan.settings
    folder = run_dir / model_key
    result_path = folder / "result.json"
    if s.resume and result_path.exists():
        return json.loads(result_path.read_text())
    val, test = sets
    init_seed = derive_seed(s.seed, model_key, "init")
    torch.manual_seed(init_seed)
    model = plan.build_model(model_key).to(device)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    params = count_params(model)
    started = time.perf_counter()
    rows, steps, curve, train_seconds = [], [], [], 0.0
    init_row = _row(model, test, device)
    if s.curve_every:
        curve.append({"phase": -1, "step": 0, "global_step": 0,
                      "kl_bits": {k: evaluate(model, v, device)["kl_bits"] for k, v in val.items()}})
    offset = 0
    for phase in plan.phases[model_key]:
        log.info("%s: %s (%d steps)", model_key, phase.name, phase.train.steps)
        outcome = _train_phase(plan, model_key, model, phase, folder / phase.name, val, params, "sequence", device,
                               s.seed)
        train_seconds += outcome.train_seconds
        steps.append(outcome.steps)
        rows.append(_row(model, test, device))
        if s.curve_every:
            curve += _curve(plan, model_key, phase, folder / phase.name, val, offset, device)
        offset += outcome.steps
        log.info("%s after %s: %s", model_key, phase.name,
                 "  ".join(f"{k}={v['kl_bits']:.4g}" for k, v in rows[-1].items()))
    scratch = {}
    if s.scratch:
        for phase in plan.phases[model_key][1:]:
            fresh = plan.build_model(model_key).to(device)
            fresh.load_state_dict(initial)  # the same initial weights as the sequence's model
            outcome = _train_phase(plan, model_key, fresh, phase, folder / f"scratch{phase.index}_{phase.task_key}",
                                   val, params, "scratch", device, s.seed)
            train_seconds += outcome.train_seconds
            scratch[str(phase.index)] = {"task_key": phase.task_key, "steps": outcome.steps,
                                         **_row(fresh, {phase.task_key: test[phase.task_key]}, device)[phase.task_key]}
    result = {"model": plan.models[model_key].name, "model_key": model_key, "params": params,
              "settings_hash": settings_hash(plan, model_key),
              **summarise(plan, plan.phases[model_key], init_row, rows, scratch),
              "steps": steps, "scratch": scratch, "curve": curve,
              "model_config": asdict(plan.models[model_key]),
              "task_configs": {k: asdict(c) for k, c in plan.task_configs.items()},
              "train_configs": [asdict(p.train) for p in plan.phases[model_key]], "sizes": list(plan.sizes),
              "device": str(device),
              "timing": {"train_seconds": round(train_seconds, 3),
                         "wall_seconds": round(time.perf_counter() - started, 3)}}
    write_json(result_path, result)
    return result


def summarise(plan: TransferPlan, phases: list[Phase], init_row: dict, rows: list[dict], scratch: dict) -> dict:
    """R and its stderr, forgetting and transfer (module docstring for the definitions and signs)."""
    keys = list(plan.tasks)
    R = [[row[k]["kl_bits"] for k in keys] for row in rows]
    last = len(rows) - 1
    forgetting, transfer, zero_shot = {}, {}, {}
    for phase in phases:
        j, i = keys.index(phase.task_key), phase.index
        if i < last:
            forgetting[str(i)] = R[last][j] - min(R[l][j] for l in range(i, last))
        if i > 0:
            zero_shot[str(i)] = init_row[phase.task_key]["kl_bits"] - R[i - 1][j]
            if str(i) in scratch:
                transfer[str(i)] = scratch[str(i)]["kl_bits"] - R[i][j]
    phase_tasks = [keys.index(p.task_key) for p in phases]
    mean = lambda d: sum(d.values()) / len(d) if d else None  # noqa: E731
    return {
        "tasks": keys,
        "phases": [p.name for p in phases],
        "phase_tasks": [p.task_key for p in phases],
        "R_kl_bits": R,
        "R_kl_bits_stderr": [[row[k]["kl_bits_stderr"] for k in keys] for row in rows],
        "R_entropy_mae_bits": [[row[k]["entropy_mae_bits"] for k in keys] for row in rows],
        "R_init_kl_bits": [init_row[k]["kl_bits"] for k in keys],
        "scores": rows,  # per phase, per task: every score with its stderr, and KL per position
        "forgetting_bits": forgetting,
        "transfer_bits": transfer,
        "zero_shot_transfer_bits": zero_shot,
        "final_kl_bits": sum(R[last][j] for j in set(phase_tasks)) / len(set(phase_tasks)),
        "mean_forgetting_bits": mean(forgetting),
        "mean_transfer_bits": mean(transfer),
    }


def run_plan(plan: TransferPlan, run_dir: Path) -> dict:
    device = pick_device(plan.settings.runtime.device)
    sets = _sets(plan, plan.settings.seed)
    runs = []
    for number, key in enumerate(plan.models, 1):
        log.info("model %d/%d: %s (%s)", number, len(plan.models), key, plan.models[key])
        runs.append(run_model(plan, key, Path(run_dir), sets, device))
    return {"runs": runs, "sizes": list(plan.sizes)}
