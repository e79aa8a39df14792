"""Zero-shot text-to-video and video-to-text retrieval (TVTSv2, method §4.4).

Video embedding ``embed`` (v1 ``video_head(CLS)``, v2 ``CLS after ln_post @ proj``), text embedding from
the text tower (v2: CLIP EOT @ text_projection), both L2-normalised; similarity = cosine. Metrics
and ties as the official ``metric.py`` (see :mod:`tvts.eval.metrics`). ``dsl=true`` adds dual-softmax
re-ranked rows, which the official README reports (marked †) but its code does not implement.
"""
from __future__ import annotations

import torch.nn.functional as F

from tvts.eval.datasets import retrieval_data
from tvts.eval.features import feature_kind, features_of
from tvts.eval.formats import VideoItem
from tvts.eval.metrics import retrieval_metrics
from tvts.eval.report import make_result


def run(model, data, out_dir, opts) -> dict:
    captions, root, files = retrieval_data(data, opts)
    kind = feature_kind(opts, "embed")
    items = [VideoItem(v, -1, w) for v, w in zip(captions.videos, captions.video_where)]
    videos = F.normalize(features_of(model, items, root, out_dir, opts, "eval").get(kind), dim=-1)
    texts = model.text_embeddings(captions.texts)
    sims = texts.double() @ videos.double().T  # (T, V)
    metrics = retrieval_metrics(sims, captions.text_video, opts.dsl_scale if opts.dsl else 0.0)
    columns = ["direction", "R@1", "R@5", "R@10", "MedR", "MeanR"]
    rows = [[name] + [m[c] for c in columns[1:]] for name, m in metrics.items()]
    protocol = {"similarity": "cosine", "ties": "t2v optimistic, v2t averaged (official metric.py)",
                "captions": captions.note, "videos / captions": f"{len(captions.videos)} / {len(captions.texts)}"}
    if opts.dsl:
        protocol["dsl"] = f"sims * softmax({opts.dsl_scale:g} * sims) over the other modality's queries (transductive)"
    return make_result("retrieval", model, opts, files, metrics, columns, rows, protocol=protocol, feature=kind)
