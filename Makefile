# The two commands of the README:
#   make demo   set up, then run the end-to-end demo
#   make test   set up, then run the test-suite (what CI runs)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Offline copies of the demo corpus are used when present (see README).
SHARED ?= ../shared/datasets

$(VENV)/.installed: pyproject.toml setup.py constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	touch $@

.PHONY: setup demo test test-slow bench
setup: $(VENV)/.installed

demo: setup
	$(BIN)/gpt2 demo $(if $(wildcard $(SHARED)/tinyshakespeare/input.txt),--corpus $(SHARED)/tinyshakespeare/input.txt)

test: setup
	$(BIN)/python -m pytest

test-slow: setup
	$(BIN)/python -m pytest -m slow
