"""tvts-engine: pre-train video encoders that understand time (TVTS / TVTSv2).

Floors, top to bottom; each imports only from floors below it (docs/architecture.md, .importlinter):
perf | eval -> engine -> data | models -> kernels -> config | runtime -> errors.
"""
__version__ = "0.1.0"
