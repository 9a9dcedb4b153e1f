"""Layer-0 key orthogonality: do the key vectors of distinct tokens form a near-orthogonal basis?

Aggarwal, Dalal & Misra (arXiv 2512.22471) report that a trained wind-tunnel transformer's
layer-0 keys are close to orthogonal, so each token can be addressed separately by a query (the
"orthogonal key basis" of the hypothesis frame).

For each token id in the chosen set (by default every token that occurs at a scored position: the
key tokens 0..V-1 of bijection elimination), a key vector per head, two ways:

* activations (``mean_abs_cos``): its mean key at ``blocks[layer].attn.hook_k`` over its
  occurrences in the sequences (so position embedding, LayerNorm and bias are included);
* embeddings (``embedding_mean_abs_cos``): its token embedding times the layer's key weights,
  E W_K^T, with no position, norm or bias: what the paper's public analysis code computes.

Each number is, per head, the mean absolute cosine between the key vectors of distinct tokens
(0 = mutually orthogonal, 1 = parallel), averaged over heads. Baselines:

* ``random_mean_abs_cos`` (and its std over draws): the same number for as many independent
  Gaussian vectors of the same dimension, about sqrt(2 / (pi dh)) for large dh;
* ``untrained_mean_abs_cos`` / ``untrained_embedding_mean_abs_cos``: a freshly initialised model
  of the same architecture (seed ``untrained_seed``), on the same sequences.

Centred (``centred_mean_abs_cos`` against ``random_centred_mean_abs_cos``): the same after
subtracting, per head, the mean key over the chosen tokens. A component shared by every key adds
the same score to all of them for a given query, and softmax ignores a constant shift, so only the
centred keys decide what attention can tell apart; the raw number also counts that shared part.

Trained below random means the keys are more orthogonal than chance. Orthogonal keys pay when a
query must find one particular earlier token. Bijection elimination without replacement never looks
a key token up (its posterior depends only on the set of values seen so far), and there our trained
models' key-token keys come out nearly parallel (mean |cos| ~0.96-0.99 against ~0.20 for random
vectors, at 800 steps on V=10); the probe reports what it measures, whichever side of the baseline.
"""
from __future__ import annotations

import torch

from framework.models import build_model
from framework.probes.base import (
    Probe, ProbeContext, ProbeError, layer_index, new_figure, run_with, save_figure,
)
from framework.probes.stats import mean_abs_offdiag_cosine


def token_mean_keys(ctx: ProbeContext, model, layer: int, tokens: list[int] | None) -> tuple[torch.Tensor, list[int]]:
    """(H, n, dh) mean key per token id, read at ``blocks[layer].attn.hook_k``, and the ids.

    ``tokens=None`` takes every token seen at a scored position, averaging over those occurrences;
    a list of ids averages over all their occurrences.
    """
    hook = model.blocks[layer].attn.hook_k
    sums, counts = None, None
    for batch in ctx.iter_batches(ctx.options["max_sequences"]):
        _, acts = run_with(model, batch.tokens, {"k": hook})
        k = acts["k"].double()  # (B, H, T, dh)
        B, H, T, dh = k.shape
        where = torch.ones(T, dtype=torch.bool, device=k.device)
        if tokens is None:
            where = torch.zeros_like(where)
            where[batch.positions] = True
        ids = batch.tokens[:, where].reshape(-1)  # (B * T')
        keys = k[:, :, where].permute(1, 0, 2, 3).reshape(H, -1, dh)  # (H, B * T', dh)
        if sums is None:
            sums = torch.zeros(H, ctx.task.vocab_size, dh, dtype=torch.float64, device=k.device)
            counts = torch.zeros(ctx.task.vocab_size, dtype=torch.float64, device=k.device)
        sums.index_add_(1, ids, keys)
        counts.index_add_(0, ids, torch.ones_like(ids, dtype=torch.float64))
    chosen = [t for t in (tokens if tokens is not None else range(len(counts))) if counts[t] > 0]
    if len(chosen) < 2:
        raise ProbeError(f"key_orthogonality needs at least two distinct tokens in the batches; found {len(chosen)}")
    idx = torch.tensor(chosen, device=sums.device)
    return sums[:, idx] / counts[idx, None], chosen


def embedding_keys(model, layer: int, tokens: list[int]) -> torch.Tensor:
    """(H, n, dh) keys of the bare token embeddings, E W_K^T per head: the paper's weight-space measure.

    This is what the paper's analysis code computes (token embedding times the layer's key weights,
    without position embedding, LayerNorm or bias): the key each token id contributes by itself.
    """
    attn = model.blocks[layer].attn
    E = model.tok_emb.weight[torch.tensor(tokens, device=model.tok_emb.weight.device)].double()  # (n, d)
    W = attn.k_proj.weight.double().view(attn.n_heads, attn.d_head, -1)  # (H, dh, d)
    return torch.einsum("nd,hkd->hnk", E, W)


def random_baseline(n: int, dim: int, draws: int, seed: int) -> tuple[float, float]:
    generator = torch.Generator().manual_seed(seed)
    vectors = torch.randn(draws, n, dim, generator=generator, dtype=torch.float64)
    values = mean_abs_offdiag_cosine(vectors)  # (draws,)
    return float(values.mean()), float(values.std()) if draws > 1 else 0.0


def centred(keys: torch.Tensor) -> torch.Tensor:
    """(..., n, dh) keys minus their mean over the n tokens: the part attention scores can tell apart."""
    return keys - keys.mean(-2, keepdim=True)


def run(ctx: ProbeContext) -> dict:
    opts = ctx.options
    layer = layer_index(ctx.model, opts["layer"])
    tokens = opts["tokens"]
    if tokens is not None and (not isinstance(tokens, (list, tuple)) or
                               not all(isinstance(t, int) and 0 <= t < ctx.task.vocab_size for t in tokens)):
        raise ProbeError(f"option tokens must be null or a list of token ids in 0..{ctx.task.vocab_size - 1}")
    keys, chosen = token_mean_keys(ctx, ctx.model, layer, None if tokens is None else list(tokens))
    per_head = mean_abs_offdiag_cosine(keys)  # (H,)
    emb_per_head = mean_abs_offdiag_cosine(embedding_keys(ctx.model, layer, chosen))
    H, n, dh = keys.shape
    rand_mean, rand_std = random_baseline(n, dh, opts["random_draws"], seed=opts["untrained_seed"])
    generator = torch.Generator().manual_seed(opts["untrained_seed"])
    gaussian = torch.randn(opts["random_draws"], n, dh, generator=generator, dtype=torch.float64)
    rand_centred = float(mean_abs_offdiag_cosine(centred(gaussian)).mean())
    centred_per_head = mean_abs_offdiag_cosine(centred(keys))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(opts["untrained_seed"])
        fresh = build_model(ctx.model.config, ctx.task.vocab_size, ctx.task.n_classes, ctx.model.max_len)
    fresh = fresh.to(device=ctx.device, dtype=next(ctx.model.parameters()).dtype).eval()
    fresh_per_head = mean_abs_offdiag_cosine(token_mean_keys(ctx, fresh, layer, chosen)[0])
    fresh_emb_per_head = mean_abs_offdiag_cosine(embedding_keys(fresh, layer, chosen))

    result = {
        "layer": layer,
        "tokens": chosen,
        "d_head": dh,
        "mean_abs_cos": float(per_head.mean()),
        "mean_abs_cos_per_head": per_head.tolist(),
        "random_mean_abs_cos": rand_mean,
        "random_mean_abs_cos_std": rand_std,
        "untrained_mean_abs_cos": float(fresh_per_head.mean()),
        "below_random": bool(per_head.mean() < rand_mean),
        "centred_mean_abs_cos": float(centred_per_head.mean()),
        "random_centred_mean_abs_cos": rand_centred,
        "centred_below_random": bool(centred_per_head.mean() < rand_centred),
        "embedding_mean_abs_cos": float(emb_per_head.mean()),
        "embedding_mean_abs_cos_per_head": emb_per_head.tolist(),
        "untrained_embedding_mean_abs_cos": float(fresh_emb_per_head.mean()),
        "embedding_below_random": bool(emb_per_head.mean() < rand_mean),
    }

    unit = torch.nn.functional.normalize(keys, dim=-1)
    cos = (unit @ unit.transpose(-1, -2)).abs().mean(0).cpu()  # (n, n), |cos| averaged over heads
    fig, (ax_mat, ax_bar) = new_figure(2)
    im = ax_mat.imshow(cos.numpy(), vmin=0, vmax=1, cmap="viridis")
    ax_mat.set_title(f"layer {layer} keys: |cos| (mean over heads)")
    ax_mat.set_xticks(range(n), chosen, fontsize=6)
    ax_mat.set_yticks(range(n), chosen, fontsize=6)
    fig.colorbar(im, ax=ax_mat)
    x = torch.arange(H).numpy()
    for offset, values, label in ((-0.3, per_head, "trained (activations)"),
                                  (-0.1, emb_per_head, "trained (embeddings)"),
                                  (0.1, fresh_per_head, "untrained (activations)"),
                                  (0.3, fresh_emb_per_head, "untrained (embeddings)")):
        ax_bar.bar(x + offset, values.cpu().numpy(), width=0.2, label=label)
    ax_bar.axhline(rand_mean, color="k", linestyle="--", label="random vectors")
    ax_bar.set_xlabel("head")
    ax_bar.set_ylabel("mean |off-diagonal cos|")
    ax_bar.legend(fontsize=7)
    result["plots"] = [save_figure(fig, ctx.out_dir, "key_orthogonality.png")]
    return result


PROBE = Probe(
    name="key_orthogonality",
    run=run,
    requires=("transformer",),
    reads="attention keys",
    part="attention",
    options={"layer": 0, "tokens": None, "max_sequences": 1024, "random_draws": 1000, "untrained_seed": 0},
    summary="mean |cos| between layer-0 keys of distinct tokens, vs random vectors and an untrained model",
)
