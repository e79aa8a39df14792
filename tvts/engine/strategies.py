"""Training strategies: how the model, its gradients and its optimizer states are laid out over ranks.

``single`` (one process), ``ddp`` (replicated), ``fsdp`` (PyTorch FSDP2 ``fully_shard`` per transformer
block + root), ``zero1``/``zero2``/``zero3`` (DeepSpeed). Each strategy is one class with one
``parallelize`` step that applies, in order, activation checkpointing -> optional ``torch.compile`` per
block -> sharding (the torchtitan order). The model knows nothing about any of them.

The trainer only calls: ``forward(batch)``, ``backward(loss)``, ``no_sync()``, ``step()``, ``lrs()``,
``save(dir)``, ``load(dir)``, ``export_state_dict()``. ``forward`` takes loader batches as they come to the
device (uint8 clips) and normalises them first (``inputs``).
The strategy a config names is built by :func:`tvts.engine.build.build_strategy`.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from tvts.data.augment import normalize_video
from tvts.engine.distributed import DistInfo, all_reduce_max
from tvts.engine.schedule import build_scheduler
from tvts.models.param_groups import param_groups
from tvts.runtime import unwrapped_name

PRECISION = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class StepResult:
    grad_norm: float  # global L2 norm of the gradients before clipping (nan when skipped)
    skipped: bool  # the optimizer step was skipped (non-finite loss or gradients)


def transformer_blocks(model: nn.Module) -> list[nn.ModuleList]:
    """The ModuleLists of transformer blocks: the units of checkpointing, compilation and sharding. The video
    encoder's, and those of the sorter and a CLIP text tower where the model has them (a classifier has not)."""
    lists = [model.video.blocks]
    candidates = (getattr(getattr(model, "sorter", None), "blocks", None),
                  getattr(getattr(getattr(model, "text", None), "transformer", None), "resblocks", None))
    lists += [blocks for blocks in candidates if isinstance(blocks, nn.ModuleList)]
    return lists


def frozen_text_tower(model: nn.Module) -> Optional[nn.Module]:
    """The model's text tower if it has one with parameters and none of them trains (``model.text.frozen``)."""
    text = getattr(model, "text", None)
    params = list(text.parameters()) if text is not None else []
    return text if params and not any(p.requires_grad for p in params) else None


def apply_activation_checkpointing(model: nn.Module, cfg) -> None:
    """Recompute every video block's activations in backward (``model.video.grad_checkpointing``)."""
    if not cfg.model.video.grad_checkpointing:
        return
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    blocks = model.video.blocks
    for i, blk in enumerate(blocks):
        blocks[i] = checkpoint_wrapper(blk, preserve_rng_state=False)


def apply_compile(model: nn.Module, cfg) -> None:
    """``torch.compile`` each transformer block on its own (small graphs, shared across identical blocks)."""
    if not cfg.train.compile:
        return
    for blocks in transformer_blocks(model):
        for i, blk in enumerate(blocks):
            blocks[i] = torch.compile(blk, dynamic=False)


class Strategy:
    """``single``: one process, no process group. Subclasses override ``parallelize`` and the state I/O."""

    name = "single"
    init_before_parallelize = True  # see __init__

    def __init__(self, cfg, model: nn.Module, info: DistInfo, total_steps: int, init=None):
        self.cfg = cfg
        self.info = info
        self.device = info.device
        self.dtype = PRECISION[cfg.train.precision]
        self.module = model  # the unwrapped model (attribute access, export)
        self.total_steps = total_steps
        # initial weights (a tvts.models.init.TensorSource or a safetensors path), before the optimizer
        # copies anything: whole into the unwrapped model (ddp: rank 0 only, then DDP's construction
        # broadcasts rank 0's parameters and buffers, so the file is read once), or streamed into the
        # shards after parallelize (fsdp, zero1-3)
        if init is not None and self.init_before_parallelize and info.rank == 0:
            from tvts.models.init import SafetensorsSource, TensorSource, copy_into

            copy_into(self.module, init if isinstance(init, TensorSource) else SafetensorsSource(init))
        self.parallelize()
        if init is not None and not self.init_before_parallelize:
            self.stream_init(init)
        self.build_optimizer()

    def stream_init(self, init) -> None:
        """Copy ``init`` into the parallelised model, each rank only what it holds: the sharded strategies
        (tvts.engine.sharded), which set ``init_before_parallelize = False``, implement it."""
        raise NotImplementedError(f"{self.name}: loads its initial weights before parallelize")

    # -- setup --------------------------------------------------------------------------------------
    def parallelize(self) -> None:
        self.module.to(self.device)
        apply_activation_checkpointing(self.module, self.cfg)
        apply_compile(self.module, self.cfg)
        self.model = self.module

    def build_optimizer(self) -> None:
        o = self.cfg.optim
        # CUDA: the fused AdamW kernel (one launch for all parameters) and TF32 for the fp32 matmuls left
        # outside autocast (the fp32 VTC logits, masters' updates)
        cuda = self.device.type == "cuda"
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.optimizer = torch.optim.AdamW(param_groups(self.module, o, self.cfg.model.compat),
                                           lr=o.lr, betas=tuple(o.betas), eps=o.eps, fused=True if cuda else None)
        self.scheduler = build_scheduler(self.optimizer, self.total_steps, o)
        # fp16 needs dynamic loss scaling (the official H/14 recipe ran fp16 without it: underflow risk)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.cfg.train.precision == "fp16")

    # -- step ---------------------------------------------------------------------------------------
    def autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def inputs(self, batch: dict) -> dict:
        """The batch as the model takes it. Loader batches carry uint8 clips (a quarter of float32's bytes through
        the workers' shared memory and the host-to-device copy): they are normalised here, on the device, by the
        data side's :func:`tvts.data.augment.normalize_video` with ``data.normalize``, bit for bit what
        normalising in the workers gave. Float clips (DALI's, normalised already; synthetic batches) pass as
        they are. Every forward of every strategy goes through here (training, evaluation, fine-tuning,
        the profiler)."""
        video = batch.get("video")
        if isinstance(video, torch.Tensor) and video.dtype == torch.uint8:
            batch = {**batch, "video": normalize_video(video, self.cfg.data.normalize)}
        return batch

    def forward(self, batch: dict):
        batch = self.inputs(batch)
        with self.autocast():
            return self.model(**batch)

    def no_sync(self):
        """Context for micro-batches that only accumulate gradients (no cross-rank reduction)."""
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def grad_params(self) -> list[torch.Tensor]:
        return [p for p in self.model.parameters() if p.grad is not None]

    def clip_grad_norm(self) -> float:
        clip = self.cfg.optim.grad_clip or math.inf
        params = self.grad_params()
        if not params:
            return 0.0
        return float(torch.nn.utils.clip_grad_norm_(params, clip))

    def step(self) -> StepResult:
        """Unscale, clip, check, update, advance the schedule, zero the gradients."""
        self.scaler.unscale_(self.optimizer)
        norm = self.clip_grad_norm()
        bad = all_reduce_max(0.0 if math.isfinite(norm) else 1.0) > 0
        if self.scaler.is_enabled():
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)  # skips the update itself on inf/nan gradients
            self.scaler.update()
            skipped = bad or self.scaler.get_scale() < scale
        else:
            skipped = bad
            if not bad:
                self.optimizer.step()
        self.scheduler.step()  # the schedule follows steps taken, skipped or not
        self.zero_grad()
        return StepResult(norm, skipped)

    def skip_step(self) -> None:
        """Drop this step's gradients (non-finite loss) but keep the schedule in lockstep."""
        self.zero_grad()
        self.scheduler.step()

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def lrs(self) -> dict[str, float]:
        return {g.get("name", str(i)): g["lr"] for i, g in enumerate(self.optimizer.param_groups)}

    # -- state --------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict()}

    def save(self, directory: Path) -> None:
        """Write model, optimizer, scheduler (and loss-scaler) state into ``directory`` (rank 0 only here)."""
        if self.info.is_main:
            torch.save(self.state_dict(), directory / "model_optim.pt")

    def load(self, directory: Path) -> None:
        state = torch.load(directory / "model_optim.pt", map_location=self.device, weights_only=True)
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])

    def export_state_dict(self) -> Optional[dict[str, torch.Tensor]]:
        """The full fp32 model state dict with unwrapped names, on rank 0 (None elsewhere)."""
        if not self.info.is_main:
            return None
        return {k: v.detach().float().cpu() if v.is_floating_point() else v.cpu() for k, v in unwrapped_state_dict(self.module).items()}


def unwrapped_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """State dict under :func:`unwrapped_name` names."""
    return {unwrapped_name(k): v for k, v in module.state_dict().items()}


class DDPStrategy(Strategy):
    name = "ddp"

    def parallelize(self) -> None:
        from torch.nn.parallel import DistributedDataParallel as DDP

        self.module.to(self.device)
        apply_activation_checkpointing(self.module, self.cfg)
        apply_compile(self.module, self.cfg)
        ids = [self.device.index] if self.device.type == "cuda" else None
        # caption (VTC-only) steps do not use the sorter: the model gives it zero gradients then
        # (SortHead.forward(None)), so DDP reduces the same buckets every step without find_unused_parameters
        # (a graph walk per step); gradients live in DDP's buckets (no second copy of them)
        self.model = DDP(self.module, device_ids=ids, find_unused_parameters=False, gradient_as_bucket_view=True)

    def no_sync(self):
        return self.model.no_sync()
