"""Throughput profile of a config: per-step time split, clips/s, visible tokens/s, TFLOP/s, MFU, peak memory.

    python launch/profile.py --config configs/demo.yaml --reference          # + the official way, as a ratio
    python launch/profile.py --config C --sweep --strategies single fsdp --micro-batches 16 32
    python launch/profile.py --config C --max-batch                          # largest micro-batch that fits
    python launch/profile.py --config C --project                            # GPU projection (not a measurement)
    torchrun --nproc_per_node 8 launch/profile.py --config C --strategy fsdp

Warm-up, then --steps timed steps on synthetic tensors (no decoding) and with the real loader. Writes
profile.json, profile.md and profile.png under --out. How to read it: docs/profiling.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __name__ == "profile":
    # Every launcher in launch/ has this directory first on sys.path, so `import cProfile` (torch._dynamo,
    # transformers) finds this file as the standard library's `profile`: hand the real one over instead.
    import importlib.util
    import sysconfig

    _spec = importlib.util.spec_from_file_location("profile", Path(sysconfig.get_paths()["stdlib"]) / "profile.py")
    _stdlib = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_stdlib)
    sys.modules["profile"] = _stdlib
    globals().update({k: v for k, v in vars(_stdlib).items() if not k.startswith("__")})

from tvts.errors import cli  # noqa: E402 (after the stdlib hand-over above)

ROOT = Path(__file__).resolve().parents[1]
ATTENTION = ["auto", "triton", "flash_attn", "xformers", "sdpa", "math"]
STRATEGY = ["single", "ddp", "fsdp", "zero1", "zero2", "zero3"]


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    p.add_argument("--strategy", choices=STRATEGY)
    p.add_argument("--attention", choices=ATTENTION)
    p.add_argument("--micro-batch", type=int)
    p.add_argument("--steps", type=int, default=10, help="timed steps per setup and batch source")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--reference", action="store_true", help="also run the model the official way, side by side")
    p.add_argument("--no-loader", action="store_true", help="synthetic batches only")
    p.add_argument("--sweep", action="store_true", help="grid over the lists below; names the fastest that fits")
    p.add_argument("--strategies", nargs="+", choices=STRATEGY)
    p.add_argument("--attentions", nargs="+", choices=ATTENTION)
    p.add_argument("--micro-batches", nargs="+", type=int)
    p.add_argument("--checkpointing", nargs="+", choices=["off", "on"], default=["off", "on"])
    p.add_argument("--max-batch", action="store_true", help="largest micro-batch that fits (GPU: search; CPU: model)")
    p.add_argument("--project", action="store_true", help="print the GPU projection for the config and exit")
    p.add_argument("--out", default=None, help="output directory (default runs/profile/<config name>)")
    p.add_argument("overrides", nargs="*", help="dotted key=value config overrides")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    from tvts import config
    from tvts.engine import distributed

    extra = [f"train.{k}={v}" for k, v in (("strategy", args.strategy), ("attention", args.attention),
                                           ("micro_batch", args.micro_batch)) if v is not None]
    cfg = config.load(args.config, args.overrides + extra)
    if args.project:
        try:
            from tvts.perf.projection import format_projection, project
        except ImportError:
            print("--project: tvts.perf.projection is not available in this checkout", file=sys.stderr)
            return 2
        print(format_projection(project(cfg)))
        return 0
    import torch

    from tvts.perf import common as bench
    from tvts.data.prepare import ensure_demo_corpus
    from tvts.perf import profiler

    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    info = distributed.init()
    try:
        if not (args.sweep or args.no_loader):
            ensure_demo_corpus(cfg, info)  # the synthetic corpus of data.synthetic configs, built once
        paths = ["synthetic"] + ([] if args.no_loader or not cfg.data.train else ["loader"])
        if args.sweep:
            grid = profiler.sweep_grid(cfg, args.strategies or [cfg.train.strategy], args.attentions or [cfg.train.attention],
                                       args.micro_batches or [cfg.train.micro_batch], [c == "on" for c in args.checkpointing])
            report = profiler.sweep(cfg, info, grid, args.steps, args.warmup, args.config)
        else:
            setups = [profiler.engine_setup(cfg)] + ([profiler.official_setup(cfg, info.device)] if args.reference else [])
            report = profiler.profile(cfg, info, setups, paths, args.steps, args.warmup, args.config)
        if args.max_batch:
            report["largest_micro_batch"] = profiler.largest_micro_batch(cfg, info, profiler.engine_setup(cfg))
    finally:
        distributed.shutdown()
    if not info.is_main:
        return 0
    profiler.validate_report(report)
    out = Path(args.out or f"runs/profile/{cfg.name}")
    bench.write_json(out / "profile.json", report)
    text = profiler.markdown(report)
    (out / "profile.md").write_text(text + "\n")
    profiler.plot(report, out / "profile.png")
    print(text)
    print(f"wrote {out / 'profile.json'}, {out / 'profile.md'}, {out / 'profile.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(cli(main))
