"""Training checkpoints: what a resumed run needs to continue exactly, and loading a trained job.

A training checkpoint holds everything that decides the next step (model, optimizer, step, the data
generator, the global RNG and the precision the steps ran in), so a resumed run on CPU continues
exactly where the interrupted one stopped. ``meta`` (task, model, params) is stored too, and a
checkpoint whose meta differs from the run's is refused rather than loaded into the wrong model.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from framework.errors import CheckpointError, ConfigError
from framework.io import load_torch, save_torch
from framework.models import MODELS, build_model
from framework.registry import config_from
from framework.tasks import TASKS, Task, build_task

CHECKPOINT = "checkpoint.pt"
SNAPSHOTS = "snapshots"  # snapshots/step_<N>.pt: {"meta", "model", "step"}, weights only
CHECKPOINT_KEYS = {"meta", "model", "optimizer", "generator", "torch_rng", "step", "train_seconds", "history",
                   "precision"}
# Checkpoints written before the precision was recorded (3 Dec 2026) lack only that key.
_KEYS_BEFORE_PRECISION = CHECKPOINT_KEYS - {"precision"}


@dataclass
class TrainState:
    """Where a training run stands: restored from a checkpoint, or a fresh start."""

    step: int = 0
    train_seconds: float = 0.0
    history: list[dict] = field(default_factory=list)  # validation passes: step, kl_bits, entropy_mae_bits


def save_checkpoint(path: Path, meta: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    generator: torch.Generator, progress: TrainState, precision: str) -> None:
    """``precision``: what the steps ran in ("float32" or "bfloat16"), not the setting ("auto")."""
    save_torch(path, {"meta": meta, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                      "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
                      "step": progress.step, "train_seconds": progress.train_seconds, "history": progress.history,
                      "precision": precision})


def read_checkpoint(path: Path, meta: dict) -> dict:
    """A training checkpoint's contents, refused unless it is one of this framework's for ``meta``."""
    state = load_torch(path)
    if not isinstance(state, dict) or set(state) not in (CHECKPOINT_KEYS, _KEYS_BEFORE_PRECISION):
        raise CheckpointError(f"refusing checkpoint {path}: not a training checkpoint of this framework")
    if state["meta"] != meta:
        raise CheckpointError(f"checkpoint {path} is for {state['meta']}, not {meta}; refusing to resume")
    return state


def resumed_precision(setting: str, here: str, saved: str | None, path: Path) -> str:
    """The precision a resumed run continues in: the one its steps ran in so far, so that a run does
    not change number format half-way. ``setting`` is ``train.precision``, ``here`` what it resolves to
    on this machine, ``saved`` what the checkpoint recorded (None: written before it recorded it).
    ``auto`` follows the checkpoint, with a note where this machine would have picked otherwise (a bf16
    run continued on a CPU without native bf16 is slower, not different); a named precision that
    differs from the checkpoint's is refused."""
    if saved is None or saved == here:
        return here
    if setting != "auto":
        raise CheckpointError(f"checkpoint {path} was trained in {saved}; train.precision={setting} would continue "
                              f"it in another precision. Set train.precision={saved} (or auto) to resume it, or "
                              f"start afresh")
    print(f"resuming {path} in {saved}, the precision it was trained in (train.precision=auto would pick {here} "
          f"on this machine)")
    return saved


def restore(state: dict, path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            generator: torch.Generator) -> TrainState:
    """Load a checkpoint ``state`` (``read_checkpoint``; from ``path``) into ``model``, ``optimizer``,
    ``generator`` and the global RNG."""
    model.load_state_dict(state["model"])
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (KeyError, ValueError) as err:  # AdamW's state into Muon with AdamW, or the other way round
        raise CheckpointError(f"checkpoint {path}: its optimizer state does not fit this run's optimizer "
                              f"(train.optimizer or train.value_lr_mult changed?): {err}") from None
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    return TrainState(state["step"], state["train_seconds"], state["history"])


def rewind_log(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from, so the log has no duplicates."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept))


def snapshots_in(job_dir: Path) -> list[Path]:
    """A job's weight snapshots, oldest first (the training loop clears them when a job starts afresh)."""
    return sorted((Path(job_dir) / SNAPSHOTS).glob("step_*.pt"))


def load_trained(path: str | Path) -> tuple[torch.nn.Module, Task, dict, Path]:
    """(model with its trained weights, task, checkpoint record, checkpoint file) from a job's checkpoint.

    The task and the model are rebuilt from the checkpoint's own record of them; a file that is not a
    wind-tunnel checkpoint, or whose weights do not fit the model it names, is refused.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.exists():
        raise ConfigError("checkpoint", f"no checkpoint at {path} (give a job folder or its checkpoint.pt)")
    state = load_torch(path)
    meta = state.get("meta") if isinstance(state, dict) else None
    if not isinstance(meta, dict) or not {"task", "model"} <= set(meta) or not isinstance(state.get("model"), dict):
        raise CheckpointError(f"refusing checkpoint {path}: not a checkpoint of a wind-tunnel job")
    try:
        task = build_task(config_from(TASKS, meta["task"], "task"))
        model_config = config_from(MODELS, meta["model"], "model")
    except (ConfigError, TypeError) as err:
        raise CheckpointError(f"refusing checkpoint {path}: its task or model record is invalid ({err})") from None
    model = build_model(model_config, task.vocab_size, task.n_classes, task.seq_len)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError) as err:
        reason = str(err).splitlines()[0]
        raise CheckpointError(f"refusing checkpoint {path}: its weights do not fit a {model_config.name} "
                              f"({reason})") from None
    return model, task, state, path
