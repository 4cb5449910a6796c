# The two README commands are `make book` and `make test`; both call `make setup` first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= offline

.PHONY: setup test lint bench book notebooks clean

setup: $(STAMP)

# Idempotent: reinstalls only when the pins in pyproject.toml change.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: setup
	$(VENV)/bin/ruff check fdcam tests

test: setup lint
	$(VENV)/bin/pytest -q

bench: setup
	$(PY) -m fdcam.bench

clean:
	rm -rf _build .pytest_cache .ruff_cache
