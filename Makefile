# Two commands do everything on a fresh Linux machine with Python >= 3.10 and make:
#   make demo   create .venv if missing, install edgepath, run the end-to-end demo
#   make test   create .venv if missing, install edgepath with test extras, run the whole suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU machines: torch 2.14.1 and torchvision 0.29.1 import together (timm needs torchvision);
# on aarch64 the matching CPU pair is torch 2.9.1 / torchvision 0.24.1.
ARCH := $(shell uname -m)
ifeq ($(ARCH),aarch64)
TORCH_PINS ?= torch==2.9.1 torchvision==0.24.1
else
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
endif
EXTRAS ?= test,openvino
DEMO_OUT ?= demo-out
PYTEST_ARGS ?=
# The whole suite runs in ONE pytest process, as a long-lived `edgepath watch` holds torch,
# OpenVINO, ONNX Runtime and OpenSlide together. (It once ran one process per area to dodge a
# SIGSEGV; the cause was OpenVINO's per-Core alternate signal stack, fixed at its root in
# edgepath/runtime/openvino_engine.py:shared_core.) -X faulthandler: a native crash prints the
# Python stack of every thread.

.PHONY: install test demo lint format bench gpu-proof gpu-proof-dry-run wheel clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-$(EXTRAS): $(BIN)/python pyproject.toml setup.py
	$(BIN)/python -m pip install --quiet $(TORCH_PINS)
	$(BIN)/python -m pip install --quiet $(TORCH_PINS) -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed-$(EXTRAS)

test: install
	$(BIN)/python -X faulthandler -m pytest tests $(PYTEST_ARGS)

demo: install
	$(BIN)/edgepath demo -o $(DEMO_OUT)

lint: install
	$(BIN)/ruff check edgepath tests benchmarks research tools
	$(BIN)/ruff format --check edgepath tests benchmarks research tools
	$(BIN)/python tools/check_layers.py

format: install
	$(BIN)/ruff format edgepath tests benchmarks research tools
	$(BIN)/ruff check --fix edgepath tests benchmarks research tools

bench: install
	$(BIN)/python -m pytest benchmarks --benchmark-only --benchmark-columns=median,iqr,ops

# GPU proof (docs/gpu-proof.md): on a CUDA machine, no install step (the project runs from the
# tree; carried wheels in .whl/ are installed by the script); the dry run is CPU-only and tiny.
GPU_PROOF_OUT ?= $(if $(OUT),$(OUT),gpu-proof-out)

gpu-proof:
	PY=$(PYTHON) bash benchmarks/gpu_proof.sh $(GPU_PROOF_OUT)

gpu-proof-dry-run: install
	PY=$(BIN)/python bash benchmarks/gpu_proof.sh --dry-run $(GPU_PROOF_OUT)

wheel: install
	$(BIN)/python -m build --wheel --outdir dist .

clean:
	rm -rf build dist *.egg-info .pytest_cache
