"""Sharded and replicated strategies against ``single``: losses, weights, lr groups, frozen layers,
checkpoints, gradient accumulation.

Two gloo ranks with half of each global batch compute the same loss as one process with all of it: the
VTC loss gathers its negatives from every rank and the sort loss is a mean over equal halves. So every
strategy must reproduce ``single`` up to float summation order (fp32: ~1e-6 here).

All 2-rank runs share one pair of processes (module fixture ``runs``): DeepSpeed's first initialisation
in a process costs ~10 s, later ones ~1 s. The first DeepSpeed use on a machine JIT-builds its shm_comm op
once (~40-120 s) into TORCH_EXTENSIONS_DIR.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from pathlib import Path

import pytest
import numpy
import torch
import torch.distributed as dist

from tvts import config
from tvts.config import ConfigError
from tvts.engine.distributed import DistInfo
from tvts.engine.build import build_strategy
from tvts.testing import spawn_ranks

os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(sys.prefix, "torch_extensions"))
os.environ.setdefault("DS_ACCELERATOR", "cpu")

EOT = 49407  # CLIP's end-of-text id: the largest id, so the text tower pools at argmax
STEPS, CLIPS = 3, 4  # optimizer steps per run, clips per global batch
# atto video (64 wide, 2 blocks) on 8 frames of 32 px; a 2-layer 32-wide CLIP text tower on 16 tokens.
# Clipping, weight decay and a warm-up schedule are on so that each of them has to match too.
TINY = ("model.video.size=atto", "model.video.patch_size=8", "sample.image_size=32", "sample.frames_per_window=2",
        "sample.caption_frames=2", "model.sort.heads=2", "model.text.kind=clip", "model.text.width=32",
        "model.text.layers=2", "model.text.heads=2", "model.text.context_length=16", "model.text.output_dim=32",
        "model.vtc.embed_dim=32", "optim.lr=1e-3", "optim.weight_decay=0.05", "optim.grad_clip=0.5",
        "optim.schedule=cosine", "optim.warmup_steps=3")
# TVTSv2: divided space-time video ending in its own projection, first CLIP block frozen, two lr groups;
# activation checkpointing on, so that it composes with every strategy's wrapping and names
V2 = TINY + ("model.video.family=v2", "model.video.tubelet=1", "sample.mask=tube", "model.video.output_dim=32",
             "model.vtc.projection=none", "model.text.frozen_layers=1", "optim.groups=degeneration_free",
             "optim.lr_pretrained=1e-5", "model.video.grad_checkpointing=true")
FROZEN_TEXT = TINY + ("model.text.frozen=true", "model.text.cache=true")
# VTC is a batch-level loss (its negatives are the batch), so only without it do two half batches add up
# to the full one; the sort loss is a per-clip mean
ACCUM_REF = TINY + ("model.vtc_weight=0",)
ACCUM = ACCUM_REF + ("train.grad_accum=2", "train.micro_batch=1")
RESUMED = ("fsdp", "zero2", "zero3")
LOW_PRECISION = (("fsdp", "bf16"), ("zero3", "bf16"), ("fsdp", "fp16"))  # DeepSpeed has no fp16 on CPU
SKIPPED = ("fsdp", "zero2", "zero3")
INIT = ("ddp", "fsdp", "zero2", "zero3")
CAPTIONS = TINY + ("data.captions=[captions]",)  # alternate transcript and caption (VTC-only) steps


# ----------------------------------------------------------------------------------------------
# Data, model, loop
# ----------------------------------------------------------------------------------------------
def make_batch(cfg, clips: int, seed: int) -> dict:
    """``clips`` clips: video (B, T, 3, H, W); CLIP ids (B*K, L) ending in EOT at random lengths; labels
    (B, K) random permutations; keep_indices (B, S, n), or (B, n) for tube masking."""
    g = torch.Generator().manual_seed(seed)
    s, length = cfg.sample, cfg.model.text.context_length
    k = s.num_windows
    video = torch.randn(clips, s.frames, 3, s.image_size, s.image_size, generator=g)
    ids = torch.randint(1, EOT, (clips * k, length), generator=g)
    lengths = torch.randint(2, length + 1, (clips * k, 1), generator=g)
    pos = torch.arange(length)
    ids = torch.where(pos == lengths - 1, EOT, ids).masked_fill(pos >= lengths, 0)
    labels = torch.stack([torch.randperm(k, generator=g) for _ in range(clips)])
    grid = cfg.patch_grid()
    slots = 1 if s.mask == "tube" else grid.slots
    keep = torch.stack([torch.stack([torch.randperm(grid.patches_per_slot, generator=g)[:grid.keep]
                                     for _ in range(slots)]) for _ in range(clips)])
    return {"video": video, "text": {"input_ids": ids, "attention_mask": (pos < lengths).long()},
            "labels": labels, "keep_indices": keep[:, 0] if s.mask == "tube" else keep}


def clip_rows(batch: dict, start: int, stop: int, k: int) -> dict:
    """Clips [start, stop) of a batch; their transcripts are rows start*k .. stop*k (one caption per clip
    in a caption batch, which has no labels)."""
    k = k if "labels" in batch else 1
    rows = {"video": batch["video"][start:stop], "text": {n: t[start * k:stop * k] for n, t in batch["text"].items()}}
    rows.update({key: batch[key][start:stop] for key in ("labels", "keep_indices") if key in batch})
    return rows


def as_caption_batch(batch: dict, cfg) -> dict:
    """A caption (VTC-only) batch from a transcript batch: caption_frames frames, each clip's first
    transcript as its caption, no labels, no mask."""
    k = cfg.sample.num_windows
    return {"video": batch["video"][:, :cfg.sample.caption_frames], "text": {n: t[::k] for n, t in batch["text"].items()}}


def batches(cfg, repeat_first_half: bool = False) -> list[dict]:
    """STEPS global batches. ``repeat_first_half``: batch 1 repeats batch 0's first half (rank 0's clips),
    so with a transcript cache rank 0 hits on every row at step 1 while rank 1 misses."""
    out = [make_batch(cfg, CLIPS, 100 + i) for i in range(STEPS)]
    if cfg.data.captions:  # alternate with caption steps, as data.mix=alternate does
        out = [as_caption_batch(b, cfg) if i % 2 else b for i, b in enumerate(out)]
    if repeat_first_half:
        half, k = CLIPS // 2, cfg.sample.num_windows
        for key in ("video", "labels", "keep_indices"):
            out[1][key][:half] = out[0][key][:half]
        for key in out[1]["text"]:
            out[1]["text"][key][:half * k] = out[0]["text"][key][:half * k]
    return out


def rank_world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def build(overrides, strategy: str, init_seed: int = 0, init: str | None = None):
    from tvts.engine import memory
    from tvts.models.model import TVTSModel

    cfg = config.load(None, list(overrides) + [f"train.strategy={strategy}"])
    rank, world = rank_world()
    torch.manual_seed(init_seed + rank)  # ranks build different weights: the strategy must start them equal
    with memory.init_context(cfg, world) if init else contextlib.nullcontext():  # as the trainer builds
        model = TVTSModel(cfg, pretrained_text=False)
    return cfg, build_strategy(cfg, model, DistInfo(rank, world, rank, world), STEPS, init)


def train(strategy, cfg, global_batches: list[dict], pending: dict | None = None) -> dict:
    """One optimizer step per global batch, split over ranks and into ``train.grad_accum`` micro-batches,
    calling the strategy as the trainer does. ``pending``: a batch whose first micro-batch runs backward
    before the first step and is then dropped with ``skip_step()`` (as after a later non-finite loss).

    Returns per-step losses (mean over ranks = the global batch loss), grad norms, skipped flags, lrs."""
    rank, world = rank_world()
    accum, k = cfg.train.grad_accum, cfg.sample.num_windows
    out = {"loss": [], "grad_norm": [], "skipped": [], "lrs": []}
    if pending is not None:
        micro = pending["video"].shape[0] // world // accum
        with strategy.no_sync():
            strategy.backward(strategy.forward(clip_rows(pending, rank * micro, (rank + 1) * micro, k)).loss / accum)
        strategy.skip_step()
    for batch in global_batches:
        per_rank = batch["video"].shape[0] // world
        micro = per_rank // accum
        total = torch.zeros(())
        for m in range(accum):
            start = rank * per_rank + m * micro
            with strategy.no_sync() if m < accum - 1 else contextlib.nullcontext():
                loss = strategy.forward(clip_rows(batch, start, start + micro, k)).loss
                strategy.backward(loss / accum)
            total += loss.detach().float() / accum
        if world > 1:
            dist.all_reduce(total)
            total /= world
        result = strategy.step()
        out["loss"].append(float(total))
        out["grad_norm"].append(result.grad_norm)
        out["skipped"].append(result.skipped)
        out["lrs"].append(strategy.lrs())
    return out


def portable(state):
    """Tensors cannot leave a spawned rank through its result queue once the rank has exited: numpy."""
    return None if state is None else {k: v.numpy().copy() for k, v in state.items()}  # not a view of live weights


def tensors(state):
    return {k: torch.from_numpy(v) for k, v in state.items()}


def run(strategy_name: str, overrides, *, checkpoint: Path | None = None, resume_from: Path | None = None,
        repeat_first_half: bool = False, pending: bool = False, init: str | None = None) -> dict:
    """Train STEPS steps; with ``checkpoint``, save after step 2 and also rerun step 3 from that checkpoint
    in a freshly built (differently initialised) strategy. With ``resume_from``, only load and run the
    last step. ``init``: a safetensors file of initial weights (model.init). Exports (rank 0) are numpy dicts."""
    cfg, strategy = build(overrides, strategy_name, init=init)
    data = batches(cfg, repeat_first_half)
    if resume_from is not None:
        strategy.load(resume_from)
        return {**train(strategy, cfg, data[2:]), "final": portable(strategy.export_state_dict())}
    init = portable(strategy.export_state_dict())
    extra = make_batch(cfg, CLIPS, 99) if pending else None
    head = train(strategy, cfg, data[:2], pending=extra)
    at_checkpoint = None
    if checkpoint is not None:
        strategy.save(checkpoint)
        at_checkpoint = portable(strategy.export_state_dict())
    tail = train(strategy, cfg, data[2:])
    out = {key: head[key] + tail[key] for key in head}
    out["at_checkpoint"] = at_checkpoint
    out.update(init=init, final=portable(strategy.export_state_dict()))
    if checkpoint is not None:
        dist.barrier()
        _, again = build(overrides, strategy_name, init_seed=1)
        again.load(checkpoint)
        out["resumed"] = {**train(again, cfg, data[2:]), "final": portable(again.export_state_dict())}
    return out


# ----------------------------------------------------------------------------------------------
# Rank processes
# ----------------------------------------------------------------------------------------------
def _two_ranks(rank, world, root):
    root = Path(root)

    def go(name, overrides, **kwargs):
        if name == "zero3":  # partition every parameter (see the fixture) via a user DeepSpeed JSON
            overrides = overrides + (f"train.deepspeed_config={root / 'zero3.json'}",)
        return run(name, overrides, **kwargs)

    out = {}
    for name in ("ddp", "fsdp", "zero1", "zero2", "zero3"):
        out[name] = go(name, TINY, checkpoint=root / name if name in RESUMED else None)
    out["fsdp-from-1rank"] = go("fsdp", TINY, resume_from=root / "fsdp-1rank")
    for name in ("fsdp", "zero3"):
        out[f"v2-{name}"] = go(name, V2)
        out[f"frozen-text-{name}"] = go(name, FROZEN_TEXT, repeat_first_half=True)
    for name in ("ddp", "zero2"):
        out[f"accum-{name}"] = go(name, ACCUM)
    for name in ("ddp", "fsdp", "zero3"):
        out[f"captions-{name}"] = go(name, CAPTIONS)
    for name in INIT:  # model.init under each layout: read once (ddp), streamed into shards (fsdp, zero)
        out[f"init-{name}"] = go(name, TINY, init=str(root / "init.safetensors"))
    for name in SKIPPED:
        out[f"skip-{name}"] = go(name, ACCUM, pending=True)
    for name, precision in LOW_PRECISION:
        out[f"{precision}-{name}"] = go(name, TINY + (f"train.precision={precision}",))
    return out


@contextlib.contextmanager
def own_process_group():
    """FSDP on one process makes its own one-rank group (as `python launch/pretrain.py` would); drop it
    afterwards so that the other tests in this process see none."""
    had = dist.is_initialized()
    try:
        yield
    finally:
        if dist.is_initialized() and not had:
            dist.destroy_process_group()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every 2-rank run, plus FSDP on one rank (in this process) writing before and reading after them."""
    root = tmp_path_factory.mktemp("strategies")
    write_init(root / "init.safetensors")
    # ZeRO-3 keeps parameters under 1e5 elements whole on every rank: all of the tiny model's. Without that
    # threshold it partitions them all, as it does a real model's big ones, which must then be gathered
    # even where TVTSModel reads the video encoder's weights without calling the encoder
    (root / "zero3.json").write_text(json.dumps({"zero_optimization": {"stage3_param_persistence_threshold": 0}}))
    with own_process_group():
        cfg, strategy = build(TINY, "fsdp")
        train(strategy, cfg, batches(cfg)[:2])
        strategy.save(root / "fsdp-1rank")
    out = spawn_ranks(_two_ranks, 2, str(root), timeout=600)[0]
    with own_process_group():
        out["fsdp-1rank-from-2"] = run("fsdp", TINY, resume_from=root / "fsdp")
    out["root"] = root
    return out


def write_init(path: Path) -> None:
    """Initial weights for TINY (another seed than any run's own init), as launch/export.py / convert.py write them."""
    from safetensors.torch import save_file

    from tvts.models.model import TVTSModel

    torch.manual_seed(1234)
    model = TVTSModel(config.load(None, list(TINY)), pretrained_text=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


@functools.lru_cache(maxsize=None)
def single(overrides, repeat_first_half: bool = False, pending: bool = False, init: str | None = None) -> dict:
    """The reference: one process (no process group), whole global batches."""
    cfg, strategy = build(overrides, "single", init=init)
    init = portable(strategy.export_state_dict())
    out = train(strategy, cfg, batches(cfg, repeat_first_half), pending=make_batch(cfg, CLIPS, 99) if pending else None)
    return {**out, "init": init, "final": portable(strategy.export_state_dict())}


def assert_same_weights(got, want, atol=1e-5):
    got, want = tensors(got), tensors(want)
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=atol, msg=lambda m: f"{key}: {m}")


def assert_same_steps(got, want, rtol=1e-5):
    torch.testing.assert_close(torch.tensor(got["loss"]), torch.tensor(want["loss"]), rtol=rtol, atol=0)
    torch.testing.assert_close(torch.tensor(got["grad_norm"], dtype=torch.float64),
                               torch.tensor(want["grad_norm"], dtype=torch.float64), rtol=rtol, atol=0)
    assert got["lrs"] == want["lrs"]
    assert not any(got["skipped"])


# ----------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ["ddp", "fsdp", "zero1", "zero2", "zero3"])
def test_two_ranks_train_like_single(runs, name):
    """3 steps on the same global batches: loss, grad norm and lr per step (fp32, 1e-5 relative) and the
    updated weights (1e-5 absolute after 3 AdamW steps of lr <= 1e-3) match one process."""
    want = single(TINY)
    assert_same_steps(runs[name], want)
    assert_same_weights(runs[name]["final"], want["final"])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fsdp", "zero3"])
def test_frozen_layers_and_lr_groups(runs, name):
    """TVTSv2 groups: new modules at lr 1e-3, CLIP-inherited weights at 1e-5, text block 0 frozen."""
    got, want = runs[f"v2-{name}"], single(V2)
    assert set(got["lrs"][-1]) == {"new", "new_no_decay", "pretrained", "pretrained_no_decay"}
    assert_same_steps(got, want)
    assert_same_weights(got["final"], want["final"])
    init, final = tensors(got["init"]), tensors(got["final"])
    moved = {k: float((final[k] - init[k]).abs().max()) for k in init if init[k].is_floating_point()}
    assert all(moved[k] == 0 for k in moved if k.startswith("text.transformer.resblocks.0."))
    # AdamW moves a weight by about lr per step: 3 steps at 1e-5 stay far below 1e-4, the new modules do not
    assert max(moved[k] for k in moved if k.startswith("text.transformer.resblocks.1.")) < 1e-4
    assert max(moved[k] for k in moved if k.startswith("sorter.")) > 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fsdp", "zero3"])
def test_frozen_cached_text_tower(runs, name):
    """A frozen, cached text tower (rank 0 hits the cache on every transcript at step 2, rank 1 misses):
    no rank waits on a gather the other skipped, the tower does not move, training matches single."""
    got, want = runs[f"frozen-text-{name}"], single(FROZEN_TEXT, repeat_first_half=True)
    assert_same_steps(got, want)
    assert_same_weights(got["final"], want["final"])
    init, final = tensors(got["init"]), tensors(got["final"])
    assert all(torch.equal(final[k], init[k]) for k in init if k.startswith("text."))


@pytest.mark.slow
@pytest.mark.parametrize("name", RESUMED)
def test_resume_continues_exactly(runs, name):
    """save after step 2 -> load into a differently initialised model -> step 3 == step 3 without stopping."""
    got = runs[name]
    assert got["resumed"]["loss"] == pytest.approx(got["loss"][2:], rel=1e-6)
    assert got["resumed"]["lrs"] == got["lrs"][2:]
    assert_same_weights(got["resumed"]["final"], got["final"], atol=1e-7)


@pytest.mark.slow
def test_fsdp_checkpoint_changes_world_size(runs):
    """DCP reshards: a 2-rank checkpoint continues on 1 rank and a 1-rank checkpoint on 2 ranks."""
    want = single(TINY)
    for key in ("fsdp-1rank-from-2", "fsdp-from-1rank"):
        got = runs[key]
        assert got["loss"] == pytest.approx(want["loss"][2:], rel=1e-5), key
        assert got["lrs"] == want["lrs"][2:], key
        assert_same_weights(got["final"], want["final"])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ddp", "zero2"])
def test_grad_accumulation_equals_doubled_batch(runs, name):
    """2 ranks x 2 micro-batches of 1 clip (grad_accum=2, no_sync on the first) == one step on 4 clips."""
    got, want = runs[f"accum-{name}"], single(ACCUM_REF)
    assert_same_steps(got, want)
    assert_same_weights(got["final"], want["final"])


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")  # skip_step(): schedule only
@pytest.mark.parametrize("name", SKIPPED)
def test_skip_step_drops_pending_gradients(runs, name):
    """A micro-batch that ran backward (inside no_sync) before skip_step(), as when a later micro-batch's
    loss is non-finite, leaves no trace: the run equals single's, which drops the same micro-batch."""
    got, want = runs[f"skip-{name}"], single(ACCUM_REF, pending=True)
    assert_same_steps(got, want)
    assert_same_weights(got["final"], want["final"])


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")  # fp16 overflow skips
@pytest.mark.parametrize("name, precision", LOW_PRECISION)
def test_low_precision(runs, name, precision):
    """bf16: compute in bf16 on fp32 master weights, losses within bf16 noise of single's, and the export
    holds the fp32 masters. fp16: the sharded loss scaler skips exactly the steps single's skips (here all
    three: the initial scale 2**16 overflows), so the weights stay single's."""
    got, want = runs[f"{precision}-{name}"], single(TINY + (f"train.precision={precision}",))
    assert got["skipped"] == want["skipped"]
    assert got["loss"] == pytest.approx(want["loss"], rel=2e-2)
    final = tensors(got["final"])
    assert all(v.dtype == torch.float32 for v in final.values() if v.is_floating_point())
    if precision == "fp16":
        assert_same_weights(got["final"], want["final"])
    else:
        assert not any(got["skipped"])
        head = final["sorter.head.weight"]
        assert not torch.equal(head, head.bfloat16().float())  # not the bf16 compute copy


# ----------------------------------------------------------------------------------------------
# uint8 clips (no processes)
# ----------------------------------------------------------------------------------------------
def test_forward_normalises_uint8_clips_bitwise():
    """Loader batches carry uint8 clips; the strategies' forward normalises them (``data.normalize``) on the
    device before the model: the loss is bit for bit that of the clips normalised beforehand, as the workers
    did. A uint8 clip handed to the model itself is a one-line TypeError that says where to normalise."""
    from tvts.data.augment import normalize_video

    cfg, strategy = build(TINY + ("data.normalize=clip",), "single")
    batch = make_batch(cfg, 2, 5)
    pixels = torch.randint(0, 256, batch["video"].shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    ours = strategy.forward({**batch, "video": pixels})
    torch.manual_seed(0)
    ref = strategy.forward({**batch, "video": normalize_video(pixels, "clip")})
    assert torch.equal(ours.loss, ref.loss) and torch.equal(ours.sort_logits, ref.sort_logits)
    assert strategy.inputs({"video": batch["video"]})["video"] is batch["video"]  # float clips pass as they are
    with pytest.raises(TypeError, match="uint8 pixels, normalised on the device first"):
        strategy.module(**{**batch, "video": pixels})


# ----------------------------------------------------------------------------------------------
# DeepSpeed config generation (no processes)
# ----------------------------------------------------------------------------------------------
def test_deepspeed_config_from_ours(tmp_path):
    from tvts.engine.sharded import deepspeed_config

    cfg = config.load(None, list(TINY) + ["train.precision=bf16", "train.grad_accum=4", "train.micro_batch=3"])
    ds = deepspeed_config(cfg, stage=3, world_size=2)
    assert ds["train_micro_batch_size_per_gpu"] == 3 and ds["gradient_accumulation_steps"] == 4
    assert ds["train_batch_size"] == 24 and ds["managed_gradient_accumulation"] is False
    assert ds["zero_optimization"] == {"stage": 3} and ds["gradient_clipping"] == 0.5
    assert ds["bf16"]["enabled"] and not ds["fp16"]["enabled"]

    user = tmp_path / "ds.json"
    user.write_text(json.dumps({"zero_optimization": {"stage": 3, "overlap_comm": False}, "gradient_clipping": 2.0}))
    cfg.train.deepspeed_config = str(user)
    ds = deepspeed_config(cfg, stage=3, world_size=2)
    assert ds["zero_optimization"] == {"stage": 3, "overlap_comm": False} and ds["gradient_clipping"] == 2.0


def test_deepspeed_overlaps_communication_on_gpus(monkeypatch):
    from tvts.engine.sharded import deepspeed_config

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    ds = deepspeed_config(config.load(None, list(TINY)), stage=2, world_size=8)
    assert ds["zero_optimization"] == {"stage": 2, "overlap_comm": True, "contiguous_gradients": True}


@pytest.mark.parametrize("user, key", [({"zero_optimization": {"stage": 1}}, "zero_optimization.stage"),
                                       ({"train_micro_batch_size_per_gpu": 8}, "train_micro_batch_size_per_gpu"),
                                       ({"optimizer": {"type": "Adam"}}, "'optimizer'"),
                                       ({"fp16": {"enabled": True}}, "fp16.enabled")])
def test_deepspeed_config_rejects_contradictions(tmp_path, user, key):
    from tvts.engine.sharded import deepspeed_config

    path = tmp_path / "ds.json"
    path.write_text(json.dumps(user))
    cfg = config.load(None, list(TINY) + [f"train.deepspeed_config={path}"])
    with pytest.raises(ConfigError, match=r"train\.deepspeed_config: .*" + key.replace(".", r"\.")):
        deepspeed_config(cfg, stage=2, world_size=2)


def test_zero_fp16_without_accelerator_support_is_a_config_error(monkeypatch):
    # whether DeepSpeed's CPU accelerator has fp16 depends on the processor (AVX512-FP16 / AMX Intel parts do),
    # so the accelerator is made to say no: the one-line error is what every machine without it gets
    from deepspeed.accelerator import get_accelerator

    monkeypatch.setattr(get_accelerator(), "is_fp16_supported", lambda: False)
    with own_process_group(), pytest.raises(ConfigError, match="train.precision: DeepSpeed has no fp16 on"):
        build(TINY + ("train.precision=fp16",), "zero2")


@pytest.mark.slow
@pytest.mark.parametrize("name", RESUMED)
def test_offline_export_equals_the_live_model(runs, name):
    """launch/export.py's consolidation (one process, no process group) of each strategy's checkpoint gives
    exactly the weights the live sharded model exported at that step."""
    from tvts.engine.export import consolidated_state_dict, split_parts

    live = runs[name]["at_checkpoint"]
    (runs["root"] / name / "meta.json").write_text("{}")  # what the Checkpointer adds around a strategy save
    offline = {k: v.numpy() for k, v in consolidated_state_dict(runs["root"] / name).items()}
    assert set(offline) == set(live)
    for key, value in live.items():
        assert numpy.array_equal(offline[key], value), key
    parts = split_parts({k: torch.from_numpy(v) for k, v in offline.items()})
    assert "patch_embed" in parts["video"] and any(k.startswith("sorter.") for k in parts["heads"])


@pytest.mark.slow
@pytest.mark.parametrize("name", ("single",) + INIT)
def test_model_init_loads_the_file_bitwise_and_steps_alike(runs, name):
    """After model.init every parameter and buffer equals the file (gathered from the shards), bitwise;
    the first step's loss agrees with single's from the same file to 1e-6."""
    from safetensors.torch import load_file

    path = str(runs["root"] / "init.safetensors")
    got = single(TINY, init=path) if name == "single" else runs[f"init-{name}"]
    want = load_file(path)
    init = tensors(got["init"])
    assert set(init) <= set(want) and len(init) > 20
    for key, value in init.items():
        assert torch.equal(value, want[key].float()), key
    reference = single(TINY, init=path)
    assert abs(got["loss"][0] - reference["loss"][0]) <= 1e-6 * abs(reference["loss"][0])
    assert got["loss"][0] != single(TINY)["loss"][0]  # the init made a difference


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ddp", "fsdp", "zero3"])
def test_caption_steps_train_like_single_without_an_unused_parameter_search(runs, name):
    """Caption steps leave the sorter out of the graph; the model gives it zero gradients instead, so DDP
    runs without find_unused_parameters (it would stop at the second step otherwise), and every layout
    trains like single."""
    got, want = runs[f"captions-{name}"], single(CAPTIONS)
    assert_same_steps(got, want)
    assert_same_weights(got["final"], want["final"])
