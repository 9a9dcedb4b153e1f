"""Benchmarks of the framework; see README.md. Run them with `make bench`."""
import os

# Idle OpenMP threads sleep instead of spinning. On a CPU shared with other jobs (a sweep, or other
# users) spinning threads steal the cores their siblings need, and a 2-thread training step ran up to
# 9x slower (benchmarks/README.md, throughput.json: omp_wait_policy). It must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
