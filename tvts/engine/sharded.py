"""Sharded strategies: PyTorch FSDP2 (``fsdp``) and DeepSpeed ZeRO (``zero1``, ``zero2``, ``zero3``).

They are built by name through :func:`tvts.engine.build.build_strategy` (:data:`SHARDED`).

Contract shared with the other strategies (what the trainer relies on):

- ``forward(batch)`` then ``backward(loss / grad_accum)`` once per micro-batch; the micro-batches that are
  not the last of an optimizer step run inside ``no_sync()``; then ``step()`` once per optimizer step, or
  ``skip_step()`` when a loss was non-finite. The learning-rate schedule is ours (a ``LambdaLR`` over the
  AdamW groups of :func:`tvts.models.param_groups.param_groups`) and advances once per ``step()`` or
  ``skip_step()``, so every strategy reports the same lr per group at every step.
- ``export_state_dict()`` is collective: every rank calls it; rank 0 gets the full fp32 state dict under
  the unwrapped names of the ``single`` strategy, the other ranks get None.

Checkpoint layout inside the directory handed to ``save``/``load``:

- fsdp: ``dcp/`` (torch.distributed.checkpoint: model and optimizer, sharded, loadable at any world size)
  and ``train_state.pt`` (rank 0: scheduler and loss scaler).
- zero*: ``deepspeed/`` (DeepSpeed ``save_checkpoint`` with the fixed tag ``zero``: ``deepspeed/zero/`` holds
  the per-rank model and optimizer files and our scheduler in the client state, beside DeepSpeed's
  ``zero_to_fp32.py``: ``python deepspeed/zero_to_fp32.py deepspeed OUT --tag zero``). Load with the same
  world size and stage.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist
import torch.nn as nn

from tvts.config import ConfigError
from tvts.engine.distributed import DistInfo, backend_for
from tvts.engine.schedule import build_scheduler
from tvts.engine.strategies import (Strategy, StepResult, apply_activation_checkpointing,
                                    apply_compile, frozen_text_tower, transformer_blocks, unwrapped_name)
from tvts.models.param_groups import param_groups


def ensure_process_group(info: DistInfo) -> None:
    """FSDP2 meshes and DeepSpeed need a process group even for one process: make a one-rank group."""
    if dist.is_initialized():
        return
    if info.world_size > 1:
        raise RuntimeError("several ranks but no process group: call tvts.engine.distributed.init() first")
    dist.init_process_group(backend_for(info.device.type), store=dist.HashStore(), rank=0, world_size=1)


def broadcast_from_rank0(module: nn.Module) -> None:
    """Make every rank start from rank 0's weights (each rank may have built its model with its own seed)."""
    if dist.get_world_size() == 1:
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        data = tensor.data.view(torch.uint8) if tensor.dtype == torch.bool else tensor.data
        dist.broadcast(data, src=0)


def _float_cpu(tensor: torch.Tensor) -> torch.Tensor:
    tensor = tensor.detach().cpu()
    return tensor.float() if tensor.is_floating_point() else tensor


# ----------------------------------------------------------------------------------------------
# FSDP2
# ----------------------------------------------------------------------------------------------
class FSDPStrategy(Strategy):
    """PyTorch FSDP2: ``fully_shard`` on every transformer block, then on the root, over a 1-D mesh of all
    ranks. Parameters become DTensor shards; AdamW states follow them.

    Frozen parameters: FSDP2 shards a frozen parameter like any other and never reduces a gradient for it,
    so a unit may mix frozen and trainable parameters (checked: CLIP's frozen shallow blocks, each its own
    unit, or folded into the root unit, train exactly like ``single``). A text tower frozen as a whole
    (``model.text.frozen``) is the exception: it stays out of FSDP (``ignored_params``), replicated on
    every rank. It has no gradient, so sharding would only trade its memory between forwards for an
    all-gather in every forward, and with ``model.text.cache`` the ranks skip its blocks on different
    steps (cache hits), where per-block all-gathers would wait forever for the ranks that skipped.
    """

    init_before_parallelize = False  # streamed into the shards

    name = "fsdp"

    def stream_init(self, init) -> None:
        stream_pretrained(self.module, init)

    def parallelize(self) -> None:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        ensure_process_group(self.info)
        deferred = is_meta(self.module)  # built on the meta device: allocate only this rank's shards below
        model = self.module if deferred else self.module.to(self.device)
        if not deferred:
            broadcast_from_rank0(model)
        apply_activation_checkpointing(model, self.cfg)
        apply_compile(model, self.cfg)
        mesh = init_device_mesh(self.device.type, (dist.get_world_size(),))
        if self.dtype == torch.float32:
            mp = MixedPrecisionPolicy()
        else:  # compute in bf16/fp16, reduce gradients in fp32; the sharded master weights stay fp32
            mp = MixedPrecisionPolicy(param_dtype=self.dtype, reduce_dtype=torch.float32)
        frozen_text = frozen_text_tower(model)
        text_modules = set(frozen_text.modules()) if frozen_text is not None else set()
        for blocks in transformer_blocks(model):
            if blocks in text_modules:
                continue
            for block in blocks:
                fully_shard(block, mesh=mesh, mp_policy=mp)
        ignored = set(frozen_text.parameters()) if frozen_text is not None else None
        fully_shard(model, mesh=mesh, mp_policy=mp, ignored_params=ignored)
        if deferred:
            materialize(model, self.device)
        # TVTSOutput holds views (video_embed = tokens[:, 0]); the trainer never writes into them in place
        warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
        self.model = model

    def build_optimizer(self) -> None:
        super().build_optimizer()
        if self.scaler.is_enabled():
            from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

            # each rank sees only its gradient shards: the inf/nan check must be all-reduced
            self.scaler = ShardedGradScaler(self.device.type)

    def no_sync(self):
        return _fsdp_no_sync(self.model)

    def skip_step(self) -> None:
        self._drop_unreduced_gradients()
        super().skip_step()

    def _drop_unreduced_gradients(self) -> None:
        """Gradients accumulated under ``no_sync()`` wait, unsharded, on FSDP's internal unsharded
        parameters until the next synchronising backward; ``optimizer.zero_grad()`` does not see them."""
        from torch.distributed.fsdp import FSDPModule

        for module in self.model.modules():
            if not isinstance(module, FSDPModule):
                continue
            group = module._get_fsdp_state()._fsdp_param_group
            for fsdp_param in group.fsdp_params if group is not None else ():
                fsdp_param.unsharded_accumulated_grad = None  # used when grads accumulate in reduce_dtype
                unsharded = getattr(fsdp_param, "_unsharded_param", None)
                if unsharded is not None:
                    unsharded.grad = None

    def clip_grad_norm(self) -> float:
        from torch.distributed.tensor import DTensor

        params = self.grad_params()
        if not params:
            return 0.0
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        if isinstance(norm, DTensor):  # a partial norm per shard until reduced
            norm = norm.full_tensor()
        if self.cfg.optim.grad_clip:
            torch.nn.utils.clip_grads_with_norm_(params, self.cfg.optim.grad_clip, norm)
        return float(norm)

    # -- state --------------------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_state, optim_state = get_state_dict(self.model, self.optimizer)
        Path(directory).mkdir(parents=True, exist_ok=True)
        dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(Path(directory) / "dcp"))
        if self.info.is_main:
            torch.save({"scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict()},
                       Path(directory) / "train_state.pt")

    def load(self, directory: Path) -> None:
        """Loads a checkpoint written at any world size (DCP reshards the DTensors)."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        model_state, optim_state = get_state_dict(self.model, self.optimizer)
        state = {"model": model_state, "optimizer": optim_state}
        dcp.load(state, checkpoint_id=str(Path(directory) / "dcp"))
        set_state_dict(self.model, self.optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
        small = torch.load(Path(directory) / "train_state.pt", map_location="cpu", weights_only=True)
        self.scheduler.load_state_dict(small["scheduler"])
        self.scaler.load_state_dict(small["scaler"])

    def export_state_dict(self) -> Optional[dict[str, torch.Tensor]]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not self.info.is_main:
            return None
        return {unwrapped_name(k): _float_cpu(v) for k, v in full.items()}


def is_meta(module: nn.Module) -> bool:
    """Whether ``module`` was built on the meta device (deferred initialisation)."""
    return any(p.is_meta for p in module.parameters())


@torch.no_grad()
def materialize(model: nn.Module, device: torch.device) -> None:
    """Deferred initialisation after ``fully_shard`` on a meta-built model: allocate this rank's shards
    (``to_empty``), run the model's own init on them (``reset_parameters``: each rank draws its own shard),
    then give every rank rank 0's values of the tensors that stay whole (a frozen text tower, buffers).
    No rank ever holds more than its shards plus the replicated tensors."""
    from torch.distributed.tensor import DTensor

    model.to_empty(device=device)
    model.reset_parameters()
    if dist.get_world_size() > 1:
        for tensor in list(model.parameters()) + list(model.buffers()):
            if not isinstance(tensor, DTensor):
                data = tensor.data.view(torch.uint8) if tensor.dtype == torch.bool else tensor.data
                dist.broadcast(data, src=0)


def zero3_init_context(cfg, world_size: int):
    """``deepspeed.zero.Init`` for building a model under ZeRO-3: every parameter is partitioned over the
    ranks as soon as its module is constructed (after rank 0's values are broadcast), in the stored
    precision, so no rank holds the whole model."""
    _deepspeed_env(0)
    import deepspeed

    config = deepspeed_config(cfg, 3, world_size)
    config.pop("train_batch_size")  # zero.Init checks it against a world size it does not know yet
    # the stored dtype comes from the config's bf16/fp16 sections (an explicit dtype=float32 turns into bf16
    # on accelerators without fp16 in DeepSpeed 0.19.8)
    return deepspeed.zero.Init(config_dict_or_path=config)


@torch.no_grad()
def init_zero3_partitions(model: nn.Module) -> None:
    """The model's own init for a model built under ``zero.Init``, whose parameters were partitioned as each
    module was constructed, before its parent could initialise them (CLIP's scaled projections, TVTSv2's
    zero temporal attention). One init unit (a block) at a time is gathered, initialised on rank 0 and
    partitioned again with rank 0's values, so no rank holds more than one block whole."""
    import deepspeed

    for params, init in model.init_units():
        with deepspeed.zero.GatheredParameters(params, modifier_rank=0):
            if dist.get_rank() == 0:
                init()


@torch.no_grad()
def stream_pretrained(model: nn.Module, source) -> list[str]:
    """Copy initial weights in our layout (a :class:`tvts.models.init.TensorSource`, or the path of a
    safetensors file) into ``model`` without any rank reading or holding all of them: each parameter takes
    only what this rank keeps, its rows of an FSDP2 DTensor (dim-0 shards); under ZeRO-3 one parameter at a
    time is gathered, written by rank 0 and partitioned again; whole tensors elsewhere (and for buffers).
    Called between ``parallelize`` and the optimizer (DeepSpeed takes its fp32 masters from the parameters).
    Returns the names loaded; the other tensors keep their init."""
    from torch.distributed.tensor import DTensor
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    from tvts.models.init import SafetensorsSource, TensorSource

    if not isinstance(source, TensorSource):
        source = SafetensorsSource(source)
    keys = source.keys()
    loaded = []
    for name, param in model.named_parameters():
        key = unwrapped_name(name)
        if key not in keys:
            continue
        if isinstance(param, DTensor):
            shape, offset = compute_local_shape_and_global_offset(param.shape, param.device_mesh, param.placements)
            local = param.to_local()
            if local.numel():
                local.copy_(source.rows(key, offset[0], offset[0] + shape[0]))
        elif hasattr(param, "ds_id"):
            import deepspeed

            with deepspeed.zero.GatheredParameters([param], modifier_rank=0):
                if dist.get_rank() == 0:
                    param.data.copy_(source.tensor(key))
        else:
            param.data.copy_(source.tensor(key))
        loaded.append(key)
    for name, buffer in model.named_buffers():
        key = unwrapped_name(name)
        if key in keys:
            buffer.copy_(source.tensor(key))
            loaded.append(key)
    return loaded


def _deepspeed_env(local_rank: int) -> None:
    # DeepSpeed JIT-builds ops (shm_comm on CPU) into a cache keyed by Python/CUDA only, not by torch:
    # keep it per environment
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(sys.prefix, "torch_extensions"))
    os.environ.setdefault("LOCAL_RANK", str(local_rank))  # launchers set it; plain `python` does not
    # DeepSpeed calls the collectives by their torch<=2.11 names (deprecated in 2.13)
    warnings.filterwarnings("ignore", message=r"`torch\.distributed\.(all_gather_into_tensor|reduce_scatter_tensor)`"
                                              r" is deprecated")


@contextlib.contextmanager
def _fsdp_no_sync(model):
    """Accumulate unsharded gradients locally; the next backward outside this context reduce-scatters."""
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


# ----------------------------------------------------------------------------------------------
# DeepSpeed ZeRO
# ----------------------------------------------------------------------------------------------
# Keys of the generated DeepSpeed config that restate a fact of our config: a user JSON may repeat them
# but not change them (one source of truth: the data loader, the schedule and autocast read ours).
_OWNED = {
    ("train_micro_batch_size_per_gpu",): "train.micro_batch",
    ("gradient_accumulation_steps",): "train.grad_accum",
    ("managed_gradient_accumulation",): "the strategy's accumulation contract (step() is the boundary)",
    ("zero_optimization", "stage"): "train.strategy",
    ("bf16", "enabled"): "train.precision",
    ("fp16", "enabled"): "train.precision",
}
_NOT_ALLOWED = {"optimizer": "the optimizer is ours (AdamW over tvts.models.param_groups)",
                "scheduler": "the lr schedule is ours (optim.schedule)"}


def deepspeed_config(cfg, stage: int, world_size: int) -> dict:
    """The DeepSpeed config for ``cfg``, with ``cfg.train.deepspeed_config`` (a JSON file) merged over it.

    Accumulation: ``managed_gradient_accumulation: false`` makes every ``engine.step()`` the accumulation
    boundary, which is exactly how the trainer calls ``step()`` (once after ``grad_accum`` backward calls).
    ``gradient_accumulation_steps`` only keeps DeepSpeed's batch-size bookkeeping right.
    Raises :class:`ConfigError` when the user JSON is unreadable or contradicts our config.
    """
    t, o = cfg.train, cfg.optim
    generated = {
        "train_micro_batch_size_per_gpu": t.micro_batch,
        "gradient_accumulation_steps": t.grad_accum,
        "train_batch_size": t.micro_batch * t.grad_accum * world_size,
        "managed_gradient_accumulation": False,
        "gradient_clipping": o.grad_clip,
        "zero_optimization": {"stage": stage},
        "bf16": {"enabled": t.precision == "bf16"},
        # dynamic loss scaling (loss_scale 0); the official H/14 recipe ran fp16 without it
        "fp16": {"enabled": t.precision == "fp16", "loss_scale": 0, "initial_scale_power": 16},
        "steps_per_print": 2**31 - 1,  # we log ourselves
        "wall_clock_breakdown": False,
    }
    if torch.cuda.is_available():
        # overlap the gradient reduction with backward on GPUs; buckets at DeepSpeed's defaults (5e8 elements)
        generated["zero_optimization"].update(overlap_comm=True, contiguous_gradients=True)
    if not t.deepspeed_config:
        return generated
    path = Path(t.deepspeed_config).expanduser()
    try:
        user = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"train.deepspeed_config: {path} not found") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"train.deepspeed_config: {path} is not valid JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(user, dict):
        raise ConfigError(f"train.deepspeed_config: {path} must hold a JSON object")
    for key, why in _NOT_ALLOWED.items():
        if key in user:
            raise ConfigError(f"train.deepspeed_config: remove the {key!r} section; {why}")
    for keys, ours in _OWNED.items():
        node, mine = user, generated
        for k in keys:
            node = node.get(k) if isinstance(node, dict) else None
            mine = mine[k]
        if node is not None and node != mine:
            raise ConfigError(f"train.deepspeed_config: {'.'.join(keys)}={node!r} contradicts {ours} ({mine!r}); "
                              "set it in the run config instead")
    merged = _merge(generated, user)
    merged["train_batch_size"] = t.micro_batch * t.grad_accum * world_size
    return merged


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


class _DictOutput(nn.Module):
    """Runs ``TVTSModel.forward`` and returns its fields as a dict.

    DeepSpeed hooks the tensors of a module's output (loss scaling, backward prologue, ZeRO-3's re-gather
    before backward) only when they sit in a tensor, tuple, list or dict, not a dataclass. The model's
    forward is called as a method rather than through ``__call__``, so the module DeepSpeed sees running
    that code is this one, whose output it can hook: the video encoder's own parameters, which TVTSModel
    reads without calling the encoder, are then registered to it by ZeRO-3's external-parameter discovery.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, **batch) -> dict:
        out = self.model.forward(**batch)
        return {f.name: getattr(out, f.name) for f in dataclasses.fields(out)}


class ZeroStrategy(Strategy):
    """DeepSpeed ZeRO stage 1 (optimizer states sharded), 2 (+ gradients), 3 (+ parameters).

    DeepSpeed owns precision (bf16 weights with fp32 masters; fp16 with dynamic loss scaling), gradient
    clipping (``optim.grad_clip``), the norm and the overflow check. We own the optimizer (a plain
    ``torch.optim.AdamW`` over our groups, so DeepSpeed JIT-builds no fused Adam) and the schedule.
    """

    stage: int  # set by the registered subclasses zero1, zero2, zero3
    init_before_parallelize = False  # zero3: one gathered parameter at a time

    def stream_init(self, init) -> None:
        stream_pretrained(self.module, init)

    def __init__(self, cfg, model: nn.Module, info: DistInfo, total_steps: int, init=None):
        self.pending = 0  # backward calls since the last step
        super().__init__(cfg, model, info, total_steps, init)

    def parallelize(self) -> None:
        ensure_process_group(self.info)
        if self.stage == 3 and any(hasattr(p, "ds_id") for p in self.module.parameters()):
            init_zero3_partitions(self.module)  # built under zero.Init (tvts.engine.memory.init_context)
        self.module.to(self.device)
        apply_activation_checkpointing(self.module, self.cfg)
        apply_compile(self.module, self.cfg)
        # the engine is built with the optimizer (build_optimizer): DeepSpeed wraps both at once

    def build_optimizer(self) -> None:
        _deepspeed_env(self.info.local_rank)
        import deepspeed
        from deepspeed.accelerator import get_accelerator

        accelerator = get_accelerator()
        if self.cfg.train.precision == "fp16" and not accelerator.is_fp16_supported():
            raise ConfigError(f"train.precision: DeepSpeed has no fp16 on {accelerator.device_name()}; use bf16 or fp32")
        frozen_text = frozen_text_tower(self.module)
        if self.stage == 3 and frozen_text is not None:
            from deepspeed.utils import set_z3_leaf_module

            # gather a frozen text tower whole when it is called: with model.text.cache the ranks skip its
            # blocks on different steps, and per-block gathers would wait for the ranks that skipped
            set_z3_leaf_module(frozen_text, True)
        o = self.cfg.optim
        client = torch.optim.AdamW(param_groups(self.module, o, self.cfg.model.compat),
                                   lr=o.lr, betas=tuple(o.betas), eps=o.eps)
        config = deepspeed_config(self.cfg, self.stage, dist.get_world_size())
        self.engine, *_ = deepspeed.initialize(model=_DictOutput(self.module), optimizer=client, config=config)
        self.model = self.engine
        # the wrapped optimizer steps `client` on its flat fp32 partitions, keeping our group dicts (lr, name)
        self.optimizer = client
        self.scheduler = build_scheduler(client, self.total_steps, o)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=False)  # DeepSpeed scales fp16 itself

    def forward(self, batch: dict):
        from tvts.models.model import TVTSOutput

        batch = self.inputs(batch)
        with self.autocast():
            return TVTSOutput(**self.engine(**batch))

    def no_sync(self):
        # not needed: with managed_gradient_accumulation=false DeepSpeed reduces at step() (stage 1) or
        # reduce-scatters every backward into the gradient partitions (stages 2, 3: they have no no_sync)
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss, scale_wrt_gas=False)  # the trainer already divided by grad_accum
        self.pending += 1

    def step(self) -> StepResult:
        self.engine.step()
        self.pending = 0
        self.scheduler.step()
        if not self.engine.was_step_applied():  # fp16 overflow, or a non-finite gradient norm
            return StepResult(math.nan, True)
        norm = self.engine.get_global_grad_norm()
        return StepResult(math.nan if norm is None else float(norm), False)

    def skip_step(self) -> None:
        if self.pending:
            self._discard_gradients()
        self.scheduler.step()

    def _discard_gradients(self) -> None:
        """Drop gradients already reduced into DeepSpeed's partitions (a later micro-batch had a non-finite
        loss). DeepSpeed has no call for that, so take its step at lr 0 (AdamW then changes no weight) and
        put the Adam moments and step counts back."""
        saved = {p: {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()}
                 for p, s in self.optimizer.state.items()}
        lrs = [g["lr"] for g in self.optimizer.param_groups]
        for group in self.optimizer.param_groups:
            group["lr"] = 0.0
        try:
            self.engine.step()
        finally:
            for group, lr in zip(self.optimizer.param_groups, lrs):
                group["lr"] = lr
            for p in list(self.optimizer.state):
                if p not in saved:
                    del self.optimizer.state[p]
            for p, s in saved.items():
                for k, v in s.items():
                    if torch.is_tensor(v):
                        self.optimizer.state[p][k].copy_(v)
                    else:
                        self.optimizer.state[p][k] = v
            self.pending = 0

    def zero_grad(self) -> None:
        pass  # DeepSpeed clears its gradients in step()

    # -- state --------------------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        self.engine.save_checkpoint(str(Path(directory) / "deepspeed"), tag="zero",
                                    client_state={"scheduler": self.scheduler.state_dict()}, save_latest=False)

    def load(self, directory: Path) -> None:
        path, client = self.engine.load_checkpoint(str(Path(directory) / "deepspeed"), tag="zero",
                                                   load_lr_scheduler_states=False)
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint under {directory}/deepspeed")
        self.scheduler.load_state_dict(client["scheduler"])

    def export_state_dict(self) -> Optional[dict[str, torch.Tensor]]:
        """Trained parameters come from DeepSpeed's fp32 master copy (gathered from the partitions),
        frozen ones from the model (gathered under ZeRO-3), buffers as they are."""
        from deepspeed.utils import safe_get_full_fp32_param

        full = {}
        for p in self.module.parameters():
            value = safe_get_full_fp32_param(p) if p.requires_grad else None
            if value is None:
                value = self._gathered(p)
            full[id(p)] = _float_cpu(value)
        if not self.info.is_main:
            return None
        return {unwrapped_name(k): full[id(v)] if isinstance(v, nn.Parameter) else _float_cpu(v)
                for k, v in self.module.state_dict(keep_vars=True).items()}

    def _gathered(self, param: nn.Parameter) -> torch.Tensor:
        if self.stage < 3:
            return param.detach()
        import deepspeed

        with deepspeed.zero.GatheredParameters([param]):
            return param.detach().clone()


SHARDED: dict[str, type[Strategy]] = {"fsdp": FSDPStrategy}
for _stage in (1, 2, 3):
    SHARDED[f"zero{_stage}"] = type(f"Zero{_stage}Strategy", (ZeroStrategy,), {"name": f"zero{_stage}", "stage": _stage})
