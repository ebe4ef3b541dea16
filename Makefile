# Two commands for a newcomer: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# hnswlib builds from source; a -march=native build can crash on another CPU.
export HNSWLIB_NO_NATIVE := 1

.PHONY: install install-dev run test test-fast lint format clean browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

run: install
	$(BIN)/lakehouse up

lint: install-dev
	$(BIN)/ruff format --check lakehouse gateway workers schemas tests
	$(BIN)/ruff check lakehouse gateway workers schemas tests
	$(BIN)/mypy

format: install-dev
	$(BIN)/ruff format lakehouse gateway workers schemas tests
	$(BIN)/ruff check --fix lakehouse gateway workers schemas tests

# Two test processes (pytest-xdist), each taking whole files in collection order (the longest
# first: tests/conftest.py LONGEST_FIRST; xdist's own reorder by test count would put the
# one-test files, some of the longest, last and let one process finish alone).
PYTEST_PARALLEL ?= -n 2 --dist loadfile --no-loadscope-reorder

test: lint browser
	$(BIN)/pytest -q $(PYTEST_PARALLEL) $(PYTEST_ARGS)

# The web app's browser tests drive Debian's chromium (Playwright cannot download its own
# offline). Installed here when we are root with apt; otherwise those tests skip, saying why.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && { apt-get install -y -q chromium >/dev/null 2>&1 \
	       || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; } \
	  || echo "chromium not installed: the browser tests will skip"; }

# The edit-test loop: no lint, no tests marked slow (`make test` runs everything).
test-fast: install-dev
	$(BIN)/pytest -q -m "not slow" $(PYTEST_PARALLEL) $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
