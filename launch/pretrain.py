"""Pre-train a TVTS / TVTSv2 video encoder.

    deepspeed launch/pretrain.py [--config configs/X.yaml] [key=value ...]
    torchrun --nproc_per_node N launch/pretrain.py --config ... train.strategy=fsdp
    python launch/pretrain.py                      # the CPU demo (configs/demo.yaml)

With no arguments it runs configs/demo.yaml: builds the synthetic narrated corpus if it is missing,
trains a tiny TVTS on CPU for a few minutes, and prints where the checkpoints and logs are.
Re-running the same command resumes from the run directory's latest checkpoint.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tvts.errors import cli

ROOT = Path(__file__).resolve().parents[1]


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"), help="YAML recipe (default: the CPU demo)")
    ap.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)  # set by deepspeed
    ap.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.steps=100")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from tvts import config

    cfg = config.load(args.config, args.overrides)
    from tvts.data.prepare import ensure_demo_corpus
    from tvts.engine.run import run_training
    from tvts.engine.trainer import Trainer

    def train(info) -> None:
        ensure_demo_corpus(cfg, info)
        Trainer(cfg, info).train()

    return run_training(train)


if __name__ == "__main__":
    sys.exit(cli(main))
