"""Mode B (samples in context) scored against both answers: kl_bits and the association gap.

For a trained ``causal_samples`` job, on fresh held-out sequences, at every do-query position:
``kl_bits`` = KL(P(Y | do(x), data) || model), the exact posterior predictive of the interventional
distribution (the task's target), and, where the observational predictive P(Y | X=x, data) differs
from it by more than ``min_gap`` (total variation), the association gap: SPEC §6's preference score
t = clip(<q - p_obs, p_do - p_obs> / |p_do - p_obs|^2, 0, 1) with q the model's predictive (for two
states this is (y_hat - y_obs)(y_do - y_obs) / (y_do - y_obs)^2), 0 for a model that answers with
the association, 1 for one that answers with the intervention. Both per number of samples seen,
means ± standard errors over sequences (a sequence's positions are not independent).
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch

from framework.errors import ConfigError
from framework.metrics.bits import kl_bits
from framework.metrics.evaluate import CPU_CHUNK, EvalSet, autocast_for
from framework.training.checkpoint import CHECKPOINT, load_trained


def job_folders(paths: list[str]) -> list[Path]:
    """Each path: a job folder (it holds checkpoint.pt), its checkpoint, or a run folder holding jobs."""
    out = []
    for item in paths:
        path = Path(item)
        if path.is_file() and path.name == CHECKPOINT:
            out.append(path.parent)
        elif (path / CHECKPOINT).is_file():
            out.append(path)
        elif path.is_dir() and sorted(path.glob(f"*/{CHECKPOINT}")):
            out += [p.parent for p in sorted(path.glob(f"*/{CHECKPOINT}"))]
        else:
            raise ConfigError("tunnel.jobs", f"no trained job at {path} (a job folder holding {CHECKPOINT}, or a run "
                                             "folder of them, e.g. runs/causal_samples/<run>)")
    return out


def checkpoint_digest(folder: Path) -> str:
    with open(Path(folder) / CHECKPOINT, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()[:16]


def load_jobs(paths: list[str]) -> list[tuple[Path, torch.nn.Module, object, dict]]:
    if not paths:
        raise ConfigError("tunnel.jobs", "give the trained causal_samples jobs: tunnel.jobs=[<job or run folder>, ...]")
    jobs = []
    for folder in job_folders(paths):
        model, task, state, _ = load_trained(folder)
        if task.name != "causal_samples":
            raise ConfigError("tunnel.jobs", f"job {folder} holds a {task.name} model; the association gap is "
                                             "measured on causal_samples (mode B) models")
        jobs.append((folder, model, task, state))
    return jobs


def _mean_se(per_sequence: torch.Tensor) -> tuple[float | None, float | None]:
    x = per_sequence[~per_sequence.isnan()]
    if x.numel() == 0:
        return None, None
    return x.mean().item(), (x.std(unbiased=True).item() / math.sqrt(x.numel()) if x.numel() > 1 else None)


def gap_scores(q: torch.Tensor, p_do: torch.Tensor, p_obs: torch.Tensor, min_gap: float) -> torch.Tensor:
    """(..., ) float64 preference score t per position; NaN where the two answers do not differ enough."""
    d = p_do - p_obs
    norm = (d * d).sum(-1)
    t = (((q - p_obs) * d).sum(-1) / norm.clamp_min(1e-300)).clamp(0.0, 1.0)
    differs = 0.5 * d.abs().sum(-1) > min_gap
    return torch.where(differs, t, torch.full_like(t, float("nan")))


def score_job(model: torch.nn.Module, task, eval_set: EvalSet, min_gap: float, device: torch.device) -> dict:
    """Per position arrays (N, P) of kl_bits, KL against the observational answer and the gap score."""
    model.eval().to(device)
    kls, kl_obs, base, gaps = [], [], [], []
    with torch.inference_mode(), autocast_for(device):
        for batch in eval_set.batches:
            chunks = batch.tokens.split(CPU_CHUNK) if device.type == "cpu" else [batch.tokens]
            logits = torch.cat([model(t.to(device))[:, batch.positions.to(device)].cpu() for t in chunks]).double()
            q = torch.softmax(logits, -1)
            p_obs = task.observational_predictive(batch.tokens)
            kls.append(kl_bits(batch.posterior, logits))
            kl_obs.append(kl_bits(p_obs, logits))
            base.append(kl_bits(batch.posterior, torch.log(p_obs.clamp_min(1e-300))))
            gaps.append(gap_scores(q, batch.posterior, p_obs, min_gap))
    return {"kl_bits": torch.cat(kls), "kl_obs_bits": torch.cat(kl_obs), "observational_kl_bits": torch.cat(base),
            "gap": torch.cat(gaps)}


def summarise(arrays: dict, mask: torch.Tensor | None = None) -> dict:
    """Means ± s.e. over sequences of the positions in ``mask`` (P,) bool (all when None)."""
    sel = (lambda a: a) if mask is None else (lambda a: a[:, mask])
    kl, kl_se = _mean_se(sel(arrays["kl_bits"]).mean(-1))
    kl_obs, kl_obs_se = _mean_se(sel(arrays["kl_obs_bits"]).mean(-1))
    base, base_se = _mean_se(sel(arrays["observational_kl_bits"]).mean(-1))
    gap = sel(arrays["gap"])
    seen = ~gap.isnan()
    per_seq = torch.where(seen.any(-1), torch.nansum(gap, -1) / seen.sum(-1).clamp_min(1), torch.tensor(float("nan"),
                                                                                                      dtype=gap.dtype))
    t, t_se = _mean_se(per_seq)
    flat = gap[seen]
    return {"kl_bits": kl, "kl_bits_stderr": kl_se,
            "kl_obs_bits": kl_obs, "kl_obs_bits_stderr": kl_obs_se,
            "observational_kl_bits": base, "observational_kl_bits_stderr": base_se,
            "association_gap": t, "association_gap_stderr": t_se,
            "association_gap_median": flat.median().item() if flat.numel() else None,
            "association_gap_above_half": (flat > 0.5).double().mean().item() if flat.numel() else None,
            "gap_positions": int(flat.numel()), "n_sequences": int(gap.shape[0])}
