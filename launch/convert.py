"""Convert checkpoints between the official TVTS / TVTSv2, CLIP, OpenCLIP and ImageMAE layouts and ours.

Import a file for initialisation or fine-tuning (our layout out, safetensors or .pt):

    python launch/convert.py --from FORMAT --input FILE --config configs/X.yaml --output FILE [key=value ...]

Export a checkpoint trained here (a file, or a run's checkpoints/step_N directory) to the official layout:

    python launch/convert.py --to {tvts-v1,tvtsv2} --input CKPT --config configs/X.yaml --output FILE.pth

The config decides the target shapes (nothing is allocated: the model is built on the meta device).
Strict: missing keys, unexpected keys and shape differences stop the conversion with their names;
--allow-missing PATTERN (fnmatch, repeatable) relaxes missing keys on purpose. Local files only.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tvts.errors import cli

ROOT = Path(__file__).resolve().parents[1]


def parse(argv):
    from tvts.models.convert import EXPORT_FORMATS, FORMATS, help_table

    epilog = ("formats (--from):\n" + help_table() + "\n\nexport (--to):\n"
              "  tvts-v1      the official v1 training checkpoint ({'state_dict': module.video_model.*, ...})\n"
              "  tvtsv2       the released TVTSv2_*.pth layout (video_model.* + text, no sorter)\n"
              "  python launch/convert.py --to tvtsv2 --input runs/tvtsv2_vit_b16/checkpoints/step_00010000 "
              "--config configs/tvtsv2_vit_b16.yaml --output TVTSv2_ViT_B_16_ours.pth")
    ap = argparse.ArgumentParser(description=__doc__, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    way = ap.add_mutually_exclusive_group(required=True)
    way.add_argument("--from", dest="source", choices=list(FORMATS), help="import a file in this layout")
    way.add_argument("--to", dest="target", choices=list(EXPORT_FORMATS), help="export ours to this official layout")
    ap.add_argument("--input", required=True, help="checkpoint file (or, with --to, a run checkpoint directory)")
    ap.add_argument("--config", required=True, help="YAML recipe of the model the weights are for")
    ap.add_argument("--output", required=True, help="*.safetensors, or *.pt / *.pth ({'state_dict': ...})")
    ap.add_argument("--allow-missing", action="append", default=[], metavar="PATTERN",
                    help="model keys the file may lack, e.g. 'text.*' (repeatable)")
    ap.add_argument("overrides", nargs="*", help="dotted key=value config overrides")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    from tvts import config
    from tvts.models.convert import build_target, convert_file, export_file

    cfg = config.load(args.config, args.overrides)
    model = build_target(cfg)
    if args.source:
        report = convert_file(args.source, args.input, model, args.output, args.allow_missing)
    else:
        report = export_file(args.target, args.input, model, args.output, args.allow_missing)
    print("\n".join(report.lines()))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(cli(main))
