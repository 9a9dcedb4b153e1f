"""Mamba's final-layer states, clustered by the most probable hidden state.

Aggarwal, Dalal & Misra (arXiv 2512.22471) show that a Mamba model trained on HMM filtering
organises its final-layer states into clusters by the argmax of the exact posterior (the MAP
hidden state): its recurrence carries the belief state the filter needs.

Measured here, at every scored position: the state at hook point ``site`` (``features``: the
final normalised features fed to the head; ``resid_post:-1``: the last block's output), labelled
by the argmax of the exact posterior (for bijection, the MAP value). A position whose posterior has
no unique argmax (a tie within ``tie_margin``, e.g. a uniform bijection posterior) has no label and
is left out (``n_excluded_ties``). Then PCA, and in the first ``dims`` principal components:

* ``silhouette``: the mean silhouette coefficient of the labelled clusters (Rousseeuw 1987), in
  [-1, 1], computed on at most ``silhouette_points`` points; near 0 means no cluster structure;
* ``nearest_centroid_accuracy``: two-fold held-out accuracy of assigning each state to the nearest
  class centroid, beside ``chance_accuracy`` (always guessing the most frequent class);
* ``pc_variance_ratio`` of the first ``dims`` components.
"""
from __future__ import annotations

import torch

from framework.probes.base import (
    Probe, ProbeContext, ProbeError, as_features, finite_or_none, new_figure, plot_sample, resolve_site,
    run_with, save_figure,
)
from framework.probes.stats import nearest_centroid_accuracy, pca, silhouette


def run(ctx: ProbeContext) -> dict:
    opts = ctx.options
    module, kind = resolve_site(ctx.model, opts["site"])
    xs, labels, excluded = [], [], 0
    for batch in ctx.iter_batches(opts["max_sequences"]):
        _, acts = run_with(ctx.model, batch.tokens, {"site": module})
        x = as_features(acts["site"], kind)[:, batch.positions].double()  # (B, P, d)
        top2 = batch.posterior.topk(2, dim=-1).values  # (B, P, 2)
        unique = (top2[..., 0] - top2[..., 1]) > opts["tie_margin"]  # (B, P)
        xs.append(x[unique])
        labels.append(batch.posterior.argmax(-1)[unique])
        excluded += int((~unique).sum())
    if not xs or sum(len(x) for x in xs) < 4:
        raise ProbeError("mamba_states needs scored positions whose exact posterior has a unique argmax; "
                         f"found {sum(len(x) for x in xs)} (the rest, {excluded}, are ties)")
    x, y = torch.cat(xs), torch.cat(labels)
    ratio, _, scores = pca(x)
    dims = min(int(opts["dims"]), scores.shape[1])
    z = scores[:, :dims]
    generator = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(z), generator=generator)[: int(opts["silhouette_points"])].to(z.device)
    counts = torch.bincount(y)
    result = {
        "site": opts["site"],
        "n_points": len(x),
        "n_excluded_ties": excluded,
        "n_classes": int((counts > 0).sum()),
        "dims": dims,
        "pc_variance_ratio": ratio[:dims].tolist(),
        "silhouette": finite_or_none(silhouette(z[pick], y[pick])),
        "silhouette_full_dim": finite_or_none(silhouette(x[pick], y[pick])),
        "nearest_centroid_accuracy": finite_or_none(nearest_centroid_accuracy(z, y)),
        "chance_accuracy": float(counts.max()) / len(y),
    }

    shown = plot_sample(len(z))
    zz, yy = scores.cpu()[shown], y.cpu()[shown]
    fig, (ax,) = new_figure(width=6)
    for c in yy.unique().tolist():
        m = yy == c
        ax.scatter(zz[m, 0].numpy(), (zz[m, 1] if zz.shape[1] > 1 else torch.zeros(int(m.sum()))).numpy(),
                   s=6, alpha=0.6, label=f"argmax {c}")
    ax.set_xlabel(f"PC1 ({100 * float(ratio[0]):.1f}%)")
    ax.set_ylabel(f"PC2 ({100 * float(ratio[1]) if len(ratio) > 1 else 0:.1f}%)")
    sil = result["silhouette"]
    ax.set_title(f"states at {opts['site']} by MAP class; silhouette {float('nan') if sil is None else sil:.2f}")
    ax.legend(markerscale=2, fontsize=7)
    result["plots"] = [save_figure(fig, ctx.out_dir, "mamba_states.png")]
    return result


PROBE = Probe(
    name="mamba_states", run=run, requires=("mamba",),
    reads="Mamba's final-layer states", part="selective state-space layers",
    options={"site": "features", "dims": 2, "tie_margin": 1e-9, "silhouette_points": 2000, "max_sequences": 1024},
    summary="PCA of Mamba's final-layer states coloured by the MAP class; silhouette and centroid accuracy",
)
