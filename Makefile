# mpidml — `make run` trains on the bundled data, `make test` runs the whole suite.
# Variables (make VAR=value):
#   NP       ranks for `make run`                               (default 2)
#   ARGS     extra options for `make run`, e.g. ARGS="--model mlp --epochs 20"
#   PYTHON   interpreter that creates .venv                     (default python3)
#   MPIEXEC  launcher; point it at the cluster's mpiexec/srun to use a system MPI
#   MPICC    set to the system MPI's mpicc to build mpi4py against it instead of the mpich wheel
#   PYTEST   extra pytest options, e.g. PYTEST="-k scheduler -x"
#   BENCH    extra bench/run.py options, e.g. BENCH="--only mlp --quick"

NP      ?= 2
ARGS    ?=
PYTHON  ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
MPICC   ?=
MPIEXEC ?= $(VENV)/bin/mpiexec
PYTEST  ?=
BENCH   ?=
STAMP   := $(VENV)/.installed
EXTRAS  := test
ifeq ($(MPICC),)
EXTRAS  := test,mpich
endif

.PHONY: help install run test bench data lint clean

help:  ## list the targets and variables
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 10
	@sed -n '2,10p' $(MAKEFILE_LIST) | sed 's/^# //'

install: $(STAMP)  ## create .venv and install mpidml with its dependencies (idempotent)

$(STAMP): setup.cfg pyproject.toml
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
ifneq ($(MPICC),)
	env MPICC=$(MPICC) $(VPY) -m pip install -q --no-binary mpi4py mpi4py
endif
	$(VPY) -m pip install -q -e '.[$(EXTRAS)]'
	@touch $@

run: $(STAMP)  ## train on the bundled digits data with NP ranks (ARGS adds options)
	$(MPIEXEC) -n $(NP) $(VPY) -m mpidml $(ARGS)

test: $(STAMP)  ## the whole pytest suite, multi-rank tests included
	$(VPY) -m pytest $(PYTEST)

bench: $(STAMP)  ## benchmarks; writes BENCHMARKS.md
	$(VPY) -m pip install -q -e '.[bench,$(EXTRAS)]'
	$(VPY) bench/run.py --mpiexec $(MPIEXEC) --out BENCHMARKS.md $(BENCH)

data: $(STAMP)  ## a synthetic 1M x 100, 10-class dataset in data/synth-1m.h5
	$(VPY) -m mpidml data synth --samples 1000000 --features 100 --classes 10 --out data/synth-1m.h5

lint: $(STAMP)  ## ruff
	$(VPY) -m pip install -q ruff
	$(VPY) -m ruff check mpidml tests bench

clean:  ## remove .venv, caches, generated data and benchmark files
	rm -rf $(VENV) .pytest_cache build *.egg-info data/synth-*.h5 .bench .wheels .devprefix
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
