"""The synthetic benchmark: linear-probe accuracy on the direction-of-change set of four frozen encoders.

    python launch/bench_synthetic.py                                # 3 seeds x (TVTS, VTC only), configs/demo.yaml
    python launch/bench_synthetic.py --seeds 0 --out runs/bench_one_seed
    python launch/bench_synthetic.py --steps 100 --out runs/bench_short
    python launch/bench_synthetic.py --tvts runs/demo --vtc runs/demo_vtc   # evaluate existing runs only
    python launch/bench_synthetic.py --runs runs/bench_synthetic --data data/demo_order/downstream --out runs/bench_order
    python launch/bench_synthetic.py --config configs/demo.yaml data.num_workers=2 --eval batch_size=32 --eval workers=2

Rows (tvts/eval/bench.py): TVTS (sort + VTC), the same recipe at random init, VTC only
(model.sort_weight=0) and a single-frame baseline. For every seed, the runs not given are trained first
through launch/pretrain.py (subprocess) into <out>/seed<S>/tvts and <out>/seed<S>/vtc with the config, its
key=value overrides, seed=S and --steps; an existing run directory there is resumed, so a second call only
evaluates. The downstream set and the held-out corpus are built once, before any training, with the
config's own seed: every seed is evaluated on the same clips. --jobs runs that many trainings at once
(each with train.threads = cores / jobs unless the overrides set it).
Prints the per-seed tables and the pooled one; writes <out>/bench_synthetic.json and .md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train(name: str, run_dir: Path, extra: list[str], args) -> None:
    threads = [] if args.jobs <= 1 or any(o.startswith("train.threads=") for o in args.overrides) else \
        [f"train.threads={max(1, (os.cpu_count() or 1) // args.jobs)}"]
    cmd = [sys.executable, str(ROOT / "launch" / "pretrain.py"), "--config", args.config, *args.overrides, *threads,
           *extra, f"train.run_dir={run_dir}", f"name=bench_{name}"]
    if args.steps:
        cmd.append(f"train.steps={args.steps}")
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    log_path = run_dir.parent / f"{run_dir.name}.log"
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
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="pre-training seeds (default: 0 1 2)")
    ap.add_argument("--jobs", type=int, default=2, help="trainings at once (default 2)")
    ap.add_argument("--steps", type=int, default=0, help="train.steps of the runs trained here (0: the config's)")
    ap.add_argument("--out", default="runs/bench_synthetic", help="runs, features and results go here")
    ap.add_argument("--runs", default=None, help="where the seed<S>/tvts and seed<S>/vtc runs live (default: --out), "
                    "e.g. those of an earlier --out, to evaluate them on another --data")
    ap.add_argument("--tvts", default=None, help="an existing TVTS run (or checkpoint / export) directory: one seed")
    ap.add_argument("--vtc", default=None, help="an existing VTC-only run directory: one seed")
    ap.add_argument("--data", default=None, help="downstream set (default: <config data.root>/downstream)")
    ap.add_argument("--eval", action="append", default=[], metavar="KEY=VALUE",
                    help="an evaluation option (tvts/eval/options.py); repeat for several")
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the pre-training config")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from tvts import config
    from tvts.eval.bench import benchmark, summarize
    from tvts.eval.options import parse_options

    cfg = config.load(args.config, args.overrides)
    options = parse_options(args.eval)
    out = Path(args.out)
    if (args.tvts or args.vtc) and len(args.seeds) > 1:
        args.seeds = [cfg.seed]  # given runs are one draw
    data = Path(args.data) if args.data else Path(cfg.data.root) / "downstream"
    home = Path(args.runs) if args.runs else out
    runs = {s: (Path(args.tvts) if args.tvts else home / f"seed{s}" / "tvts",
                Path(args.vtc) if args.vtc else home / f"seed{s}" / "vtc") for s in args.seeds}
    jobs = [(f"{kind}_seed{s}", run, [f"seed={s}", *extra]) for s, pair in runs.items()
            for kind, run, extra, given in (("tvts", pair[0], [], args.tvts), ("vtc", pair[1], ["model.sort_weight=0"], args.vtc))
            if not given]
    if jobs or not args.data:
        from tvts.data.prepare import ensure_demo_corpus

        ensure_demo_corpus(cfg)  # before any training: every seed (and parallel job) finds the same clips
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        for done in [pool.submit(train, *job, args) for job in jobs]:
            done.result()
    if not (data / "labels.json").is_file():
        raise SystemExit(f"{data}: no labels.json; pass --data a downstream set (tvts/data/synthetic.py make_downstream)")

    t0 = time.perf_counter()
    per_seed = {s: benchmark(tvts_run, vtc_run, data, out / f"seed{s}", options) for s, (tvts_run, vtc_run) in runs.items()}
    summary = summarize(per_seed)
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    first = per_seed[args.seeds[0]]
    result = {"summary": summary, "per_seed": {str(s): r for s, r in per_seed.items()},
              "chance_top1": first["chance_top1"], "num_train": first["num_train"], "num_eval": first["num_eval"],
              "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
              "config": args.config, "overrides": args.overrides, "steps": args.steps or cfg.train.steps,
              "data": str(data), "commit": commit, "date": datetime.date.today().isoformat(),
              "eval_seconds": round(time.perf_counter() - t0, 1)}
    header = (f"Synthetic benchmark: linear probe on {data} ({result['num_train']} train / {result['num_eval']} eval clips, "
              f"chance {result['chance_top1']:.1f} %); pre-training {result['steps']} steps of {args.config}, "
              f"seeds {' '.join(map(str, args.seeds))}\n")
    text = "".join(f"seed {s}:\n\n{r['table']}\n\n" for s, r in per_seed.items())
    text += f"pooled over {len(args.seeds)} seed(s) (sd: over seeds; each run's 95 % CI is in its seed table):\n\n{summary['table']}\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_synthetic.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "bench_synthetic.md").write_text(header + "\n" + text)
    print("\n" + header + "\n" + text)
    print(f"results: {out / 'bench_synthetic.json'}, {out / 'bench_synthetic.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
