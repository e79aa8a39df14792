"""Memory accounting per rank: what the strategy holds (measured from its tensors) and what it will hold
(an analytic model), so that a run that cannot fit is refused before it allocates anything.

Public API (stable; ``launch/profile.py`` and the trainer call it):

- :func:`measure_model_state` ``(strategy) -> dict``: this rank's ``params_bytes``, ``grads_bytes`` and
  ``optim_bytes``, counted from the tensors the strategy owns at the time of the call (each storage once).
  Gradients exist between a backward and the step; torch's AdamW creates its states at the first step. So
  call it after a backward for the gradients and after a step for the optimizer states (the trainer does
  both); DeepSpeed allocates its states at ``deepspeed.initialize`` already.
- :func:`predict` ``(cfg, strategy_name, world_size, micro_batch=None) -> MemoryEstimate``: bytes per rank of
  parameters, gradients, optimizer states, activations and transient buffers for a config, from a
  parameter count on the meta device (no memory) and per-strategy bytes per element; ``assumptions`` lists
  what the figures take for granted.
- :func:`largest_micro_batch` ``(cfg, strategy_name, world_size, budget_bytes) -> int``: the most clips per
  rank whose prediction fits ``budget_bytes`` (0: not even one).
- :func:`check_fits` ``(cfg, strategy_name, world_size, budget_bytes=None) -> None``: raises
  :class:`MemoryBudgetError` (a one-line :class:`~tvts.config.ConfigError`) naming the GiB needed, the GiB
  available and the strategies that fit.
- :class:`ActivationMeter`: bytes autograd saves for backward during a forward (``saved_tensors_hooks``).
- :func:`machine_budget_bytes`; process RSS comes from :mod:`tvts.engine.metrics` (``rss_bytes``,
  ``peak_memory_bytes``).

Bytes per element held per rank (W ranks, T trainable and F frozen parameters, p = 4 in fp32 or 2 in
bf16/fp16 where the strategy stores low-precision weights; measured on DeepSpeed 0.19.8 and torch 2.13):

============  ===================  ====================  ======================================
strategy      parameters           gradients             optimizer states (Adam m, v + master)
============  ===================  ====================  ======================================
single, ddp   4 (T + F)            4 T                   8 T
fsdp          4 (T + F) / W        4 T / W               8 T / W
zero1         p (T + F)            p T                   (4 + 8) T / W
zero2         p (T + F)            p T                   (4 + 8) T / W
zero3         p (T + F) / W        p T / W               (4 + 8) T / W
============  ===================  ====================  ======================================

FSDP keeps a frozen-as-a-whole text tower out of the shards (replicated). ZeRO-3 keeps parameters smaller
than ``stage3_param_persistence_threshold`` whole on every rank as well. DeepSpeed keeps an fp32 master
copy of the trainable partition in every precision, fp32 included (hence 20 bytes per trainable parameter
for zero3 in fp32 against FSDP2's 16), and on the CPU/gloo path zero1/2 hold a full-size gradient until
the step.
"""
from __future__ import annotations

import ctypes
import math
import os
import sys
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn as nn

from tvts.config import ConfigError
from tvts.engine.metrics import rss_bytes

GIB = 2**30
STRATEGY_NAMES = ("single", "ddp", "fsdp", "zero1", "zero2", "zero3")


class MemoryBudgetError(ConfigError):
    """A run whose predicted per-rank memory exceeds what the machine has; one line, names the fix."""


# ----------------------------------------------------------------------------------------------
# Measurement
# ----------------------------------------------------------------------------------------------
def _local(t: torch.Tensor) -> torch.Tensor:
    """A DTensor's local shard; any other tensor as it is."""
    to_local = getattr(t, "to_local", None)
    return to_local() if callable(to_local) else t


def _storage(t: torch.Tensor):
    t = _local(t)
    if t.is_meta:
        return None
    return t.untyped_storage()


class _Counter:
    """Sums storage bytes, each storage once (views into DeepSpeed's flat buffers share one storage)."""

    def __init__(self):
        self.seen: set[int] = set()

    def add(self, tensors) -> int:
        total = 0
        for t in tensors:
            if t is None or not torch.is_tensor(t):
                continue
            storage = _storage(t)
            if storage is None or storage.nbytes() == 0:
                continue
            key = storage.data_ptr()
            if key in self.seen:
                continue
            self.seen.add(key)
            total += storage.nbytes()
        return total


def _tensors_in(obj, depth: int = 0):
    """Tensors held by an attribute value: a tensor, or lists/tuples/dicts of them (a few levels deep)."""
    if torch.is_tensor(obj):
        yield obj
    elif depth < 4 and isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors_in(item, depth + 1)
    elif depth < 4 and isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors_in(item, depth + 1)


def _optimizer_state(optimizer) -> list[torch.Tensor]:
    return [v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v)]


def measure_model_state(strategy) -> dict:
    """This rank's bytes of parameters, gradients and optimizer states, counted from the tensors the
    strategy owns now (each storage once, padding included).

    - params: the model's parameters as stored (DTensor local shards under FSDP2; ``ds_tensor`` partitions
      and persistent whole parameters under ZeRO-3; DeepSpeed's flat low-precision groups under ZeRO-1/2).
    - grads: ``.grad`` of those, plus DeepSpeed's gradient buffers and partitions.
    - optim: the AdamW states, plus DeepSpeed's fp32 master partitions.

    Returns ``{"params_bytes", "grads_bytes", "optim_bytes"}`` (ints, bytes).
    """
    module = strategy.module
    counter = _Counter()
    params = [getattr(p, "ds_tensor", None) if hasattr(p, "ds_tensor") and p.numel() == 0 else p
              for p in module.parameters()]
    params_bytes = counter.add(params)
    grads_bytes = counter.add(p.grad for p in module.parameters())
    optim_bytes = counter.add(_optimizer_state(strategy.optimizer))
    engine = getattr(strategy, "engine", None)
    if engine is not None:  # DeepSpeed: classify its own buffers by what they are named after
        ds_opt = engine.optimizer
        attrs = {k: v for k, v in vars(ds_opt).items() if k != "optimizer"}
        for name, value in attrs.items():
            low = name.lower()
            if "grad" in low and "norm" not in low:
                grads_bytes += counter.add(_tensors_in(value))
        for name, value in attrs.items():
            low = name.lower()
            if "fp32" in low:  # fp32_partitioned_groups_flat (stage 3), single_partition_of_fp32_groups (1, 2)
                tensors = list(_tensors_in(value))
                optim_bytes += counter.add(tensors)
                grads_bytes += counter.add(t.grad for t in tensors)
    return {"params_bytes": params_bytes, "grads_bytes": grads_bytes, "optim_bytes": optim_bytes}


class ActivationMeter:
    """Bytes autograd saves for backward inside the context (``torch.autograd.graph.saved_tensors_hooks``).

    Each storage counts once and only while it still holds memory when the forward ends (FSDP2 frees the
    unsharded weights it saved); parameter storages are not. Activation-checkpointed blocks count their
    inputs (kept for the recompute), not what they recompute in backward. Autocast's low-precision weight
    copies count. On CPU this is how activation memory is measured; ``bytes`` is read after the forward.
    """

    def __init__(self, module: Optional[nn.Module] = None):
        self.module = module
        params = module.parameters() if module is not None else ()
        self.exclude = {s.data_ptr() for s in map(_storage, params) if s is not None}
        self.storages: dict[int, object] = {}
        self.bytes = 0
        self._hooks = None
        self._handles: list = []

    def _keep_inputs(self, module, args, kwargs=None):
        # a checkpointed block keeps its inputs (for the recompute) outside autograd's saved tensors
        if torch.is_grad_enabled():
            for t in _tensors_in(list(args) + list((kwargs or {}).values())):
                self._pack(t)

    def _pack(self, tensor: torch.Tensor):
        storage = _storage(tensor) if not isinstance(tensor, nn.Parameter) else None
        if storage is not None and storage.data_ptr() not in self.exclude:
            # keyed by the storage itself (held here, so its identity is not reused), not by its address: FSDP2
            # frees an unsharded weight's storage in place (resize to 0) and the next block's activations may be
            # allocated at that address; keyed by address they would be dropped as "already counted"
            self.storages.setdefault(storage._cdata, storage)
        return tensor

    def __enter__(self) -> "ActivationMeter":
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper

        for m in self.module.modules() if self.module is not None else ():
            if isinstance(m, CheckpointWrapper):
                self._handles.append(m.register_forward_pre_hook(self._keep_inputs, with_kwargs=True))
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> bool:
        self._hooks.__exit__(*exc)
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.bytes = sum(s.nbytes() for s in self.storages.values())
        self.storages = {}  # drop the references: autograd alone keeps the tensors now
        return False


def trim_host_memory() -> None:
    """Give the heap memory freed so far back to the OS (glibc ``malloc_trim``). Building, initialising and
    sharding a model frees many mid-sized blocks that glibc would otherwise keep resident on CPU."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl): nothing to trim
        pass


def machine_budget_bytes(local_world_size: int = 1, device: Optional[torch.device] = None) -> int:
    """Memory one rank may use: its GPU's memory, or on CPU the machine's physical memory (MemTotal) shared
    by the ``local_world_size`` ranks of this node."""
    device = device or (torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu"))
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return total // max(1, local_world_size)


# ----------------------------------------------------------------------------------------------
# Analytic model
# ----------------------------------------------------------------------------------------------
@dataclass
class MemoryEstimate:
    """Predicted bytes per rank. ``total_bytes`` = params + grads + optim + activations + transient."""

    strategy: str
    world_size: int
    micro_batch: int
    precision: str
    params_bytes: int
    grads_bytes: int
    optim_bytes: int
    activations_bytes: int  # saved for backward by one micro-batch (+ one recomputed block when checkpointing)
    transient_bytes: int = 0  # alive only around forward/backward: FSDP's unsharded units, gradient buckets
    total_bytes: int = 0
    assumptions: list[str] = field(default_factory=list)

    def __post_init__(self):
        if not self.total_bytes:
            self.total_bytes = (self.params_bytes + self.grads_bytes + self.optim_bytes + self.activations_bytes
                                + self.transient_bytes)

    @property
    def model_state_bytes(self) -> int:
        return self.params_bytes + self.grads_bytes + self.optim_bytes

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("strategy", "world_size", "micro_batch", "precision", "params_bytes",
                                              "grads_bytes", "optim_bytes", "activations_bytes", "transient_bytes",
                                              "total_bytes", "assumptions")}


@dataclass
class ParamCount:
    """Parameter counts (elements) of a config's model, read on the meta device."""

    sizes: list[tuple[int, bool, int, bool]]  # per parameter: (numel, trainable, dim-0 size, replicated by fsdp)
    replicated_frozen: int  # elements of a frozen-as-a-whole text tower (FSDP keeps it out of the shards)
    units: list[int]  # elements per FSDP unit: each transformer block, then the root (the rest)
    cast_weights: int = 0  # matrix weights autocast copies outside activation-checkpointed blocks

    @property
    def total(self) -> int:
        return sum(n for n, _, _, _ in self.sizes)

    @property
    def trainable(self) -> int:
        return sum(n for n, t, _, _ in self.sizes if t)


def count_parameters(cfg) -> ParamCount:
    """Build the model of ``cfg`` on the meta device (no memory, no weights read) and count."""
    from tvts.engine.strategies import frozen_text_tower, transformer_blocks
    from tvts.models.model import TVTSModel

    with torch.device("meta"):
        model = TVTSModel(cfg, pretrained_text=False)
    frozen_text = frozen_text_tower(model)  # what FSDP leaves replicated (tvts.engine.sharded)
    replicated_params = list(frozen_text.parameters()) if frozen_text is not None else []
    replicated_ids = {id(p) for p in replicated_params}
    sizes = [(p.numel(), p.requires_grad, p.shape[0] if p.dim() else 1, id(p) in replicated_ids)
             for p in model.parameters()]
    replicated = sum(p.numel() for p in replicated_params)
    text_modules = set(frozen_text.modules()) if frozen_text is not None else set()
    units = []
    for blocks in transformer_blocks(model):
        if blocks in text_modules:
            continue
        units.extend(sum(p.numel() for p in block.parameters()) for block in blocks)
    units.append(sum(n for n, *_ in sizes) - sum(units) - replicated)
    recomputed = {id(p) for p in model.video.blocks.parameters()} if cfg.model.video.grad_checkpointing else set()
    cast = sum(p.numel() for name, p in model.named_parameters()
               if p.dim() >= 2 and ("embed" not in name or name.endswith("patch_embed")) and id(p) not in recomputed)
    return ParamCount(sizes, replicated, units, cast)


# DeepSpeed 0.19.8's ZeRO-3 defaults (elements) for the keys the model reads
ZERO3_DEFAULTS = {"stage3_param_persistence_threshold": 100_000, "stage3_prefetch_bucket_size": 50_000_000,
                  "reduce_bucket_size": 500_000_000}


def _zero3_settings(cfg, world_size: int) -> dict[str, int]:
    """The ZeRO-3 sizes of the run's DeepSpeed config (ours merged with ``train.deepspeed_config``)."""
    zero = {}
    if cfg.train.deepspeed_config:
        from tvts.engine.sharded import deepspeed_config

        zero = deepspeed_config(cfg, 3, world_size).get("zero_optimization", {})
    return {key: int(float(zero.get(key, default))) for key, default in ZERO3_DEFAULTS.items()}


def _block_bytes_per_token(dim: int, hidden: int, low: bool, divided: bool) -> float:
    """Bytes one token leaves saved for backward in one pre-norm transformer block.

    Counted per op: the two LayerNorm inputs (fp32, autocast runs norms in fp32); the inputs of the qkv,
    output, fc1 and fc2 linears (the compute dtype: a bf16 copy under autocast); q, k, v and the output of
    fused attention (SDPA flash/efficient kernels, no (L x L) matrix); the activation's input. A divided
    (TVTSv2) block adds its temporal attention (a norm, qkv, attention, projection) and the per-group
    key/value copies with CLS prepended to both attentions.
    """
    c = 2 if low else 4
    per = 4 * 2 * dim + c * (dim + 4 * dim + dim + dim + hidden + hidden)
    if divided:
        per += 4 * dim + c * (dim + 4 * dim + dim) + c * 2 * 2 * dim
    return per


def activation_bytes(cfg, micro_batch: int) -> tuple[int, int, list[str]]:
    """Predicted bytes one micro-batch of transcript clips leaves for backward at the end of its forward,
    bytes a checkpointed block's recompute adds in backward (transient), and the assumptions."""
    v, t, s = cfg.model.video, cfg.model.text, cfg.model.sort
    low = cfg.train.precision != "fp32"
    width, depth, _ = cfg.video_dims()
    grid = cfg.patch_grid()
    tokens = 1 + grid.visible_tokens
    divided = v.family == "v2"
    block = _block_bytes_per_token(width, int(width * v.mlp_ratio), low, divided) * tokens
    notes = ["activations: fused attention (no L x L matrix), one micro-batch of transcript clips at the training mask"]
    if v.grad_checkpointing:
        # each block keeps its fp32 input; backward recomputes one block at a time (transient)
        video, recompute = depth * 4 * width * tokens, block
        notes.append("activation checkpointing: one fp32 block input per video block kept; one block "
                     "recomputed at a time in backward (transient)")
    else:
        video, recompute = depth * block, 0.0
    patch_in = grid.visible_tokens * 3 * v.tubelet * v.patch_size**2 * (2 if low else 4)
    dim = v.output_dim or width
    k = cfg.sample.num_windows
    sort_tokens = grid.visible_tokens + (1 if s.video_tokens == "normed" else 0) + k
    sort_block = _block_bytes_per_token(dim, int(dim * s.mlp_ratio), low, False)
    # the last block computes only the K transcript rows; every row still goes through its norm and k/v
    readout = sort_tokens * (4 * dim + (2 if low else 4) * 3 * dim) + k * sort_block
    sorter = (s.depth - 1) * sort_block * sort_tokens + readout
    text = 0.0
    if t.kind == "clip" and not t.frozen:
        # the token embedding trains, so every block saves activations (frozen blocks included)
        text = cfg.sample.num_windows * t.context_length * t.layers * _block_bytes_per_token(t.width, 4 * t.width, low, False)
        notes.append(f"text: {cfg.sample.num_windows} transcripts at the full context of {t.context_length} tokens")
    elif not t.frozen:
        notes.append("text: a trainable Hugging Face text tower's activations are not modelled")
    return int(micro_batch * (video + patch_in + sorter + text)), int(micro_batch * recompute), notes


def predict(cfg, strategy_name: str, world_size: int, micro_batch: Optional[int] = None,
            counts: Optional[ParamCount] = None) -> MemoryEstimate:
    """Per-rank bytes of ``cfg`` under ``strategy_name`` on ``world_size`` ranks (see the module table).

    ``micro_batch`` defaults to ``cfg.train.micro_batch``; ``counts`` (from :func:`count_parameters`) saves
    rebuilding the meta model when predicting several strategies.
    """
    if strategy_name not in STRATEGY_NAMES:
        raise ValueError(f"strategy {strategy_name!r}: expected one of {', '.join(STRATEGY_NAMES)}")
    counts = counts or count_parameters(cfg)
    w = max(1, world_size)
    micro_batch = cfg.train.micro_batch if micro_batch is None else micro_batch
    precision = cfg.train.precision
    low = 2 if precision != "fp32" else 4
    trainable = [n for n, tr, _, _ in counts.sizes if tr]
    n_all, n_train = counts.total, counts.trainable
    assumptions = [f"{w} rank(s), AdamW with fp32 moments (8 bytes per trainable parameter)",
                   f"{n_all / 1e6:.1f} M parameters, {n_train / 1e6:.1f} M trainable"]
    transient = 0
    name = "ddp" if strategy_name == "single" else strategy_name
    if name == "ddp":
        params, grads, optim = 4 * n_all, 4 * n_train, 8 * n_train + 4 * len(trainable)
        assumptions.append("ddp: fp32 weights, gradients in DDP's buckets (gradient_as_bucket_view)")
    elif name == "fsdp":
        # fully_shard pads dim 0 to a multiple of W; a frozen text tower stays whole (replicated)
        shard = lambda n, d0: n // d0 * math.ceil(d0 / w)  # noqa: E731
        params = 4 * (sum(shard(n, d0) for n, _, d0, rep in counts.sizes if not rep) + counts.replicated_frozen)
        local_train = sum(shard(n, d0) for n, tr, d0, _ in counts.sizes if tr)
        grads, optim = 4 * local_train, 8 * local_train + 4 * len(trainable)
        # forward/backward all-gather one unit (and prefetch the next) in the compute dtype, and build its
        # full gradient in the reduce dtype (fp32) before reduce-scattering it
        biggest = sorted(counts.units)[-2:]
        transient = sum(biggest) * (low + 4)
        assumptions.append("fsdp: fp32 sharded masters; two units unsharded at a time (compute dtype) with fp32 gradients")
        if counts.replicated_frozen:
            assumptions.append("fsdp: the frozen text tower is replicated (ignored_params)")
    else:
        stage = int(name[-1])
        params_elems = n_all
        assumptions.append(f"zero{stage}: {'bf16/fp16' if low == 2 else 'fp32'} weights, fp32 master partition "
                           "(4 bytes) + Adam moments (8 bytes) per trainable parameter / W")
        if stage == 3:
            z3 = _zero3_settings(cfg, w)
            threshold = z3["stage3_param_persistence_threshold"]
            persistent = sum(n for n, *_ in counts.sizes if n < threshold)
            params_elems = sum(math.ceil(n / w) for n, *_ in counts.sizes) + persistent
            grads = low * math.ceil(n_train / w)
            # the parameter in use and the prefetched ones gathered whole, and the gradient bucket being reduced
            gathered = max(n for n, *_ in counts.sizes) + min(z3["stage3_prefetch_bucket_size"], n_all)
            transient = low * (gathered + min(z3["reduce_bucket_size"], n_train))
            assumptions.append(f"zero3: parameters under {threshold} elements also kept whole on every rank; "
                               f"{gathered / 1e6:.0f} M parameters gathered (the largest + the prefetch bucket) and "
                               f"a {min(z3['reduce_bucket_size'], n_train) / 1e6:.0f} M-element gradient bucket (transient)")
        else:
            grads = low * n_train
            # deepspeed.initialize flattens the parameters into one buffer per group beside the module's own
            transient = low * n_all
            assumptions.append(f"zero{stage}: a full-size gradient held until the step (DeepSpeed's gloo path), "
                               "and a flat copy of the parameters made at initialisation (transient)")
        params = low * params_elems
        optim = 12 * math.ceil(n_train / w) + 4 * len(trainable)
    activations, recompute, notes = activation_bytes(cfg, micro_batch)
    transient += recompute
    assumptions += notes
    if name == "ddp" and low == 2 and micro_batch:
        # autocast keeps its bf16/fp16 copy of each matrix weight for backward (recomputed inside checkpoints)
        activations += 2 * counts.cast_weights
        assumptions.append("ddp in bf16/fp16: autocast's low-precision weight copies saved for backward")
    return MemoryEstimate(strategy_name, w, micro_batch, precision, int(params), int(grads), int(optim),
                          int(activations), int(transient), assumptions=assumptions)


def largest_micro_batch(cfg, strategy_name: str, world_size: int, budget_bytes: int,
                        counts: Optional[ParamCount] = None) -> int:
    """The most clips per rank whose predicted total fits ``budget_bytes`` (activations grow linearly with
    the micro-batch, the rest does not); 0 when not even one clip fits."""
    counts = counts or count_parameters(cfg)
    zero = predict(cfg, strategy_name, world_size, 0, counts)
    one = predict(cfg, strategy_name, world_size, 1, counts)
    per_clip = max(1, one.activations_bytes)
    room = budget_bytes - zero.total_bytes
    return max(0, int(room // per_clip))


def check_fits(cfg, strategy_name: str, world_size: int, budget_bytes: Optional[int] = None,
               overhead_bytes: Optional[int] = None) -> None:
    """Refuse, before anything is built, a run whose predicted per-rank memory exceeds the budget.

    ``budget_bytes`` defaults to :func:`machine_budget_bytes` for this node's ranks; ``overhead_bytes`` (what
    the process holds besides the model: Python, torch, libraries) defaults to this process's RSS now.
    Raises :class:`MemoryBudgetError`, e.g. ``train.strategy=ddp needs ~16.1 GiB per rank (...), the machine
    has 11.7 GiB per rank: use zero3 or fsdp``.
    """
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "0") or 0) or world_size
    budget = budget_bytes if budget_bytes is not None else machine_budget_bytes(local)
    overhead = rss_bytes() if overhead_bytes is None else overhead_bytes
    counts = count_parameters(cfg)
    est = predict(cfg, strategy_name, world_size, counts=counts)
    if est.total_bytes + overhead <= budget:
        return
    need = (est.total_bytes + overhead) / GIB
    fits = []
    for other in STRATEGY_NAMES:
        if other in (strategy_name, "single") or (other == "ddp" and world_size == 1):
            continue
        total = predict(cfg, other, world_size, counts=counts).total_bytes + overhead
        if total <= budget:
            fits.append((total, other))
    parts = (f"params {est.params_bytes / GIB:.1f}, grads {est.grads_bytes / GIB:.1f}, optimizer "
             f"{est.optim_bytes / GIB:.1f}, activations {est.activations_bytes / GIB:.1f}, other "
             f"{(est.transient_bytes + overhead) / GIB:.1f}")
    if fits:
        fix = "use " + " or ".join(name for _, name in sorted(fits))
    else:
        fix = "no strategy fits: lower train.micro_batch or add ranks"
    raise MemoryBudgetError(f"train.strategy={strategy_name} needs ~{need:.1f} GiB per rank ({parts}) on "
                            f"{world_size} rank(s), the machine has {budget / GIB:.1f} GiB per rank: {fix}")


def init_context(cfg, world_size: int):
    """Where to build the model: on the meta device for fsdp (materialised shard by shard by the strategy),
    under ``deepspeed.zero.Init`` for zero3 in bf16 (each parameter partitioned as soon as its module is
    built), in place otherwise. Either way no rank ever holds the whole fp32 model. A Hugging Face text tower (``text.kind:
    hf``) loads its weights at construction, so such models are built in place."""
    strategy = cfg.train.strategy
    if world_size == 1 or cfg.model.text.kind != "clip":
        return nullcontext()
    if strategy == "fsdp":
        return torch.device("meta")
    if strategy == "zero3" and cfg.train.precision != "fp32":
        # fp32 under zero.Init trains nothing in DeepSpeed 0.19.8 (the optimizer sees no gradients), so an
        # fp32 ZeRO-3 model is built in place and partitioned at deepspeed.initialize
        from tvts.engine.sharded import zero3_init_context

        return zero3_init_context(cfg, world_size)
    return nullcontext()


# ----------------------------------------------------------------------------------------------
# Report: the measured table of finished runs
# ----------------------------------------------------------------------------------------------
TABLE_KEYS = ("params", "grads", "optim", "activations")


def runs_table(run_dirs) -> str:
    """Markdown table of finished runs from their ``metrics.jsonl``: per-rank GiB (max over ranks) of
    parameters, gradients, optimizer states and activations measured by the trainer, with the prediction
    and its error, the process peak RSS, and the mean step time of the steps after the first (warm-up)."""
    import json
    from pathlib import Path

    import yaml

    lines = ["| config | strategy | ranks | params | grads | optimizer states | activations | peak RSS | step time |",
             "|---|---|---|---|---|---|---|---|---|"]
    for run_dir in map(Path, run_dirs):
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        records = [r for r in records if "mem/params_gib" in r]
        if not records:
            raise ValueError(f"{run_dir}: no memory figures in metrics.jsonl (a run of this trainer logs them)")
        last = records[-1]
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        cells = []
        for key in TABLE_KEYS:
            got, want = last[f"mem/{key}_gib"], last[f"mem/pred_{key}_gib"]
            error = f"{100 * (want - got) / got:+.0f} %" if got else "-"
            cells.append(f"{got:.2f} ({want:.2f}, {error})")
        steps = [r["step_time_s"] for r in records[1:]] or [records[0]["step_time_s"]]
        clips_per_rank = cfg["train"]["micro_batch"] * cfg["train"]["grad_accum"]
        ranks = round(last["clips_per_s"] * last["step_time_s"] / clips_per_rank)
        lines.append(f"| {cfg['name']} | {cfg['train']['strategy']} | {ranks} | " + " | ".join(cells)
                     + f" | {last['mem/peak_rss_gib']:.1f} | {sum(steps) / len(steps):.1f} s |")
    lines.append("")
    lines.append("GiB per rank, measured (predicted, prediction error). Model states are counted from the "
                 "strategy's tensors, activations are the bytes saved for backward by one micro-batch.")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m tvts.engine.memory runs/a runs/b: the table of finished runs
    import sys

    print(runs_table(sys.argv[1:]))
