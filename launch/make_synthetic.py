"""Write the synthetic narrated corpus (and optionally the labelled downstream set).

    python launch/make_synthetic.py --out data/demo --videos 300 --downstream-train 400 --downstream-val 160

Layout: ``<out>/videos/{<id>.mp4, <id>.vtt, manifest.jsonl}`` and
``<out>/downstream/{videos/<id>.webm, train.txt, val.txt, labels.json}``; see tvts/data/synthetic/ (corpus.py).
"""
from __future__ import annotations

import argparse
import sys
import time

from tvts.data import synthetic
from tvts.errors import cli


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--videos", type=int, required=True, help="narrated videos in the pre-training corpus")
    p.add_argument("--downstream-train", type=int, default=0, help="labelled train clips (0: no downstream set)")
    p.add_argument("--downstream-val", type=int, default=0, help="labelled val clips")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=64, help="canvas side, pixels")
    p.add_argument("--fps", type=int, default=8)
    p.add_argument("--events", type=int, default=4, help="events per video (= windows K of the demo)")
    p.add_argument("--event-s", type=float, default=4.0, help="seconds per event window")
    p.add_argument("--gap-s", type=float, default=1.0, help="seconds of stillness between events")
    p.add_argument("--noise", type=float, default=0.2, help="fraction of narration content words replaced")
    p.add_argument("--workers", type=int, default=1, help="processes")
    args = p.parse_args(argv)

    t = time.perf_counter()
    videos = synthetic.make_corpus(args.out, args.videos, seed=args.seed, size=args.size, fps=args.fps,
                                   events=args.events, event_s=args.event_s, gap_s=args.gap_s, noise=args.noise,
                                   workers=args.workers)
    corpus_s = time.perf_counter() - t
    summary = f"{args.videos} videos in {corpus_s:.1f} s ({args.videos / max(corpus_s, 1e-9):.1f}/s) -> {videos}"
    if args.downstream_train or args.downstream_val:
        t = time.perf_counter()
        down = synthetic.make_downstream(args.out, args.downstream_train, args.downstream_val, seed=args.seed,
                                         size=args.size, fps=args.fps, workers=args.workers)
        summary += (f"; {args.downstream_train}+{args.downstream_val} downstream clips "
                    f"in {time.perf_counter() - t:.1f} s -> {down}")
    print(summary)


if __name__ == "__main__":
    sys.exit(cli(main))
