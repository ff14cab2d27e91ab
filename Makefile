# The two commands of the README:
#   make demo   set up, then run the end-to-end demo
#   make test   set up, then run the test-suite (what CI runs)
# Both start with `make setup`: .venv with torch and the package (README, "Installing").
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
# Offline copies of the demo corpus are used when present (see README).
SHARED ?= ../shared/datasets

# Which build of torch 2.13.0 to install:
#   cpu   PyTorch's CPU-only wheel from its own index (about 190 MB, no CUDA)
#   cuda  the Linux wheel on PyPI, which brings CUDA (about 2.7 GB with 15 nvidia-* packages)
#   auto  cuda where nvidia-smi is found, else cpu
# Before either, a torch 2.13.0 wheel in pip's own local wheel folders (pip's find-links
# setting) is taken as it is, without asking any index.
TORCH ?= auto
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
ifeq ($(TORCH),auto)
TORCH_BUILD := $(if $(shell command -v nvidia-smi 2>/dev/null),cuda,cpu)
else
TORCH_BUILD := $(TORCH)
endif
ifeq ($(filter $(TORCH_BUILD),cpu cuda),)
$(error TORCH must be cpu, cuda or auto, not '$(TORCH)')
endif
TORCH_INDEX_cpu := --index-url $(TORCH_CPU_INDEX)
TORCH_INDEX_cuda :=

$(VENV)/.installed: pyproject.toml setup.py constraints.txt
	@echo "setup 1/3: a virtual environment in $(VENV) with a recent pip (seconds)"
	$(PY) -m venv $(VENV)
	@# pip before 23.3 fails to resolve lxml[html-clean] asked for twice (trafilatura's jusText and newspaper4k)
	$(PIP) install --upgrade "pip>=24" || echo "could not upgrade pip; an older pip may fail to resolve the webtext extra"
	@echo "setup 2/3: torch 2.13.0, $(TORCH_BUILD) build (a local wheel if pip has one; else a download of about $(if $(filter cpu,$(TORCH_BUILD)),190 MB,2.7 GB): minutes)"
	@$(MAKE) --no-print-directory torch PIP="$(PIP)" TORCH="$(TORCH_BUILD)"
	@echo "setup 3/3: the package (gpt2-lm, editable) and what the tests need: about 160 packages, 1.4 GB: the test references and clients (2-5 minutes)"
	@$(PIP) uninstall -y -q gpt2 2>/dev/null || true  # this package's distribution name before it became gpt2-lm
	$(PIP) install --progress-bar on -c constraints.txt -e ".[dev]"
	@touch $@
	@echo "setup done: the gpt2 command is $(BIN)/gpt2 (or run 'source $(BIN)/activate' to call it as gpt2)"

# torch alone, into the environment of $(PIP). A local wheel is installed without its dependencies (a
# wheel folder may hold torch alone): the next step brings them from the ordinary index.
torch:
	$(PIP) install -c constraints.txt --no-index --no-deps torch 2>/dev/null \
		|| $(PIP) install --progress-bar on -c constraints.txt $(TORCH_INDEX_$(TORCH_BUILD)) torch

.PHONY: setup torch demo test test-slow
setup: $(VENV)/.installed

demo: setup
	$(BIN)/gpt2 demo $(if $(wildcard $(SHARED)/tinyshakespeare/input.txt),--corpus $(SHARED)/tinyshakespeare/input.txt)

test: setup
	$(BIN)/python -m pytest

test-slow: setup
	$(BIN)/python -m pytest -m slow
