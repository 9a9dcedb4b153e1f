"""The Einstein-test protocol: (world, learner, n_instances, seed, anomaly counts) -> JSON-able results.

Per instance, the learner is fitted afresh for every anomaly count k (the first k anomaly points
with all training points) and scored on the probes; the fit with every anomaly point gives the
main scores. A learner sees only what it declared in ``sees`` (checked before compute): never the
probes nor the names of the laws. Every aggregate carries its standard error over instances.

Results (all plain Python, NaN as None)::

    {"world": str, "title": str, "learner": str, "world_config": {...}, "learner_config": {...},
     "n_instances": int, "seed": int, "anomaly_counts": [int, ...], "resampled": int,
     "scores": {name: {"mean", "stderr", "n"}, ...},   # t_median t_mean frac_t_gt_half nmse
                                                        # nmse_vs_old in_regime_fit in_regime_nmse
                                                        # dl_data_bits dl_bits symbolic_recovery
     "anomaly_curve": [{"n_anomalies": k, "t_median": {...}, "t_mean": {...},
                        "frac_t_gt_half": {...}}, ...],
     "instances": [{"seed", "constants", "variables", "output", "law_old", "law_new",
                    "dl_new_bits", "dl_old_exceptions_bits", "resampled", "scores": {...},
                    "formula": str | None, "recovered": bool | None, "fit_seconds": float,
                    "curve": [{"n_anomalies", "t_median", "t_mean", "frac_t_gt_half"}],
                    "probes": {"x": [[...]], "y_new": [...], "y_old": [...], "y_hat": [...]}}]}
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from framework.errors import ConfigError, require
from framework.einstein import scores as S
from framework.einstein.learners import FitData, Laws, Learner, LearnerConfig, build_learner, learner_config
from framework.einstein.worlds import Instance, World, WorldConfig, build_world

MAIN_SCORES = (
    "t_median",
    "t_mean",
    "frac_t_gt_half",
    "nmse",
    "nmse_vs_old",
    "in_regime_fit",
    "in_regime_nmse",
    "dl_data_bits",
    "dl_bits",
)
CURVE_SCORES = ("t_median", "t_mean", "frac_t_gt_half")


def default_anomaly_counts(n_anomaly: int) -> list[int]:
    """0, 1, 2, 4, ... and all of them."""
    counts = [0] + [2**i for i in range(int(math.log2(n_anomaly)) + 1) if 2**i < n_anomaly] + [n_anomaly]
    return sorted(set(counts))


def check_anomaly_counts(counts: Sequence[int] | None, n_anomaly: int) -> list[int]:
    if counts is None:
        return default_anomaly_counts(n_anomaly)
    out = []
    for c in counts:
        require(
            isinstance(c, (int, np.integer)) and not isinstance(c, bool) and 0 <= c <= n_anomaly,
            "anomaly_counts",
            f"each count must be an integer in 0..{n_anomaly} (the world's n_anomaly), got {c!r}",
        )
        out.append(int(c))
    return sorted(set(out) | {n_anomaly})


def fit_data(learner: Learner, inst: Instance, n_anomalies: int) -> FitData:
    """What ``learner`` may see of ``inst``: exactly the fields it declared."""
    view = set(learner.visible())
    data = FitData(x_train=inst.x_train, y_train=inst.y_train)
    if "anomalies" in view:
        data.x_anomaly, data.y_anomaly = inst.x_anomaly[:n_anomalies], inst.y_anomaly[:n_anomalies]
    if "variables" in view:
        data.variables, data.output = inst.variables, inst.output
    if "laws" in view:  # checked: reference learners only
        data.laws = Laws(old=inst.law_old, new=inst.law_new, expr_old=inst.expr_old, expr_new=inst.expr_new)
    return data


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    return obj


def plan(world: WorldConfig | Mapping | str, learner: LearnerConfig | Mapping | str, n_instances: int, anomaly_counts=None) -> tuple[World, LearnerConfig, list[int]]:
    """Validate everything before compute: the world, the learner and what it may see, the counts."""
    w = build_world(world)
    lc = learner_config(learner)
    build_learner(lc)  # checks what the learner asks to see
    require(isinstance(n_instances, int) and n_instances >= 1, "n_instances", f"must be an integer >= 1, got {n_instances!r}")
    counts = check_anomaly_counts(anomaly_counts, w.config.n_anomaly)
    return w, lc, counts


def score_instance(world: World, lc: LearnerConfig, inst: Instance, counts: list[int], seed: int) -> dict[str, Any]:
    if len(inst.x_anomaly) == 0:
        raise ConfigError("world.n_anomaly", f"instance {inst.seed} of {world.name} has an empty anomaly set")
    curve, main, start = [], None, time.perf_counter()
    for k in counts:
        learner = build_learner(lc)
        learner.fit(fit_data(learner, inst, k), np.random.default_rng([seed, k]))
        y_hat = learner.predict(inst.x_probe)
        probe = S.probe_scores(y_hat, inst.y_probe_old, inst.y_probe_new)
        curve.append({"n_anomalies": k, **{key: probe[key] for key in CURVE_SCORES}})
        if k == counts[-1]:
            main = (learner, y_hat, probe)
    learner, y_hat, probe = main
    seconds = time.perf_counter() - start
    x_seen = np.concatenate([inst.x_train, inst.x_anomaly])
    y_seen = np.concatenate([inst.y_train, inst.y_anomaly])
    sd_seen = np.concatenate([inst.sd_train, inst.sd_anomaly])
    formula = learner.formula()
    scores = {**probe, **S.in_regime_scores(learner.predict(inst.x_regime), inst.y_regime_new, inst.sd_regime)}
    scores.update(S.description_bits(formula, y_seen, learner.predict(x_seen), sd_seen))
    recovered = S.symbolic_recovery(formula, inst.expr_new, inst.symbols()) if formula is not None else None
    scores["symbolic_recovery"] = None if recovered is None else float(recovered)
    return {
        **inst.summary(),
        "scores": scores,
        "formula": None if formula is None else str(formula),
        "recovered": recovered,
        "fit_seconds": seconds,
        "curve": curve,
        "probes": {"x": inst.x_probe, "y_new": inst.y_probe_new, "y_old": inst.y_probe_old, "y_hat": y_hat},
    }


def run_einstein(
    world: WorldConfig | Mapping | str,
    learner: LearnerConfig | Mapping | str,
    n_instances: int = 5,
    seed: int = 0,
    anomaly_counts: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Run the protocol; every bad input is a one-line ConfigError before any compute."""
    w, lc, counts = plan(world, learner, n_instances, anomaly_counts)
    records = []
    for i in range(n_instances):
        inst_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
        inst = w.instance(inst_seed)
        records.append(score_instance(w, lc, inst, counts, inst_seed))
    aggregate = {key: S.mean_stderr([r["scores"][key] for r in records]) for key in MAIN_SCORES + ("symbolic_recovery",)}
    if all(r["scores"]["symbolic_recovery"] is None for r in records):
        aggregate["symbolic_recovery"] = None
    curve = [
        {"n_anomalies": k, **{key: S.mean_stderr([r["curve"][j][key] for r in records]) for key in CURVE_SCORES}}
        for j, k in enumerate(counts)
    ]
    return _jsonable(
        {
            "world": w.name,
            "title": w.title,
            "learner": lc.name,
            "world_config": dataclasses.asdict(w.config),
            "learner_config": dataclasses.asdict(lc),
            "n_instances": n_instances,
            "seed": seed,
            "anomaly_counts": counts,
            "resampled": sum(r["resampled"] for r in records),
            "scores": aggregate,
            "anomaly_curve": curve,
            "instances": records,
        }
    )
