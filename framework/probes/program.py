"""Decodable is not the same as used: the program (a, b) in a transformer's residual stream (SPEC §3).

On program identification (``framework.tasks.program``) a sequence that is a program follows
x_{t+1} = a x_t + b mod p. The construction-boundary experiments of Aggarwal, Dalal & Misra's
official code ask whether a trained transformer represents (a, b), and whether it uses that
representation. Three probes, each reading and writing the residual stream through hook points
(``blocks[i].hook_resid_post``; ``embed`` is the input of ``blocks[0]``, token plus position):

* ``program_decode``: linear probes (ridge regression onto one-hot classes, argmax) decode a and b
  from the residual stream at each layer and each data position, fitted on one half of the program
  sequences and scored on the other half (held-out sequences), against chance 1/p (1/p^2 for the
  pair). Program sequences only: those whose every step follows the (a, b) that x_0, x_1, x_2 pin
  down (x_0 != x_1, so the pair is unique), recovered from the tokens alone; a noise sequence passes
  with probability p^-(L-3). Before x_2 is read (t < 2) the pair is not determined by the prefix,
  so chance is the ceiling there.
* ``program_ablation``: the probe's subspace at one layer (the top ``rank`` left singular vectors of
  the pooled probe's weights for a and b, fitted over positions t >= 2) is mean-ablated, x <- x -
  ((x - mu_t) U) U^T with mu_t the mean residual at position t, and the model is scored in bits against
  the exact posterior (all sequences, and program sequences alone); beside it a random orthonormal
  subspace of the same size (``random_draws`` of them), the control.
* ``program_interchange``: each held-out program sequence (the base) gets the subspace of another
  one's residual stream (the donor, whose (a, b) differs) patched in at every position, x <- x +
  ((x_donor - x) U) U^T. At every scored position t >= 2 where the donor's program and the base's
  disagree on what follows x_t, we count whether the model's top prediction follows the donor's
  program (a_d x_t + b_d), the base's (a x_t + b), or copies the donor's own next token, and measure
  KL against the donor program's exact predictive: the base's posterior with the program's point mass
  moved to a_d x_t + b_d. Beside it the same patch through a random subspace of the same size.

A decodable but unused subspace decodes well, and ablating or swapping it costs no more than a random
subspace; a used one moves the bits (ablation) and the predictions (interchange). All three apply to
transformers; a task other than program identification is recorded as skipped, with the reason.
"""
from __future__ import annotations

import torch
from torch import nn

from framework.metrics.bits import kl_bits
from framework.probes.base import OPTION_CHECKS, Probe, ProbeContext, ProbeError, new_figure, save_figure

OPTION_CHECKS.update({  # checked before any compute, with the shared options
    "rank": (lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1),
             "null (the probe's full rank) or an integer >= 1"),
    "ridge": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0, "a number > 0"),
})


# ------------------------------------------------------------------ the program sequences


def _program_task(task):
    inner = getattr(task, "task", task)  # a PaddedTask reads through to the program task
    return inner if hasattr(inner, "residues") and hasattr(inner, "program_posterior") else None


def skip_reason(task) -> str | None:
    if _program_task(task) is None:
        return (f"reads the program (a, b) of program-identification sequences; task '{task.name}' has no "
                "program")
    return None


def split_sequences(ctx: ProbeContext) -> dict:
    """The probe set split in halves (fit, test): tokens, residues, (a, b) and which are programs."""
    task = _program_task(ctx.task)
    batches = list(ctx.iter_batches(ctx.options["max_sequences"]))
    tokens = torch.cat([b.tokens for b in batches])  # (N, T)
    posterior = torch.cat([b.posterior for b in batches])  # (N, P, C)
    labels = torch.cat([b.labels for b in batches])
    p = task.p
    x = task.residues(tokens)  # (N, L)
    inverse = torch.tensor([pow(r, -1, p) if r else 0 for r in range(p)], device=x.device)
    a = (x[:, 2] - x[:, 1]) % p * inverse[(x[:, 1] - x[:, 0]) % p] % p
    b = (x[:, 1] - a * x[:, 0]) % p
    follows = ((a[:, None] * x[:, :-1] + b[:, None]) % p == x[:, 1:]).all(1)
    program = follows & (x[:, 0] != x[:, 1])  # (N,)
    half = len(tokens) // 2
    parts = {}
    for name, rows in (("fit", slice(0, half)), ("test", slice(half, None))):
        parts[name] = {"tokens": tokens[rows], "x": x[rows], "a": a[rows], "b": b[rows], "program": program[rows],
                       "posterior": posterior[rows], "labels": labels[rows]}
    if int(program[:half].sum()) < 2 * p or int(program[half:].sum()) < 2:
        raise ProbeError(f"too few program sequences to fit a probe ({int(program.sum())} of {len(tokens)}); "
                         "raise max_sequences")
    return parts


def class_of(task, tokens: torch.Tensor, residues: torch.Tensor) -> torch.Tensor:
    """The class that stands for each residue: itself (integer), or its label in the header (opaque)."""
    if not task.opaque:
        return residues
    sigma = tokens[:, 1 : 1 + task.p] - 2  # (B, p) label of residue r
    return sigma.gather(1, residues)


# ------------------------------------------------------------------ residual stream access


def sites(model: nn.Module) -> list[str]:
    return ["embed", *(f"resid_post:{i}" for i in range(len(model.blocks)))]


def _module(model: nn.Module, site: str) -> tuple[nn.Module, bool]:
    """(module, is_pre_hook): ``embed`` is the input of blocks[0]; ``resid_post:i`` a hook point."""
    if site == "embed":
        return model.blocks[0], True
    return model.blocks[int(site.split(":")[1])].hook_resid_post, False


def residuals(model: nn.Module, tokens: torch.Tensor, names: list[str], chunk: int = 256) -> dict[str, torch.Tensor]:
    """(N, T, d) float64 residual stream at each site, in chunks."""
    out = {s: [] for s in names}
    for part in tokens.split(chunk):
        store, handles = {}, []
        for s in names:
            module, pre = _module(model, s)
            if pre:
                handles.append(module.register_forward_pre_hook(lambda _m, inp, s=s: store.__setitem__(s, inp[0])))
            else:
                handles.append(module.register_forward_hook(lambda _m, _i, o, s=s: store.__setitem__(s, o)))
        try:
            model(part)
        finally:
            for h in handles:
                h.remove()
        for s in names:
            out[s].append(store[s].double())
    return {s: torch.cat(v) for s, v in out.items()}


def edited_logits(model: nn.Module, tokens: torch.Tensor, site: str, edit, chunk: int = 256) -> torch.Tensor:
    """(N, T, C) logits with the residual stream at ``site`` replaced by ``edit(x, rows)``."""
    module, pre = _module(model, site)
    outs = []
    for start in range(0, len(tokens), chunk):
        rows = slice(start, start + chunk)
        if pre:
            handle = module.register_forward_pre_hook(lambda _m, inp: (edit(inp[0], rows),))
        else:
            handle = module.register_forward_hook(lambda _m, _i, o: edit(o, rows))
        try:
            outs.append(model(tokens[rows]).double())
        finally:
            handle.remove()
    return torch.cat(outs)


# ------------------------------------------------------------------ linear probes


def ridge_fit(x: torch.Tensor, y: torch.Tensor, n_classes: int, ridge: float):
    """Ridge regression of one-hot classes on features: (mean, weights (d, C), class means)."""
    mu = x.mean(0)
    xc = x - mu
    onehot = torch.nn.functional.one_hot(y, n_classes).double()
    ybar = onehot.mean(0)
    gram = xc.T @ xc
    scale = ridge * gram.diagonal().mean().clamp_min(1e-12)
    w = torch.linalg.solve(gram + scale * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device),
                           xc.T @ (onehot - ybar))
    return mu, w, ybar


def ridge_predict(model, x: torch.Tensor) -> torch.Tensor:
    mu, w, ybar = model
    return ((x - mu) @ w + ybar).argmax(-1)


def _pooled(parts, residual, split: str, positions: list[int]):
    """Program sequences of one half, at the given data positions, stacked: features, a, b."""
    d = parts[split]
    keep = d["program"]
    x = residual[keep][:, positions]  # (n, len(positions), dim)
    n = x.shape[0]
    return (x.reshape(n * len(positions), -1), d["a"][keep].repeat_interleave(len(positions)),
            d["b"][keep].repeat_interleave(len(positions)))


def fit_probes(task, parts, residual: dict, header: int, positions: list[int], ridge: float):
    """Per site: a and b probes on the fit half at the given data positions (pooled)."""
    fitted = {}
    for site, r in residual.items():
        x, a, b = _pooled(parts, r["fit"], "fit", [header + t for t in positions])
        fitted[site] = (ridge_fit(x, a, task.p, ridge), ridge_fit(x, b, task.p, ridge))
    return fitted


def accuracy(probes, parts, residual_test, header, positions) -> tuple[float, float, float]:
    x, a, b = _pooled(parts, residual_test, "test", [header + t for t in positions])
    pa, pb = ridge_predict(probes[0], x), ridge_predict(probes[1], x)
    return (float((pa == a).double().mean()), float((pb == b).double().mean()),
            float(((pa == a) & (pb == b)).double().mean()))


def subspace(probes, rank: int | None) -> torch.Tensor:
    """(d, k) orthonormal: the top ``rank`` left singular vectors of the a and b probes' weights."""
    w = torch.cat([probes[0][1], probes[1][1]], 1)  # (d, 2p)
    u, s, _ = torch.linalg.svd(w, full_matrices=False)
    full = int((s > s[0] * 1e-8).sum())
    k = full if rank is None else rank
    if k > min(full, w.shape[0]):
        raise ProbeError(f"option rank={rank} exceeds the probe's rank {full} (d={w.shape[0]}, "
                         f"2p={w.shape[1]} weight columns); use rank <= {full} or null")
    return u[:, :k]


def random_subspace(d: int, k: int, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, k, generator=generator, dtype=torch.float64))
    return q.to(like.device)


# ------------------------------------------------------------------ shared set-up


def _prepare(ctx: ProbeContext):
    """Split, residuals at every site, the decode probes per site, and the chosen layer's site."""
    model, task = ctx.model, _program_task(ctx.task)
    parts = split_sequences(ctx)
    names = sites(model)
    residual = {s: {} for s in names}
    for split in ("fit", "test"):
        for s, r in residuals(model, parts[split]["tokens"], names).items():
            residual[s][split] = r
    header = task.header
    determined = list(range(2, task.L))  # (a, b) pinned by the prefix once x_2 is read
    pooled = fit_probes(task, parts, residual, header, determined, ctx.options["ridge"])
    return task, parts, residual, header, determined, pooled


def choose_site(ctx: ProbeContext, task, parts, residual, header, determined, pooled) -> tuple[str, float]:
    layer = ctx.options["layer"]
    n = len(ctx.model.blocks)
    if layer == "auto":
        scored = {s: accuracy(pooled[s], parts, residual[s]["test"], header, determined)[2]
                  for s in pooled if s != "embed"}
        site = max(scored, key=lambda s: (scored[s], -int(s.split(":")[1])))
        return site, scored[site]
    if not isinstance(layer, int) or isinstance(layer, bool) or not -n <= layer < n:
        raise ProbeError(f"option layer={layer!r} is not a layer of this {n}-layer model (use 0..{n - 1}, -1 or auto)")
    site = f"resid_post:{layer % n}"
    return site, accuracy(pooled[site], parts, residual[site]["test"], header, determined)[2]


def check_layer(ctx: ProbeContext) -> None:
    layer, n = ctx.options["layer"], len(ctx.model.blocks)
    if layer != "auto" and (not isinstance(layer, int) or isinstance(layer, bool) or not -n <= layer < n):
        raise ProbeError(f"option layer={layer!r} is not a layer of this {n}-layer model (use 0..{n - 1}, -1 or auto)")


# ------------------------------------------------------------------ program_decode


def run_decode(ctx: ProbeContext) -> dict:
    if (why := skip_reason(ctx.task)) is not None:
        return {"skipped": why}
    task, parts, residual, header, determined, pooled = _prepare(ctx)
    p, ridge = task.p, ctx.options["ridge"]
    acc = {"a": {}, "b": {}, "ab": {}}
    for s in residual:
        rows = {"a": [], "b": [], "ab": []}
        for t in range(task.L):
            probes = fit_probes(task, parts, {s: residual[s]}, header, [t], ridge)[s]
            for key, value in zip(("a", "b", "ab"), accuracy(probes, parts, residual[s]["test"], header, [t])):
                rows[key].append(value)
        for key in rows:
            acc[key][s] = rows[key]
    pooled_acc = {s: dict(zip(("a", "b", "ab"), accuracy(pooled[s], parts, residual[s]["test"], header, determined)))
                  for s in residual}
    best = max(((s, t) for s in residual for t in range(task.L)), key=lambda st: acc["ab"][st[0]][st[1]])
    result = {
        "p": p,
        "n_program_sequences": {k: int(parts[k]["program"].sum()) for k in parts},
        "sites": list(residual),
        "positions": list(range(task.L)),
        "accuracy_a": acc["a"], "accuracy_b": acc["b"], "accuracy_ab": acc["ab"],
        "chance_a": 1 / p, "chance_ab": 1 / p**2,
        # one probe per site over all positions t >= 2 (the subspace the ablation and interchange use)
        "pooled_t2": pooled_acc,
        "best": {"site": best[0], "position": best[1], "accuracy_ab": acc["ab"][best[0]][best[1]]},
    }
    fig, axes = new_figure(3, width=4.2, height=3.4)
    for ax, key, title in zip(axes, ("a", "b", "ab"), ("a", "b", "(a, b) jointly")):
        for s in residual:
            ax.plot(range(task.L), acc[key][s], "o-", ms=3, label=s)
        ax.axhline(1 / p if key != "ab" else 1 / p**2, color="k", ls="--", lw=1, label="chance")
        ax.axvline(1.5, color="grey", ls=":", lw=1)
        ax.set(xlabel="data position t (x_0..x_t read)", ylabel="held-out accuracy", title=f"decoding {title}",
               ylim=(0, 1.02))
        ax.legend(fontsize=6)
    result["plots"] = [save_figure(fig, ctx.out_dir, "program_decode.png")]
    return result


# ------------------------------------------------------------------ program_ablation


def _score(task_batch: dict, logits: torch.Tensor, positions: torch.Tensor, rows=None) -> dict:
    """kl_bits (mean ± stderr over sequences) of logits at the scored positions against the exact posterior."""
    post = task_batch["posterior"] if rows is None else task_batch["posterior"][rows]
    lg = logits[:, positions] if rows is None else logits[rows][:, positions]
    kl = kl_bits(post, lg).mean(-1)  # (N,)
    return {"kl_bits": float(kl.mean()), "kl_bits_stderr": float(kl.std() / max(len(kl), 1) ** 0.5),
            "n_sequences": len(kl)}


def run_ablation(ctx: ProbeContext) -> dict:
    if (why := skip_reason(ctx.task)) is not None:
        return {"skipped": why}
    check_layer(ctx)
    task, parts, residual, header, determined, pooled = _prepare(ctx)
    site, acc = choose_site(ctx, task, parts, residual, header, determined, pooled)
    U = subspace(pooled[site], ctx.options["rank"]).to(ctx.device)
    mu = residual[site]["fit"].mean(0).to(ctx.device)  # (T, d) mean residual at each position
    test = parts["test"]
    positions = task.positions().to(ctx.device)
    programs = test["program"]

    def ablate(basis):
        def edit(x, _rows):
            xd = x.double()
            return (xd - ((xd - mu[: x.shape[1]]) @ basis) @ basis.T).to(x.dtype)
        return edit

    def score(logits):
        return {"all": _score(test, logits, positions), "programs": _score(test, logits, positions, programs)}

    intact = score(ctx.model(test["tokens"]).double())
    probe = score(edited_logits(ctx.model, test["tokens"], site, ablate(U)))
    generator = torch.Generator().manual_seed(0)
    bases = [random_subspace(U.shape[0], U.shape[1], generator, U) for _ in range(ctx.options["random_draws"])]
    draws = [score(edited_logits(ctx.model, test["tokens"], site, ablate(basis))) for basis in bases]
    kls = torch.tensor([d["programs"]["kl_bits"] for d in draws])
    kls_all = torch.tensor([d["all"]["kl_bits"] for d in draws])
    r = residual[site]["test"][programs][:, [header + t for t in determined]].reshape(-1, U.shape[0]).to(ctx.device)
    rc = r - r.mean(0)
    total = float((rc**2).sum())
    result = {
        "site": site, "rank": U.shape[1], "d_model": U.shape[0], "pooled_accuracy_ab": acc,
        "intact": intact, "probe_subspace": probe,
        "random_subspace": {"kl_bits_programs_mean": float(kls.mean()),
                            "kl_bits_programs_sd": float(kls.std()) if len(kls) > 1 else 0.0,
                            "kl_bits_all_mean": float(kls_all.mean()), "draws": draws},
        # how much of the residual stream's variance (program sequences, t >= 2) each subspace holds
        "variance_fraction": {"probe_subspace": float(((rc @ U) ** 2).sum()) / total,
                              "random_subspace": sum(float(((rc @ B) ** 2).sum()) for B in bases) / len(bases) / total,
                              "random_subspace_expected": U.shape[1] / U.shape[0]},
    }
    fig, (ax,) = new_figure(width=5.5)
    names = ["intact", "probe subspace", *[f"random {i}" for i in range(len(draws))]]
    values = [intact["programs"]["kl_bits"], probe["programs"]["kl_bits"], *kls.tolist()]
    ax.bar(range(len(names)), values, color=["tab:gray", "tab:red", *["tab:blue"] * len(draws)])
    ax.set_xticks(range(len(names)), names, rotation=60, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("KL(Bayes || model) on program sequences (bits)")
    ax.set_title(f"mean-ablating {U.shape[1]} of {U.shape[0]} dims at {site}")
    result["plots"] = [save_figure(fig, ctx.out_dir, "program_ablation.png")]
    return result


# ------------------------------------------------------------------ program_interchange


def _fraction(hits: torch.Tensor) -> float | None:
    return float(hits.double().mean()) if hits.numel() else None


def run_interchange(ctx: ProbeContext) -> dict:
    if (why := skip_reason(ctx.task)) is not None:
        return {"skipped": why}
    check_layer(ctx)
    task, parts, residual, header, determined, pooled = _prepare(ctx)
    site, acc = choose_site(ctx, task, parts, residual, header, determined, pooled)
    U = subspace(pooled[site], ctx.options["rank"]).to(ctx.device)
    test = parts["test"]
    keep = test["program"].nonzero().squeeze(1)
    generator = torch.Generator().manual_seed(0)
    # donors: a random other program sequence with a different (a, b)
    perm = keep[torch.randperm(len(keep), generator=generator).to(keep.device)]
    differ = (test["a"][keep] != test["a"][perm]) | (test["b"][keep] != test["b"][perm])
    base, donor = keep[differ], perm[differ]
    tokens, x = test["tokens"][base], test["x"][base]
    donor_resid = residual[site]["test"][donor].to(ctx.device)  # (n, T, d)
    p, P = task.p, task.scored
    ts = torch.arange(2, P, device=x.device)  # scored positions where the program's next is a point
    a, b, ad, bd = test["a"][base], test["b"][base], test["a"][donor], test["b"][donor]
    xt = x[:, ts]  # (n, |ts|)
    base_next = class_of(task, tokens, (a[:, None] * xt + b[:, None]) % p)
    donor_prog = class_of(task, tokens, (ad[:, None] * xt + bd[:, None]) % p)
    donor_own = class_of(task, test["tokens"][donor], (ad[:, None] * test["x"][donor][:, ts] + bd[:, None]) % p)
    # the donor program's exact predictive on the base's evidence: the point mass moved to a_d x_t + b_d
    w = task.program_posterior(tokens)[:, ts]  # (n, |ts|)
    target = ((1 - w) / p)[..., None].expand(*w.shape, task.n_classes).clone()
    target.scatter_add_(2, donor_prog[..., None], w[..., None])
    if getattr(ctx.task, "n_classes", task.n_classes) > task.n_classes:  # a padded task: zero extra classes
        target = torch.nn.functional.pad(target, (0, ctx.task.n_classes - task.n_classes))
    base_target = test["posterior"][base][:, ts]
    scored = (base_next != donor_prog)  # positions where following the donor is distinguishable

    def measure(logits):
        lg = logits[:, header + ts]  # (n, |ts|, C)
        top = lg.argmax(-1)
        m = scored
        return {"follows_donor": float((top == donor_prog)[m].double().mean()),
                "follows_base": float((top == base_next)[m].double().mean()),
                "copies_donor_next": _fraction((top == donor_own)[m & (donor_own != donor_prog)
                                                                 & (donor_own != base_next)]),
                "kl_bits_vs_donor": float(kl_bits(target, lg)[m].mean()),
                "kl_bits_vs_base": float(kl_bits(base_target, lg)[m].mean())}

    def patch(basis):
        def edit(xr, rows):
            xd = xr.double()
            return (xd + ((donor_resid[rows][:, : xr.shape[1]] - xd) @ basis) @ basis.T).to(xr.dtype)
        return edit

    intact = measure(ctx.model(tokens).double())
    patched = measure(edited_logits(ctx.model, tokens, site, patch(U)))
    draws = [measure(edited_logits(ctx.model, tokens, site,
                                   patch(random_subspace(U.shape[0], U.shape[1], generator, U))))
             for _ in range(ctx.options["random_draws"])]
    control = {k: sum(d[k] for d in draws) / len(draws) for k in draws[0]}
    result = {"site": site, "rank": U.shape[1], "d_model": U.shape[0], "pooled_accuracy_ab": acc,
              "n_pairs": len(base), "n_positions": int(scored.sum()), "chance": 1 / p,
              "intact": intact, "probe_subspace": patched, "random_subspace": control, "random_draws": draws}
    fig, axes = new_figure(2, width=4.5)
    labels = ["intact", "probe subspace", "random subspace"]
    rows = [intact, patched, control]
    xs = torch.arange(3)
    for j, key in enumerate(("follows_donor", "follows_base", "copies_donor_next")):
        axes[0].bar(xs + 0.27 * (j - 1), [r[key] for r in rows], width=0.27, label=key)
    axes[0].set_xticks(xs.tolist(), labels, fontsize=8)
    axes[0].set(ylabel="fraction of positions", title=f"patching {U.shape[1]} dims at {site}")
    axes[0].legend(fontsize=7)
    axes[1].bar(xs.tolist(), [r["kl_bits_vs_donor"] for r in rows], color="tab:purple")
    axes[1].set_xticks(xs.tolist(), labels, fontsize=8)
    axes[1].set(ylabel="KL(donor program's predictive || model) (bits)", yscale="log")
    result["plots"] = [save_figure(fig, ctx.out_dir, "program_interchange.png")]
    return result


COMMON = {"layer": "auto", "rank": None, "ridge": 1e-3, "max_sequences": 4096}
DECODE = Probe(
    name="program_decode", run=run_decode, requires=("transformer",), reads="the residual stream",
    part="residual stream",
    options={"ridge": 1e-3, "max_sequences": 4096},
    summary="held-out accuracy of linear probes for the program (a, b) per layer and position, against chance",
)
ABLATION = Probe(
    name="program_ablation", run=run_ablation, requires=("transformer",), reads="the residual stream",
    part="residual stream", options={**COMMON, "random_draws": 5},
    summary="bits after mean-ablating the (a, b) probe's subspace, against random subspaces of the same size",
)
INTERCHANGE = Probe(
    name="program_interchange", run=run_interchange, requires=("transformer",), reads="the residual stream",
    part="residual stream", options={**COMMON, "random_draws": 3},
    summary="patch a donor's (a, b) subspace in: fraction following the donor's program, bits against its predictive",
)
