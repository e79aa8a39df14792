"""Zero-shot video-to-video retrieval (TVTS v1 on SSV2, method §4.1).

Every clip of the evaluation list queries all the others by cosine similarity of its feature; a query
is a hit at k when one of its k nearest clips has its class. Feature: ``cls`` by default, the [CLS]
after the final LayerNorm, before any projection (official v1: 768-d, not the 256-d VTC space).
Official differences fixed here: frames at bin middles instead of a random offset per segment, and
the whole list evaluated in one process (the official script is single-GPU only).
"""
from __future__ import annotations

from tvts.eval.datasets import classification_data
from tvts.eval.features import feature_kind, features_of
from tvts.eval.metrics import v2v_recall
from tvts.eval.report import make_result


def run(model, data, out_dir, opts) -> dict:
    ds = classification_data(data, opts)
    kind = feature_kind(opts, "cls")
    feats = features_of(model, ds.eval, ds.video_root, out_dir, opts, "eval")
    metrics = v2v_recall(feats.get(kind), [it.label for it in ds.eval])
    rows = [[k, v] for k, v in metrics.items()] + [["clips", len(ds.eval)]]
    return make_result("v2v", model, opts, ds.files, metrics, ["metric", "value"], rows, feature=kind,
                       protocol={"metric": "cosine; hit@k if any of the k nearest other clips shares the class"})
