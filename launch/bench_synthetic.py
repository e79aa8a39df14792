"""The synthetic benchmark: linear-probe accuracy on the direction-of-change set of four frozen encoders.

    python launch/bench_synthetic.py                                # seeds 0 1 2 x (TVTS, VTC only), configs/demo.yaml
    python launch/bench_synthetic.py --seeds 0 --out runs/bench_one_seed
    python launch/bench_synthetic.py --steps 100 --out runs/bench_short
    python launch/bench_synthetic.py --tvts runs/demo --vtc runs/demo_vtc   # evaluate existing runs only
    python launch/bench_synthetic.py --runs runs/bench_synthetic --data data/demo_order/downstream --out runs/bench_order
    python launch/bench_synthetic.py --config configs/demo.yaml data.num_workers=2 --eval batch_size=32 --eval workers=2

Rows (tvts/eval/bench.py): TVTS (sort + VTC), the same recipe at random init, VTC only
(model.sort_weight=0) and a single-frame baseline. For every seed S the two runs are trained first
through launch/pretrain.py (subprocesses) into <out>/seed<S>/tvts and <out>/seed<S>/vtc with the config,
its key=value overrides, seed=S and --steps; an existing run there is resumed (a finished one is left as
it is), so a second call only evaluates. The downstream set and the held-out corpus are built once, before
any training, with the config's seed (a seed=... override sets that one): every seed is evaluated on the
same clips. --jobs trainings run at once, each with train.threads = cores / jobs unless the recipe sets it.
Runs given with --tvts / --vtc (one seed: theirs) or --runs (an earlier --out) are never trained.
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
from pathlib import Path

from tvts.errors import UserError, cli

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"), help="pre-training recipe")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="pre-training seeds (default: 0 1 2)")
    ap.add_argument("--jobs", type=int, default=2, help="trainings at once (default 2)")
    ap.add_argument("--steps", type=int, default=0, help="train.steps of the runs trained here (0: the config's)")
    ap.add_argument("--out", default="runs/bench_synthetic", help="runs, features and results go here")
    ap.add_argument("--runs", default=None, help="evaluate the finished seed<S>/{tvts,vtc} runs of this earlier --out")
    ap.add_argument("--tvts", default=None, help="an existing TVTS run (or checkpoint / export) directory: one seed")
    ap.add_argument("--vtc", default=None, help="an existing VTC-only run directory: one seed")
    ap.add_argument("--data", default=None, help="downstream set (default: <config data.root>/downstream)")
    ap.add_argument("--eval", action="append", default=[], metavar="KEY=VALUE",
                    help="an evaluation option (tvts/eval/options.py); repeat for several")
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the pre-training config")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from tvts import config
    from tvts.eval.bench import benchmark, pretrain_jobs, run_jobs, summarize
    from tvts.eval.options import parse_options

    cfg = config.load(args.config, args.overrides)
    options = parse_options(args.eval)
    out = Path(args.out)
    given = args.tvts or args.vtc
    if args.jobs < 1 or (given and args.seeds and len(args.seeds) > 1) or (given and args.runs):
        raise UserError("--jobs must be >= 1; --tvts/--vtc are one seed's runs: not with several --seeds or --runs")
    if given:  # the seed of the run given: its partner is trained with it, and the tables name it
        recipe = Path(given) / "config.yaml"
        args.seeds = [config.load(recipe).seed if recipe.is_file() else cfg.seed]
    seeds = list(dict.fromkeys(args.seeds or [0, 1, 2]))
    home = Path(args.runs) if args.runs else out
    runs = {s: (Path(args.tvts) if args.tvts else home / f"seed{s}" / "tvts",
                Path(args.vtc) if args.vtc else home / f"seed{s}" / "vtc") for s in seeds}
    data = Path(args.data) if args.data else Path(cfg.data.root) / "downstream"
    # parallel jobs share the cores (a recipe's own train.threads stays as it is)
    threads = 0 if args.jobs == 1 or cfg.train.threads else max(1, len(os.sched_getaffinity(0)) // args.jobs)
    jobs = [] if args.runs else pretrain_jobs(seeds, home, args.config, args.overrides, args.steps, threads,
                                              skip=[k for k, run in (("tvts", args.tvts), ("vtc", args.vtc)) if run])
    missing = [str(run) for pair in runs.values() for run in pair if args.runs and not run.is_dir()]
    if missing:
        raise UserError(f"--runs {args.runs}: no run at {', '.join(missing)}; train them with --out {args.runs}")
    if jobs or not args.data:
        from tvts.data.prepare import ensure_demo_corpus

        ensure_demo_corpus(cfg)  # before any training: every seed (and parallel job) finds the same clips
    if not (data / "labels.json").is_file():
        raise UserError(f"{data}: no labels.json; pass --data a downstream set (tvts.data.synthetic.make_downstream)")
    run_jobs(jobs, args.jobs)

    t0 = time.perf_counter()
    per_seed = {s: benchmark(tvts_run, vtc_run, data, out / f"seed{s}", options) for s, (tvts_run, vtc_run) in runs.items()}
    summary = summarize(per_seed)
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    first = per_seed[seeds[0]]
    steps = sorted({r["run"]["step"] for p in per_seed.values() for r in p["rows"].values() if r["run"].get("step")})
    result = {"summary": summary, "per_seed": {str(s): r for s, r in per_seed.items()},
              "chance_top1": first["chance_top1"], "num_train": first["num_train"], "num_eval": first["num_eval"],
              "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
              "config": args.config, "overrides": args.overrides, "steps": steps, "jobs": args.jobs,
              "train_threads": cfg.train.threads or threads or "torch default", "data": str(data), "commit": commit,
              "date": datetime.date.today().isoformat(), "eval_seconds": round(time.perf_counter() - t0, 1)}
    header = (f"Synthetic benchmark: linear probe on {data} ({result['num_train']} train / {result['num_eval']} eval clips, "
              f"chance {result['chance_top1']:.1f} %); pre-training {'/'.join(map(str, steps)) or '?'} steps of "
              f"{args.config}, seeds {' '.join(map(str, seeds))}\n")
    text = "".join(f"seed {s}:\n\n{r['table']}\n\n" for s, r in per_seed.items())
    text += f"pooled over {len(seeds)} seed(s) (sd: over seeds; each run's 95 % CI is in its seed table):\n\n{summary['table']}\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_synthetic.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "bench_synthetic.md").write_text(header + "\n" + text)
    print("\n" + header + "\n" + text)
    print(f"results: {out / 'bench_synthetic.json'}, {out / 'bench_synthetic.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(cli(main))
