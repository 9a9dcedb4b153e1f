"""The einstein runner: every (world, learner) pair of the Einstein test (SPEC §6).

    plan     every world and learner built and checked through framework.einstein.protocol.plan:
             unknown names, a learner asking for data it may not see, an empty anomaly set,
             constants outside a world's range, bad counts are one-line ConfigErrors before compute
    run      world x learner under a progress bar; each pair's result written atomically to
             pairs/<world>__<learner>.json as it finishes, so ``resume=true`` skips finished pairs
    report   einstein_report.md (the table and a reading of it), per-world plots, report.md

Each run entry names its pair (``world``, ``learner``) and carries every score of the protocol as
``<score>``, ``<score>_stderr`` and ``<score>_n`` (the mean over instances, its standard error, the
count), and the anomaly curve. A learner config with an unset ``store`` (the text learner's answer
store) or ``cache_dir`` (the PFN's trained model) gets one in the run folder, so those resume too.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from framework.config import container
from framework.errors import ConfigError
from framework.io import write_json
from framework.runners.base import Runner, register_runner
from framework.runners.einstein.config import EinsteinConfig
from framework.seeds import digest

log = logging.getLogger(__name__)

SCORES = ("t_median", "t_mean", "frac_t_gt_half", "nmse", "nmse_vs_old", "in_regime_fit", "in_regime_nmse",
          "dl_data_bits", "dl_bits", "symbolic_recovery")
RUN_DIR_FIELDS = {"store": "answers/{pair}.jsonl", "cache_dir": "cache"}  # learner fields filled per run folder


@dataclass
class Pair:
    world_key: str
    learner_key: str
    world: Any  # WorldConfig
    learner: Any  # LearnerConfig
    counts: list[int]

    @property
    def name(self) -> str:
        return f"{self.world_key}__{self.learner_key}"

    def settings_hash(self, n_instances: int, seed: int) -> str:
        return digest({"world": dataclasses.asdict(self.world), "learner": dataclasses.asdict(self.learner),
                       "counts": self.counts, "n_instances": n_instances, "seed": seed}, 16)


@dataclass
class EinsteinPlan:
    settings: EinsteinConfig
    pairs: list[Pair]


def _entries(items: list, options: dict, kind: str) -> list[tuple[str, dict, Any]]:
    """(key, config mapping, per-entry anomaly counts) for each world or learner entry."""
    field = f"{kind}s"
    if not items:
        raise ConfigError(field, f"no {kind} selected; list at least one (experiment=einstein/quick has examples)")
    out, seen = [], set()
    for i, item in enumerate(container(items)):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or "name" not in item:
            raise ConfigError(f"{field}[{i}]", f"must be a {kind} name or a mapping with its name, got {item!r}")
        item = dict(item)
        key = str(item.pop("key", item["name"]))
        counts = item.pop("anomaly_counts", None) if kind == "world" else None
        if key in seen:
            raise ConfigError(f"{field}[{i}]", f"{kind} key {key!r} appears twice; give one entry a `key`")
        seen.add(key)
        delta = container(options.get(key) or {})
        if not isinstance(delta, dict):
            raise ConfigError(f"{kind}_options.{key}", f"must be a mapping of {kind} fields, got {delta!r}")
        if "anomaly_counts" in delta and kind == "world":
            counts = delta.pop("anomaly_counts")
        out.append((key, {**item, **delta}, counts))
    for key in options:
        if key not in seen:
            raise ConfigError(f"{kind}_options.{key}", f"no {kind} with key {key!r}; keys: {', '.join(sorted(seen))}")
    return out


def _placed(err: ConfigError, world_key: str, learner_key: str) -> ConfigError:
    """A protocol error (field world.x / learner.x / anomaly_counts) named by this run's entry."""
    head, _, rest = err.field.partition(".")
    if head == "world":
        return ConfigError(f"worlds.{world_key}" + (f".{rest}" if rest else ""), err.message)
    if head == "learner":
        return ConfigError(f"learners.{learner_key}" + (f".{rest}" if rest else ""), err.message)
    return err


def resolve(settings: EinsteinConfig) -> EinsteinPlan:
    from framework.einstein.protocol import plan as protocol_plan

    worlds = _entries(settings.worlds, settings.world_options, "world")
    learners = _entries(settings.learners, settings.learner_options, "learner")
    if not isinstance(settings.n_instances, int) or settings.n_instances < 1:
        raise ConfigError("n_instances", f"must be an integer >= 1, got {settings.n_instances!r}")
    pairs = []
    for wkey, wconf, wcounts in worlds:
        counts = settings.anomaly_counts if wcounts is None else wcounts
        for lkey, lconf, _ in learners:
            try:
                world, lc, checked = protocol_plan(wconf, lconf, settings.n_instances, counts)
            except ConfigError as err:
                err = _placed(err, wkey, lkey)
                if err.field == "anomaly_counts" and wcounts is not None:
                    err = ConfigError(f"worlds.{wkey}.anomaly_counts", err.message)
                raise err from None
            pairs.append(Pair(wkey, lkey, world.config, lc, checked))
    return EinsteinPlan(settings, pairs)


def _pair_path(run_dir: Path, pair: Pair) -> Path:
    return run_dir / "pairs" / f"{pair.name}.json"


def check_resumable(plan: EinsteinPlan, run_dir: Path) -> None:
    s = plan.settings
    for pair in plan.pairs:
        path = _pair_path(run_dir, pair)
        if path.exists() and json.loads(path.read_text()).get("settings_hash") != pair.settings_hash(s.n_instances, s.seed):
            raise ConfigError("resume", f"pair {pair.name} in {run_dir} finished with other settings than this run's; "
                                        "resume it with the settings it was run with, or use a new hydra.run.dir")


def _in_run_dir(learner: Any, run_dir: Path, pair: Pair) -> Any:
    """The learner config with its unset run-folder fields (answer store, model cache) pointed into run_dir."""
    changes = {name: str(run_dir / where.format(pair=pair.name)) for name, where in RUN_DIR_FIELDS.items()
               if hasattr(learner, name) and getattr(learner, name) is None}
    return dataclasses.replace(learner, **changes) if changes else learner


def entry(pair: Pair, result: dict, seconds: float) -> dict:
    """One metrics.json run entry: labels, flattened scores, the anomaly curve, no per-probe arrays."""
    row: dict[str, Any] = {"world": pair.world_key, "learner": pair.learner_key, "world_name": result["world"],
                           "learner_name": result["learner"], "title": result["title"],
                           "n_instances": result["n_instances"], "anomaly_counts": result["anomaly_counts"],
                           "resampled": result["resampled"]}
    for key in SCORES:
        score = result["scores"].get(key) or {}
        row[key], row[f"{key}_stderr"], row[f"{key}_n"] = score.get("mean"), score.get("stderr"), score.get("n", 0)
    row["anomaly_curve"] = [{"n_anomalies": c["n_anomalies"], "t_median": c["t_median"]["mean"],
                             "t_median_stderr": c["t_median"]["stderr"], "t_mean": c["t_mean"]["mean"],
                             "t_mean_stderr": c["t_mean"]["stderr"]} for c in result["anomaly_curve"]]
    row["formulas"] = [i["formula"] for i in result["instances"]]
    row["world_config"], row["learner_config"] = result["world_config"], result["learner_config"]
    row["timing"] = {"seconds": round(seconds, 3)}
    return row


def run_plan(plan: EinsteinPlan, run_dir: Path) -> dict:
    from framework.einstein.protocol import run_einstein

    s = plan.settings
    runs = []
    bar = tqdm(plan.pairs, desc="einstein", unit="pair", disable=not s.runtime.progress, dynamic_ncols=True)
    for pair in bar:
        bar.set_postfix_str(pair.name)
        path = _pair_path(run_dir, pair)
        expected = pair.settings_hash(s.n_instances, s.seed)
        if s.resume and path.exists() and json.loads(path.read_text()).get("settings_hash") == expected:
            saved = json.loads(path.read_text())
            runs.append(entry(pair, saved["result"], saved["seconds"]))
            log.info("%s: finished before; skipped", pair.name)
            continue
        started = time.perf_counter()
        result = run_einstein(pair.world, _in_run_dir(pair.learner, run_dir, pair), n_instances=s.n_instances,
                              seed=s.seed, anomaly_counts=pair.counts)
        seconds = time.perf_counter() - started
        write_json(path, {"settings_hash": expected, "seconds": seconds, "result": result})
        runs.append(entry(pair, result, seconds))
        log.info("%s: t_median=%s frac_t_gt_half=%s (%.1f s)", pair.name, runs[-1]["t_median"],
                 runs[-1]["frac_t_gt_half"], seconds)
    bar.close()
    return {"seed": s.seed, "n_instances": s.n_instances, "runs": runs}


@register_runner
class EinsteinRunner(Runner):
    name = "einstein"
    config = EinsteinConfig
    metrics = {"t_median": "higher", "frac_t_gt_half": "higher", "nmse": "lower", "in_regime_fit": "lower",
               "symbolic_recovery": "higher", "dl_bits": "lower"}
    labels = ("world", "learner")

    def plan(self, settings: EinsteinConfig) -> EinsteinPlan:
        return resolve(settings)

    def check_resume(self, plan: EinsteinPlan, run_dir) -> None:
        check_resumable(plan, Path(run_dir))

    def run(self, plan: EinsteinPlan, run_dir) -> dict:
        return run_plan(plan, Path(run_dir))

    def report(self, metrics: dict, run_dir) -> None:
        from framework.runners.einstein.report import write_report  # matplotlib only when plotting

        write_report(metrics, Path(run_dir))

    def summary(self, entry: dict) -> str:
        def f(key):
            v = entry.get(key)
            return "-" if v is None else f"{v:.3g}"

        return (f"{entry['world']:>14} {entry['learner']:>11}  t_median={f('t_median')}  "
                f"frac_t>0.5={f('frac_t_gt_half')}  nmse={f('nmse')}  in_regime={f('in_regime_fit')}  "
                f"recovered={f('symbolic_recovery')}")


__all__ = ["EinsteinConfig", "EinsteinPlan", "EinsteinRunner", "Pair", "resolve"]
