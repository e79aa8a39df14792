"""Performance: what the project measures about itself, as one part.

  common         timing (CUDA events / wall clock), peak memory, markdown tables, environment, JSON
  profiler       throughput of the engine beside the official way: clips/s, MFU, data wait, memory
  projection     from measured steps on one box to a cluster: step time, MFU and bytes per rank
  scaling        scaling-law grids (size x budget) and their fits
  bench_kernels  attention backends on the models' shapes
  bench_data     decode and loader throughput of the input pipeline
  gpucheck       the one prepared command that proves the GPU path (launch/gpu_check.py)

This package sits above the engine: it may build models, loaders and strategies and drive training steps.
The memory model that the trainer uses to refuse a run up front (``tvts.engine.memory``) stays in the
engine, because the engine needs it; this package reads it.
"""
