# Two commands set everything up on a fresh machine:
#   make demo   creates .venv if missing, installs, runs the main job on the embedded data
#   make test   creates .venv if missing, installs, runs the whole test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch first: 2.13.0 is the CPU build pip finds locally here; fairchem-core then
# sees its torch requirement met and does not pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test test-fast lint clean venv benchmark

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip wheel
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[fairchem2,test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fairchem-categorical demo --out demo_out

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow"

# categorical vs scalar vs 5-member scalar ensemble; table in benchmarks/out/results.md
benchmark: $(STAMP)
	$(PY) benchmarks/uncertainty.py --out benchmarks/out

lint: $(STAMP)
	$(VENV)/bin/ruff check fairchem_categorical tests

clean:
	rm -rf demo_out runs .pytest_cache
