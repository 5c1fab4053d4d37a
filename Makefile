# SEF: `make demo` runs the main job, `make test` runs the whole test suite.
# Both create .venv and install what they need (system packages with apt when root).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
SYSDEPS = mosquitto:mosquitto postgresql:/usr/lib/postgresql chromium:/usr/bin/chromium

.PHONY: demo test lint min-versions bench clean system-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml src/sef/__init__.py | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[all,test,profiles,cluster]'
	touch $@

system-deps:
	@scripts/system-deps.sh $(SYSDEPS)

demo: $(VENV)/.installed
	@scripts/system-deps.sh mosquitto:mosquitto
	$(BIN)/sef demo

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests $(wildcard bench) scripts
	$(BIN)/ruff format --check src tests $(wildcard bench) scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

# Coverage of the test processes (not of the sef subprocesses they start); 89 % measured.
COVERAGE = --cov=sef --cov-report=term-missing:skip-covered --cov-fail-under=83

# tests/certify certifies real agents: each run mostly waits on protocol timing (18-30 s
# at ~10 % of a CPU), so it runs on more workers than CPUs, after the rest, and its
# coverage is added to the rest's before the total is checked.
test: $(VENV)/.installed system-deps lint
	$(BIN)/python -m pytest -n auto --dist loadgroup -q --cov=sef --cov-report= \
		--ignore=tests/certify
	$(BIN)/python -m pytest -n 4 -q --cov-append $(COVERAGE) tests/certify
	$(BIN)/python scripts/check-min-versions.py

# The lowest declared versions in a fresh venv, with a fast subset of the tests.
min-versions: $(VENV)/.installed system-deps
	$(BIN)/python scripts/check-min-versions.py

bench: $(VENV)/.installed system-deps
	$(BIN)/python bench/bus_ingest.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
