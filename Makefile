# mpidml — `make run` trains on the bundled data, `make test` runs the whole suite.
# Variables (make VAR=value):
#   NP          ranks for `make run`                               (default 2)
#   ARGS        extra options for `make run`, e.g. ARGS="--model mlp --epochs 20"
#   PYTHON      interpreter that creates .venv                     (default python3)
#   MPIEXEC     launcher; point it at the cluster's mpiexec/srun to use a system MPI
#   MPICC       set to the system MPI's mpicc to build mpi4py against it instead of the mpich wheel
#   PYTEST      extra pytest options, e.g. PYTEST="-k scheduler -x"
#   BENCH       extra bench/run.py options, e.g. BENCH="--only mlp --quick"
#   BENCH_OUT   the report `make bench` writes (default .bench/BENCHMARKS.md, untracked;
#               BENCH_OUT=BENCHMARKS.md updates the committed one)
#   BENCH_TORCH 1: `make bench` also installs torch (about 1.7 GB) for the PyTorch comparison

NP          ?= 2
ARGS        ?=
PYTHON      ?= python3
VENV        := .venv
VPY         := $(VENV)/bin/python
MPICC       ?=
MPIEXEC     ?= $(VENV)/bin/mpiexec
PYTEST      ?=
BENCH       ?=
BENCH_OUT   ?= .bench/BENCHMARKS.md
BENCH_TORCH ?=
# one stamp per layer, so each target installs what it needs once: running needs mpidml and
# its dependencies (and the mpich wheel unless MPICC builds mpi4py against a system MPI); the
# tests add the `test` extra, the benchmarks the `bench` extra and, asked for, `torch`
STAMP       := $(VENV)/.installed
TEST_STAMP  := $(VENV)/.installed-test
BENCH_STAMP := $(VENV)/.installed-bench
TORCH_STAMP := $(VENV)/.installed-torch
RUN_EXTRAS  := $(if $(MPICC),,[mpich])

.PHONY: help install run test bench data lint clean

help:  ## list the targets and variables
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 10
	@sed -n '/^# Variables/,/^$$/s/^# \{0,1\}//p' $(MAKEFILE_LIST)

install: $(STAMP)  ## create .venv and install mpidml with what running needs (idempotent)

$(STAMP): setup.cfg pyproject.toml
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
ifneq ($(MPICC),)
	env MPICC=$(MPICC) $(VPY) -m pip install -q --no-binary mpi4py mpi4py
endif
	$(VPY) -m pip install -q -e '.$(RUN_EXTRAS)'
	@touch $@

$(TEST_STAMP): $(STAMP)
	$(VPY) -m pip install -q -e '.[test]'
	@touch $@

$(BENCH_STAMP): $(STAMP)
	$(VPY) -m pip install -q -e '.[bench]'
	@touch $@

$(TORCH_STAMP): $(STAMP)
	$(VPY) -m pip install -q -e '.[torch]'
	@touch $@

run: $(STAMP)  ## train on the bundled digits data with NP ranks (ARGS adds options)
	$(MPIEXEC) -n $(NP) $(VPY) -m mpidml $(ARGS)

test: $(TEST_STAMP)  ## the whole pytest suite, multi-rank tests included (installs the test extra)
	$(VPY) -m pytest $(PYTEST)

bench: $(BENCH_STAMP) $(if $(filter 1,$(BENCH_TORCH)),$(TORCH_STAMP))  ## benchmarks; the report goes to BENCH_OUT (BENCH_TORCH=1: against PyTorch too)
	$(VPY) bench/run.py --mpiexec $(MPIEXEC) --out $(BENCH_OUT) $(BENCH)

data: $(STAMP)  ## a synthetic 1M x 100, 10-class dataset in data/synth-1m.h5
	$(VPY) -m mpidml data synth --samples 1000000 --features 100 --classes 10 --out data/synth-1m.h5

lint: $(STAMP)  ## ruff
	$(VPY) -m pip install -q ruff
	$(VPY) -m ruff check mpidml tests bench

clean:  ## remove .venv, caches, generated data and benchmark files
	rm -rf $(VENV) .pytest_cache build *.egg-info data/synth-*.h5 .bench .wheels .devprefix
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
