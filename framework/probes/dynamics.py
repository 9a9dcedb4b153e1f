"""Training dynamics: attention stability against calibration across snapshots of one run.

Aggarwal, Dalal & Misra (arXiv 2512.22471) observe a frame-precision dissociation: the attention
pattern (the "frame": which positions a query reads) settles early in training, while calibration
(the "precision" of the posterior the model reports) keeps improving long after.

Input: the weight snapshots one training run saved (``train.snapshot_every``; files
``snapshots/step_<N>.pt`` = {"meta", "model", "step"}), ordered by step; each is loaded with
``weights_only=True`` into a copy of the model. For every snapshot, on the same sequences:

* ``attention_js_to_final_bits``: the Jensen-Shannon divergence (bits, 0..1) between its attention
  rows and the last snapshot's, averaged over layers, heads, sequences and scored query positions;
* ``attention_corr_to_final``: the Pearson correlation of all its attention weights with the last's;
* ``kl_bits`` / ``entropy_mae_bits``: calibration against the exact posterior.

Summary: ``attention_progress`` = 1 - JS / JS(first snapshot), the share of the attention change
already made, and ``calibration_progress`` = log(KL(first) / KL) / log(KL(first) / KL(last)), the
share of the improvement in orders of magnitude of KL (KL falls by decades, so a linear share would
call calibration done after its first drop); each is 0 at the first snapshot and 1 at the last;
``attention_settled_step`` / ``calibration_settled_step``, the first step whose progress reaches
``settle_fraction`` and stays there; and ``dissociation``, the mean over snapshots of attention
progress minus calibration progress (> 0: attention settles ahead of calibration).
"""
from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import torch

from framework.io import CheckpointError, load_torch
from framework.metrics import EvalSet, evaluate
from framework.probes.attention import attention_pass
from framework.probes.base import Probe, ProbeContext, ProbeError, finite_or_none, new_figure, save_figure
from framework.probes.stats import js_divergence_bits, pearson


def read_snapshot(path: Path) -> tuple[dict, int | None, object]:
    """(weights, step, meta) of a snapshot file, loaded with ``weights_only=True``."""
    try:
        state = load_torch(path)
    except CheckpointError as err:
        raise ProbeError(str(err)) from None
    weights = state.get("model") if isinstance(state, dict) else None
    if not isinstance(weights, dict):
        raise ProbeError(f"snapshot {path} is not a weight snapshot (a dict with 'model' weights)")
    step = state.get("step")
    if not isinstance(step, int):
        found = re.search(r"(\d+)", Path(path).stem)
        step = int(found.group(1)) if found else None
    return weights, step, state.get("meta")


def load_snapshot(model: torch.nn.Module, path: Path) -> torch.nn.Module:
    """A copy of ``model`` holding the snapshot's weights; refused if they do not fit."""
    weights, _, _ = read_snapshot(path)
    copy_ = copy.deepcopy(model)
    try:
        copy_.load_state_dict(weights)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ProbeError(f"snapshot {path} does not fit this model ({first}); "
                         "was it saved by a run of another model?") from None
    return copy_.eval()


def settled_step(steps: list[int], progress: list[float], fraction: float) -> int | None:
    """The first step from which progress stays at or above ``fraction``."""
    for i in range(len(steps)):
        if all(p >= fraction for p in progress[i:]):
            return steps[i]
    return None


def run(ctx: ProbeContext) -> dict:
    opts = ctx.options
    # Steps and metas first (one snapshot in memory at a time), then the runs in step order.
    found = []
    for i, path in enumerate(ctx.snapshots):
        _, step, meta = read_snapshot(path)
        found.append((step is None, step or 0, i, path, meta))
    if any(meta != found[0][4] for *_, meta in found):
        raise ProbeError("the snapshots come from different runs (their meta records differ); "
                         "pass the snapshots/ files of one training run")
    found.sort()
    eval_set = EvalSet(list(ctx.iter_batches(opts["max_sequences"])))

    def attention(model) -> list[torch.Tensor]:
        # one (B, H, R, T) tensor per layer per batch, on the first attention_sequences sequences
        return [attn for _, layers in attention_pass(ctx, model, opts["attention_sequences"]) for _, _, attn in layers]

    final_attn = attention(load_snapshot(ctx.model, found[-1][3]))
    entries = []
    for missing_step, step, _, path, _ in found:
        model = load_snapshot(ctx.model, path)
        attn = attention(model)
        js = torch.cat([js_divergence_bits(a, f).flatten() for a, f in zip(attn, final_attn)])
        corr = pearson(torch.cat([a.flatten() for a in attn]), torch.cat([f.flatten() for f in final_attn]))
        scores = evaluate(model, eval_set, ctx.device)
        entries.append({"step": None if missing_step else step, "path": str(path),
                        "attention_js_to_final_bits": float(js.mean()),
                        "attention_corr_to_final": finite_or_none(corr),
                        "kl_bits": scores["kl_bits"], "entropy_mae_bits": scores["entropy_mae_bits"]})
        del model, attn

    js0 = entries[0]["attention_js_to_final_bits"]
    log_kl = [math.log(max(e["kl_bits"], 1e-12)) for e in entries]
    for e, log_kl_e in zip(entries, log_kl):
        e["attention_progress"] = 1 - e["attention_js_to_final_bits"] / js0 if js0 > 0 else 1.0
        span = log_kl[0] - log_kl[-1]
        e["calibration_progress"] = (log_kl[0] - log_kl_e) / span if span != 0 else 1.0
    steps = [e["step"] if e["step"] is not None else i for i, e in enumerate(entries)]
    fraction = float(opts["settle_fraction"])
    result = {
        "snapshots": entries,
        "attention_settled_step": settled_step(steps, [e["attention_progress"] for e in entries], fraction),
        "calibration_settled_step": settled_step(steps, [e["calibration_progress"] for e in entries], fraction),
        "dissociation": sum(e["attention_progress"] - e["calibration_progress"] for e in entries) / len(entries),
        "settle_fraction": fraction,
    }

    fig, (ax,) = new_figure(width=6)
    ax.plot(steps, [e["attention_js_to_final_bits"] for e in entries], "o-", color="tab:blue",
            label="attention JS to final (bits)")
    ax.set_xlabel("training step")
    ax.set_ylabel("attention JS divergence to final (bits)", color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(steps, [e["kl_bits"] for e in entries], "s-", color="tab:red", label="kl_bits")
    ax2.set_yscale("log")
    ax2.set_ylabel("kl_bits (calibration)", color="tab:red")
    ax.set_title("frame (attention) vs precision (calibration)")
    result["plots"] = [save_figure(fig, ctx.out_dir, "dynamics.png")]
    return result


PROBE = Probe(
    name="dynamics", run=run, requires=("transformer",),
    reads="attention patterns across training snapshots", part="attention",
    options={"max_sequences": 1024, "attention_sequences": 256, "positions": "scored", "settle_fraction": 0.9},
    needs_snapshots=2,
    summary="attention stability across snapshots against kl_bits at each (frame-precision dissociation)",
)
