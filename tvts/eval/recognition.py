"""Zero-shot action recognition (TVTSv2, method §4.5).

Each class name (``_`` read as a space) fills the prompt template (default "a person {}", the
official single template); the text tower embeds it into the video-text space. A clip's class scores
are the cosine similarities of its video embedding (``embed``: v1 ``video_head(CLS)``, v2 ``CLS after
ln_post @ proj``) with the class embeddings (the official 100x scale changes no ranking). Top-1/top-5.
"""
from __future__ import annotations

import torch.nn.functional as F

from tvts.eval.datasets import classification_data
from tvts.eval.features import feature_kind, features_of
from tvts.eval.metrics import topk_accuracy
from tvts.eval.report import make_result


def class_prompts(classes: list[str], template: str) -> list[str]:
    return [template.format(name.replace("_", " ")) for name in classes]


def run(model, data, out_dir, opts) -> dict:
    ds = classification_data(data, opts, need_names=True)
    kind = feature_kind(opts, "embed")
    prompts = class_prompts(ds.classes, opts.template)
    texts = model.text_embeddings(prompts)
    feats = features_of(model, ds.eval, ds.video_root, out_dir, opts, "eval")
    scores = F.normalize(feats.get(kind), dim=-1) @ texts.T
    metrics = topk_accuracy(scores, [it.label for it in ds.eval], (1, 5))
    rows = [["top-1", metrics["top1"]], ["top-5", metrics["top5"]], ["clips / classes", f"{len(ds.eval)} / {len(prompts)}"]]
    return make_result("recognition", model, opts, ds.files, metrics, ["metric", "value"], rows, feature=kind,
                       protocol={"template": opts.template, "score": "cosine(video embed, prompt embed)"})
