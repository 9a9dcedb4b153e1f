# `make demo` and `make test` create .venv and install the project on first use, and reinstall
# whenever pyproject.toml or constraints.txt changes.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= runs/demo

.PHONY: demo test test-all smoke clean bench bench-long

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# OMP_WAIT_POLICY=PASSIVE: idle OpenMP threads sleep rather than spin. In two busy runs (beside a test
# suite; not interleaved) the demo's HMM transformer ran at 13 steps/s with it and 5 without; on idle
# cores spinning is faster with 2 threads (1.17x to 2.3x, benchmarks/README.md); the demo's jobs run on one
# thread each, where it makes no difference. `make demo OMP_WAIT_POLICY=ACTIVE`.
OMP_WAIT_POLICY ?= PASSIVE
demo: $(STAMP)
	OMP_WAIT_POLICY=$(OMP_WAIT_POLICY) $(VENV)/bin/windtunnel experiment=demo hydra.run.dir=$(DEMO_DIR)
	@echo "report: $(DEMO_DIR)/report.md"

smoke: $(STAMP)
	$(VENV)/bin/windtunnel experiment=smoke hydra.run.dir=runs/smoke

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m "slow or not slow"

clean:
	rm -rf runs multirun outputs

# Every benchmark of benchmarks/README.md: time to target on bijection V=10 at the demo size took
# 15 minutes here (one thread, load 3 to 4), the rest about 9 minutes on 2 CPU cores; BENCH_QUICK=1 make bench is a smoke run of the same
# code paths (minutes, numbers not meaningful). bench-long: the whole time-to-target grid (three
# cases, three sizes, both objectives) and the training-setting ablations, several hours on a CPU.
bench: $(STAMP)
	$(PY) -m benchmarks.time_to_target --cases bijection_v10 --sizes demo
	$(PY) -m benchmarks.throughput
	$(PY) -m benchmarks.data_oracle
	$(PY) -m benchmarks.selective_scan
	$(PY) -m benchmarks.mamba_step
	$(PY) -m benchmarks.precision_step
	$(PY) -m benchmarks.scaling
	$(PY) -m benchmarks.eval_cost
	$(PY) -m benchmarks.causal_oracles
	$(PY) -m benchmarks.causal_querygen
	$(PY) -m benchmarks.continual_step
	$(PY) -m benchmarks.muon_step

bench-long: $(STAMP)
	$(PY) -m benchmarks.time_to_target --out time_to_target_grid
	$(PY) -m benchmarks.train_ablation
	$(PY) -m benchmarks.noise_scale
