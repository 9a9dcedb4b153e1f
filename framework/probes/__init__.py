"""Geometry probes of trained wind-tunnel models (SPEC §3, "Geometry the paper reports").

The diagnostics of Aggarwal, Dalal & Misra, "The Bayesian Geometry of Transformer Attention"
(arXiv 2512.22471), each a :class:`Probe` registered by name in ``PROBES``:

    key_orthogonality   layer-0 keys of distinct tokens: mean |cos|, vs random vectors and an untrained model
    qk_alignment        per layer: cos(query, key) weighted by attention, vs uniform over visible keys
    attention_entropy   per layer and head: entropy (bits) of the attention rows, vs the uniform maximum
    value_manifold      PCA at scored positions: PC1's share of variance and its Spearman rho with H_Bayes
    mamba_states        Mamba's final-layer states: PCA coloured by the MAP class, cluster separation
    ablation            kl_bits / entropy_mae_bits after zeroing each head and skipping each layer
    dynamics            across training snapshots: attention stability vs calibration
    program_decode      program identification: held-out accuracy of linear probes for (a, b), per layer and position
    program_ablation    bits after mean-ablating the (a, b) probe's subspace, vs a random subspace of the same size
    program_interchange a donor's (a, b) subspace patched in: does the prediction follow the donor's program?

``run_probe(name, model, task, batches, out_dir, snapshots=..., options=...)`` checks that the
probe applies to the model (and its options and snapshots) before any compute, runs it in eval
mode under ``torch.inference_mode()`` on the model's device, writes its plot(s) into ``out_dir``
and returns a JSON-able dict of numbers (plus ``probe`` and the ``plots`` it wrote).
"""
from __future__ import annotations

from pathlib import Path

import torch

from framework.probes import ablation, attention, dynamics, keys, program, states, values
from framework.probes.base import Probe, ProbeContext, ProbeError, architecture, check_applies, merge_options
from framework.tasks.base import Batch, Task

PROBES: dict[str, Probe] = {
    probe.name: probe
    for probe in (keys.PROBE, attention.ALIGNMENT, attention.ENTROPY, values.PROBE, states.PROBE,
                  ablation.PROBE, dynamics.PROBE, program.DECODE, program.ABLATION, program.INTERCHANGE)
}


def run_probe(
    name: str,
    model: torch.nn.Module,
    task: Task,
    batches: list[Batch],
    out_dir: Path,
    *,
    snapshots: list[Path] | None = None,
    options: dict | None = None,
) -> dict:
    """Run probe ``name`` on ``model`` over ``batches`` of ``task``; plots go to ``out_dir``."""
    if name not in PROBES:
        raise ProbeError(f"unknown probe {name!r}; choose one of: {', '.join(PROBES)}")
    probe = PROBES[name]
    check_applies(probe, model)
    merged = merge_options(probe, options)
    if probe.needs_snapshots:
        found = len(snapshots or [])
        if found < probe.needs_snapshots:
            raise ProbeError(f"probe '{name}' compares weight snapshots of one training run and needs at least "
                             f"{probe.needs_snapshots}; got {found}. Train with train.snapshot_every>0 and pass "
                             "the files of its snapshots/ folder")
        missing = [str(p) for p in snapshots if not Path(p).is_file()]
        if missing:
            raise ProbeError(f"probe '{name}': snapshot file(s) not found: {', '.join(missing)}")
    if not batches:
        raise ProbeError(f"probe '{name}' needs at least one batch of sequences")
    device = next(model.parameters()).device
    ctx = ProbeContext(model=model, task=task, batches=list(batches), out_dir=Path(out_dir), options=merged,
                       snapshots=[Path(p) for p in snapshots] if snapshots else None, device=device)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            result = probe.run(ctx)
    finally:
        model.train(was_training)
    return {"probe": name, "architecture": architecture(model), **result}


__all__ = ["PROBES", "Probe", "ProbeError", "run_probe"]
