# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv first (Python >= 3.11). TORCH picks the PyTorch build: the default is the
# CPU wheel; on a GPU machine use e.g. `make demo TORCH=torch` (a CUDA build from PyPI).
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all

.PHONY: demo test lint browser

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

# tests/test_report.py opens the run report in headless Chromium: installed here with apt-get
# when it is missing and we are root (quietly); without a browser those tests are skipped.
browser:
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null \
		|| (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
		>/dev/null 2>&1) || echo "could not install chromium: the report's browser tests are skipped"

test: lint browser
	$(BIN)/pytest
