"""A training step through the Avalanche strategy against the framework's own training step.

Same model (the demo transformer, d=64, 2 layers), same batch size (128), same task (bijection
V=10, L=10, soft exact-posterior targets), same optimizer (AdamW, decay on matrices) and clipping:

* ``framework``: ``framework.training.loop.train_step`` on a batch already sampled (forward,
  soft cross-entropy at the scored positions, backward, clipping, AdamW);
* ``avalanche``: ``PosteriorStrategy.train(experience)`` (Naive) over one experience of 32 steps,
  divided by 32: Avalanche's loop with its callbacks, its data loader indexing and collating the
  experience's items (cached in memory after the first pass), the loss over the zero-masked
  target rows, clipping and AdamW, plus the per-experience set-up (loader, optimizer update).

Both are timed round-robin in one run (``interleaved_medians``) and reported as a ratio; then the
Avalanche step is split by timing its parts (forward, criterion, backward, optimizer step) on the
strategy instance, the rest being the loop: data loading, collation and plugin callbacks.
Writes benchmarks/results/continual_step.json.
"""
from __future__ import annotations

import time
import warnings

import torch

from benchmarks.common import QUICK, device, interleaved_medians, save
from framework.continual import StrategyConfig, build_stream, build_strategy
from framework.models import TransformerConfig, build_model
from framework.tasks import BijectionConfig, build_task
from framework.training.config import TrainConfig
from framework.training.loop import make_optimizer, train_step

STEPS = 8 if QUICK else 32
BATCH = 128


def main() -> None:
    warnings.filterwarnings("ignore")
    dev = device()
    task = build_task(BijectionConfig(V=10, L=10))
    stream = build_stream({"name": "permuted_tokens", "n_experiences": 2, "n_train": STEPS * BATCH, "n_test": 8,
                           "task": "bijection", "task_options": {"V": 10, "L": 10}, "identity_first": True})
    experience = stream.train_stream[0]  # the unpermuted task: the framework's own task, as a dataset
    config = TransformerConfig(d_model=64, n_layers=2, n_heads=4, d_ff=256)
    torch.manual_seed(0)
    ours = build_model(config, task.vocab_size, task.n_classes, task.seq_len).to(dev)
    theirs = build_model(config, task.vocab_size, task.n_classes, task.seq_len).to(dev)
    theirs.load_state_dict(ours.state_dict())
    train_cfg = TrainConfig(batch_size=BATCH, lr=1e-3, weight_decay=0.0, grad_clip=1.0, target="posterior",
                            optimizer="adamw")  # Avalanche's side steps AdamW: like for like
    optimizer = make_optimizer(ours, train_cfg)
    batch = task.sample(BATCH, torch.Generator().manual_seed(0)).to(dev)
    strategy = build_strategy(StrategyConfig(name="naive", lr=1e-3, train_mb_size=BATCH, train_epochs=1), theirs,
                              device=dev)

    def framework_steps():
        for _ in range(STEPS):
            train_step(ours, ours, optimizer, batch, train_cfg)

    def avalanche_steps():
        strategy.train(experience)

    repeats = 3 if QUICK else 7
    medians = interleaved_medians({"framework": framework_steps, "avalanche": avalanche_steps}, repeats=repeats, warmup=1)
    per_step = {k: v / STEPS for k, v in medians.items()}

    # where the Avalanche step's time goes: its parts, timed on the instance
    parts = {"forward": 0.0, "criterion": 0.0, "backward": 0.0, "optimizer_step": 0.0}
    for name in parts:
        original = getattr(strategy, name)

        def timed(*args, _original=original, _name=name, **kwargs):
            started = time.perf_counter()
            out = _original(*args, **kwargs)
            parts[_name] += time.perf_counter() - started
            return out

        setattr(strategy, name, timed)
    started = time.perf_counter()
    for _ in range(repeats):
        strategy.train(experience)
    total = time.perf_counter() - started
    steps = repeats * STEPS
    breakdown = {k: v / steps for k, v in parts.items()}
    breakdown["loop_data_and_callbacks"] = total / steps - sum(breakdown.values())
    result = {
        "model": "transformer d=64 L=2 (demo)", "task": "bijection V=10 L=10", "batch": BATCH, "steps_per_call": STEPS,
        "seconds_per_step": per_step, "ratio_avalanche_over_framework": per_step["avalanche"] / per_step["framework"],
        "target_ratio": 1.25, "avalanche_breakdown_seconds_per_step": breakdown,
        "avalanche_breakdown_share": {k: v / (total / steps) for k, v in breakdown.items()},
    }
    path = save("continual_step", result)
    print(f"framework {per_step['framework'] * 1e3:.2f} ms/step, avalanche {per_step['avalanche'] * 1e3:.2f} ms/step: "
          f"ratio {result['ratio_avalanche_over_framework']:.3f} (target <= 1.25)")
    for k, v in breakdown.items():
        print(f"  {k:>24}: {v * 1e3:.2f} ms ({result['avalanche_breakdown_share'][k]:.0%})")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
