"""Causal oracle speed: exact do-queries against pgmpy's ``CausalInference.query``, and counterfactuals per second.

Two measurements on bnlearn networks bundled in pgmpy (loaded offline, ``framework.causal.networks``):

* ``do_queries``: the same seeded rung-2 queries answered by our exact oracle (variable elimination on
  the mutilated graph, ``framework.causal.queries.interventional``) and by pgmpy 1.1.2's
  ``CausalInference.query``, timed interleaved; ``speedup`` is the ratio of throughputs (target >= 10x).
  A third of the queries are plain P(y | do(x)), a third add evidence after the intervention, a third
  intervene on a parent and its child together: the two cases where pgmpy is wrong (issues #1701,
  #3543). Every answer is checked against pgmpy's own ``VariableElimination`` on ``model.do(...)``, the
  independent ground truth; ``wrong`` counts answers off by more than 1e-6.
* ``counterfactuals``: rung-3 queries per second through the twin network (P(Y_x | X=x', Y=y'),
  PNS-style two-world joints, and nested NDE worlds), for both couplings.

Writes benchmarks/results/causal_oracles.json and causal_oracles.png.
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from benchmarks.common import QUICK, interleaved_medians, pyplot, save, save_figure
from framework.causal.networks import load_bayesian_network, load_network
from framework.causal.queries import default_mediators, interventional
from framework.causal.worlds import ValueIn, query

NETWORKS = ("asia", "alarm") if QUICK else ("asia", "sachs", "child", "insurance", "alarm")
KINDS = ("do", "do+evidence", "parent+child do")


def make_do_queries(scm, n: int, seed: int) -> list[dict]:
    """Seeded rung-2 queries; evidence values come from a sampled unit, so they have positive probability."""
    rng = np.random.default_rng(seed)
    with_kids = [v for v in scm.variables if scm.dag.descendants(v)]
    pairs = [(a, b) for a, b in scm.dag.edges if scm.dag.descendants(b)]
    out = []
    for i in range(n):
        kind = KINDS[i % 3] if pairs else KINDS[i % 2]
        if kind == "parent+child do":
            a, b = pairs[rng.integers(len(pairs))]
            do = {a: int(rng.integers(scm.card(a))), b: int(rng.integers(scm.card(b)))}
            target = rng.choice(sorted(scm.dag.descendants(b)))
        else:
            x = with_kids[rng.integers(len(with_kids))]
            do = {x: int(rng.integers(scm.card(x)))}
            target = rng.choice(sorted(scm.dag.descendants(x)))
        evidence = {}
        if kind == "do+evidence":
            unit = scm.sample(1, seed=seed * 1000 + i, do=do)[0]
            others = [v for v in scm.variables if v not in do and v != target]
            e = others[rng.integers(len(others))]
            evidence = {e: int(unit[scm.index[e]])}
        named = lambda d: {v: scm.states[v][s] for v, s in d.items()}  # noqa: E731 - pgmpy wants state names
        out.append({"kind": kind, "target": str(target), "do": named(do), "evidence": named(evidence)})
    return out


def ours(scm, queries):
    return [interventional(scm, q["target"], q["do"], q["evidence"]) for q in queries]


def theirs(ci, queries):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [ci.query([q["target"]], do=q["do"], evidence=q["evidence"] or None, show_progress=False).values
                for q in queries]


def truth(bn, q):
    from pgmpy.inference import VariableElimination

    model = bn.do(list(q["do"]))
    return VariableElimination(model).query([q["target"]], evidence={**q["evidence"], **q["do"]},
                                            show_progress=False).values


def do_queries(repeats: int) -> list[dict]:
    from pgmpy.inference import CausalInference

    rows = []
    for name in NETWORKS:
        scm, bn = load_network(name), load_bayesian_network(name)
        ci = CausalInference(bn)
        queries = make_do_queries(scm, 9 if QUICK else 30, seed=0)
        exact, pg = ours(scm, queries), theirs(ci, queries)
        ref = [truth(bn, q) for q in queries]
        err_ours = [float(np.abs(a - r).max()) for a, r in zip(exact, ref)]
        err_pg = [float(np.abs(b - r).max()) for b, r in zip(pg, ref)]
        seconds = interleaved_medians({"ours": lambda: ours(scm, queries), "pgmpy": lambda: theirs(ci, queries)},
                                      repeats=repeats, warmup=1)
        qps = {k: len(queries) / s for k, s in seconds.items()}
        wrong = {kind: sum(e > 1e-6 for e, q in zip(err_pg, queries) if q["kind"] == kind) for kind in KINDS}
        rows.append({"network": name, "variables": len(scm.variables), "queries": len(queries),
                     "by_kind": {k: sum(q["kind"] == k for q in queries) for k in KINDS},
                     "seconds": seconds, "queries_per_second": qps, "speedup": qps["ours"] / qps["pgmpy"],
                     "ours_max_error": max(err_ours), "pgmpy_max_error": max(err_pg),
                     "ours_wrong": sum(e > 1e-6 for e in err_ours), "pgmpy_wrong": sum(wrong.values()),
                     "pgmpy_wrong_by_kind": wrong})
        print(f"do {name}: ours {qps['ours']:.0f} q/s, pgmpy CausalInference {qps['pgmpy']:.1f} q/s "
              f"({rows[-1]['speedup']:.0f}x); wrong answers: ours {rows[-1]['ours_wrong']}, pgmpy "
              f"{rows[-1]['pgmpy_wrong']}/{len(queries)} {wrong}", flush=True)
    return rows


def make_cf_queries(scm, n: int, seed: int) -> list[tuple]:
    rng = np.random.default_rng(seed)
    with_kids = [v for v in scm.variables if scm.dag.descendants(v)]
    out = []
    for i in range(n):
        x = with_kids[rng.integers(len(with_kids))]
        y = str(rng.choice(sorted(scm.dag.descendants(x))))
        x1, x0 = int(rng.integers(scm.card(x))), int(rng.integers(scm.card(x)))
        if i % 3 == 0:  # P(Y_{x0} | X = x1, Y = y): evidence from a sampled unit
            unit = scm.sample(1, seed=seed * 1000 + i)[0]
            out.append(("cf", [{}, {x: x0}], [(1, y)], {(0, x): int(unit[scm.index[x]]), (0, y): int(unit[scm.index[y]])}))
        elif i % 3 == 1:  # joint of two potential outcomes (PNS)
            out.append(("pns", [{x: x1}, {x: x0}], [(0, y), (1, y)], {}))
        else:  # Y_{x1, M_{x0}} (NDE)
            m = default_mediators(scm, x, y)
            out.append(("nde", [{x: x0}, {x: x1, **{v: ValueIn(0) for v in m}}], [(1, y)], {}))
    return out


def counterfactuals(repeats: int) -> list[dict]:
    rows = []
    for name in NETWORKS:
        for coupling in ("independent", "monotone"):
            scm = load_network(name, coupling)
            queries = make_cf_queries(scm, 15 if QUICK else 60, seed=1)
            run = lambda: [query(scm, w, t, e) for _, w, t, e in queries]  # noqa: E731
            seconds = interleaved_medians({"cf": run}, repeats=repeats, warmup=1)["cf"]
            per_kind = {}
            for kind in ("cf", "pns", "nde"):
                mine = [q for q in queries if q[0] == kind]
                started = time.perf_counter()
                for _, w, t, e in mine:
                    query(scm, w, t, e)
                per_kind[kind] = len(mine) / (time.perf_counter() - started)
            rows.append({"network": name, "coupling": coupling, "queries": len(queries), "seconds": seconds,
                         "queries_per_second": len(queries) / seconds, "by_kind_per_second": per_kind})
            print(f"counterfactual {name} ({coupling}): {rows[-1]['queries_per_second']:.0f} q/s "
                  f"{ {k: round(v) for k, v in per_kind.items()} }", flush=True)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2 if QUICK else 5)
    args = parser.parse_args(argv)
    payload = {
        "what": "exact do-queries vs pgmpy CausalInference.query (throughput, correctness against VE on the "
                "mutilated model); twin-network counterfactual queries per second",
        "do_queries": do_queries(args.repeats),
        "counterfactuals": counterfactuals(args.repeats),
    }
    path = save("causal_oracles", payload)
    plot(payload)
    print(f"wrote {path}")


def plot(payload: dict) -> None:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    rows = payload["do_queries"]
    xs = np.arange(len(rows))
    left.bar(xs - 0.2, [r["queries_per_second"]["ours"] for r in rows], 0.4, label="exact (mutilated VE)")
    left.bar(xs + 0.2, [r["queries_per_second"]["pgmpy"] for r in rows], 0.4, label="pgmpy CausalInference")
    for x, r in zip(xs, rows):
        left.annotate(f"{r['speedup']:.0f}x\n{r['pgmpy_wrong']}/{r['queries']} wrong", (x + 0.2, r["queries_per_second"]["pgmpy"]),
                      ha="center", va="bottom", fontsize=7)
    left.set(yscale="log", xticks=xs, xticklabels=[r["network"] for r in rows], ylabel="do-queries per second",
             title="rung 2: same queries")
    left.legend(fontsize=8)
    cf = payload["counterfactuals"]
    names = list(dict.fromkeys(r["network"] for r in cf))
    for k, coupling in enumerate(("independent", "monotone")):
        vals = [next(r["queries_per_second"] for r in cf if r["network"] == n and r["coupling"] == coupling) for n in names]
        right.bar(np.arange(len(names)) + (k - 0.5) * 0.4, vals, 0.4, label=coupling)
    right.set(yscale="log", xticks=np.arange(len(names)), xticklabels=names, ylabel="counterfactual queries per second",
              title="rung 3: twin network")
    right.legend(fontsize=8)
    save_figure(fig, "causal_oracles")


if __name__ == "__main__":
    main()
