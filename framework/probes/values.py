"""The value manifold: PCA of representations at scored positions, against the Bayes entropy.

Aggarwal, Dalal & Misra (arXiv 2512.22471) find that a trained wind-tunnel transformer's value
representations lie on a low-dimensional manifold whose first principal component tracks the
entropy of the exact posterior (PC1 carrying 84-90% of the variance).

Measured here, at every scored position of every sequence: the activation at hook point ``site``
and H_Bayes, the entropy in bits of the exact posterior there. Sites: ``z:<i>``, layer i's
attention output before out_proj (heads concatenated: the attention-weighted mixture of value
vectors that each query reads); ``v:<i>``, the value vectors at the query position itself;
``features``, the final-LayerNorm features fed to the head; ``resid_post:<i>``, ``resid_mid:<i>``.
``site="auto"`` is ``z:-1`` for a transformer (the values as read by the last layer) and
``features`` for other architectures. The paper's public analysis code uses the final-LayerNorm
features; on our CPU-size models those carry the posterior's shape more than its entropy (bijection
V=10, 800 steps: |rho| 0.06 at ``features`` against 0.95 at ``z:-1``), so every run also reports the
other sites under ``by_site`` (``compare_sites``), and the choice stays visible. Reported:

* ``pc_variance_ratio``: the fraction of variance on each of the first ``top_k`` components, and
  ``pc1_variance`` / ``top_k_variance`` (cumulative);
* ``spearman_pc1_h_bayes``: Spearman's rank correlation of the PC1 score with H_Bayes (its sign is
  arbitrary; ``abs_spearman_pc1_h_bayes`` is what to compare with the paper), and the same for
  each of the first ``top_k`` components;
* ``spearman_h_bayes_position``: the rank correlation of H_Bayes with the position index. When
  it is +-1 (bijection without replacement, where H_Bayes = log2(V - i)), entropy and position are
  the same ranking, and a PC1 that tracks one tracks the other: the value manifold cannot then
  tell entropy from position. Tasks where they differ (HMM filtering, bijection with replacement)
  separate the two.
"""
from __future__ import annotations

import torch

from framework.metrics.bits import entropy_bits
from framework.probes.base import (
    Probe, ProbeContext, ProbeError, architecture, as_features, finite_or_none, new_figure, plot_sample,
    resolve_site, run_with, save_figure,
)
from framework.probes.stats import pca, spearman


def default_sites(model) -> tuple[str, list[str]]:
    """The reported site and the sites compared beside it, for this architecture."""
    if architecture(model) == "transformer":
        return "z:-1", ["features", "resid_post:-1", "v:-1", "z:-1"]
    if hasattr(model, "blocks") and hasattr(model.blocks[-1], "hook_resid_post"):  # Mamba
        return "features", ["features", "resid_post:-1"]
    return "features", ["features"]


def collect(ctx: ProbeContext, sites: list[str]) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """(N, d) activations per site at scored positions, their H_Bayes (N,) and position index (N,)."""
    modules = {site: resolve_site(ctx.model, site) for site in sites}
    xs: dict[str, list] = {site: [] for site in sites}
    hs, ps = [], []
    for batch in ctx.iter_batches(ctx.options["max_sequences"]):
        _, acts = run_with(ctx.model, batch.tokens, {site: module for site, (module, _) in modules.items()})
        for site, (_, kind) in modules.items():
            x = as_features(acts[site], kind)[:, batch.positions].double()  # (B, P, d)
            xs[site].append(x.reshape(-1, x.shape[-1]))
        hs.append(entropy_bits(batch.posterior).reshape(-1))  # (B * P,)
        ps.append(batch.positions.expand(len(batch), -1).reshape(-1))
    if not hs:
        raise ProbeError("value_manifold got no batches")
    # Entropies equal in exact arithmetic differ in the last bits of float64; round so they tie in the ranks.
    h = torch.round(torch.cat(hs) * 1e9) / 1e9
    return {site: torch.cat(x) for site, x in xs.items()}, h, torch.cat(ps)


def manifold(x: torch.Tensor, h: torch.Tensor, top_k: int) -> tuple[dict, torch.Tensor, torch.Tensor, list[float]]:
    ratio, _, scores = pca(x)
    k = min(top_k, scores.shape[1])
    rho = [spearman(scores[:, j], h) for j in range(k)]
    summary = {
        "dim": x.shape[1],
        "pc_variance_ratio": ratio[:k].tolist(),
        "pc1_variance": float(ratio[0]),
        "top_k_variance": float(ratio[:k].sum()),
        "spearman_pc1_h_bayes": finite_or_none(rho[0]),
        "abs_spearman_pc1_h_bayes": finite_or_none(abs(rho[0])),
        "spearman_pc_h_bayes": [finite_or_none(r) for r in rho],
    }
    return summary, ratio, scores, rho


def run(ctx: ProbeContext) -> dict:
    opts = ctx.options
    site, compared = default_sites(ctx.model)
    site = site if opts["site"] == "auto" else opts["site"]
    sites = list(dict.fromkeys([site] + (compared if opts["compare_sites"] else [])))
    xs, h, pos = collect(ctx, sites)
    top_k = int(opts["top_k"])
    summary, ratio, scores, rho = manifold(xs[site], h, top_k)
    result = {
        "site": site,
        "n_points": xs[site].shape[0],
        **summary,
        "spearman_h_bayes_position": finite_or_none(spearman(h, pos.double())),
        "by_site": {s: {k: v for k, v in manifold(xs[s], h, top_k)[0].items()
                        if k in ("dim", "pc1_variance", "top_k_variance", "spearman_pc1_h_bayes")}
                    for s in sites},
    }
    x = xs[site]

    pick = plot_sample(x.shape[0])
    s, hh = scores.cpu()[pick], h.cpu()[pick]
    fig, (ax_pc, ax_h) = new_figure(2)
    pc2 = s[:, 1] if s.shape[1] > 1 else torch.zeros_like(s[:, 0])
    points = ax_pc.scatter(s[:, 0].numpy(), pc2.numpy(), c=hh.numpy(), s=6, cmap="viridis")
    fig.colorbar(points, ax=ax_pc, label="H_Bayes (bits)")
    ax_pc.set_xlabel(f"PC1 ({100 * float(ratio[0]):.1f}% of variance)")
    ax_pc.set_ylabel(f"PC2 ({100 * float(ratio[1]) if len(ratio) > 1 else 0:.1f}%)")
    ax_pc.set_title(f"value manifold at {site}")
    ax_h.scatter(hh.numpy(), s[:, 0].numpy(), s=6, alpha=0.5)
    ax_h.set_xlabel("H_Bayes (bits)")
    ax_h.set_ylabel("PC1 score")
    ax_h.set_title(f"Spearman {rho[0]:.3f}")
    result["plots"] = [save_figure(fig, ctx.out_dir, "value_manifold.png")]
    return result


PROBE = Probe(
    name="value_manifold", run=run, requires=("transformer", "mamba", "lstm", "mlp"), hook="hook_features",
    reads="representations at scored positions", part="hook point",
    options={"site": "auto", "compare_sites": True, "top_k": 3, "max_sequences": 2048},
    summary="PCA of representations at scored positions; PC1 variance and Spearman with H_Bayes",
)
