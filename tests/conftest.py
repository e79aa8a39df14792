import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def tiny_overrides():
    """A tiny v1 model on 32 px frames: fast enough for any unit test."""
    return ["model.video.size=atto", "sample.image_size=32", "sample.frames_per_window=2",
            "sample.caption_frames=2", "model.sort.heads=2", "model.video.patch_size=8"]


@pytest.fixture(autouse=True)
def _default_attention_backend():
    """In-process trainers and profilers set the process-wide attention backend from their config; put it
    back so that one test's `train.attention` never leaks into the next."""
    yield
    from tvts.kernels import set_default_backend

    set_default_backend("auto")
