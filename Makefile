# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv first (Python >= 3.11). TORCH picks the PyTorch build: the default is the
# CPU wheel; on a GPU machine use e.g. `make demo TORCH=torch` (a CUDA build from PyPI).
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all

.PHONY: demo test lint

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/chunkflow demo-data --dir resources/demo
	$(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml

# `snakemake --lint` runs in the tests (tests/test_lint.py).
lint: $(VENV)/.installed
	$(BIN)/ruff format --check chunkflow tests benchmarks workflow/scripts
	$(BIN)/ruff check chunkflow tests benchmarks workflow/scripts

test: lint
	$(BIN)/pytest
