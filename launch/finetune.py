"""Fine-tune a pre-trained video encoder for classification, then test it with multi-view testing.

    python launch/finetune.py                                   # the CPU demo: runs/demo on data/demo/downstream
    python launch/finetune.py finetune.init=random:runs/demo name=finetune_demo_random   # the random-init baseline
    torchrun --nproc_per_node 8 launch/finetune.py --config configs/finetune_v1_vit_b16_ssv2.yaml \\
        finetune.init=runs/tvts_v1_b16 finetune.data=/data/ssv2 train.strategy=fsdp

The recipe (tvts/eval/finetune.py, docs/evaluation.md "Fine-tuning") has name, seed, optim, train and a
finetune section; key=value overrides use the same dotted paths (seed=1, train.steps=100, finetune.mixup=0).
finetune.init: a run directory, a checkpoints/step_* directory, an exported directory, a weights file with
finetune.init_config (launch/convert.py output), or random:<config.yaml | run dir>. The encoder's frames, crop
and normalisation come from its own config.

Writes runs/<name>/ (metrics.jsonl, checkpoints, finetune.json / .md) and prints the top-1 / top-5 table.
Re-running the same command resumes from the latest checkpoint; a finished run prints its result again.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tvts.errors import cli

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "finetune_demo.yaml"),
                    help="fine-tuning recipe (default: the CPU demo)")
    ap.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. seed=1 finetune.init=runs/demo")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from tvts.engine.run import run_training
    from tvts.eval.finetune import finetune, load_recipe

    recipe = load_recipe(args.config, args.overrides)
    return run_training(lambda info: finetune(recipe, info))


if __name__ == "__main__":
    sys.exit(cli(main))
