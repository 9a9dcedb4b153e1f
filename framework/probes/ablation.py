"""Head and layer ablations, scored in bits against the exact posterior.

Aggarwal, Dalal & Misra (arXiv 2512.22471) ablate attention heads and whole layers to show which
parts carry the inference. Each ablation is a forward hook, so the model is untouched afterwards:

* head (layer i, head h): ``blocks[i].attn.hook_z`` returns its output with head h set to zero,
  so that head writes nothing to the residual stream (its out_proj bias still does, as in
  TransformerLens's zero-ablation of ``hook_z``);
* layer i: ``blocks[i]`` returns its input, so the whole block is skipped (residual identity);
* ``all_heads``: every head of every layer zeroed (the MLPs remain: no routing between positions);
* ``all_layers``: every block skipped (embeddings straight into the final norm and the head).

Each is evaluated with :func:`framework.metrics.evaluate` on the probe's sequences: ``kl_bits``
(mean KL(Bayes || model)), ``entropy_mae_bits`` (mean |H(model) - H(Bayes)|), and
``delta_kl_bits``, the rise over the intact model. Mamba models get layer ablations only.
"""
from __future__ import annotations

import contextlib

import torch

from framework.metrics import EvalSet, evaluate
from framework.probes.base import Probe, ProbeContext, new_figure, save_figure


@contextlib.contextmanager
def hooks(pairs):
    handles = [module.register_forward_hook(fn) for module, fn in pairs]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def zero_head(head: int):
    def fn(_module, _inp, z):  # z: (B, H, T, dh)
        z = z.clone()
        z[:, head] = 0
        return z
    return fn


def skip_block(_module, inputs, _out):
    return inputs[0]


def run(ctx: ProbeContext) -> dict:
    model = ctx.model
    eval_set = EvalSet(list(ctx.iter_batches(ctx.options["max_sequences"])))

    def score(pairs) -> dict:
        with hooks(pairs):
            s = evaluate(model, eval_set, ctx.device)
        return {key: s[key] for key in ("kl_bits", "kl_bits_stderr", "entropy_mae_bits")}

    intact = score([])
    blocks = list(model.blocks)
    has_heads = all(hasattr(block, "attn") for block in blocks)

    def with_delta(d: dict) -> dict:
        return {**d, "delta_kl_bits": d["kl_bits"] - intact["kl_bits"]}

    result = {"intact": intact, "n_sequences": eval_set.n_sequences}
    if has_heads:
        result["heads"] = [
            {"layer": i, "head": h, **with_delta(score([(block.attn.hook_z, zero_head(h))]))}
            for i, block in enumerate(blocks) for h in range(block.attn.n_heads)
        ]
        result["all_heads"] = with_delta(score(
            [(block.attn.hook_z, zero_head(h)) for block in blocks for h in range(block.attn.n_heads)]))
    result["layers"] = [{"layer": i, **with_delta(score([(block, skip_block)]))} for i, block in enumerate(blocks)]
    result["all_layers"] = with_delta(score([(block, skip_block) for block in blocks]))

    names = ([f"L{e['layer']}H{e['head']}" for e in result.get("heads", [])]
             + [f"layer {e['layer']}" for e in result["layers"]]
             + (["all heads"] if has_heads else []) + ["all layers"])
    values = ([e["kl_bits"] for e in result.get("heads", [])] + [e["kl_bits"] for e in result["layers"]]
              + ([result["all_heads"]["kl_bits"]] if has_heads else []) + [result["all_layers"]["kl_bits"]])
    fig, (ax,) = new_figure(width=max(5.0, 0.35 * len(names)))
    ax.bar(range(len(names)), values)
    ax.axhline(intact["kl_bits"], color="k", linestyle="--", label=f"intact ({intact['kl_bits']:.4f})")
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_ylabel("kl_bits after ablation")
    ax.legend()
    result["plots"] = [save_figure(fig, ctx.out_dir, "ablation.png")]
    return result


PROBE = Probe(
    name="ablation", run=run, requires=("transformer", "mamba"),
    reads="heads and layers of a residual stack of blocks", part="residual blocks",
    options={"max_sequences": 2048},
    summary="kl_bits and entropy_mae_bits after zeroing each head and skipping each layer",
)
