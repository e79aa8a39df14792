"""Evaluate a frozen video encoder with one of the out-of-the-box protocols (docs/evaluation.md).

    python launch/evaluate.py --task linear --checkpoint runs/demo --data data/demo/downstream
    python launch/evaluate.py --task retrieval --checkpoint exported/ --data meta_data/msrvtt dsl=true
    python launch/evaluate.py --task v2v --checkpoint random:configs/demo.yaml --data data/demo/downstream

--task: features | linear | retrieval | recognition | mc | v2v.
--checkpoint: a run directory (its latest checkpoint), a checkpoints/step_* directory, an exported
directory (launch/export.py), a weights file with --config (e.g. an official TVTSv2 checkpoint
converted by launch/convert.py --from tvtsv2), or random:<config.yaml | run dir> for the step-0 init.
--data: the dataset's metadata directory (lists, label files; videos under <data>/videos by default).
key=value options (tvts/eval/options.py), e.g. frames=12 batch_size=32 workers=4 single_frame=true
template="a person {}" dsl=true eval_list=val.txt video_root=/data/ssv2/videos limit=100.

Writes <out>/<task>.json and <out>/<task>.md (default out: <checkpoint>/eval) and prints the table.
Features are cached under <out>/features/ and a re-run skips the chunks already written.
"""
from __future__ import annotations

import argparse
import logging
import sys

from tvts.errors import cli


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", required=True, choices=["features", "linear", "retrieval", "recognition", "mc", "v2v"])
    ap.add_argument("--checkpoint", required=True, help="run dir, step_* dir, export dir, weights file or random:<config>")
    ap.add_argument("--config", default=None, help="the recipe of a weights file (e.g. launch/convert.py output)")
    ap.add_argument("--data", required=True, help="dataset metadata directory")
    ap.add_argument("--out", default=None, help="output directory (default: <checkpoint>/eval)")
    ap.add_argument("options", nargs="*", help="key=value evaluation options")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from tvts.eval.options import parse_options
    from tvts.eval.report import markdown
    from tvts.eval.tasks import default_out, evaluate

    options = parse_options(args.options)
    out = args.out or default_out(args.checkpoint)
    result = evaluate(args.task, args.checkpoint, args.data, out, options, config=args.config)
    print(markdown(result))
    print(f"results: {out}/{args.task}.json, {out}/{args.task}.md")
    return 0


if __name__ == "__main__":
    sys.exit(cli(main))
