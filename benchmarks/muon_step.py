"""Muon's optimizer step: torch.optim.Muon against framework.training.muon.BatchedMuon.

Both step the hidden matrices of a transformer (the demo's, d_model 64 and 2 layers, and the
paper's bijection size, 192 and 6) from the same gradients; torch orthogonalises each update in
bfloat16, one matrix at a time, BatchedMuon in float32, batched over the matrices of one shape.
Also AdamW's step on the same matrices, the cost Muon adds to. Timed interleaved (benchmarks/common.py).
Writes benchmarks/results/muon_step.json.
"""
from __future__ import annotations

import argparse

import torch

from benchmarks.common import QUICK, interleaved_medians, save
from framework.models import TransformerConfig, build_model
from framework.models.base import hidden_matrices
from framework.training.muon import BatchedMuon

SIZES = {"demo": TransformerConfig(d_model=64, n_layers=2, n_heads=4, d_ff=256),
         "paper": TransformerConfig(d_model=192, n_layers=6, n_heads=6, d_ff=768)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5 if QUICK else 15)
    args = parser.parse_args(argv)
    payload = {"what": "one optimizer step over a transformer's hidden matrices", "sizes": {}}
    for name, config in SIZES.items():
        torch.manual_seed(0)
        model = build_model(config, 24, 10, 40)
        params = hidden_matrices(model)
        for p in params:
            p.grad = torch.randn_like(p)
        optimizers = {"torch.optim.Muon": torch.optim.Muon(params, adjust_lr_fn="match_rms_adamw"),
                      "BatchedMuon": BatchedMuon(params, adjust_lr_fn="match_rms_adamw"),
                      "AdamW": torch.optim.AdamW(params)}
        seconds = interleaved_medians({k: o.step for k, o in optimizers.items()}, repeats=args.repeats, warmup=3)
        payload["sizes"][name] = {"matrices": len(params), "step_seconds": seconds,
                                  "speedup": seconds["torch.optim.Muon"] / seconds["BatchedMuon"]}
        print(name, {k: f"{1e3 * v:.2f} ms" for k, v in seconds.items()}, flush=True)
    print(f"wrote {save('muon_step', payload)}")


if __name__ == "__main__":
    main()
