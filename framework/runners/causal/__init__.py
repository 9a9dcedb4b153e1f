"""The causal runner (SPEC §5): generate query sets, score any adapter on them, and mode B's association gap.

    windtunnel experiment=causal/generate [queries.count=10000 ...]          a versioned JSONL query set
    windtunnel experiment=causal/score adapter=<name> [queries=<file>]       score an adapter on a set
    windtunnel experiment=causal/tunnel tunnel.jobs=[<causal_samples jobs>]  kl_bits and the association gap

``queries`` is a query-set file or the settings of a set to generate in the run folder. Scoring asks
through :func:`framework.adapters.ask` with the answer store ``answers.jsonl`` in the run folder, so a
killed run, rerun with ``resume=true``, asks only what the store lacks. One run entry per stratum
(``by`` all / rung / query_type / source / graph / names / answer_kind), each with its metrics, their
standard errors and counts, so ``windtunnel-report`` aggregates sweeps of any of them.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from framework.adapters import ask, summarize
from framework.adapters.base import Adapter, AdapterConfig
from framework.causal.querygen import GENERATOR_VERSION, QueryGenSettings, generate_queries
from framework.causal.queryset import QuerySet, load_queryset, write_queryset
from framework.config import container
from framework.errors import ConfigError
from framework.io import write_text
from framework.metrics.evaluate import EvalSet
from framework.models import count_params
from framework.runners.base import Runner, register_runner
from framework.runners.causal import report as reports
from framework.runners.causal.adapters import adapter_config, adapter_inputs, make_adapter, prepare_adapter
from framework.runners.causal.config import CausalRunConfig
from framework.runners.causal.scoring import score_one, strata
from framework.runners.causal.tunnel import checkpoint_digest, load_jobs, score_job, summarise
from framework.runtime import pick_device
from framework.seeds import derive_seed

QUERIES = "queries.jsonl"
ANSWERS = "answers.jsonl"
SCORES = "scores.jsonl"


@dataclass
class CausalPlan:
    settings: CausalRunConfig
    generate: QueryGenSettings | None = None  # a set to generate in the run folder
    queryset: QuerySet | None = None  # a set read from a file
    source: str | None = None  # the file
    adapter: AdapterConfig | None = None
    prepared: Adapter | None = None  # a job adapter, built (its checkpoint loaded) in the plan
    jobs: list | None = None  # tunnel: (folder, model, task, state)


def query_settings(node: Any) -> QueryGenSettings:
    values = container(node)
    if not isinstance(values, dict):
        raise ConfigError("queries", f"must be a query-set file or the settings of a set to generate, got {values!r}")
    fields = QueryGenSettings.__dataclass_fields__
    for key in values:
        if key not in fields:
            raise ConfigError(f"queries.{key}", f"not a query-set setting; settings: {', '.join(fields)}")
    try:
        return QueryGenSettings(**values)
    except ConfigError as err:
        raise err.under("queries") from None


@register_runner
class CausalRunner(Runner):
    name = "causal"
    config = CausalRunConfig
    metrics = {"accuracy": "higher", "abs_error": "lower", "kl_bits": "lower", "association_gap": "higher",
               "parse_failures": "lower", "call_failures": "lower"}
    labels = ("action", "adapter", "by", "stratum")

    # ------------------------------------------------------------------ plan

    def plan(self, settings: CausalRunConfig) -> CausalPlan:
        plan = CausalPlan(settings)
        queries = container(settings.queries)
        if settings.action == "tunnel":
            plan.jobs = load_jobs(list(settings.tunnel.jobs))
            return plan
        if isinstance(queries, str):
            if settings.action == "generate":
                raise ConfigError("queries", "generate makes a set: give its settings (queries.count=..., "
                                             f"queries.seed=...), not a file ({queries})")
            plan.queryset, plan.source = load_queryset(queries), queries
        else:
            plan.generate = query_settings(queries or {})
        if settings.action == "score":
            plan.adapter = adapter_config(container(settings.adapter))
            plan.prepared = prepare_adapter(plan.adapter)
        return plan

    def inputs(self, plan: CausalPlan) -> Any:
        out = {}
        if plan.queryset is not None:
            out["queries"] = plan.queryset.header["content_hash"]
        if plan.adapter is not None and adapter_inputs(plan.adapter, plan.prepared) is not None:
            out["adapter"] = adapter_inputs(plan.adapter, plan.prepared)
        if plan.jobs:
            out["jobs"] = {str(folder): checkpoint_digest(folder) for folder, *_ in plan.jobs}
        return out or None

    # ------------------------------------------------------------------ run

    def run(self, plan: CausalPlan, run_dir) -> dict:
        run_dir = Path(run_dir)
        if plan.settings.action == "tunnel":
            return self._tunnel(plan, run_dir)
        if plan.settings.action == "generate":
            queryset, info = self._generate(plan, run_dir)
            entry = {"action": "generate", "adapter": None, "by": "all", "stratum": "all", **info,
                     "make_up": reports.make_up(queryset.queries)}
            return {"runs": [entry]}
        return self._score(plan, run_dir)

    def _generate(self, plan: CausalPlan, run_dir: Path) -> tuple[QuerySet, dict]:
        path = run_dir / QUERIES
        started = time.perf_counter()
        queries = generate_queries(plan.generate, plan.settings.workers)
        seconds = time.perf_counter() - started
        write_queryset(path, queries, plan.generate.to_dict(), GENERATOR_VERSION)
        queryset = load_queryset(path)
        return queryset, {"path": str(path), "count": len(queryset), "content_hash": queryset.header["content_hash"],
                          "generation_seconds": round(seconds, 3), "workers": plan.settings.workers}

    def _score(self, plan: CausalPlan, run_dir: Path) -> dict:
        settings = plan.settings
        store = run_dir / ANSWERS
        if not settings.resume and store.exists() and store.stat().st_size > 0:
            raise ConfigError("resume", f"{run_dir} already holds answers ({ANSWERS}); rerun with resume=true to "
                                        "ask only what it lacks, or give another hydra.run.dir")
        generation = None
        if plan.queryset is None:
            queryset, generation = self._generate(plan, run_dir)
            source = generation["path"]
        else:
            queryset, source = plan.queryset, plan.source
        queries = list(queryset.queries)
        adapter, refused = make_adapter(plan.adapter, queries, plan.prepared)
        asked = [q for q in queries if q.id not in refused]
        started = time.perf_counter()
        answers = ask(adapter, [q.prompt for q in asked], store, progress=settings.runtime.progress,
                      desc=adapter.label)
        seconds = time.perf_counter() - started
        by_prompt = dict(zip((q.prompt for q in asked), answers))
        sc = settings.scoring
        outcomes = [score_one(q, by_prompt.get(q.prompt), refused.get(q.id), sc.number_tol, sc.kl_eps) for q in queries]
        write_text(run_dir / SCORES, "".join(_jsonl(o.record()) for o in outcomes))
        counts = summarize(answers)
        label = f"{plan.adapter.name}/{adapter.label}"
        runs = [{"action": "score", "adapter": label, **row} for row in strata(outcomes, sc.by)]
        adapter.close()
        return {"runs": runs, "scoring": {
            "adapter_identity": adapter.identity, "queries": str(source), "count": len(queries),
            "content_hash": queryset.header["content_hash"], "generation": generation,
            "asked_now": counts["asked"], "from_store": counts["cached"], "seconds": round(seconds, 3),
            "number_tol": sc.number_tol, "kl_eps": sc.kl_eps,
            "not_answerable_reasons": dict(Counter(refused.values()).most_common())}}

    def _tunnel(self, plan: CausalPlan, run_dir: Path) -> dict:
        settings, tcfg = plan.settings, plan.settings.tunnel
        runs, sets = [], {}
        device = pick_device(settings.runtime.device)
        for folder, model, task, state in plan.jobs:
            key = repr(task.config)
            if key not in sets:  # the same held-out sequences for every job of one task
                sets[key] = EvalSet.generate(task, tcfg.eval_sequences, derive_seed(settings.seed, "tunnel", key),
                                             tcfg.batch_size)
            arrays = score_job(model, task, sets[key], tcfg.min_gap, device)
            base = {"action": "tunnel", "adapter": folder.name, "model": state["meta"]["model"]["name"],
                    "task": task.name, "graph": task.config.graph, "params": count_params(model), "step": state["step"],
                    "job": str(folder)}
            runs.append({**base, "by": "all", "stratum": "all", **summarise(arrays)})
            seen = task.samples_seen()
            for i, n in enumerate(seen.tolist()):
                mask = seen == n
                mask[:] = False
                mask[i] = True
                runs.append({**base, "by": "samples_seen", "stratum": str(n), **summarise(arrays, mask)})
        return {"runs": runs, "tunnel": {"eval_sequences": tcfg.eval_sequences, "seed": settings.seed,
                                         "min_gap": tcfg.min_gap}}

    # ------------------------------------------------------------------ report

    def report(self, metrics: dict, run_dir) -> None:
        run_dir = Path(run_dir)
        action = metrics["runs"][0]["action"] if metrics["runs"] else None
        if action == "generate":
            reports.report_generate(metrics, run_dir)
        elif action == "score":
            reports.report_score(metrics, run_dir)
        elif action == "tunnel":
            reports.report_tunnel(metrics, run_dir)

    def summary(self, entry: dict) -> str:
        if entry["action"] == "generate":
            return f"{entry['count']:,} queries in {entry['generation_seconds']:.1f} s -> {entry['path']}"
        return super().summary(entry)


def _jsonl(record: dict) -> str:
    import json

    return json.dumps(record, ensure_ascii=True, allow_nan=False) + "\n"
