"""The training loop: fresh batches every step, Muon with AdamW (or AdamW), warmup + cosine, clipping,
periodic validation.

One explicit loop, top to bottom. Everything that decides the next step is in the checkpoint
(``framework.training.checkpoint``), so a resumed run on CPU continues exactly where the interrupted
one stopped. The learning rate is a pure function of the step, so
the schedule needs no state of its own.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from framework.errors import NonFiniteLoss
from framework.io import save_torch
from framework.metrics.bits import soft_cross_entropy
from framework.metrics.evaluate import EvalSet, evaluate
from framework.models.base import hidden_matrices
from framework.tasks.base import Batch, Task
from framework.training.checkpoint import (
    CHECKPOINT, SNAPSHOTS, TrainState, read_checkpoint, restore, resumed_precision, rewind_log, save_checkpoint,
)
from framework.training.config import TrainConfig
from framework.training.muon import BatchedMuon, MuonWithAdamW
from framework.training.precision import resolve_precision, training_autocast
from framework.training.schedule import warmup_cosine

LOG_EVERY = 50


@dataclass
class TrainResult:
    steps: int
    train_seconds: float
    history: list[dict] = field(default_factory=list)  # validation passes: step, kl_bits, entropy_mae_bits
    val_seconds: float = 0.0  # wall time of the validation passes of this call (not in train_seconds)
    reached_target: bool = False  # a validation pass met cfg's targets (target_kl_bits, target_entropy_mae_bits)
    precision: str = "float32"  # what the steps ran in: cfg.precision resolved, or a resumed checkpoint's


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, fused: bool | None = None):
    """AdamW, or with ``cfg.optimizer == "muon"`` Muon on the model's hidden matrices and AdamW on the
    rest (``framework.training.muon``). ``fused=True`` picks AdamW's single-kernel implementation
    (None: torch's default, which is foreach on CUDA and a per-tensor loop on CPU; on CPU neither beat
    it, benchmarks/README.md).

    Matrices decay, biases, norms and 1-d parameters do not (nanoGPT's split). With
    ``cfg.value_lr_mult`` != 1 the attention value projections get their own groups, whose
    ``lr_mult`` the loop multiplies into the scheduled learning rate (Paper II's EM-like schedule).
    Muon's groups take the same learning rate: torch's "match_rms_adamw" adjustment scales each
    matrix's step to AdamW's size; a model with no hidden matrices (the LSTM) gets AdamW alone. Muon
    orthogonalises in the dtype ``cfg.precision`` resolves to on the model's device.

    ``cfg`` may be any settings object with ``lr``, ``weight_decay`` and ``betas_2`` (the continual
    strategies pass theirs, and need AdamW: Avalanche and the unit plugins read its ``state``); where
    it lacks ``betas_1``, ``value_lr_mult``, ``optimizer`` or ``muon_momentum``, they are 0.9, 1, "adamw"
    and TrainConfig's momentum (TrainConfig's own optimizer default is "muon").
    """
    value_mult = getattr(cfg, "value_lr_mult", 1.0)
    values = {id(p) for p in getattr(model, "value_projections", list)()} if value_mult != 1 else set()
    muon = getattr(cfg, "optimizer", "adamw") == "muon"
    hidden = {id(p) for p in hidden_matrices(model)} if muon else set()
    groups: dict[tuple[bool, bool, float], list[torch.nn.Parameter]] = {}
    for p in model.parameters():
        if p.requires_grad:
            key = (id(p) in hidden, p.dim() >= 2, value_mult if id(p) in values else 1.0)
            groups.setdefault(key, []).append(p)
    order = sorted(groups, key=lambda key: (not key[1], key[2] != 1.0))  # decay first, then the lr_mult groups

    def param_groups(on_muon: bool) -> list[dict]:
        return [{"params": groups[key], "weight_decay": cfg.weight_decay if key[1] else 0.0,
                 "lr": cfg.lr * key[2], "lr_mult": key[2]} for key in order if key[0] == on_muon]

    betas = (getattr(cfg, "betas_1", 0.9), cfg.betas_2)
    adamw = torch.optim.AdamW(param_groups(False), lr=cfg.lr, betas=betas, fused=fused)
    if not any(key[0] for key in groups):  # nothing for Muon (the LSTM's matrices are inside nn.LSTM)
        return adamw
    device = next(model.parameters()).device
    ns_dtype = resolve_precision(getattr(cfg, "precision", "float32"), device)
    return MuonWithAdamW(BatchedMuon(param_groups(True), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                     adjust_lr_fn="match_rms_adamw", ns_dtype=ns_dtype,
                                     momentum=getattr(cfg, "muon_momentum", TrainConfig.muon_momentum)), adamw)


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
    device = batch.tokens.device
    with training_autocast(resolve_precision(cfg.precision, device), device):
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
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` on ``task`` for ``cfg.steps`` steps, checkpointing into ``out_dir``.

    ``meta`` (task, model, params) is stored in the checkpoint, and a checkpoint whose meta differs
    is refused on resume rather than silently loaded into the wrong model. A resumed run continues in
    the precision its checkpoint was trained in (``checkpoint.resumed_precision``). ``progress``: a
    tqdm bar.
    """
    from torch.utils.tensorboard import SummaryWriter  # slow import; only needed when training

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(".*.tmp"):  # what a write killed mid-way left; the real files are intact
        stale.unlink()
    device = next(model.parameters()).device
    ckpt_path = out_dir / CHECKPOINT
    saved = read_checkpoint(ckpt_path, meta) if resume and ckpt_path.exists() else None
    precision = str(resolve_precision(cfg.precision, device)).removeprefix("torch.")
    if saved is not None:
        precision = resumed_precision(cfg.precision, precision, saved.get("precision"), ckpt_path)
    cfg = replace(cfg, precision=precision)
    optimizer = make_optimizer(model, cfg)
    generator = torch.Generator(device).manual_seed(seed)
    if saved is not None:
        state = restore(saved, ckpt_path, model, optimizer, generator)
        rewind_log(out_dir / "log.jsonl", state.step)
    else:
        state = TrainState()
        # A fresh start: snapshots left by an earlier run in this folder are not of this run.
        shutil.rmtree(out_dir / SNAPSHOTS, ignore_errors=True)
    history, val_seconds = state.history, 0.0

    forward_model = maybe_compile(model, cfg.compile)
    writer = SummaryWriter(str(out_dir / "tb"), purge_step=state.step if state.step else None)
    log = (out_dir / "log.jsonl").open("a")
    bar = tqdm(total=cfg.steps, initial=state.step, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)

    def check_finite() -> None:  # called before any checkpoint, so a saved checkpoint is always good
        if nonfinite.item():
            raise NonFiniteLoss(
                f"{desc}: the loss became non-finite by step {state.step}; the last good checkpoint is kept "
                f"at {ckpt_path}. Lower train.lr or raise train.warmup_steps.")

    def on_target() -> bool:
        return bool(history) and cfg.targets_met(history[-1])

    model.train()
    try:
        while state.step < cfg.steps and not on_target():  # a resumed run that had reached its target stays stopped
            started = time.perf_counter()
            lr = cfg.lr * warmup_cosine(state.step, cfg.steps, cfg.warmup_steps, cfg.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_mult", 1.0)
            loss = train_step(model, forward_model, optimizer, task.sample(cfg.batch_size, generator), cfg)
            nonfinite |= ~torch.isfinite(loss.detach())  # on-device flag: no host sync per step
            state.step += 1
            step = state.step
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
            state.train_seconds += time.perf_counter() - started

            out_of_time = 0 < cfg.time_limit_s <= state.train_seconds
            if step % cfg.eval_every == 0 or step == cfg.steps or out_of_time:
                val_started = time.perf_counter()
                scores = evaluate(model, val_set, device)
                val_seconds += time.perf_counter() - val_started
                history.append({"step": step, "kl_bits": scores["kl_bits"],
                                "entropy_mae_bits": scores["entropy_mae_bits"]})
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
                save_checkpoint(ckpt_path, meta, model, optimizer, generator, state, precision)
            if cfg.snapshot_every and (step % cfg.snapshot_every == 0 or step == cfg.steps or stopping):
                save_torch(out_dir / SNAPSHOTS / f"step_{step:07d}.pt",
                           {"meta": meta, "model": model.state_dict(), "step": step})
            if out_of_time:
                break
    finally:
        bar.close()
        log.close()
        writer.close()
    return TrainResult(steps=state.step, train_seconds=state.train_seconds, history=history, val_seconds=val_seconds,
                       reached_target=on_target(), precision=precision)
