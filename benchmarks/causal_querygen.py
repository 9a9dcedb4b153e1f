"""Causal query generation speed: 10,000 CLadder-style queries over the families, random DAGs and bundled networks.

Measures, with the default ``QueryGenSettings`` (60% families, 25% bundled networks, 15% random DAGs;
every query type, both couplings, all three name variants):

* ``network_load_seconds``: parsing the bundled BIF files once (pgmpy's reader; paid once per process);
* ``generate``: the time to generate the whole set in one process (median of ``--repeats``), queries
  per second, and the mean milliseconds per query by source and by query type (timed one by one);
* ``parallel``: the same set with ``workers`` processes, and its speedup (same bytes, checked);
* ``write_seconds`` / ``load_seconds``: writing the JSONL atomically, and loading it with every line
  validated and every hash checked; ``bytes_per_query``.

Writes benchmarks/results/causal_querygen.json.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from benchmarks.common import QUICK, save
from framework.causal.querygen import GENERATOR_VERSION, QueryGenSettings, generate_queries, generate_query, network_model
from framework.causal.queryset import dumps, load_queryset, write_queryset


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500 if QUICK else 10_000)
    parser.add_argument("--repeats", type=int, default=1 if QUICK else 3)
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    settings = QueryGenSettings(count=args.count, seed=0)

    started = time.perf_counter()
    for name in settings.networks:
        network_model(name)
    load = time.perf_counter() - started

    times, text = [], None
    for _ in range(args.repeats):
        started = time.perf_counter()
        queries = generate_queries(settings)
        times.append(time.perf_counter() - started)
        now = dumps(queries, settings.to_dict(), GENERATOR_VERSION)
        assert text is None or now == text, "generation is not deterministic"
        text = now
    seconds = statistics.median(times)

    by_source, by_type = defaultdict(list), defaultdict(list)
    for i in range(min(args.count, 3000)):  # one by one, for the breakdown
        started = time.perf_counter()
        q = generate_query(settings, i)
        ms = 1e3 * (time.perf_counter() - started)
        by_source[q.source].append(ms)
        by_type[q.query_type].append(ms)

    parallel = None
    if args.workers > 1:
        started = time.perf_counter()
        same = generate_queries(settings, workers=args.workers)
        par = time.perf_counter() - started
        assert dumps(same, settings.to_dict(), GENERATOR_VERSION) == text, "workers changed the set"
        parallel = {"workers": args.workers, "seconds": par, "speedup": seconds / par}

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "queries.jsonl"
        started = time.perf_counter()
        write_queryset(path, queries, settings.to_dict(), GENERATOR_VERSION)
        write = time.perf_counter() - started
        started = time.perf_counter()
        loaded = load_queryset(path)
        read = time.perf_counter() - started
        size = path.stat().st_size
        assert len(loaded) == args.count
    payload = {
        "count": args.count,
        "settings": settings.to_dict(),
        "network_load_seconds": load,
        "generate": {"seconds": seconds, "all_seconds": times, "queries_per_second": args.count / seconds,
                     "ms_per_query_by_source": {k: statistics.fmean(v) for k, v in sorted(by_source.items())},
                     "ms_per_query_by_type": {k: statistics.fmean(v) for k, v in sorted(by_type.items())},
                     "queries_by_type": {k: len(v) for k, v in sorted(by_type.items())}},
        "parallel": parallel,
        "write_seconds": write,
        "load_seconds": read,
        "bytes_per_query": size / args.count,
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
    }
    path = save("causal_querygen", payload)
    print(f"{args.count} queries in {seconds:.2f} s ({args.count / seconds:.0f}/s; networks parsed once in {load:.1f} s); "
          f"load+validate {read:.2f} s; wrote {path}")


if __name__ == "__main__":
    main()
