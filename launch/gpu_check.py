"""GPU first contact: every check the GPU machine is for, in one command with a hard time budget.

    python3 launch/gpu_check.py --out docs/gpu/2027-01-15             # on the GPU machine (docs/profiling.md)
    python launch/gpu_check.py --dry                                  # the CPU rehearsal (CI runs it)
    python3 launch/gpu_check.py --sections kernel_speed reference --budget-s 200   # rerun what failed

Sections (environment, kernel_exactness, kernel_speed, training_steps, data, reference) each get a share of
--budget-s; one that fails or overruns is recorded as such and the rest go on. Writes report.json, report.md
and PNGs under --out and prints the markdown. Exit code 1 when a section failed. Sections: tvts.perf.gpucheck.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

from tvts.errors import UserError, cli

# tvts.perf.gpucheck.SECTIONS' names, spelt out: importing it starts torch, which --dry must configure first
SECTION_NAMES = ["environment", "kernel_exactness", "kernel_speed", "training_steps", "data", "reference"]


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry", action="store_true", help="CPU rehearsal: GPUs hidden, tiny shapes, Triton interpreted")
    p.add_argument("--budget-s", type=float, default=480.0, help="wall-clock budget of the whole check (seconds)")
    p.add_argument("--sections", nargs="+", choices=SECTION_NAMES, default=[], help="run only these (default: all)")
    p.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                   help="one process per section (default: on CUDA)")
    p.add_argument("--work", default="", help="scratch directory for benchmark shards (default: a temporary one)")
    p.add_argument("--out", default=None, help="report directory (default runs/gpu_check/<UTC time>)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    if args.budget_s <= 0:
        raise UserError(f"--budget-s {args.budget_s:g}: expected a positive number of seconds")
    if args.dry:
        # both are read once, when torch and triton start: before anything below imports them
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        os.environ.setdefault("TRITON_INTERPRET", "1")
    from tvts.perf import gpucheck

    if args.dry:
        import torch

        torch.set_num_threads(1)  # tiny shapes: one thread is faster than two that wait for each other

    out = Path(args.out or f"runs/gpu_check/{datetime.datetime.now(datetime.timezone.utc):%Y%m%d-%H%M%S}")
    options = gpucheck.CheckOptions(dry=args.dry, budget_s=args.budget_s, sections=tuple(args.sections),
                                    isolate=args.isolate, work_dir=args.work)
    report = gpucheck.run_check(options, out)
    print((out / "report.md").read_text())
    for name, r in report["sections"].items():  # the verdict again, last: a tail of the output shows it
        print(f"{name}: {r['status']} in {r['seconds']:.0f} s" + (f" ({r['reason']})" if r["reason"] else ""))
    print(f"wrote {out / 'report.json'}, {out / 'report.md'}"
          + "".join(f", {out / png}" for r in report["sections"].values() for png in r.get("plots", [])))
    return 1 if any(r["status"] == "failed" for r in report["sections"].values()) else 0


if __name__ == "__main__":
    sys.exit(cli(main))
