"""Out-of-the-box evaluation of frozen TVTS / TVTSv2 video encoders (method §4; docs/evaluation.md).

Protocols (``tvts.eval.tasks.TASKS``): ``features`` (extraction to disk), ``linear`` (linear probe),
``retrieval`` (zero-shot text<->video), ``recognition`` (zero-shot, prompt template), ``mc`` (SSV2
multiple choice), ``v2v`` (SSV2 video-to-video retrieval). Entry point: :func:`tvts.eval.tasks.evaluate`.
Fine-tuning for classification (every weight trains, multi-view test): :mod:`tvts.eval.finetune`.
"""
