"""Training throughput per architecture: tokens/s, peak memory and achieved FLOP/s against the matmul peak.

For each architecture of ``experiment=demo`` (transformer, Mamba, LSTM, MLP, capacity-matched to the
demo transformer) on both demo tasks, one fresh process measures the framework's own training step
(``train_step``: sampling, forward, backward, clipping, AdamW) at the demo batch size:

* ``tokens_per_s`` = batch x sequence length / median step seconds;
* ``peak_mem_mb``: CUDA's peak allocation, or on CPU the rise of the process's resident high-water
  mark over its level before the first step (CPU has no allocator statistics; a fresh process per
  measurement is what makes the high-water mark mean something);
* ``flops_per_step``: the matmul and attention FLOPs of one step counted by ``FlopCounterMode``, plus
  the LSTM's gate matmuls counted by hand (its fused kernel is invisible to the counter). Scans and
  elementwise work are not counted, so ``mfu`` (achieved FLOP/s over the float32 matmul peak measured
  in this run) is a lower bound on how busy the arithmetic units are.

Paper sizes (``experiment=paper/*``) run on CUDA only. The same file measures the optimisations
considered for the step (``optimisations``): ``OMP_WAIT_POLICY`` ACTIVE against PASSIVE (fresh
processes, since OpenMP reads it once), ``torch.compile`` against eager (compile seconds, step time,
break-even steps), fused against torch's default AdamW (keyed "foreach AdamW"; a per-tensor loop
on CPU), and the math attention kernel against the default one. Each is a same-run ratio.
Writes benchmarks/results/throughput.json and throughput.png.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import replace

import torch

from benchmarks.common import (
    QUICK, device, interleaved_medians, matmul_peak_flops, max_rss_bytes, plan, pyplot, rss_bytes,
    run_worker, save, save_figure, worker_args
)
from framework.training.loop import make_optimizer, maybe_compile, train_step

ARCHS = ("transformer", "mamba", "lstm", "mlp")
DEMO = ("demo", ["~models.mlp_token"])
PAPER = [("paper/bijection_v20", []), ("paper/hmm", [])]


def _job(experiment: str, overrides: list[str], name: str):
    return next(job for job in plan(experiment, overrides) if job.name == name)


def _lstm_flops(model: torch.nn.Module, batch: int, T: int) -> int:
    """Gate matmuls of every nn.LSTM: 2 * 4H * (I + H) per token and layer forward, twice that backward."""
    total = 0
    for lstm in (m for m in model.modules() if isinstance(m, torch.nn.LSTM)):
        for layer in range(lstm.num_layers):
            inputs = lstm.input_size if layer == 0 else lstm.hidden_size
            total += 3 * 2 * 4 * lstm.hidden_size * (inputs + lstm.hidden_size) * batch * T
    return total


def worker(payload: dict) -> dict:
    """One architecture on one task in this (fresh) process: step time, FLOPs and peak memory."""
    from torch.utils.flop_counter import FlopCounterMode

    if payload.get("threads"):
        torch.set_num_threads(payload["threads"])
    dev = device()
    job = _job(payload["experiment"], payload["overrides"], payload["job"])
    B, T = job.train.batch_size, job.task.seq_len
    torch.manual_seed(0)
    model = job.build_model().to(dev)
    optimizer = make_optimizer(model, job.train)
    generator = torch.Generator(dev).manual_seed(0)
    forward_model = maybe_compile(model, payload.get("compile", False))

    def step():
        train_step(model, forward_model, optimizer, job.task.sample(B, generator), job.train)

    before = rss_bytes()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    step()
    first_step = time.perf_counter() - started
    seconds = interleaved_medians({"step": step}, repeats=payload["repeats"], warmup=1)["step"]
    peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else max_rss_bytes() - before
    flops = 0
    if not payload.get("compile"):
        with FlopCounterMode(display=False) as counter:
            step()
        flops = counter.get_total_flops() + _lstm_flops(model, B, T)
    return {"job": job.name, "experiment": payload["experiment"], "batch": B, "seq_len": T,
            "params": sum(p.numel() for p in model.parameters()), "step_seconds": seconds,
            "first_step_seconds": first_step, "tokens_per_s": B * T / seconds, "peak_mem_mb": peak / 2**20,
            "flops_per_step": flops, "flops_per_s": flops / seconds}


def architectures(repeats: int, peak: float) -> list[dict]:
    experiments = [DEMO] + (PAPER if device().type == "cuda" and not QUICK else [])
    rows = []
    for experiment, overrides in experiments:
        tasks = ["bijection"] if QUICK else [job.task_key for job in plan(experiment, overrides)]
        for task in dict.fromkeys(tasks):
            for arch in ARCHS:
                row = run_worker("benchmarks.throughput", {"experiment": experiment, "overrides": overrides,
                                                           "job": f"{task}_{arch}", "repeats": repeats})
                row["mfu"] = row["flops_per_s"] / peak
                rows.append(row)
                print(f"{experiment} {row['job']}: {row['tokens_per_s']:.0f} tokens/s, step "
                      f"{1e3 * row['step_seconds']:.1f} ms, peak +{row['peak_mem_mb']:.0f} MB, "
                      f"{row['flops_per_s'] / 1e9:.1f} GFLOP/s = {100 * row['mfu']:.1f}% of the matmul peak", flush=True)
    return rows


def optimisations(repeats: int) -> dict:
    """Same-run comparisons behind the choices in the training step (the demo transformer, batch 128)."""
    dev, out = device(), {}
    job = ("demo", DEMO[1], "bijection_transformer")
    base = {"experiment": job[0], "overrides": job[1], "job": job[2], "repeats": repeats}
    if dev.type == "cpu":
        # OpenMP reads OMP_WAIT_POLICY once, at load: one fresh process per setting, alternated.
        runs = {"ACTIVE": [], "PASSIVE": []}
        for _ in range(1 if QUICK else 3):
            for policy in runs:
                env_before = os.environ.get("OMP_WAIT_POLICY")
                os.environ["OMP_WAIT_POLICY"] = policy
                try:
                    runs[policy].append(run_worker("benchmarks.throughput", base)["step_seconds"])
                finally:
                    os.environ["OMP_WAIT_POLICY"] = env_before or "PASSIVE"
        med = {p: sorted(v)[len(v) // 2] for p, v in runs.items()}
        out["omp_wait_policy"] = {"step_seconds": med, "runs": runs, "speedup_passive": med["ACTIVE"] / med["PASSIVE"],
                                  "loadavg_after": os.getloadavg()}
        print(f"OMP_WAIT_POLICY: ACTIVE {1e3 * med['ACTIVE']:.1f} ms, PASSIVE {1e3 * med['PASSIVE']:.1f} ms", flush=True)
    if not QUICK:
        eager = run_worker("benchmarks.throughput", base)
        compiled = run_worker("benchmarks.throughput", {**base, "compile": True})
        saved = eager["step_seconds"] - compiled["step_seconds"]
        out["torch_compile"] = {
            "eager_step_seconds": eager["step_seconds"], "compiled_step_seconds": compiled["step_seconds"],
            "compile_seconds": compiled["first_step_seconds"] - eager["first_step_seconds"],
            "speedup": eager["step_seconds"] / compiled["step_seconds"],
            "break_even_steps": (compiled["first_step_seconds"] / saved) if saved > 0 else None,
        }
        print(f"torch.compile: {json.dumps(out['torch_compile'])}", flush=True)

    from torch.nn.attention import SDPBackend, sdpa_kernel

    j = _job(*job)
    steps = {}
    # AdamW's kernels and the attention kernel, on AdamW alone; then the default, Muon with AdamW.
    for name, optimizer_name, fused, backend in (("foreach AdamW", "adamw", False, None),
                                                 ("fused AdamW", "adamw", True, None),
                                                 ("math attention", "adamw", None, SDPBackend.MATH),
                                                 ("Muon with AdamW", "muon", None, None)):
        torch.manual_seed(0)
        model = j.build_model().to(dev)
        cfg = replace(j.train, optimizer=optimizer_name)
        optimizer = make_optimizer(model, cfg, fused=fused)
        generator = torch.Generator(dev).manual_seed(0)

        def step(model=model, optimizer=optimizer, generator=generator, backend=backend, cfg=cfg):
            if backend is None:
                train_step(model, model, optimizer, j.task.sample(cfg.batch_size, generator), cfg)
            else:
                with sdpa_kernel(backend):
                    train_step(model, model, optimizer, j.task.sample(cfg.batch_size, generator), cfg)

        steps[name] = step
    seconds = interleaved_medians(steps, repeats=repeats, warmup=2)
    out["step_variants"] = {"step_seconds": seconds,
                            "speedup_vs_foreach_adamw": {k: seconds["foreach AdamW"] / v for k, v in seconds.items()}}
    print("step variants: " + ", ".join(f"{k} {1e3 * v:.1f} ms" for k, v in seconds.items()), flush=True)
    return out


def main(argv=None) -> None:
    args = worker_args(__doc__, 3 if QUICK else 9, worker, argv)
    if args is None:  # this process was a worker
        return
    peak = matmul_peak_flops()
    print(f"float32 matmul peak: {peak['flops'] / 1e9:.1f} GFLOP/s", flush=True)
    rows = architectures(args.repeats, peak["flops"])
    payload = {"what": "training step throughput per architecture", "matmul_peak": peak, "rows": rows,
               "optimisations": optimisations(args.repeats)}
    payload["matmul_peak_after"] = matmul_peak_flops()  # the load can change during the run
    path = save("throughput", payload)
    plot(rows)
    print(f"wrote {path}")


def plot(rows: list[dict]) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    labels = [f"{r['job']}" + ("" if r["experiment"] == "demo" else f" ({r['experiment']})") for r in rows]
    for ax, key, title in zip(axes, ("tokens_per_s", "peak_mem_mb", "mfu"),
                              ("tokens / s", "peak memory (MB above idle)", "achieved / matmul peak FLOP/s")):
        ax.barh(range(len(rows)), [r[key] for r in rows])
        ax.set_yticks(range(len(rows)), labels, fontsize=7)
        ax.set(title=title)
    save_figure(fig, "throughput")


if __name__ == "__main__":
    main()
