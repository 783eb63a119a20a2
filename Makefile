# Two commands set everything up on a fresh machine:
#   make demo   creates .venv if missing, installs, runs the main job on the embedded data
#   make test   creates .venv and .venv-fairchem1 if missing, installs, runs the whole test
#               suite in both (core + fairchem 2.x tests, then core + fairchem 1.10 tests)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The fairchem-core 1.10 line (EquiformerV2, OCP trainer) lives in its own environment:
# it pins torch 2.4 and compiles torch-scatter/torch-sparse (~20 min the first time).
VENV1 := .venv-fairchem1
PY1 := $(VENV1)/bin/python
STAMP1 := $(VENV1)/.installed
# torch first: 2.13.0 is the CPU build pip finds locally here; fairchem-core then
# sees its torch requirement met and does not pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
# The versions the suites last passed on, one constraints file per environment: a fresh
# machine installs what was tested. `make test-latest` tests the newest releases instead
# (in .venv-latest and .venv-fairchem1-latest); after it passes, `make constraints` records
# what the environments hold.
CONSTRAINTS2 ?= constraints/fairchem2.txt
CONSTRAINTS1 ?= constraints/fairchem1.txt

.PHONY: demo demo-fairchem1 test test-fast test-latest constraints lint clean venv \
	venv-fairchem1 benchmark benchmark-overhead

venv: $(STAMP)
venv-fairchem1: $(STAMP1)

$(STAMP): pyproject.toml $(CONSTRAINTS2)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip wheel
	$(PY) -m pip install --quiet $(if $(CONSTRAINTS2),-c $(CONSTRAINTS2)) "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet $(if $(CONSTRAINTS2),-c $(CONSTRAINTS2)) -e ".[fairchem2,realistic,test]"
	touch $(STAMP)

$(STAMP1): pyproject.toml scripts/install_fairchem1.sh $(CONSTRAINTS1)
	PYTHON=$(PYTHON) CONSTRAINTS=$(CONSTRAINTS1) bash scripts/install_fairchem1.sh $(VENV1)
	touch $(STAMP1)

demo: $(STAMP)
	$(VENV)/bin/fairchem-categorical demo --out demo_out

# the same job on fairchem-core 1.10: categorical vs scalar EquiformerV2
demo-fairchem1: $(STAMP1)
	$(VENV1)/bin/fairchem-categorical demo --out demo_out_fairchem1

# both suites always run and report (the 1.10 suite also when the 2.x one failed); the exit
# status is non-zero if either failed
test: lint $(STAMP1)
	bash scripts/run_suites.sh "" $(VENV) $(VENV1)

test-fast: lint $(STAMP1)
	bash scripts/run_suites.sh "-m 'not slow'" $(VENV) $(VENV1)

# the same suites against the newest releases the package's own ranges admit
test-latest:
	$(MAKE) test VENV=.venv-latest VENV1=.venv-fairchem1-latest CONSTRAINTS2= CONSTRAINTS1=

# write the constraints files from the environments (run after their suites passed)
constraints: $(STAMP) $(STAMP1)
	bash scripts/write_constraints.sh $(VENV) $(CONSTRAINTS2)
	bash scripts/write_constraints.sh $(VENV1) $(CONSTRAINTS1)

# categorical vs scalar vs 5-member scalar ensemble; table in benchmarks/out/results.md
benchmark: $(STAMP)
	$(PY) benchmarks/uncertainty.py --out benchmarks/out

# what the categorical heads cost next to fairchem's scalar heads (time, memory, item load,
# batched inference), both lines; tables in benchmarks/out/overhead/fairchem{1,2}.md
benchmark-overhead: $(STAMP) $(STAMP1)
	OMP_NUM_THREADS=1 $(PY) benchmarks/overhead.py --out benchmarks/out/overhead
	OMP_NUM_THREADS=1 $(PY1) benchmarks/overhead.py --out benchmarks/out/overhead

# ruff, and the layout's import contracts (pyproject.toml [tool.importlinter])
lint: $(STAMP)
	$(VENV)/bin/ruff check fairchem_categorical tests benchmarks
	$(VENV)/bin/lint-imports

clean:
	rm -rf demo_out demo_out_fairchem1 runs .pytest_cache
