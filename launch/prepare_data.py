"""Re-encode a video corpus into webdataset shards for pre-training (offline, once, resumable).

    python launch/prepare_data.py --source vtt --input downloads/ --out data/yt/shards --workers 8
    python launch/prepare_data.py --source webvid --input webvid_train.tsv --video-root webvid/ --out data/webvid

Sources (--input, and --video-root where relative video paths point):
  vtt     a folder of videos (.mp4 .mkv .webm .mov) with subtitles beside them, as yt-dlp writes them:
          name.mp4 + name.vtt | name.en.vtt | name.srt
  merlot  YT-Temporal: an index CSV/TSV with a Name column (subset_87/data/<id>.mp4); videos at
          <video-root>/<Name>, annotations at <video-root>/<subset>/annotations/<id>.json.
          Or a folder of <id>.mp4 + <id>.json (MERLOT annotation: subtitles, denoised, info.duration)
  howto   a HowTo100M caption JSON {video_id: {start, end, text}}; videos <video_id>.* under --video-root
  webvid  a CSV/TSV with a caption column and a path column (or no header: caption, path), paths
          relative to --video-root, extension optional -> caption samples
  jsonl   lines {"path": ..., "caption": ...} -> caption samples

Transcript sources give one sample per window set (K windows from --config's sample/data sections);
caption sources one sample per video. Output: OUT/shard-NNNNNN.tar + OUT/index.json (tvts/data/shards.py).
A rerun resumes: finished shards are kept. Inputs that cannot be used are skipped and counted by reason.
"""
from __future__ import annotations

import argparse
import logging
import sys

from tvts.config import Config, load
from tvts.data import ingest, sources
from tvts.errors import cli


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, choices=ingest.SOURCES)
    p.add_argument("--input", required=True, help="input folder or index/caption file (see the sources below)")
    p.add_argument("--out", required=True, help="output shard-set folder, or a URL (s3://bucket/set, gs://...): "
                                                "built in --staging, then uploaded")
    p.add_argument("--staging", help="with a URL --out: the local folder it is built in (default "
                                     "~/.cache/tvts/staging/<hash of --out>); keep it to resume")
    p.add_argument("--video-root", help="folder that relative video paths in --input point into")
    p.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    p.add_argument("--config", help="YAML config: K = sample.num_windows; data.window_min_s/window_max_s/gap_s/min_words; seed")
    p.add_argument("--num-windows", type=int, help="K (default: from --config, else 4)")
    p.add_argument("--window-min-s", type=float)
    p.add_argument("--window-max-s", type=float)
    p.add_argument("--gap-s", type=float)
    p.add_argument("--min-words", type=int, help="windows with fewer words drop their window set")
    p.add_argument("--short-side", type=int, default=256, help="pixels; never upscaled (default 256)")
    p.add_argument("--fps", type=float, default=0.0, help="output fps (default: the source's, capped at 30)")
    p.add_argument("--codec", choices=sorted(ingest.CODECS), default="h264")
    p.add_argument("--crf", type=int, default=23)
    p.add_argument("--max-clip-s", type=float, default=0.0, help="caption sources: keep at most this many seconds")
    p.add_argument("--samples-per-shard", type=int, default=1000,
                   help="target; inputs are grouped by a fixed count estimated from it (default 1000)")
    p.add_argument("--inputs-per-shard", type=int, default=0, help="fix the input videos per shard instead")
    p.add_argument("--seed", type=int, help="window layout seed (default: from --config, else 0)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    cfg = load(args.config) if args.config else Config()
    settings = ingest.IngestSettings.from_config(
        cfg, args.source, num_windows=args.num_windows, window_min_s=args.window_min_s,
        window_max_s=args.window_max_s, gap_s=args.gap_s, min_words=args.min_words, seed=args.seed,
        short_side=args.short_side, fps=args.fps, codec=args.codec, crf=args.crf, max_clip_s=args.max_clip_s,
        samples_per_shard=args.samples_per_shard, inputs_per_shard=args.inputs_per_shard)
    out = args.out if sources.is_local(args.out) else args.staging or staging_dir(args.out)
    if out != args.out:
        sources.filesystem(args.out)  # an unknown protocol or a missing client package, before any work
        print(f"building in {out}, then uploading to {args.out}", flush=True)
    result = ingest.ingest_source(args.source, args.input, out, settings, video_root=args.video_root,
                                  workers=args.workers, progress=True)
    print(result.summary())
    if result.samples == 0:
        print(f"error: no input of {args.input} gave a sample (see the skip reasons above)", file=sys.stderr)
        return 1
    if out != args.out:
        sent = sources.upload_shard_set(out, args.out)
        print(f"uploaded {sent} files to {args.out}", flush=True)
    return 0


def staging_dir(url: str) -> str:
    import hashlib
    from pathlib import Path

    return str(Path.home() / ".cache" / "tvts" / "staging" / hashlib.sha1(url.encode()).hexdigest()[:12])


if __name__ == "__main__":
    sys.exit(cli(main))
