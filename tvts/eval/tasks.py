"""One entry point for every protocol: load the model, resolve the settings, run, write the result."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import torch

from tvts.eval import linear, multiple_choice, recognition, retrieval, v2v
from tvts.eval.datasets import classification_data
from tvts.eval.features import features_of
from tvts.eval.loading import RANDOM, EvalModel, LoadError, load_eval_model
from tvts.eval.options import EvalOptions
from tvts.eval.report import make_result, write_result

ZERO_SHOT = ("retrieval", "recognition", "mc")


def run_features(model: EvalModel, data, out_dir, opts) -> dict:
    """Extract (or complete) the features of the evaluation list, and of the training list when there is one."""
    ds = classification_data(data, opts)
    if ds.files["train_list"]:
        ds = classification_data(data, opts, need_train=True)
    lists = {"eval": ds.eval} if ds.train is None else {"train": ds.train, "eval": ds.eval}
    rows, metrics = [], {}
    for name, items in lists.items():
        feats = features_of(model, items, ds.video_root, out_dir, opts, name)
        dims = f"cls {feats.cls.shape[1]}" + (f", embed {feats.embed.shape[1]}" if feats.embed is not None else "")
        rows.append([name, len(items), dims, str(feats.directory)])
        metrics[name] = {"clips": len(items), "directory": str(feats.directory)}
    return make_result("features", model, opts, ds.files, metrics, ["list", "clips", "dims", "directory"], rows)


TASKS = {"features": run_features, "linear": linear.run, "retrieval": retrieval.run, "recognition": recognition.run,
         "mc": multiple_choice.run, "v2v": v2v.run}


def default_out(checkpoint: str) -> Path:
    """``<checkpoint dir>/eval`` for a directory; ``runs/eval/<name>`` for a file or ``random:<config>``."""
    if checkpoint.startswith(RANDOM) or Path(checkpoint).is_file():
        return Path("runs") / "eval" / re.sub(r"[^A-Za-z0-9_.-]+", "_", checkpoint).strip("_")
    return Path(checkpoint) / "eval"


def evaluate(task: str, checkpoint: str, data, out: Optional[str | Path] = None, options: Optional[EvalOptions] = None,
             model: Optional[EvalModel] = None, config: Optional[str] = None) -> dict:
    """Run ``task`` (a key of :data:`TASKS`) and write ``<out>/<task>.json`` and ``.md``; returns the result.

    ``config``: the recipe of a weights file (see :func:`load_eval_model`); ``model``: an already loaded
    :class:`EvalModel` (then ``checkpoint`` only names it)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; one of {', '.join(TASKS)}")
    options = options or EvalOptions()
    if options.threads:
        torch.set_num_threads(options.threads)
    model = model or load_eval_model(checkpoint, options.device, config)
    if task in ZERO_SHOT and not model.joint_space:
        raise LoadError(f"{model.source}: the {task} task needs the text tower and VTC heads (export them too)")
    opts = options.resolved(model.cfg)
    out = Path(out) if out is not None else default_out(checkpoint)
    result = TASKS[task](model, Path(data), out, opts)
    write_result(result, out)
    return result
