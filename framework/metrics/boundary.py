"""Where a trained model's bits go when its task changes: the construction boundary, read off a run.

An ``evaluate_at`` variant scores a trained model on changed settings of its task. Two boundaries of
SPEC §3 show up as a comparison that the variant's overall mean hides:

* positions: a model trained with a loss horizon K (or at a shorter length) and scored on every
  position: KL on the positions it was trained on against KL on the positions past them, both from
  the variant's per-position KL on the same sequences;
* support: a model trained on some prefix buckets and scored on the held-out one: the trained
  setting's KL against the variant's.

:func:`variant_split` computes both for one run entry; :func:`variant_rows` is the report table. The
past-horizon numbers are means of per-position means (equal weight per position, as the metrics'
own mean over positions), so they carry no standard error of their own; the trained and variant
scores beside them do.
"""
from __future__ import annotations


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def variant_split(run: dict) -> dict[str, dict]:
    """variant name -> trained and variant scores, and the variant's KL within / past the trained positions."""
    trained_positions = len(run["per_position"]["kl_bits"])
    out = {}
    for name, v in (run.get("evaluate_at") or {}).items():
        if "per_position" not in v:
            continue
        kl, mae = v["per_position"]["kl_bits"], v["per_position"]["entropy_mae_bits"]
        out[name] = {
            "trained_kl_bits": run["kl_bits"], "trained_kl_bits_stderr": run["kl_bits_stderr"],
            "variant_kl_bits": v["kl_bits"], "variant_kl_bits_stderr": v["kl_bits_stderr"],
            "trained_positions": trained_positions, "variant_positions": len(kl),
            "kl_bits_within": _mean(kl[:trained_positions]), "kl_bits_past": _mean(kl[trained_positions:]),
            "entropy_mae_bits_within": _mean(mae[:trained_positions]),
            "entropy_mae_bits_past": _mean(mae[trained_positions:]),
        }
    return out


def _g(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def variant_rows(runs: list[dict]) -> list[str]:
    """The report section: every variant beside its trained setting, split at the trained positions."""
    rows = []
    for run in runs:
        for name, s in variant_split(run).items():
            ratio = (s["kl_bits_past"] / max(s["kl_bits_within"], 1e-12)
                     if s["kl_bits_past"] is not None and s["kl_bits_within"] is not None else None)
            rows.append(f"| {run['task_key']} | {run['model_key']} | {name} | "
                        f"{s['trained_kl_bits']:.4g} ± {s['trained_kl_bits_stderr']:.2g} | "
                        f"{s['variant_kl_bits']:.4g} ± {s['variant_kl_bits_stderr']:.2g} | "
                        f"{s['trained_positions']} of {s['variant_positions']} | {_g(s['kl_bits_within'])} | "
                        f"{_g(s['kl_bits_past'])} | {_g(s['entropy_mae_bits_within'])} | "
                        f"{_g(s['entropy_mae_bits_past'])} | {'-' if ratio is None else f'{ratio:.3g}×'} |")
    if not rows:
        return []
    return ["## Trained setting against each variant", "",
            "KL (bits) of the trained setting and of each variant (mean ± stderr over sequences); then the variant's "
            "per-position scores split at the positions the model was trained on (its loss horizon or length): "
            "within them and past them, on the same sequences.", "",
            "| task | model | variant | trained KL | variant KL | trained positions | KL within | KL past | "
            "entropy MAE within | entropy MAE past | past / within |",
            "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|", *rows, ""]
