"""The synthetic benchmark: linear-probe accuracy on the direction-of-change set of four frozen encoders.

    python launch/bench_synthetic.py                                # train both runs with configs/demo.yaml
    python launch/bench_synthetic.py --steps 100 --out runs/bench_short
    python launch/bench_synthetic.py --tvts runs/demo --vtc runs/demo_vtc   # evaluate existing runs only
    python launch/bench_synthetic.py --config configs/demo.yaml data.num_workers=2 --eval batch_size=32 --eval workers=2

Rows (tvts/eval/bench.py): TVTS (sort + VTC), the same recipe at random init, VTC only
(model.sort_weight=0) and a single-frame baseline. Runs not given are trained first through
launch/pretrain.py (subprocess) into <out>/tvts and <out>/vtc with the config, its key=value overrides
and --steps; an existing run directory there is resumed, so a second call only evaluates.
Prints a markdown table and writes <out>/bench_synthetic.json and .md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train(name: str, run_dir: Path, args, extra: list[str]) -> None:
    cmd = [sys.executable, str(ROOT / "launch" / "pretrain.py"), "--config", args.config, *args.overrides, *extra,
           f"train.run_dir={run_dir}", f"name=bench_{name}"]
    if args.steps:
        cmd.append(f"train.steps={args.steps}")
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    log_path = run_dir.parent / f"{name}.log"
    print(f"[{name}] training: {' '.join(cmd[1:])}\n[{name}] log: {log_path}", flush=True)
    t0 = time.perf_counter()
    with open(log_path, "a") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)  # same cwd: data.root resolves alike
    if code:
        tail = "\n".join(log_path.read_text().splitlines()[-20:])
        raise SystemExit(f"[{name}] launch/pretrain.py exited with {code}; last lines of {log_path}:\n{tail}")
    print(f"[{name}] done in {time.perf_counter() - t0:.0f} s", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"), help="pre-training recipe")
    ap.add_argument("--steps", type=int, default=0, help="train.steps of the runs trained here (0: the config's)")
    ap.add_argument("--out", default="runs/bench_synthetic", help="runs, features and results go here")
    ap.add_argument("--tvts", default=None, help="existing TVTS run (or checkpoint / export) directory")
    ap.add_argument("--vtc", default=None, help="existing VTC-only run directory")
    ap.add_argument("--data", default=None, help="downstream set (default: <config data.root>/downstream)")
    ap.add_argument("--eval", action="append", default=[], metavar="KEY=VALUE",
                    help="an evaluation option (tvts/eval/options.py); repeat for several")
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the pre-training config")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from tvts import config
    from tvts.eval.bench import benchmark
    from tvts.eval.options import parse_options

    cfg = config.load(args.config, args.overrides)
    options = parse_options(args.eval)
    out = Path(args.out)
    tvts_run = Path(args.tvts) if args.tvts else out / "tvts"
    vtc_run = Path(args.vtc) if args.vtc else out / "vtc"
    if not args.tvts:
        train("tvts", tvts_run, args, [])
    if not args.vtc:
        train("vtc", vtc_run, args, ["model.sort_weight=0"])
    data = Path(args.data) if args.data else Path(cfg.data.root) / "downstream"
    if not (data / "labels.json").is_file():
        from tvts.data.prepare import ensure_demo_corpus

        ensure_demo_corpus(cfg)  # builds <root>/downstream with the corpus when the config is synthetic
    t0 = time.perf_counter()
    result = benchmark(tvts_run, vtc_run, data, out, options)
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    result.update(command=" ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
                  config=args.config, overrides=args.overrides, steps=args.steps or cfg.train.steps, data=str(data),
                  commit=commit, date=datetime.date.today().isoformat(), eval_seconds=round(time.perf_counter() - t0, 1))
    header = (f"Synthetic benchmark: linear probe on {data} ({result['num_train']} train / {result['num_eval']} eval clips, "
              f"chance {result['chance_top1']:.1f} %); pre-training {result['steps']} steps of {args.config}\n")
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_synthetic.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "bench_synthetic.md").write_text(header + "\n" + result["table"] + "\n")
    print("\n" + header + "\n" + result["table"])
    print(f"\nresults: {out / 'bench_synthetic.json'}, {out / 'bench_synthetic.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
