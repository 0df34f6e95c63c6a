# The README's two commands. Both do all set-up on a fresh machine first.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup test lint

setup:
	bash scripts/setup.sh

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q test

lint: setup
	$(PY) -m ruff check .
