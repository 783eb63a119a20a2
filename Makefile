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
PYTEST := -m pytest -q -p no:cacheprovider

.PHONY: demo demo-fairchem1 test test-fast lint clean venv venv-fairchem1 benchmark \
	benchmark-overhead

venv: $(STAMP)
venv-fairchem1: $(STAMP1)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip wheel
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[fairchem2,test]"
	touch $(STAMP)

$(STAMP1): pyproject.toml scripts/install_fairchem1.sh
	PYTHON=$(PYTHON) bash scripts/install_fairchem1.sh $(VENV1)
	touch $(STAMP1)

demo: $(STAMP)
	$(VENV)/bin/fairchem-categorical demo --out demo_out

# the same job on fairchem-core 1.10: categorical vs scalar EquiformerV2
demo-fairchem1: $(STAMP1)
	$(VENV1)/bin/fairchem-categorical demo --out demo_out_fairchem1

test: lint $(STAMP1)
	$(PY) $(PYTEST)
	$(PY1) $(PYTEST)

test-fast: lint $(STAMP1)
	$(PY) $(PYTEST) -m "not slow"
	$(PY1) $(PYTEST) -m "not slow"

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
