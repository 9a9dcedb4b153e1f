"""Before and after: the task samplers and oracles of an earlier commit against the working tree.

The record behind the oracle rows of README.md's optimisation table. The old ``bijection.py`` and
``hmm.py`` are read from git (default: 6496702, before issue 5's optimisations), imported as
modules of their own, checked to give the same posteriors on the same tokens, and timed
interleaved with the current ones. Not part of ``make bench`` (it needs the git history).
Writes benchmarks/results/oracle_history.json.
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.common import QUICK, interleaved_medians, save
from framework.tasks import BijectionConfig, HMMConfig, build_task

ROOT = Path(__file__).resolve().parent.parent


def old_module(commit: str, path: str, name: str):
    source = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout
    file = Path(tempfile.mkdtemp()) / f"{name}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commit", default="6496702")
    parser.add_argument("--repeats", type=int, default=5 if QUICK else 15)
    args = parser.parse_args(argv)
    bijection = old_module(args.commit, "framework/tasks/bijection.py", "old_bijection")
    hmm = old_module(args.commit, "framework/tasks/hmm.py", "old_hmm")
    pairs = {
        "bijection V=10 L=10": (build_task(BijectionConfig(V=10, L=10)), bijection.BijectionTask(bijection.BijectionConfig(V=10, L=10))),
        "bijection V=20 L=19": (build_task(BijectionConfig(V=20, L=19)), bijection.BijectionTask(bijection.BijectionConfig(V=20, L=19))),
        "hmm K=20": (build_task(HMMConfig(K=20)), hmm.HMMTask(hmm.HMMConfig(K=20))),
        "hmm K=50": (build_task(HMMConfig(K=50)), hmm.HMMTask(hmm.HMMConfig(K=50))),
    }
    rows = []
    for name, (new, old) in pairs.items():
        for B in (32, 256) if QUICK else (32, 128, 256, 1024):
            tokens = new.sample(B, torch.Generator().manual_seed(1)).tokens
            torch.testing.assert_close(new.posterior(tokens), old.posterior(tokens), rtol=0, atol=1e-12)
            g_old, g_new = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
            s = interleaved_medians({
                "posterior before": lambda: old.posterior(tokens), "posterior after": lambda: new.posterior(tokens),
                "sample before": lambda: old.sample(B, g_old), "sample after": lambda: new.sample(B, g_new),
            }, repeats=args.repeats, warmup=2)
            rows.append({"task": name, "batch": B, "seconds": s,
                         "posterior_speedup": s["posterior before"] / s["posterior after"],
                         "sample_speedup": s["sample before"] / s["sample after"]})
            print(f"{name} B={B}: posterior {1e3 * s['posterior before']:.3f} -> {1e3 * s['posterior after']:.3f} ms "
                  f"({rows[-1]['posterior_speedup']:.1f}x), sample+posterior {1e3 * s['sample before']:.3f} -> "
                  f"{1e3 * s['sample after']:.3f} ms ({rows[-1]['sample_speedup']:.1f}x)", flush=True)
    print(f"wrote {save('oracle_history', {'what': 'task oracles and samplers before/after', 'before_commit': args.commit, 'rows': rows})}")


if __name__ == "__main__":
    main()
