"""Query-key alignment and attention entropy, per layer and head.

Aggarwal, Dalal & Misra (arXiv 2512.22471) report "progressive query-key alignment" across layers
and use the entropy of the attention pattern to read how sharply each layer routes. Attention
weights are recomputed from the hook points ``blocks[i].attn.hook_q`` / ``hook_k`` as
softmax(q k^T / sqrt(dh)) under the causal mask (:func:`framework.probes.stats.attention_weights`).
Rows are the query positions ``positions`` (``"scored"``: the task's scored positions, ``"all"``:
every position); position 0 attends only to itself and is left out.

``attention_entropy``, per layer (mean over heads) and per head, in bits:

* ``entropy_bits``: mean entropy of an attention row; between 0 (all mass on one key) and
  log2(t + 1) at query position t (uniform over the visible keys); the largest possible value
  anywhere is ``max_bits`` = log2(T);
* ``normalised_entropy``: the mean of H / log2(t + 1), 1 for uniform attention, 0 for a point mass;
* ``per_position``: the mean entropy at each query position, beside ``uniform_bits`` = log2(t + 1).

``qk_alignment``, per layer and head, cosines between a query and the keys it can see:

* ``attended_cos``: the attention-weighted mean cos(q_t, k_s) (what the head actually reads);
* ``uniform_cos``: the unweighted mean over visible keys (what indiscriminate reading would give);
* ``max_cos``: the cosine with the best-aligned visible key;
* ``alignment`` = attended_cos - uniform_cos: how far attention picks keys aligned with its query.
"""
from __future__ import annotations

import math

import torch

from framework.probes.base import Probe, ProbeContext, ProbeError, new_figure, run_with, save_figure
from framework.probes.stats import attention_weights, row_entropy_bits


def query_positions(ctx: ProbeContext, batch, T: int) -> torch.Tensor:
    choice = ctx.options["positions"]
    if choice == "scored":
        rows = batch.positions
    elif choice == "all":
        rows = torch.arange(T, device=batch.tokens.device)
    else:
        raise ProbeError(f"option positions must be 'scored' or 'all', got {choice!r}")
    return rows[rows > 0]


def attention_pass(ctx: ProbeContext, model=None, max_sequences: int | None = None):
    """Yield, per batch, the query rows and each layer's (q, k, attention) restricted to those rows."""
    model = model if model is not None else ctx.model
    hooks = {}
    for i, block in enumerate(model.blocks):
        hooks[f"q{i}"], hooks[f"k{i}"] = block.attn.hook_q, block.attn.hook_k
    for batch in ctx.iter_batches(max_sequences if max_sequences is not None else ctx.options["max_sequences"]):
        _, acts = run_with(model, batch.tokens, hooks)
        T = batch.tokens.shape[1]
        rows = query_positions(ctx, batch, T)
        layers = []
        for i in range(len(model.blocks)):
            q, k = acts[f"q{i}"], acts[f"k{i}"]  # (B, H, T, dh)
            attn = attention_weights(q, k, rows)  # (B, H, R, T)
            layers.append((q.double()[:, :, rows], k.double(), attn))
        yield rows, layers


def run_entropy(ctx: ProbeContext) -> dict:
    n_layers, T = len(ctx.model.blocks), ctx.task.seq_len
    sums = sums_norm = count = None
    pos_sum = pos_count = None
    for rows, layers in attention_pass(ctx):
        ent = torch.stack([row_entropy_bits(attn) for _, _, attn in layers])  # (L, B, H, R)
        uniform = torch.log2((rows + 1).double())  # (R,)
        if sums is None:
            H = ent.shape[2]
            sums = torch.zeros(n_layers, H, dtype=torch.float64, device=ent.device)
            sums_norm = torch.zeros_like(sums)
            count = 0
            pos_sum = torch.zeros(n_layers, T, dtype=torch.float64, device=ent.device)
            pos_count = torch.zeros(T, dtype=torch.float64, device=ent.device)
        sums += ent.sum((1, 3))
        sums_norm += (ent / uniform).sum((1, 3))
        count += ent.shape[1] * ent.shape[3]
        pos_sum[:, rows] += ent.sum((1, 2)) / ent.shape[2]
        pos_count[rows] += ent.shape[1]
    if sums is None or count == 0:
        raise ProbeError("attention_entropy found no query positions after position 0 in the batches")
    per_head, per_head_norm = sums / count, sums_norm / count
    seen = pos_count > 0
    per_position = torch.where(seen, pos_sum / pos_count.clamp_min(1), torch.full_like(pos_sum, float("nan")))
    positions = torch.nonzero(seen).flatten()
    result = {
        "max_bits": math.log2(T),
        "layers": [
            {"layer": i, "entropy_bits": float(per_head[i].mean()),
             "normalised_entropy": float(per_head_norm[i].mean()),
             "entropy_bits_per_head": per_head[i].tolist(), "normalised_entropy_per_head": per_head_norm[i].tolist(),
             "per_position": per_position[i, positions].tolist()}
            for i in range(n_layers)
        ],
        "positions": positions.tolist(),
        "uniform_bits": torch.log2((positions + 1).double()).tolist(),
    }
    fig, (ax,) = new_figure()
    x = positions.cpu().numpy()
    for i in range(n_layers):
        ax.plot(x, per_position[i, positions].cpu().numpy(), marker="o", label=f"layer {i}")
    ax.plot(x, result["uniform_bits"], "k--", label="uniform over visible keys")
    ax.set_xlabel("query position")
    ax.set_ylabel("attention entropy (bits, mean over heads)")
    ax.legend()
    result["plots"] = [save_figure(fig, ctx.out_dir, "attention_entropy.png")]
    return result


def run_alignment(ctx: ProbeContext) -> dict:
    n_layers = len(ctx.model.blocks)
    totals = None
    count = 0
    for rows, layers in attention_pass(ctx):
        stats = []
        for q, k, attn in layers:
            cos = torch.nn.functional.normalize(q, dim=-1) @ torch.nn.functional.normalize(k, dim=-1).transpose(-1, -2)
            visible = torch.arange(k.shape[2], device=k.device)[None, :] <= rows[:, None]  # (R, T)
            n_visible = visible.sum(-1).double()  # (R,)
            attended = (attn * cos).sum(-1)  # (B, H, R)
            uniform = (cos * visible).sum(-1) / n_visible
            best = cos.masked_fill(~visible, float("-inf")).max(-1).values
            stats.append(torch.stack([attended, uniform, best]).sum((1, 3)))  # (3, H)
        stats = torch.stack(stats)  # (L, 3, H)
        totals = stats if totals is None else totals + stats
        count += layers[0][2].shape[0] * len(rows)
    if totals is None or count == 0:
        raise ProbeError("qk_alignment found no query positions after position 0 in the batches")
    mean = totals / count  # (L, 3, H)
    layers_out = []
    for i in range(n_layers):
        attended, uniform, best = mean[i]
        layers_out.append({
            "layer": i, "attended_cos": float(attended.mean()), "uniform_cos": float(uniform.mean()),
            "max_cos": float(best.mean()), "alignment": float((attended - uniform).mean()),
            "alignment_per_head": (attended - uniform).tolist(),
        })
    result = {"layers": layers_out}
    fig, (ax,) = new_figure()
    x = list(range(n_layers))
    for key, label in (("attended_cos", "attention-weighted"), ("uniform_cos", "uniform over visible"),
                       ("max_cos", "best visible key")):
        ax.plot(x, [layer[key] for layer in layers_out], marker="o", label=label)
    ax.set_xticks(x)
    ax.set_xlabel("layer")
    ax.set_ylabel("cos(query, key), mean over heads and queries")
    ax.legend()
    result["plots"] = [save_figure(fig, ctx.out_dir, "qk_alignment.png")]
    return result


OPTIONS = {"positions": "scored", "max_sequences": 1024}

ENTROPY = Probe(
    name="attention_entropy", run=run_entropy, requires=("transformer",),
    reads="attention queries and keys", part="attention", options=dict(OPTIONS),
    summary="entropy (bits) of each layer's attention rows, against the uniform maximum",
)
ALIGNMENT = Probe(
    name="qk_alignment", run=run_alignment, requires=("transformer",),
    reads="attention queries and keys", part="attention", options=dict(OPTIONS),
    summary="cosine between queries and the keys they attend to, per layer",
)
