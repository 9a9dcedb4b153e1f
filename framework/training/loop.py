"""The training loop: fresh batches every step, AdamW, warmup + cosine, clipping, periodic validation.

One explicit loop, top to bottom. Everything that decides the next step (model, optimizer, step,
the data generator and the global RNG) is in the checkpoint, so a resumed run on CPU continues
exactly where the interrupted one stopped. The learning rate is a pure function of the step, so
the schedule needs no state of its own.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from framework.io import CheckpointError, load_torch, save_torch
from framework.metrics.bits import soft_cross_entropy
from framework.metrics.evaluate import EvalSet, autocast_for, evaluate
from framework.tasks.base import Batch, Task
from framework.training.config import TrainConfig
from framework.training.schedule import warmup_cosine

CHECKPOINT = "checkpoint.pt"
SNAPSHOTS = "snapshots"  # snapshots/step_<N>.pt: {"meta", "model", "step"}, weights only
CHECKPOINT_KEYS = {"meta", "model", "optimizer", "generator", "torch_rng", "step", "train_seconds", "history"}
LOG_EVERY = 50


class NonFiniteLoss(RuntimeError):
    pass


@dataclass
class TrainResult:
    steps: int
    train_seconds: float
    history: list[dict] = field(default_factory=list)  # validation passes: step, kl_bits, entropy_mae_bits
    val_seconds: float = 0.0  # wall time of the validation passes of this call (not in train_seconds)
    reached_target: bool = False  # a validation pass reached cfg.target_kl_bits (when it is set)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is available")
    return torch.device(name)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW; ``fused=True`` picks the single-kernel implementation (None: torch's default, which is
    foreach on CUDA and a per-tensor loop on CPU; on CPU neither beat it, benchmarks/README.md)."""
    # Decay matrices only; biases, norms and 1-d parameters are left alone (nanoGPT's split).
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, cfg.betas_2), fused=fused)


def loss_on(model: torch.nn.Module, batch: Batch, target: str) -> torch.Tensor:
    logits = model(batch.tokens)[:, batch.positions]  # (B, P, C)
    if target == "posterior":
        return soft_cross_entropy(batch.posterior, logits)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), batch.labels.reshape(-1))


def train_step(model: torch.nn.Module, forward_model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               batch: Batch, cfg: TrainConfig) -> torch.Tensor:
    """One optimisation step on ``batch``; the loss comes back on the device, so nothing waits for it.

    ``forward_model`` is ``model`` or its compiled wrapper; clipping reads ``model``'s parameters.
    """
    with autocast_for(batch.tokens.device):
        loss = loss_on(forward_model, batch, cfg.target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    return loss


def maybe_compile(model: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    if not enabled:
        return model
    try:
        return torch.compile(model)
    except Exception as err:  # compilation is an optimisation; eager always works
        print(f"torch.compile failed ({err}); running eagerly")
        return model


def _rewind_log(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from, so the log has no duplicates."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept))


def train(
    model: torch.nn.Module,
    task: Task,
    cfg: TrainConfig,
    out_dir: Path,
    *,
    seed: int,
    val_set: EvalSet,
    meta: dict,
    resume: bool = False,
    desc: str = "train",
) -> TrainResult:
    """Train ``model`` on ``task`` for ``cfg.steps`` steps, checkpointing into ``out_dir``.

    ``meta`` (task, model, params) is stored in the checkpoint, and a checkpoint whose meta differs
    is refused on resume rather than silently loaded into the wrong model.
    """
    from torch.utils.tensorboard import SummaryWriter  # slow import; only needed when training

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(".*.tmp"):  # what a write killed mid-way left; the real files are intact
        stale.unlink()
    device = next(model.parameters()).device
    optimizer = make_optimizer(model, cfg)
    generator = torch.Generator(device).manual_seed(seed)
    step, train_seconds, history, val_seconds = 0, 0.0, [], 0.0

    ckpt_path = out_dir / CHECKPOINT
    if not (resume and ckpt_path.exists()):
        # A fresh start: snapshots left by an earlier run in this folder are not of this run.
        shutil.rmtree(out_dir / SNAPSHOTS, ignore_errors=True)
    if resume and ckpt_path.exists():
        state = load_torch(ckpt_path)
        if not isinstance(state, dict) or set(state) != CHECKPOINT_KEYS:
            raise CheckpointError(f"refusing checkpoint {ckpt_path}: not a training checkpoint of this framework")
        if state["meta"] != meta:
            raise CheckpointError(f"checkpoint {ckpt_path} is for {state['meta']}, not {meta}; refusing to resume")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        step, train_seconds, history = state["step"], state["train_seconds"], state["history"]
        _rewind_log(out_dir / "log.jsonl", step)

    def save_checkpoint() -> None:
        save_torch(ckpt_path, {
            "meta": meta, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
            "step": step, "train_seconds": train_seconds, "history": history,
        })

    forward_model = maybe_compile(model, cfg.compile)
    writer = SummaryWriter(str(out_dir / "tb"), purge_step=step if step else None)
    log = (out_dir / "log.jsonl").open("a")
    bar = tqdm(total=cfg.steps, initial=step, desc=desc, disable=not cfg.progress, leave=False, dynamic_ncols=True)
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)

    def check_finite() -> None:  # called before any checkpoint, so a saved checkpoint is always good
        if nonfinite.item():
            raise NonFiniteLoss(
                f"{desc}: the loss became non-finite by step {step}; the last good checkpoint is kept "
                f"at {ckpt_path}. Lower train.lr or raise train.warmup_steps.")

    def on_target() -> bool:
        return cfg.target_kl_bits > 0 and bool(history) and history[-1]["kl_bits"] <= cfg.target_kl_bits

    model.train()
    try:
        while step < cfg.steps and not on_target():  # a resumed run that had reached its target stays stopped
            started = time.perf_counter()
            lr = cfg.lr * warmup_cosine(step, cfg.steps, cfg.warmup_steps, cfg.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = train_step(model, forward_model, optimizer, task.sample(cfg.batch_size, generator), cfg)
            nonfinite |= ~torch.isfinite(loss.detach())  # on-device flag: no host sync per step
            step += 1
            bar.update(1)

            record = None
            checkpoint_due = step % cfg.checkpoint_every == 0 or step == cfg.steps
            if step % LOG_EVERY == 0 or checkpoint_due:
                check_finite()
            if step % LOG_EVERY == 0 or step == cfg.steps:
                loss_value = loss.item()  # the only other host sync, once every LOG_EVERY steps
                record = {"step": step, "loss": loss_value, "lr": lr}
                writer.add_scalar("train/loss", loss_value, step)
                writer.add_scalar("train/lr", lr, step)
            train_seconds += time.perf_counter() - started

            out_of_time = 0 < cfg.time_limit_s <= train_seconds
            if step % cfg.eval_every == 0 or step == cfg.steps or out_of_time:
                val_started = time.perf_counter()
                scores = evaluate(model, val_set, device)
                val_seconds += time.perf_counter() - val_started
                point = {"step": step, "kl_bits": scores["kl_bits"], "entropy_mae_bits": scores["entropy_mae_bits"]}
                history.append(point)
                writer.add_scalar("val/kl_bits", scores["kl_bits"], step)
                writer.add_scalar("val/entropy_mae_bits", scores["entropy_mae_bits"], step)
                record = {**(record or {"step": step}), "val_kl_bits": scores["kl_bits"],
                          "val_entropy_mae_bits": scores["entropy_mae_bits"]}
                bar.set_postfix(kl_bits=f"{scores['kl_bits']:.4f}")
            if record is not None:
                log.write(json.dumps(record) + "\n")
                log.flush()
            stopping = on_target() or out_of_time
            if stopping:
                check_finite()
            if checkpoint_due or stopping:
                save_checkpoint()
            if cfg.snapshot_every and (step % cfg.snapshot_every == 0 or step == cfg.steps or stopping):
                save_torch(out_dir / SNAPSHOTS / f"step_{step:07d}.pt",
                           {"meta": meta, "model": model.state_dict(), "step": step})
            if out_of_time:
                break
    finally:
        bar.close()
        log.close()
        writer.close()
    return TrainResult(steps=step, train_seconds=train_seconds, history=history, val_seconds=val_seconds,
                       reached_target=on_target())
