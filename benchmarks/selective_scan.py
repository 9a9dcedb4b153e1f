"""Selective-scan speed: the compiled CPU scan, the fused scan and the chunked scan against the sequential reference.

Forward + backward of Mamba-1's selective scan (float32, the full signature the Mamba block uses)
across sizes, as median seconds and as speed-up over ``selective_scan_ref`` measured in the same run.
Writes benchmarks/results/selective_scan.json and selective_scan.png.
"""
from __future__ import annotations

import argparse

import torch

from benchmarks.common import QUICK, grouped_bars, median_seconds, pyplot, save, save_figure
from framework.models.selective_scan import selective_scan

SIZES = [(8, 128, 16, 93), (128, 164, 16, 19), (32, 128, 16, 200), (128, 164, 16, 93)]  # (B, D, N, L)
IMPLS = ("ref", "parallel", "fused", "compiled")  # "compiled": CPU only


def inputs(B, D, N, L, device):
    g = torch.Generator().manual_seed(0)
    make = lambda *shape: torch.randn(*shape, generator=g).to(device).requires_grad_()  # noqa: E731
    u, delta, z = make(B, D, L), make(B, D, L), make(B, D, L)
    A = (-torch.rand(D, N, generator=g) * 4 - 0.5).to(device).requires_grad_()
    return u, delta, A, make(B, N, L), make(B, N, L), make(D), z, make(D)


def step(impl, args):
    y = selective_scan(*args, delta_softplus=True, impl=impl)
    y.sum().backward()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", default=QUICK, help="the two smallest sizes only")
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    impls = [i for i in IMPLS if device == "cpu" or i != "compiled"]
    rows = []
    for size in SIZES[:2] if args.quick else SIZES:
        tensors = inputs(*size, device)
        seconds = {impl: median_seconds(lambda: step(impl, tensors), repeats=args.repeats) for impl in impls}
        rows.append({"B_D_N_L": list(size), "seconds": seconds,
                     "speedup_vs_ref": {impl: seconds["ref"] / seconds[impl] for impl in impls}})
        print(f"{size}: " + "  ".join(f"{i} {1e3 * s:.1f} ms ({seconds['ref'] / s:.2f}x)" for i, s in seconds.items()))
    path = save("selective_scan", {"what": "selective scan forward+backward, float32", "rows": rows})
    plot(rows)
    print(f"wrote {path}")


def plot(rows) -> None:
    fig, ax = pyplot().subplots(figsize=(7, 4))
    grouped_bars(ax, ["x".join(map(str, r["B_D_N_L"])) for r in rows],
                 {impl: [r["speedup_vs_ref"][impl] for r in rows] for impl in rows[0]["speedup_vs_ref"]})
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set(xlabel="B x D x N x L", ylabel="speed-up over the sequential reference", title="selective scan fwd+bwd")
    ax.legend()
    save_figure(fig, "selective_scan")


if __name__ == "__main__":
    main()
