"""The synthetic benchmark (issue 7, Deliver 3): does transcript sorting teach the encoder time?

Four frozen encoders, one linear-probe protocol (:mod:`tvts.eval.linear`), on the synthetic
direction-of-change set (:func:`tvts.data.synthetic.make_downstream`: classes differ only by the
direction of a change, so one frame cannot tell them apart):

- ``tvts``: the recipe's encoder pre-trained with sorting + VTC;
- ``random``: the same recipe at its step-0 initialisation (``random:<tvts run>``);
- ``vtc``: pre-trained by the same recipe with ``model.sort_weight=0`` (VTC only);
- ``single_frame``: the ``tvts`` encoder fed the clip's middle frame M times (no motion visible).

Each row also gets v2v R@1 from the same features, and the pre-training run's last training and
held-out sort accuracy when the run logged them.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

from tvts.eval.loading import RANDOM, load_eval_model
from tvts.eval.options import EvalOptions
from tvts.eval.report import markdown_table
from tvts.eval.tasks import evaluate

ROWS = {
    "tvts": "TVTS (sort + VTC)",
    "random": "random init (step 0)",
    "vtc": "VTC only (sort_weight=0)",
    "single_frame": "single frame (TVTS encoder, middle frame x M)",
}
COLUMNS = ["encoder", "linear top-1", "top-1 95% CI", "linear top-5", "wd", "v2v R@1", "train sort acc",
           "held-out sort acc"]


def run_summary(run_dir) -> dict:
    """Last step, training sort accuracy and held-out sort accuracy from ``<run>/metrics.jsonl``."""
    out: dict = {"step": None, "train_sort_acc": None, "val_sort_acc": None}
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        out["step"] = rec.get("step", out["step"])
        if "sort_acc" in rec:
            out["train_sort_acc"] = rec["sort_acc"]
        if "val/sort_acc" in rec:
            out["val_sort_acc"] = rec["val/sort_acc"]
    return out


def benchmark(tvts_run, vtc_run, data, out_dir, options: Optional[EvalOptions] = None) -> dict:
    """Evaluate the four rows; returns {"rows": {key: {...}}, "table": markdown}."""
    options = options or EvalOptions()
    specs = {"tvts": (str(tvts_run), options), "random": (f"{RANDOM}{tvts_run}", options),
             "vtc": (str(vtc_run), options), "single_frame": (str(tvts_run), _replace(options, single_frame=True))}
    rows, table = {}, []
    for key, (spec, opts) in specs.items():
        model = load_eval_model(spec, opts.device)
        where = Path(out_dir) / "eval" / key
        linear = evaluate("linear", spec, data, where, opts, model=model)
        v2v = evaluate("v2v", spec, data, where, opts, model=model)
        summary = {} if key == "random" else run_summary(vtc_run if key == "vtc" else tvts_run)
        top1, probe = linear["metrics"]["top1"], linear["probe"]
        low, high = (100.0 * x for x in wilson_interval(top1 / 100.0, probe["num_eval"]))
        rows[key] = {"name": ROWS[key], "spec": spec, "linear": linear["metrics"], "top1_ci95": [low, high],
                     "weight_decay": probe["weight_decay"], "v2v": v2v["metrics"], "run": summary,
                     "model": linear["model"], "protocol": linear["protocol"]}
        table.append([ROWS[key], top1, f"{low:.1f}-{high:.1f}", linear["metrics"]["top5"], f"{probe['weight_decay']:g}",
                      v2v["metrics"]["R@1"], _acc(summary.get("train_sort_acc")), _acc(summary.get("val_sort_acc"))])
    chance = 100.0 / linear["probe"]["num_classes"]
    return {"rows": rows, "chance_top1": chance, "num_train": linear["probe"]["num_train"],
            "num_eval": linear["probe"]["num_eval"], "table": markdown_table(COLUMNS, table)}


def wilson_interval(accuracy: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of an accuracy measured on ``n`` clips: how far apart two rows must be
    before the evaluation set's size stops explaining the difference."""
    if n <= 0:
        return 0.0, 1.0
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _acc(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _replace(options: EvalOptions, **changes) -> EvalOptions:
    import dataclasses

    return dataclasses.replace(options, **changes)
