# orderlog: `make run` serves on SQLite, `make test` runs the whole suite.
# Both create the virtual environment in .venv on first use: `make run` with what
# serving needs (plus EXTRAS, e.g. EXTRAS=postgres for its driver), `make test` and
# `make venv` with the test tools as well. Each install has its own stamp, so neither
# command repeats the other's.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check
EXTRAS ?=
# Flags for `orderlog serve`, e.g. make run ARGS="--port 8021"
ARGS   ?=
RUN_STAMP  := $(VENV)/.installed-run$(if $(EXTRAS),-$(EXTRAS))
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test lint bench rebuild clean venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): setup.cfg pyproject.toml | $(BIN)/python
	$(PIP) -e '.$(if $(EXTRAS),[$(EXTRAS)])'
	@touch $@

# The test extras hold everything serving needs: this install counts for `make run` too.
$(TEST_STAMP): setup.cfg pyproject.toml | $(BIN)/python
	$(PIP) -e '.[test]'
	@touch $@ $(VENV)/.installed-run

venv: $(TEST_STAMP)

run: $(RUN_STAMP)
	$(BIN)/orderlog serve $(ARGS)

test: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(TEST_STAMP)
	$(BIN)/python -m bench all

rebuild: $(RUN_STAMP)
	$(BIN)/orderlog rebuild $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis test-artifacts
