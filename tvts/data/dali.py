"""Frame decoding and augmentation with NVIDIA DALI: NVDEC on the GPU, output left on the GPU.

The same frames as :func:`tvts.data.decode.decode_frames` (explicit indices from the exact
presentation timestamps, :func:`tvts.data.sampling.frame_indices`) and the same resize, crop and
normalisation as :func:`tvts.data.augment.augment_video` (sizes and crop offsets are computed by
the same functions on the host and fed in, so a given generator gives the same crop on both paths).

Devices: ``device="gpu"`` decodes with the ``mixed`` backend (H.264, HEVC, VP8/9, AV1, MPEG-4 via
NVDEC) and resizes/normalises on the GPU. ``device="cpu"`` runs the whole graph on the CPU, where
DALI 2.4's decoder handles only VP8, VP9 and MJPEG: it rejects H.264 ("Codec 27 (h264) is not
supported by the CPU variant"), so CPU tests use VP9 clips and CPU training uses PyAV.

Overlap: the pipeline runs one batch per call (``prefetch_queue_depth=1``: its inputs come from the host,
batch by batch); :class:`DecodeAhead` runs those calls in a background thread, ``data.dali_prefetch``
batches ahead of the training step, so decoding overlaps compute instead of stalling it.

DALI is optional and imported lazily; without it, :func:`import_dali` raises one clear line.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Literal, Optional, Sequence

import numpy as np
import torch

from tvts.errors import UserError, one_line

from tvts.data.augment import NORMALIZE_STATS, crop_offsets, resized_size
from tvts.data.decode import VideoSource, check_times, frame_timeline, probe
from tvts.data.errors import SkipSample
from tvts.data.sampling import frame_indices

DALI_MISSING = "data.decoder=dali needs NVIDIA DALI: pip install tvts-engine[gpu]"
log = logging.getLogger("tvts.data")


def dali_available() -> bool:
    """Whether NVIDIA DALI is installed (does not import it)."""
    try:
        return importlib.util.find_spec("nvidia.dali") is not None
    except (ImportError, ValueError):  # `nvidia` namespace missing or half-installed
        return False


def import_dali():
    """Import and return ``nvidia.dali``, or raise ImportError with :data:`DALI_MISSING`."""
    try:
        import nvidia.dali as dali
    except ImportError:
        raise ImportError(DALI_MISSING) from None
    return dali


def decoder_for(cfg) -> Literal["pyav", "dali"]:
    """The decoder a run uses: ``cfg.data.decoder`` (a Config or DataConfig), with ``auto`` resolved to
    ``dali`` when DALI is importable and CUDA is available, else ``pyav``. ``dali`` without DALI raises."""
    choice = getattr(cfg, "data", cfg).decoder
    if choice == "pyav":
        return "pyav"
    if choice == "dali":
        import_dali()
        return "dali"
    if choice != "auto":
        raise ValueError(f"data.decoder must be auto, pyav or dali, got {choice!r}")
    return "dali" if dali_available() and torch.cuda.is_available() else "pyav"


# ----------------------------------------------------------------------------------------------
# Graph pieces
# ----------------------------------------------------------------------------------------------
def dali_decode(encoded, frames, device: Literal["gpu", "cpu"] = "gpu"):
    """DALI graph node: decode the given frame indices of in-memory videos.

    encoded: per-sample uint8 (N,) container bytes; frames: per-sample int32 (T,) indices in
    presentation order. Returns a per-sample (T, H, W, 3) uint8 "FHWC" node on ``device``.
    ``pad_mode="none"``: an index past the end is an error, never a padded black frame.
    """
    from nvidia.dali import fn

    return fn.decoders.video(encoded, device="mixed" if device == "gpu" else "cpu", frames=frames, pad_mode="none")


def dali_augment(video, size, crop, image_size: int, normalize: str = "imagenet"):
    """DALI graph node: resize, one crop shared by all frames, normalise; as augment_video does.

    video: per-sample (T, H, W, 3) uint8; size: per-sample float (2,) = (height, width) after the
    resize (:func:`tvts.data.augment.resized_size`); crop: per-sample float (2,) = (top, left)
    offsets as fractions of the free room, ``offset / (resized - image_size)``. Returns per-sample
    (T, 3, image_size, image_size) float32.
    """
    from nvidia.dali import fn, types

    mean, std = NORMALIZE_STATS[normalize]
    video = fn.resize(video, resize_y=size[0], resize_x=size[1], interp_type=types.INTERP_LINEAR, antialias=True)
    return fn.crop_mirror_normalize(
        video, crop=(image_size, image_size), crop_pos_y=crop[0], crop_pos_x=crop[1],
        mean=[255.0 * m for m in mean], std=[255.0 * s for s in std],
        dtype=types.FLOAT, output_layout="FCHW")


def build_dali_pipeline(batch_size: int, image_size: int, normalize: str = "imagenet",
                        device: Literal["gpu", "cpu"] = "gpu", device_id: Optional[int] = 0,
                        num_threads: int = 2):
    """A built DALI pipeline fed by :class:`DaliVideoReader` through four external sources:
    ``encoded`` (uint8 bytes), ``frames`` (int32 indices), ``size`` and ``crop`` (float32 pairs; the
    resize target comes in per sample, computed on the host). Its one output is
    (T, 3, image_size, image_size) float32 per sample, on ``device``."""
    dali = import_dali()
    from nvidia.dali import fn, types

    # prefetch_queue_depth=1: the reader feeds one batch and runs it synchronously (DecodeAhead runs the
    # reader's calls ahead of the consumer, in a thread of their own)
    @dali.pipeline_def(batch_size=batch_size, num_threads=num_threads,
                       device_id=device_id if device == "gpu" else None, prefetch_queue_depth=1)
    def pipeline():
        encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
        frames = fn.external_source(name="frames", dtype=types.INT32, ndim=1)
        size = fn.external_source(name="size", dtype=types.FLOAT, ndim=1)
        crop = fn.external_source(name="crop", dtype=types.FLOAT, ndim=1)
        return dali_augment(dali_decode(encoded, frames, device), size, crop, image_size, normalize)

    pipe = pipeline()
    pipe.build()
    return pipe


# ----------------------------------------------------------------------------------------------
# Reader
# ----------------------------------------------------------------------------------------------
@dataclass
class DaliSample:
    """Host-side inputs of one clip: container bytes, frame indices, resized size and crop position."""

    encoded: np.ndarray  # (N,) uint8
    frames: np.ndarray  # (T,) int32
    size: np.ndarray  # (2,) float32: (height, width) after the resize
    crop: np.ndarray  # (2,) float32: (top, left) as fractions of the free room


class DaliVideoReader:
    """Decode + augment batches of clips with DALI.

    ``prepare(source, times)`` does the host work for one clip (frame indices from the exact
    timestamps, sizes, crop offsets from this reader's torch generator) and raises SkipSample for
    unusable input, so a data pipeline can drop bad clips before batching. ``reader(samples)``
    decodes a batch and returns (B, T, 3, image_size, image_size) float32 on the GPU
    (``cuda:device_id``) or on the CPU. Samples in one batch must have the same T.
    """

    def __init__(self, batch_size: int, image_size: int, resize_short: int, normalize: str = "imagenet",
                 train: bool = False, device: Literal["gpu", "cpu"] = "gpu", device_id: int = 0,
                 num_threads: int = 2, seed: int = 0):
        if resize_short < image_size:
            raise ValueError(f"resize_short={resize_short} is smaller than the crop image_size={image_size}")
        self.batch_size, self.image_size, self.resize_short = batch_size, image_size, resize_short
        self.train, self.device, self.device_id = train, device, device_id
        self.generator = torch.Generator().manual_seed(seed)
        self.pipe = build_dali_pipeline(batch_size, image_size, normalize, device, device_id, num_threads)

    @classmethod
    def from_config(cls, cfg, batch_size: int, train: bool, device: Literal["gpu", "cpu"] = "gpu",
                    device_id: int = 0, seed: Optional[int] = None) -> "DaliVideoReader":
        """A reader with the run's image_size, data.resize_short and data.normalize (a Config)."""
        return cls(batch_size, cfg.sample.image_size, cfg.data.resize_short, cfg.data.normalize, train,
                   device, device_id, seed=cfg.seed if seed is None else seed)

    def prepare(self, source: VideoSource, times: Sequence[float]) -> DaliSample:
        if isinstance(source, (str, os.PathLike)):
            try:
                with open(source, "rb") as f:
                    source = f.read()
            except FileNotFoundError:
                raise SkipSample("missing_video", f"{os.fspath(source)}: no such file") from None
        info = probe(source)
        starts, end = frame_timeline(source)
        times = check_times(times)
        if times.max() >= end:
            raise SkipSample("past_end", f"<{len(source)} bytes>: time {times.max():.3f}s is past the last frame, which ends at {end:.3f}s")
        height, width = resized_size(info.height, info.width, self.resize_short)
        top, left = crop_offsets(height, width, self.image_size, self.train, self.generator)
        room = (max(height - self.image_size, 1), max(width - self.image_size, 1))
        return DaliSample(
            encoded=np.frombuffer(bytes(source), dtype=np.uint8),
            frames=frame_indices(times, starts).astype(np.int32),
            size=np.array([height, width], dtype=np.float32),
            crop=np.array([top / room[0], left / room[1]], dtype=np.float32),
        )

    def __call__(self, samples: Sequence[DaliSample]) -> torch.Tensor:
        if not 0 < len(samples) <= self.batch_size:
            raise ValueError(f"a batch holds 1 to {self.batch_size} samples, got {len(samples)}")
        for name in ("encoded", "frames", "size", "crop"):
            self.pipe.feed_input(name, [getattr(s, name) for s in samples])
        (out,) = self.pipe.run()
        from nvidia.dali.plugin.pytorch import feed_ndarray

        batch = out.as_tensor()  # dense (B, T, 3, S, S); DALI reuses its buffers on the next run: copy out
        on_gpu = self.device == "gpu"
        result = torch.empty(batch.shape(), dtype=torch.float32, device=f"cuda:{self.device_id}" if on_gpu else "cpu")
        feed_ndarray(batch, result, cuda_stream=torch.cuda.current_stream(self.device_id) if on_gpu else None)
        return result


# ----------------------------------------------------------------------------------------------
# Overlap
# ----------------------------------------------------------------------------------------------
class DecodeAhead:
    """``decode(item)`` of each of ``items``, in order, computed in a background thread up to ``depth`` items
    ahead of the consumer: the DALI decode of the next batches overlaps the training step on this one.

    ``items`` is started (``iter``) in the calling thread, so DataLoader workers are forked from it; the
    thread only takes items and decodes them. What the consumer does with an item (a loader's position,
    its skip counts) it does when it takes it, in its own thread: a batch that was only decoded ahead is
    never counted, as with the batches DataLoader workers make ahead.

    ``device_id``: the CUDA device the decode writes to, or None (CPU). The thread decodes on a stream of its
    own and waits for it before handing a tensor on; the consumer's stream is recorded on each tensor it
    takes, so the caching allocator does not reuse its memory before the consumer's kernels are done.

    An error in the thread reaches the consumer at the item where it happened: a :class:`UserError` as it
    is, anything else as one line (``RuntimeError``; the traceback goes to the debug log). :meth:`close`
    (also when the consumer stops early) stops the thread and waits for it.
    """

    _END = object()

    def __init__(self, items: Iterable, decode: Callable[[Any], Any], depth: int = 2,
                 device_id: Optional[int] = None, name: str = "DALI decode"):
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self.decode, self.device_id, self.name = decode, device_id, name
        self._items: Optional[Iterator] = iter(items)
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, name=f"tvts-{name.lower().replace(' ', '-')}", daemon=True)
        self._thread.start()

    # -- background thread ----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            stream = None
            if self.device_id is not None:
                torch.cuda.set_device(self.device_id)  # the current device is per thread
                stream = torch.cuda.Stream(self.device_id)
            for item in self._items:
                if self._stop.is_set():
                    return
                if stream is None:
                    out = self.decode(item)
                else:
                    with torch.cuda.stream(stream):
                        out = self.decode(item)
                    stream.synchronize()  # complete before it is handed on (this thread waits, not the step)
                if not self._put((True, out)):
                    return
            self._put((True, self._END))
        except BaseException as err:  # noqa: BLE001 - every error goes to the consumer
            self._put((False, err))
        finally:
            self._items = None  # a DataLoader iterator shuts its workers down once dropped

    def _put(self, entry) -> bool:
        """Queue ``entry`` unless the consumer closed; False when it did."""
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    # -- consumer -------------------------------------------------------------------------------
    def __iter__(self) -> "DecodeAhead":
        return self

    def __next__(self):
        if self._done:
            raise StopIteration
        ok, out = self._queue.get()
        if ok and out is not self._END:
            if self.device_id is not None:
                _record_current_stream(out)
            return out
        self._done = True
        self._thread.join()
        if ok:
            raise StopIteration
        if isinstance(out, UserError):
            raise out
        log.debug("%s thread failed", self.name, exc_info=out)
        raise RuntimeError(f"{self.name} (background thread): {type(out).__name__}: {one_line(out)}") from None

    def close(self, timeout_s: float = 60.0) -> None:
        """Stop the thread (it finishes the item it is on) and wait for it; idempotent."""
        self._done = True
        self._stop.set()
        while True:  # unblock a put
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("%s thread still running %.0f s after close (waiting on its input); left as a daemon",
                        self.name, timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


def _record_current_stream(value) -> None:
    """``record_stream`` of the consumer's current stream on every CUDA tensor in ``value`` (nested tuples,
    lists and dicts), so that memory allocated on the decode thread's stream outlives the consumer's use."""
    if isinstance(value, torch.Tensor):
        if value.is_cuda:
            value.record_stream(torch.cuda.current_stream(value.device))
    elif isinstance(value, dict):
        for v in value.values():
            _record_current_stream(v)
    elif isinstance(value, (tuple, list)):
        for v in value:
            _record_current_stream(v)
