"""Export a checkpoint of any strategy as consolidated fp32 safetensors.

    python launch/export.py runs/demo [--out runs/demo/export]        # the run's latest checkpoint
    python launch/export.py runs/demo/checkpoints/step_00000600 --out exported/

Writes video_encoder.safetensors (what every downstream protocol uses), text_encoder.safetensors,
heads.safetensors (sorter + VTC projections) and the run's config.yaml. Runs in one process on CPU,
whatever strategy and world size wrote the checkpoint. For the official layouts use launch/convert.py --to.
"""
from __future__ import annotations

import argparse
import sys

from tvts.errors import cli


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="a run directory or one of its checkpoints/step_* directories")
    ap.add_argument("--out", default=None, help="output directory (default: <checkpoint>/export)")
    args = ap.parse_args(argv)
    from tvts.engine.export import export_safetensors, resolve_checkpoint

    ckpt = resolve_checkpoint(args.checkpoint)
    written = export_safetensors(ckpt, args.out or ckpt / "export")
    for part, path in written.items():
        print(f"{part:<6} {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(cli(main))
