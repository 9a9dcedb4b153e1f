"""Data and oracle speed: batched sampling + exact posteriors against per-sequence Python, and the
share of a training step that data takes.

Three comparisons, each a speed-up over a slow, obviously correct baseline timed in the same run:

* ``generation``: ``task.sample(B)`` (tokens, labels and exact posteriors, vectorised over the batch)
  against :func:`reference_batch`, which draws the same distribution one sequence at a time with
  Python's ``random`` and computes each posterior with plain loops (``speedup``; target: >= 50x at
  B=256), and against the same ``task.sample`` called once per sequence (``speedup_vs_loop``);
* ``hmm_filter``: the batched log-space forward filter (``HMMTask.posterior``) against the numpy
  forward algorithm run one sequence at a time (``HMMTask.posterior_reference``), over B and K;
* ``data_fraction``: median ``task.sample`` time over the median time of a whole training step
  (sampling included) for the demo transformer jobs and the tuned bijection job (target: <= 10%).

The Mamba scan's fused-against-sequential comparison is ``benchmarks/selective_scan.py``.
Writes benchmarks/results/data_oracle.json and data_oracle.png.
"""
from __future__ import annotations

import argparse
import random

import torch

from benchmarks.common import QUICK, device, interleaved_medians, plan, pyplot, save, save_figure
from framework.tasks import Batch, BijectionConfig, HMMConfig, Task, build_task
from framework.tasks.hmm import EMIT, FLOOR, OBS, SEP, SYMBOL0, TRANS
from framework.training.loop import make_optimizer, train_step

TASKS = {
    "bijection V=10 L=10": BijectionConfig(V=10, L=10),
    "bijection V=20 L=19": BijectionConfig(V=20, L=19),
    "hmm S=O=5 K=20": HMMConfig(S=5, O=5, K=20),
    "hmm S=O=5 K=50": HMMConfig(S=5, O=5, K=50),
}
BATCHES = (1, 16, 256, 1024)


# ------------------------------------------------------------------ per-sequence Python references


def _bijection_sequence(V: int, L: int, replacement: bool, rng: random.Random):
    pi = list(range(V))
    rng.shuffle(pi)
    keys = [rng.randrange(V) for _ in range(L)] if replacement else rng.sample(range(V), L)
    tokens, rows, bound = [], [], {}
    for i, k in enumerate(keys):
        if k in bound:
            row = [0.0] * V
            row[bound[k]] = 1.0
        else:
            used = set(bound.values())
            row = [0.0 if v in used else 1.0 / (V - len(used)) for v in range(V)]
        rows.append(row)
        tokens.append(k)
        if i < L - 1:
            tokens.append(V + pi[k])
            bound[k] = pi[k]
    return tokens, rows, [pi[k] for k in keys]


def _hmm_row(n: int, rng: random.Random) -> list[int]:
    """One Dirichlet(1) row, clipped at 0.05, renormalised, in integer hundredths summing to 100."""
    g = [rng.expovariate(1.0) for _ in range(n)]
    p = [max(x / sum(g), FLOOR / 100) for x in g]
    p = [x / sum(p) for x in p]
    q = [max(round(100 * x), FLOOR) for x in p]
    residual = 100 - sum(q)
    while residual:
        j = max(range(n), key=lambda i: q[i] + 0.5 * p[i])
        delta = max(residual, FLOOR - q[j])
        q[j] += delta
        residual -= delta
    return q


def _draw(hundredths: list[int], rng: random.Random) -> int:
    u, cum = rng.randrange(100), 0
    for j, q in enumerate(hundredths):
        cum += q
        if u < cum:
            return j
    raise AssertionError("rows sum to 100")


def _hmm_sequence(S: int, O: int, K: int, rng: random.Random):
    trans = [_hmm_row(S, rng) for _ in range(S)]
    emit = [_hmm_row(O, rng) for _ in range(S)]
    z, states, steps = rng.randrange(S), [], []
    for t in range(K):
        states.append(z)
        steps += [OBS, SYMBOL0 + _draw(emit[z], rng)]
        z = _draw(trans[z], rng)
    header = [TRANS, *(q - FLOOR for row in trans for q in row), EMIT, *(q - FLOOR for row in emit for q in row), SEP]
    return header + steps, states


def reference_batch(task: Task, batch_size: int, rng: random.Random) -> Batch:
    """The same distribution as ``task.sample``, one sequence at a time in plain Python."""
    if isinstance(task.config, BijectionConfig):
        seqs = [_bijection_sequence(task.V, task.L, task.config.replacement, rng) for _ in range(batch_size)]
        tokens, rows, labels = zip(*seqs)
        posterior = torch.tensor(rows, dtype=torch.float64)
    elif isinstance(task.config, HMMConfig):
        tokens, labels = zip(*(_hmm_sequence(task.S, task.O, task.K, rng) for _ in range(batch_size)))
        posterior = task.posterior_reference(torch.tensor(tokens))  # numpy forward filter per sequence
    else:
        raise NotImplementedError(f"no per-sequence reference for task {task.name!r}")
    return Batch(torch.tensor(tokens), task.positions(), posterior, torch.tensor(labels))


def one_at_a_time(task: Task, batch_size: int, generator: torch.Generator) -> Batch:
    """The framework's own sampler called once per sequence: what vectorising over the batch buys."""
    parts = [task.sample(1, generator) for _ in range(batch_size)]
    return Batch(torch.cat([p.tokens for p in parts]), parts[0].positions, torch.cat([p.posterior for p in parts]),
                 torch.cat([p.labels for p in parts]))


# ------------------------------------------------------------------ the three comparisons


def generation(repeats: int) -> list[dict]:
    dev, rows = device(), []
    for name, config in list(TASKS.items())[:: 2 if QUICK else 1]:
        task = build_task(config)
        for B in BATCHES[:3] if QUICK else BATCHES:
            generator, rng = torch.Generator(dev).manual_seed(0), random.Random(0)
            seconds = interleaved_medians({
                "reference": lambda: reference_batch(task, B, rng),
                "loop": lambda: one_at_a_time(task, B, generator),
                "batched": lambda: task.sample(B, generator),
            }, repeats=repeats, warmup=1)
            rows.append({"task": name, "batch": B, "seconds": seconds, "speedup": seconds["reference"] / seconds["batched"],
                         "speedup_vs_loop": seconds["loop"] / seconds["batched"]})
            print(f"generation {name} B={B}: reference {1e3 * seconds['reference']:.2f} ms, one at a time "
                  f"{1e3 * seconds['loop']:.2f} ms, batched {1e3 * seconds['batched']:.3f} ms "
                  f"({rows[-1]['speedup']:.0f}x, {rows[-1]['speedup_vs_loop']:.0f}x)", flush=True)
    return rows


def hmm_filter(repeats: int) -> list[dict]:
    dev, rows = device(), []
    for K in (20, 50) if QUICK else (20, 50, 200):
        task = build_task(HMMConfig(K=K))
        for B in (16, 256) if QUICK else (16, 256, 1024):
            tokens = task.sample(B, torch.Generator().manual_seed(0)).tokens
            on_dev = tokens.to(dev)
            seconds = interleaved_medians({
                "reference": lambda: task.posterior_reference(tokens),
                "batched": lambda: task.posterior(on_dev),
            }, repeats=repeats, warmup=1)
            rows.append({"K": K, "batch": B, "seconds": seconds, "speedup": seconds["reference"] / seconds["batched"]})
            print(f"hmm filter K={K} B={B}: reference {1e3 * seconds['reference']:.2f} ms, batched "
                  f"{1e3 * seconds['batched']:.3f} ms ({rows[-1]['speedup']:.0f}x)", flush=True)
    return rows


def data_fraction(repeats: int) -> list[dict]:
    """How much of a training step is spent making its batch, for the jobs the README reports."""
    dev = device()
    jobs = [(job, "demo") for job in plan("demo", ["~models.mamba", "~models.lstm", "~models.mlp",
                                                   "~models.mlp_token"])]
    jobs += [(job, "fast_bijection") for job in plan("fast_bijection")]
    rows = []
    for job, experiment in jobs[:1] if QUICK else jobs:
        torch.manual_seed(0)
        model = job.build_model().to(dev)
        optimizer = make_optimizer(model, job.train)
        generator = torch.Generator(dev).manual_seed(0)
        B = job.train.batch_size

        def step():
            train_step(model, model, optimizer, job.task.sample(B, generator), job.train)

        seconds = interleaved_medians({"sample": lambda: job.task.sample(B, generator), "step": step},
                                      repeats=repeats, warmup=2)
        rows.append({"experiment": experiment, "job": job.name, "batch": B, "seconds": seconds,
                     "fraction": seconds["sample"] / seconds["step"]})
        print(f"data fraction {experiment}/{job.name} B={B}: sample {1e3 * seconds['sample']:.2f} ms of a "
              f"{1e3 * seconds['step']:.1f} ms step ({100 * rows[-1]['fraction']:.1f}%)", flush=True)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3 if QUICK else 9)
    args = parser.parse_args(argv)
    payload = {
        "what": "batched sampling + exact posteriors vs per-sequence Python; HMM filter batched vs per sequence; "
                "data share of a training step",
        "generation": generation(args.repeats),
        "hmm_filter": hmm_filter(args.repeats),
        "data_fraction": data_fraction(args.repeats),
    }
    path = save("data_oracle", payload)
    plot(payload)
    print(f"wrote {path}")


def plot(payload: dict) -> None:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name in dict.fromkeys(r["task"] for r in payload["generation"]):
        rows = [r for r in payload["generation"] if r["task"] == name]
        left.plot([r["batch"] for r in rows], [r["speedup"] for r in rows], "o-", label=name)
    left.axhline(50, color="k", ls="--", lw=0.8, label="target 50x")
    left.set(xscale="log", yscale="log", xlabel="batch size", ylabel="speed-up over per-sequence Python",
             title="sample + exact posterior")
    left.legend(fontsize=8)
    for K in dict.fromkeys(r["K"] for r in payload["hmm_filter"]):
        rows = [r for r in payload["hmm_filter"] if r["K"] == K]
        right.plot([r["batch"] for r in rows], [r["speedup"] for r in rows], "o-", label=f"K={K}")
    right.set(xscale="log", yscale="log", xlabel="batch size", ylabel="speed-up over a per-sequence loop",
              title="HMM forward filter")
    right.legend(fontsize=8)
    save_figure(fig, "data_oracle")


if __name__ == "__main__":
    main()
