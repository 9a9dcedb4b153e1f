"""Time to target: bits against training seconds, the framework's default training settings against
the demo's of before (``DEMO_BEFORE``), for both objectives, three model sizes and three targets.

Cases (``CASES``): bijection V=10, L=10 and V=20, L=19 to ``entropy_mae_bits`` <= 0.01 (the strict
per-sequence form), and HMM S=O=5, K=20 to ``kl_bits`` <= 0.05 and <= 0.01. Objectives:
``train.target=label`` (cross-entropy on the sampled outcome) and ``train.target=posterior`` (soft
labels, the exact posterior). Sizes (``SIZES``): the demo transformer (d_model 64, 2 layers), a middle
one (d_model 128, 4 layers) and the paper's (d_model 192, 6 layers, 6 heads). Settings:

* ``demo before``: the training settings ``experiment=demo`` shipped before the time-to-posterior
  work (AdamW, batch 128, lr 2e-3, warmup 100, weight decay 0.01, its 800-step bijection and 1500-step
  HMM cosines), the baseline;
* ``demo before x4``: the same with a 4x longer cosine (on bijection by default, since the shipped 800
  steps never reach the strict bijection targets with sampled labels); ``--before-multiples`` sets
  other multiples for every case run, such as 8 for V=20 with labels, which 3200 steps do not reach
  either, or 4 for HMM with labels, which 1500 steps do not reach; a ratio is taken against the
  fastest of them, per seed;
* ``default``: ``configs/train/default.yaml`` as it is now, with the steps of ``DEFAULT_STEPS``;
* ``default in float32``: the same with ``train.precision=float32``, where the default's ``auto``
  means bfloat16 mixed precision (CUDA, CPUs with native bf16): what the mixed precision costs or
  saves in bits and seconds (``demo before`` is float32, as the demo then was);
* ``demo's setting``: the default with the deltas ``experiment=demo``'s ``train_by`` gives this
  case's transformer (the HMM transformer's EM-like schedule), where it has any;
* ``label preset``: with ``train.target=label``, ``configs/train/label.yaml`` (``train=label``: Muon's
  momentum 0.99, batch 64, lr 8.5e-3) with the steps of ``LABEL_STEPS``.

Each run is the framework's own ``train()``, validated every ``eval_every`` steps on 512 fixed-seed
sequences and stopped at the first validation pass that meets the case's strictest target (or at
its step or training-time budget); the stopped model is scored on 2048 fresh test sequences (SPEC §3),
so a lucky validation set cannot fake a hit. The time to each target is the first validation pass at
or under it, as a step count and in seconds two ways: ``train_seconds`` as measured (optimisation
steps only; it moves with the machine's load), and ``seconds`` = steps x the setting's step time,
measured for every setting interleaved in one process at the start of the run (what the ratios use:
load hits all settings alike). "not reached" is a result; its ratio is then a lower bound.

On CUDA also ``experiment=paper/bijection_v20`` to entropy MAE <= 0.01. Writes
benchmarks/results/time_to_target.json and time_to_target.png (validation bits against seconds).
``--cases``, ``--sizes``, ``--objectives`` and ``--seeds`` select a part of the grid.
"""
from __future__ import annotations

import argparse
import functools
import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from benchmarks.common import QUICK, device, interleaved_medians, no_minor_log_labels, plan, pyplot, save, save_figure
from framework.io import write_json
from framework.metrics import EvalSet, evaluate
from framework.seeds import derive_seed
from framework.training import train
from framework.training.loop import make_optimizer, train_step
from framework.training.precision import resolve_precision


@dataclass(frozen=True)
class Case:
    task: str  # the demo's task key: "bijection" or "hmm"
    task_overrides: tuple[str, ...]
    metric: str  # "entropy_mae_bits" or "kl_bits"
    targets: tuple[float, ...]  # the strictest last: a run stops there
    budget_s: float  # training seconds a run may take before it counts as "not reached"
    before_multiples: tuple[int, ...] = ()  # the demo-before settings' longer cosines run by default


CASES = {
    "bijection_v10": Case("bijection", ("tasks.bijection.V=10", "tasks.bijection.L=10"), "entropy_mae_bits",
                          (0.01,), 240, (4,)),
    "bijection_v20": Case("bijection", ("tasks.bijection.V=20", "tasks.bijection.L=19"), "entropy_mae_bits",
                          (0.01,), 480, (4,)),
    "hmm_k20": Case("hmm", ("tasks.hmm.S=5", "tasks.hmm.O=5", "tasks.hmm.K=20"), "kl_bits", (0.05, 0.01), 600),
}
SIZES = {
    "demo": {"d_model": 64, "n_layers": 2, "n_heads": 4, "d_ff": 256},
    "mid": {"d_model": 128, "n_layers": 4, "n_heads": 4, "d_ff": 512},
    "paper": {"d_model": 192, "n_layers": 6, "n_heads": 6, "d_ff": 768},
}
OBJECTIVES = ("label", "posterior")
# experiment=demo's training settings before this benchmark's findings became the defaults.
DEMO_BEFORE = {"batch_size": 128, "lr": 2e-3, "warmup_steps": 100, "min_lr_ratio": 0.1, "weight_decay": 0.01,
               "betas_1": 0.9, "betas_2": 0.95, "value_lr_mult": 1.0, "grad_clip": 1.0, "optimizer": "adamw",
               "precision": "float32"}
DEMO_STEPS = {"bijection": 800, "hmm": 1500}
DEFAULT_STEPS = {"bijection": 4000, "hmm": 6000}
LABEL_STEPS = {"bijection": 1200, "hmm": 2000}  # the label preset's cosines at the demo size
OTHERS = ["~models.mamba", "~models.lstm", "~models.mlp", "~models.mlp_token", "~train_by"]  # the defaults, no deltas


def _demo_transformer(case: Case, overrides: list[str]):
    """``experiment=demo``'s transformer job on ``case``'s task alone, with ``overrides``."""
    other = {"bijection": "~tasks.hmm", "hmm": "~tasks.bijection"}[case.task]
    [job] = plan("demo", [*overrides, other, *case.task_overrides])
    return job


def job_for(case: Case, size: str):
    return _demo_transformer(case, OTHERS + [f"models.transformer.{k}={v}" for k, v in SIZES[size].items()])


def demo_deltas(case: Case) -> dict:
    """The optimisation fields ``experiment=demo``'s ``train_by`` sets for this case's transformer (its
    per-task setting, such as the HMM transformer's EM-like schedule), beside the default's; steps,
    evaluation and targets excluded."""
    return _deltas(case, [m for m in OTHERS if m != "~train_by"])


def label_preset(case: Case) -> dict:
    """The fields ``train=label`` (configs/train/label.yaml) sets beside the default's, steps excluded."""
    return _deltas(case, [*OTHERS, "train=label"])


def _deltas(case: Case, overrides: list[str]) -> dict:
    """The training fields the demo's transformer job on ``case`` with ``overrides`` has beside the plain
    one's (``OTHERS``); steps, evaluation and targets excluded."""
    skip = {"steps", "eval_every", "target_kl_bits", "target_entropy_mae_bits", "time_limit_s"}
    plain = _plain_train(case)
    return {k: v for k, v in asdict(_demo_transformer(case, overrides).train).items()
            if k not in skip and v != plain[k]}


@functools.lru_cache(maxsize=None)
def _plain_train(case: Case) -> dict:
    """The demo transformer's training fields on ``case`` with the defaults alone (composed once)."""
    return asdict(_demo_transformer(case, OTHERS).train)


def settings_for(case: Case, objective: str, only: tuple[str, ...] = (), default_steps: int = 0,
                 before_multiples: tuple[int, ...] | None = None, label_steps: int = 0) -> dict[str, dict]:
    """The settings compared on ``case``: name -> TrainConfig fields (``only``: just these names;
    ``default_steps``: the default's cosine length instead of ``DEFAULT_STEPS``; ``before_multiples``:
    the longer cosines of the demo's settings of before, instead of the case's own; ``label_steps``:
    the label preset's instead of ``LABEL_STEPS``). Where the demo trains this case's transformer with
    its own deltas, "demo's setting" is the default with them; with labels, "label preset" is
    ``train=label``."""
    before = {**DEMO_BEFORE, "steps": DEMO_STEPS[case.task], "target": objective}
    out = {"demo before": before}
    multiples = case.before_multiples if before_multiples is None else before_multiples
    out.update({f"demo before x{m}": {**before, "steps": m * before["steps"]} for m in multiples})
    out["default"] = {"steps": default_steps or DEFAULT_STEPS[case.task], "target": objective}
    if resolve_precision("auto", device()) != torch.float32:  # where "auto" is mixed precision: its cost in bits
        out["default in float32"] = {**out["default"], "precision": "float32"}
    deltas = demo_deltas(case)
    if deltas:
        out["demo's setting"] = {**out["default"], **deltas}
    if objective == "label":
        out["label preset"] = {**label_preset(case), "steps": label_steps or LABEL_STEPS[case.task]}
    return {name: fields for name, fields in out.items() if not only or name in only}


def step_seconds(jobs_and_settings: dict[str, tuple], repeats: int) -> dict[str, float]:
    """Median seconds of one training step of each (job, settings), timed interleaved."""
    dev, steps = device(), {}
    for key, (job, fields) in jobs_and_settings.items():
        cfg = replace(job.train, **fields)
        torch.manual_seed(0)
        model = job.build_model().to(dev)
        optimizer = make_optimizer(model, cfg)
        generator = torch.Generator(dev).manual_seed(0)
        steps[key] = (lambda m=model, o=optimizer, g=generator, c=cfg, j=job:
                      train_step(m, m, o, j.task.sample(c.batch_size, g), c))
    return interleaved_medians(steps, repeats=repeats, warmup=2)


def seeded_train(job, cfg, seed: int, out_dir: Path, progress: bool = False):
    """``job``'s model trained with ``cfg`` into ``out_dir``: its initialisation, validation set and data
    stream derived from ``seed``. Returns (model, validation set, TrainResult)."""
    torch.manual_seed(derive_seed(seed, job.task_key, job.model_key, "init"))
    model = job.build_model().to(device())
    val = EvalSet.generate(job.task, cfg.val_sequences, derive_seed(seed, job.task_key, "val"), cfg.eval_batch_size)
    out = train(model, job.task, cfg, out_dir, seed=derive_seed(seed, job.task_key, "data"), val_set=val,
                meta={"job": job.name}, desc=job.name, progress=progress)
    return model, val, out


def run_once(job, case: Case, seed: int, fields: dict, eval_every: int) -> dict:
    """Train ``job`` to the strictest of ``case``'s targets (or its budget); score it on fresh sequences."""
    dev = device()
    target = {"target_kl_bits" if case.metric == "kl_bits" else "target_entropy_mae_bits": case.targets[-1]}
    cfg = replace(job.train, **fields, **target, eval_every=eval_every, time_limit_s=case.budget_s)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        model, _, out = seeded_train(job, cfg, seed, Path(tmp))
        wall = time.perf_counter() - started
    test = evaluate(model, EvalSet.generate(job.task, 2048, derive_seed(seed, job.task_key, "test"),
                                            cfg.eval_batch_size), dev)
    first = {str(t): next((h["step"] for h in out.history if h[case.metric] <= t), None) for t in case.targets}
    return {"seed": seed, "steps": out.steps, "steps_to": first, "train_seconds": out.train_seconds,
            "val_seconds": out.val_seconds, "wall_seconds": wall, "history": out.history,
            "test": {k: test[k] for k in ("kl_bits", "kl_bits_stderr", "entropy_mae_bits", "entropy_mae_bits_stderr")},
            "train": fields}


def summarise(rows: list[dict], targets: tuple[float, ...], step_s: float) -> dict:
    """Per target: runs that reached it, and the median steps and seconds over the seeds (None: not all reached)."""
    out = {}
    for t in map(str, targets):
        hits = [r["steps_to"][t] for r in rows]
        reached = [h for h in hits if h is not None]
        median = statistics.median(hits) if len(reached) == len(hits) else None
        out[t] = {"reached": f"{len(reached)}/{len(hits)}", "steps": median,
                  "seconds": None if median is None else median * step_s}
    return out


def _seconds(row: dict, target: str, step_s: float) -> tuple[float, bool]:
    """(seconds to ``target``, reached): a run that missed it counts all its steps, a bound on its time."""
    steps = row["steps_to"][target]
    return (row["steps"] if steps is None else steps) * step_s, steps is not None


def ratios(result: dict, targets: tuple[float, ...], against: str = "default") -> dict:
    """The baseline's median seconds over those of the setting ``against`` (the default), per target.
    Per seed the baseline is the fastest of its variants (the "demo before" cosines) that reached the
    target, or, where none did, the longest it trained. A setting that missed the target counts the
    seconds it trained, so the ratio is then a bound: ``bound`` is "lower" when only the baseline
    missed, "upper" when only the default did, and the ratio is None when both did on some seed."""
    out = {}
    settings = result["settings"]
    base_names = [n for n in settings if n.startswith("demo before")]
    for t in map(str, targets):
        default = [_seconds(r, t, settings[against]["step_seconds"]) for r in settings[against]["runs"]]
        base = []
        for i in range(len(default)):
            tries = [_seconds(settings[n]["runs"][i], t, settings[n]["step_seconds"]) for n in base_names]
            hits = [s for s, hit in tries if hit]
            base.append((min(hits), True) if hits else (max(s for s, _ in tries), False))
        base_missed, default_missed = not all(h for _, h in base), not all(h for _, h in default)
        if base_missed and default_missed:
            out[t] = {"ratio": None, "note": "neither setting reached it on every seed"}
            continue
        b, d = statistics.median(s for s, _ in base), statistics.median(s for s, _ in default)
        out[t] = {"ratio": b / d, "bound": "lower" if base_missed else "upper" if default_missed else None,
                  "baseline_seconds": b, "default_seconds": d}
    return out


AGAINST = {"ratio": "default", "ratio_demo_setting": "demo's setting", "ratio_label_preset": "label preset"}


def all_ratios(result: dict, targets: tuple[float, ...]) -> dict:
    """``ratios`` of every setting of ``AGAINST`` that ran, keyed as there; ``ratio`` (the default's) is
    None where the default or the baseline did not run."""
    names = set(result["settings"])
    baseline = any(n.startswith("demo before") for n in names)
    out = {key: ratios(result, targets, against=name) for key, name in AGAINST.items() if baseline and name in names}
    return {"ratio": None, **out}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="bijection_v10,bijection_v20,hmm_k20")
    parser.add_argument("--sizes", default="demo" if QUICK else "demo,mid,paper")
    parser.add_argument("--objectives", default=",".join(OBJECTIVES))
    parser.add_argument("--seeds", type=int, default=1 if QUICK else 3, help="seeds at the demo size")
    parser.add_argument("--seeds-other-sizes", type=int, default=1)
    parser.add_argument("--budget-scale", type=float, default=0.05 if QUICK else 1.0,
                        help="multiplies every case's training-time budget")
    parser.add_argument("--settings", default="", help="run only these settings (comma-separated; no ratio "
                        "without a baseline)")
    parser.add_argument("--default-steps", type=int, default=0, help="the default setting's cosine length "
                        "(0: DEFAULT_STEPS)")
    parser.add_argument("--label-steps", type=int, default=0, help="the label preset's cosine length "
                        "(0: LABEL_STEPS)")
    parser.add_argument("--before-multiples", help="the demo-before settings' longer cosines for every case, as "
                        "multiples of its steps (comma-separated; default: 4 on bijection, none on HMM)")
    parser.add_argument("--targets", help="replace every case's targets (comma-separated bits, the strictest last)")
    parser.add_argument("--out", default="time_to_target", help="results file name (under benchmarks/results)")
    parser.add_argument("--recompute", metavar="JSON", help="recompute the ratios of a saved results file and exit")
    parser.add_argument("--retime", action="store_true", help="with --recompute: first re-measure every setting's "
                        "step time, interleaved (for a run whose timing phase met a burst of load)")
    args = parser.parse_args(argv)
    if args.recompute:
        payload = json.loads(Path(args.recompute).read_text())
        if args.retime:
            retime(payload)
        for result in payload["results"].values():
            result.update(all_ratios(result, tuple(result["targets"])))
            print(f"{result['case']} {result['size']} {result['objective']}: "
                  f"{ {k: v for k, v in result.items() if k.startswith('ratio')} }")
        write_json(Path(args.recompute), payload)
        return
    cases = {name: CASES[name] for name in args.cases.split(",")}
    if args.targets:
        targets = tuple(sorted((float(t) for t in args.targets.split(",")), reverse=True))
        cases = {name: replace(case, targets=targets) for name, case in cases.items()}
    sizes, objectives = args.sizes.split(","), args.objectives.split(",")
    grid = [(c, s, o) for c in cases for s in sizes for o in objectives]
    only = tuple(n for n in args.settings.split(",") if n)
    multiples = None if args.before_multiples is None else tuple(int(m) for m in args.before_multiples.split(",") if m)
    compared = {(c, o): settings_for(cases[c], o, only, args.default_steps, multiples, args.label_steps)
                for c in cases for o in objectives}
    jobs = {(c, s): job_for(cases[c], s) for c in cases for s in sizes}
    timed = {f"{c}/{s}/{o}/{name}": (jobs[c, s], fields) for c, s, o in grid
             for name, fields in compared[c, o].items()}
    print(f"timing one step of {len(timed)} settings, interleaved", flush=True)
    step_s = step_seconds(timed, repeats=3 if QUICK else 7)

    payload = {"what": "time to target: the default training settings against the demo's before",
               "demo_before": DEMO_BEFORE, "demo_steps": DEMO_STEPS, "default_steps": DEFAULT_STEPS,
               "sizes": SIZES, "results": {}}
    total = sum((args.seeds if s == "demo" else args.seeds_other_sizes) * len(compared[c, o])
                for c, s, o in grid)
    bar = tqdm(total=total, desc="time to target", dynamic_ncols=True)
    for c, s, o in grid:
        case = replace(cases[c], budget_s=cases[c].budget_s * args.budget_scale)
        seeds = range(args.seeds if s == "demo" else args.seeds_other_sizes)
        eval_every = 25 if s == "demo" else 50
        result = {"case": c, "size": s, "objective": o, "metric": case.metric, "targets": list(case.targets),
                  "budget_train_seconds": case.budget_s, "settings": {}}
        for name, fields in compared[c, o].items():
            seconds = step_s[f"{c}/{s}/{o}/{name}"]
            rows = []
            for seed in seeds:
                rows.append(run_once(jobs[c, s], case, seed, fields, eval_every))
                bar.update(1)
            result["settings"][name] = {"step_seconds": seconds, "runs": rows,
                                        "resolved": asdict(replace(jobs[c, s].train, **fields)),
                                        "summary": summarise(rows, case.targets, seconds)}
            print(f"{c} {s} {o} {name}: {result['settings'][name]['summary']}", flush=True)
        result.update(all_ratios(result, case.targets))
        for key in (k for k in result if k.startswith("ratio")):
            print(f"{c} {s} {o} {key}: {result[key]}", flush=True)
        payload["results"][f"{c}/{s}/{o}"] = result
        save(args.out, payload)  # after every cell: a long run that dies keeps what it measured
    bar.close()
    if torch.cuda.is_available() and not QUICK:
        [job] = plan("paper/bijection_v20")
        case = Case("bijection", (), "entropy_mae_bits", (0.01,), 3600)
        payload["paper_bijection_v20"] = run_once(job, case, 0, {}, 1000)
    path = save(args.out, payload)
    plot(payload, args.out)
    print(f"wrote {path}")


def retime(payload: dict) -> None:
    """Re-measure the step time of every setting of a saved run, interleaved, in place (the old ones
    are kept as ``step_seconds_at_run``)."""
    timed = {}
    for key, result in payload["results"].items():
        job = job_for(CASES[result["case"]], result["size"])
        for name, data in result["settings"].items():
            timed[f"{key}/{name}"] = (job, data["runs"][0]["train"])
    print(f"re-timing one step of {len(timed)} settings, interleaved", flush=True)
    step_s = step_seconds(timed, repeats=3 if QUICK else 9)
    for key, result in payload["results"].items():
        for name, data in result["settings"].items():
            data.setdefault("step_seconds_at_run", data["step_seconds"])
            data["step_seconds"] = step_s[f"{key}/{name}"]
            data["summary"] = summarise(data["runs"], tuple(result["targets"]), data["step_seconds"])
            print(f"{key} {name}: {1e3 * data['step_seconds_at_run']:.1f} -> {1e3 * data['step_seconds']:.1f} ms")


def plot(payload: dict, name: str) -> None:
    plt = pyplot()
    cells = list(payload["results"].values())
    fig, axes = plt.subplots(1, len(cells), figsize=(4.2 * len(cells), 3.8), squeeze=False)
    colors = {"demo before": "tab:gray", "demo before x4": "tab:brown", "demo before x8": "tab:olive",
              "default": "tab:blue", "default in float32": "tab:purple", "demo's setting": "tab:green",
              "label preset": "tab:red"}
    for ax, cell in zip(axes[0], cells):
        for k, (setting, data) in enumerate(cell["settings"].items()):
            for i, row in enumerate(data["runs"]):  # one colour per setting, its seeds alike
                t = [h["step"] * data["step_seconds"] for h in row["history"]]
                ax.plot(t, [h[cell["metric"]] for h in row["history"]], color=colors.get(setting, f"C{k}"), lw=1,
                        label=setting if i == 0 else None)
        for target in cell["targets"]:
            ax.axhline(target, color="k", ls="--", lw=0.8)
        ax.set(yscale="log", xscale="log", xlabel="training seconds (steps x step time)", ylabel=cell["metric"],
               title=f"{cell['case']} {cell['size']} {cell['objective']}")
        no_minor_log_labels(ax)
        ax.legend(fontsize=7)
    save_figure(fig, name)


if __name__ == "__main__":
    main()
