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
	$(BIN)/python -m pip install -q -e '.[all,test,profiles]'
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

# Coverage of the test processes (not of the sef subprocesses they start); 86 % measured.
COVERAGE = --cov=sef --cov-report=term-missing:skip-covered --cov-fail-under=83

test: $(VENV)/.installed system-deps lint
	$(BIN)/python -m pytest -n auto --dist loadgroup -q $(COVERAGE)
	$(BIN)/python scripts/check-min-versions.py

# The lowest declared versions in a fresh venv, with a fast subset of the tests.
min-versions: $(VENV)/.installed system-deps
	$(BIN)/python scripts/check-min-versions.py

bench: $(VENV)/.installed system-deps
	$(BIN)/python bench/bus_ingest.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
