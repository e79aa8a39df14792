"""The profiler's arithmetic: training FLOPs per clip of a built model, the rates of a timed setup
(clips/s, visible tokens/s, TFLOP/s, MFU) and the device peak they are against.

FLOP convention (:mod:`tvts.engine.metrics`): 1 multiply-add = 2 FLOPs, masked patches excluded, training
= 3x forward for trained parts. MFU is against the device peak: H100/H200 989 TFLOP/s, A100 312 (bf16
dense), or the measured fp32 matmul rate of this CPU.
"""
from __future__ import annotations

import torch


def flops_per_clip(cfg, model) -> float:
    """Training FLOPs of one clip (:func:`tvts.engine.metrics.train_flops_per_clip`) for a built model."""
    from tvts.engine.metrics import train_flops_per_clip
    from tvts.models import flops

    text = model.text
    report = flops(cfg, text_config=getattr(text, "hf_config", None))
    trainable = any(p.requires_grad for p in text.parameters())
    return train_flops_per_clip(report, trainable, getattr(text, "cache", None) is not None)


def throughput(step_s: float, micro_batch: int, world_size: int, flops_clip: float, tokens_clip: int,
               peak_flops: float) -> dict:
    """Rates of one timed setup. ``step_s``: seconds per optimizer step (every rank runs ``micro_batch``
    clips); clips/s and tokens/s are global, TFLOP/s and MFU per device."""
    from tvts.engine.metrics import mfu

    clips_per_s = micro_batch * world_size / step_s if step_s > 0 else 0.0
    per_device = clips_per_s / world_size
    return {"clips_per_s": clips_per_s, "tokens_per_s": clips_per_s * tokens_clip,
            "tflops": per_device * flops_clip / 1e12, "mfu": mfu(per_device, flops_clip, peak_flops)}


def device_peak(device: torch.device, tries: int = 5) -> tuple[float, str]:
    """(peak FLOP/s, what it is): the GPU's rated peak, or the fastest of ``tries`` CPU matmul measurements
    (the same "fastest" rule as the synthetic CPU steps, so that other jobs do not lower the peak alone)."""
    from tvts.engine.metrics import device_peak_flops, measure_cpu_matmul_peak

    if device.type != "cpu":
        return device_peak_flops(device)
    return device_peak_flops(device, cpu_peak=max(measure_cpu_matmul_peak() for _ in range(tries)))
