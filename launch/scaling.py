"""Scaling-law experiments: registry sizes x training budgets, then L(N, D) = E + A/N^alpha + B/D^beta.

    python launch/scaling.py --config configs/demo.yaml                       # CPU smoke grid, run here
    python launch/scaling.py --config C --sizes small base large --budgets 1e6 4e6 1.6e7 --emit slurm
    sbatch runs/scaling/<name>/scaling.sbatch                                 # one array task per run
    python launch/scaling.py --config C --sizes ... --budgets ... --collect   # fit + report when all are done

Writes under --out: report.md, scaling.json, loss_vs_compute.png (and commands.txt / scaling.sbatch with
--emit). Budgets are clips seen. How to run a sweep on a cluster: docs/profiling.md.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path

from tvts.errors import cli

ROOT = Path(__file__).resolve().parents[1]


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    p.add_argument("--sizes", nargs="+", default=["atto", "nano", "micro"], help="registry sizes")
    p.add_argument("--budgets", nargs="+", type=float, default=[128, 384], help="training budgets, clips seen")
    p.add_argument("--world-size", type=int, default=1, help="ranks per run (sets the global batch)")
    p.add_argument("--emit", choices=["slurm", "list"], help="write the commands for a cluster instead of running")
    p.add_argument("--launcher", default="python", help="with --emit: what runs launch/pretrain.py")
    p.add_argument("--collect", action="store_true", help="only collect finished runs, fit and report")
    p.add_argument("--predict-flops", nargs="+", type=float, default=None,
                   help="FLOP budgets for the compute-optimal size (default: 10x and 1000x the largest run)")
    p.add_argument("--bootstrap", type=int, default=200)
    p.add_argument("--out", default=None, help="default runs/scaling/<config name>")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides for every run")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    from tvts import config
    from tvts.perf import common as bench
    from tvts.perf import scaling

    start = time.perf_counter()
    name = config.load(args.config, args.overrides).name
    out = Path(args.out or f"runs/scaling/{name}")
    runs = scaling.plan(args.config, args.sizes, [int(b) for b in args.budgets], out, args.overrides, args.world_size)
    if args.emit:
        for path in scaling.write_cluster_files(runs, args.config, out, args.launcher):
            print(f"wrote {path}")
        print(f"{len(runs)} runs; when they are done, run this command again with --collect in place of --emit {args.emit}")
        return 0
    if args.collect:
        runs = [scaling.collect(r) for r in runs]
    else:
        scaling.run_local(runs, args.config)
    fit = scaling.fit_law([r.params for r in runs], [r.clips for r in runs], [r.val_loss for r in runs], args.bootstrap)
    largest = max(r.compute for r in runs)
    budgets = args.predict_flops or [10 * largest, 1000 * largest]
    predictions = scaling.predictions(runs, fit, budgets, args.config, args.overrides)
    scaling.plot(runs, fit, out / "loss_vs_compute.png")
    env = bench.environment(__import__("torch").device("cpu"))
    notes = [f"Config `{' '.join([args.config, *args.overrides])}`; {len(args.sizes)} sizes x {len(args.budgets)} budgets; "
             f"{env['date']}, commit {env['commit']}, {env['device']}; wall time {time.perf_counter() - start:.0f} s.",
             "Compute = training FLOPs per clip x clips seen (1 multiply-add = 2 FLOPs, masked patches excluded). "
             "A grid this small only exercises the pipeline: its exponents are not a finding."]
    text = scaling.markdown(runs, fit, predictions, "loss_vs_compute.png", notes)
    (out / "report.md").write_text(text)
    bench.write_json(out / "scaling.json", {"environment": env, "runs": [asdict(r) for r in runs], "fit": asdict(fit),
                                            "predictions": predictions})
    print(text)
    print(f"wrote {out / 'report.md'}, {out / 'scaling.json'}, {out / 'loss_vs_compute.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(cli(main))
