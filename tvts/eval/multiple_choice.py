"""Zero-shot SSV2 multiple choice (TVTSv2, method §4.6).

Each item has its own candidate captions; the answer is the option whose text embedding has the
highest cosine similarity with the clip's video embedding (``embed``). Top-1 accuracy. Options are
used as written (no prompt template), each distinct string encoded once.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from tvts.eval.datasets import mc_data
from tvts.eval.features import feature_kind, features_of
from tvts.eval.metrics import topk_accuracy
from tvts.eval.report import make_result


def run(model, data, out_dir, opts) -> dict:
    items, root, files = mc_data(data, opts)
    kind = feature_kind(opts, "embed")
    strings = sorted({o for it in items for o in it.options})
    row = {s: i for i, s in enumerate(strings)}
    texts = model.text_embeddings(strings)
    videos = F.normalize(features_of(model, items, root, out_dir, opts, "eval").get(kind), dim=-1)
    correct = []
    for v, it in zip(videos, items):
        scores = texts[torch.tensor([row[o] for o in it.options])] @ v
        correct.append(topk_accuracy(scores[None], [it.answer], (1,))["top1"])
    metrics = {"top1": sum(correct) / len(correct)}
    options = sorted({len(it.options) for it in items})
    rows = [["top-1", metrics["top1"]], ["items", len(items)], ["options per item", "/".join(map(str, options))]]
    return make_result("mc", model, opts, files, metrics, ["metric", "value"], rows, feature=kind,
                       protocol={"score": "cosine(video embed, option embed)"})
