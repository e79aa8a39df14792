"""Memory accounting: per-rank bytes measured from the strategies' tensors, against the analytic model;
sharding halves the model states; deferred initialisation; the up-front refusal of a run that cannot fit.

Every figure here is exact bytes (tensor storages, ``ru_maxrss``), so the tolerances are about the model,
not about noise.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch

from test_strategies import EOT, TINY, V2, clip_rows, make_batch
from tvts import config
from tvts.engine import memory
from tvts.testing import spawn_ranks

ROOT = Path(__file__).resolve().parents[2]
# two sizes: the atto v1 model of test_strategies, and a TVTSv2 nano (128 wide, 4 divided blocks,
# activation checkpointing, a frozen CLIP block)
SIZES = {"atto-v1": TINY, "nano-v2": V2 + ("model.video.size=nano",)}
CASES = [("atto-v1", "ddp", "fp32"), ("atto-v1", "fsdp", "fp32"), ("atto-v1", "zero3", "bf16"),
         ("nano-v2", "ddp", "bf16"), ("nano-v2", "fsdp", "bf16"), ("nano-v2", "zero3", "bf16")]
STATE_KEYS = ("params_bytes", "grads_bytes", "optim_bytes")


def _build(rank, world, overrides, strategy_name, precision, pretrained=None):
    from tvts.engine.distributed import DistInfo
    from tvts.engine.build import build_strategy
    from tvts.models.model import TVTSModel

    cfg = config.load(None, list(overrides) + [f"train.strategy={strategy_name}", f"train.precision={precision}",
                                               "train.micro_batch=2"])
    with memory.init_context(cfg, world):
        model = TVTSModel(cfg, pretrained_text=False)
    return cfg, build_strategy(cfg, model, DistInfo(rank, world, rank, world), 3, init=pretrained)


def _full_length_transcript(text: dict) -> None:
    """Make the first transcript fill the context: the text tower runs as many columns as the longest
    transcript of the batch needs, and the model predicts that worst case (the full context)."""
    ids = text["input_ids"]
    ids[0, :-1] = ids[0, :-1].clamp(min=1)
    ids[0, -1] = EOT
    text["attention_mask"][0] = 1


def _measure(rank, world, pretrained):
    """One optimizer step per case, measured where the trainer measures: activations over the forward,
    gradients before the step, parameters and optimizer states after it."""
    out = {}
    for size, strategy_name, precision in CASES:
        cfg, strategy = _build(rank, world, SIZES[size], strategy_name, precision)
        rows = clip_rows(make_batch(cfg, 2 * world, 7), 2 * rank, 2 * rank + 2, cfg.sample.num_windows)
        _full_length_transcript(rows["text"])
        with memory.ActivationMeter(strategy.module) as meter:
            loss = strategy.forward(rows).loss
        strategy.backward(loss)
        grads = memory.measure_model_state(strategy)["grads_bytes"]
        strategy.step()
        got = {**memory.measure_model_state(strategy), "grads_bytes": grads, "activations_bytes": meter.bytes}
        want = memory.predict(cfg, strategy_name, world).as_dict()
        out[(size, strategy_name)] = {"measured": got, "predicted": want}
    for strategy_name in ("fsdp", "zero3"):  # same processes: DeepSpeed's first start costs ~10 s
        out[f"weights-{strategy_name}"] = _deferred_weights(rank, world, strategy_name)
        _, strategy = _build(rank, world, SIZES["nano-v2"], strategy_name, "bf16", pretrained=pretrained)
        exported = strategy.export_state_dict()
        if rank == 0:
            from safetensors.torch import load_file

            want = load_file(pretrained)
            out[f"streamed-{strategy_name}"] = max(float((exported[k] - v).abs().max()) for k, v in want.items())
    return out


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """Every 2-rank measurement; ``pretrained.safetensors`` is a nano-v2 model built in this process."""
    from safetensors.torch import save_file

    from tvts.engine.strategies import unwrapped_state_dict
    from tvts.models.model import TVTSModel

    cfg = config.load(None, list(SIZES["nano-v2"]))
    torch.manual_seed(123)
    weights = {k: v.contiguous() for k, v in unwrapped_state_dict(TVTSModel(cfg, pretrained_text=False)).items()
               if not k.startswith("sorter.transcript_mean")}
    path = tmp_path_factory.mktemp("pretrained") / "pretrained.safetensors"
    save_file(weights, str(path))
    return spawn_ranks(_measure, 2, str(path), timeout=600)[0]


def _model_state(figures: dict) -> int:
    return sum(figures[k] for k in STATE_KEYS)


@pytest.mark.slow
@pytest.mark.parametrize("size", list(SIZES))
def test_sharding_halves_the_model_states(measured, size):
    """fsdp and zero3 at 2 ranks hold about half of ddp's parameter + gradient + optimizer bytes per rank.
    Tolerance: 0.45-0.56; above one half by fsdp's dim-0 padding and by the small parameters ZeRO-3 keeps
    whole on every rank (under stage3_param_persistence_threshold)."""
    ddp = _model_state(measured[(size, "ddp")]["measured"])
    for name in ("fsdp", "zero3"):
        ratio = _model_state(measured[(size, name)]["measured"]) / ddp
        assert 0.45 <= ratio <= 0.56, (name, ratio)


@pytest.mark.slow
@pytest.mark.parametrize("case", [f"{size}-{name}" for size, name, _ in CASES])
def test_prediction_within_15_percent(measured, case):
    """Parameters, gradients, optimizer states and their sum with the activations: the analytic model is
    within 15 % of the measurement per rank; the activations alone within 25 %."""
    size, name = case.rsplit("-", 1)
    got, want = measured[(size, name)]["measured"], measured[(size, name)]["predicted"]
    for key in STATE_KEYS:
        assert want[key] == pytest.approx(got[key], rel=0.15), key
    assert want["activations_bytes"] == pytest.approx(got["activations_bytes"], rel=0.25)
    total_got = _model_state(got) + got["activations_bytes"]
    assert _model_state(want) + want["activations_bytes"] == pytest.approx(total_got, rel=0.15)


# ----------------------------------------------------------------------------------------------
# Deferred initialisation
# ----------------------------------------------------------------------------------------------
# a v1 ViT-B video tower (86 M parameters, 344 MB in fp32) on a tiny input, so that the weights dominate
# (with ViT-S the fixed costs of gloo and DeepSpeed bring the deferred builds to 0.6-0.7 of the model)
BIG = TINY + ("model.video.size=base",)


def _build_peak(rank, world, strategy_name, deferred):
    """Peak RSS growth of building the model (and, deferred fsdp, sharding and materialising it), as a
    fraction of the whole fp32 model; the peak is reset just before the build (``ru_maxrss`` would also
    hold whatever the process touched earlier)."""
    from tvts.engine.distributed import DistInfo
    from tvts.engine.metrics import rss_bytes
    from tvts.engine.build import build_strategy
    from tvts.models.model import TVTSModel

    cfg = config.load(None, list(BIG) + [f"train.strategy={strategy_name}", "train.precision=bf16"])
    whole = memory.count_parameters(cfg).total * 4
    _reset_peak()  # the peak of the build alone, not of what the process did before (imports, unpickling)
    before = rss_bytes()
    with memory.init_context(cfg, world) if deferred else contextlib.nullcontext():
        model = TVTSModel(cfg, pretrained_text=False)
    if strategy_name == "fsdp" and deferred:
        strategy = build_strategy(cfg, model, DistInfo(rank, world, rank, world), 3)
        assert all(not p.is_meta for p in strategy.module.parameters())
    return (_peak_bytes() - before) / whole


def _reset_peak() -> None:
    """Linux: make the peak resident size (VmHWM) start again from the current one."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


@pytest.mark.slow
@pytest.mark.parametrize("strategy_name", ["fsdp", "zero3"])
def test_deferred_init_never_holds_the_whole_model(strategy_name):
    """Built on the meta device + shards materialised (fsdp), or under zero.Init (zero3 bf16): the peak
    growth per rank stays under 0.75 of the fp32 model. The same build in place reaches the whole model
    (the check can fail)."""
    deferred = spawn_ranks(_build_peak, 2, strategy_name, True, timeout=300)
    assert max(deferred) < 0.75, deferred
    if strategy_name == "fsdp":  # the control: building in place (no strategy needed to see it)
        in_place = spawn_ranks(_build_peak, 2, strategy_name, False, timeout=300)
        assert min(in_place) > 0.9, in_place


def _deferred_weights(rank, world, strategy_name):
    """Whole weights of a deferred build (gathered), and whether the tensors that stay whole agree."""
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    cfg, strategy = _build(rank, world, SIZES["nano-v2"], strategy_name, "bf16")
    if strategy_name == "fsdp":
        full = {}
        for name, p in strategy.module.named_parameters():
            if isinstance(p, DTensor):
                full[name] = p.detach().full_tensor().float()
            else:  # replicated (nothing in this model) must hold rank 0's values
                other = p.detach().clone()
                dist.broadcast(other, src=0)
                assert torch.equal(other, p.detach()), name
                full[name] = p.detach().float()
    else:
        import deepspeed

        params = dict(strategy.module.named_parameters())
        with deepspeed.zero.GatheredParameters(list(params.values())):
            full = {name: p.detach().float().clone() for name, p in params.items()}
    from tvts.engine.strategies import unwrapped_name

    return {unwrapped_name(name): value.numpy() for name, value in full.items()} if rank == 0 else None


@pytest.mark.slow
@pytest.mark.parametrize("strategy_name", ["fsdp", "zero3"])
def test_deferred_init_draws_the_model_init(measured, strategy_name):
    """After the meta build + to_empty + reset_parameters (fsdp) or zero.Init + per-block gathered init
    (zero3), no weight holds uninitialised memory and the model's own init is in place: trunc-normal
    (std 0.02) block weights, CLIP's depth-scaled projections, TVTSv2's zero temporal attention."""
    weights = {k: torch.from_numpy(v) for k, v in measured[f"weights-{strategy_name}"].items()}
    assert all(torch.isfinite(v).all() for v in weights.values())
    assert 0.015 < float(weights["video.blocks.0.attn.qkv.weight"].std()) < 0.025
    assert torch.all(weights["video.blocks.1.time_attn.qkv.weight"] == 0)
    assert torch.all(weights["video.blocks.1.time_attn.proj.weight"] == 1)
    attn_std = 32 ** -0.5  # text width 32
    assert float(weights["text.transformer.resblocks.1.attn.in_proj_weight"].std()) == pytest.approx(attn_std, rel=0.1)
    assert torch.all(weights["text.transformer.resblocks.0.ln_1.weight"] == 1)


@pytest.mark.slow
@pytest.mark.parametrize("strategy_name", ["fsdp", "zero3"])
def test_pretrained_weights_stream_into_the_shards(measured, strategy_name):
    """A safetensors checkpoint loaded into a deferred build (each fsdp rank reads only its rows; zero3
    writes one gathered parameter at a time): the exported model equals the file (fp32 masters under fsdp;
    zero3 stores bf16, so within bf16 rounding)."""
    assert measured[f"streamed-{strategy_name}"] <= (0.0 if strategy_name == "fsdp" else 2e-2)


# ----------------------------------------------------------------------------------------------
# Refusal and largest micro-batch (no processes)
# ----------------------------------------------------------------------------------------------
H14 = ["sample.frames_per_window=1", "sample.caption_frames=4", "sample.image_size=112", "train.micro_batch=1"]
BOX = int(23.4 * 2**30) // 2  # a 24 GiB, 2-rank machine's share per rank


def test_refusal_names_the_strategy_to_use():
    cfg = config.load(ROOT / "configs" / "tvtsv2_vit_h14.yaml", H14 + ["train.strategy=ddp"])
    with pytest.raises(memory.MemoryBudgetError) as err:
        memory.check_fits(cfg, "ddp", 2, budget_bytes=BOX, overhead_bytes=2**30)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("train.strategy=ddp needs ~")
    assert "the machine has 11.7 GiB per rank: use " in message
    assert "fsdp" in message.split("use ")[-1] and "zero3" in message.split("use ")[-1]
    memory.check_fits(cfg, "fsdp", 2, budget_bytes=BOX, overhead_bytes=2**30)  # fits: no error


def test_nothing_fits_says_so():
    cfg = config.load(ROOT / "configs" / "tvtsv2_vit_h14.yaml", H14)
    with pytest.raises(memory.MemoryBudgetError, match="no strategy fits: lower train.micro_batch or add ranks"):
        memory.check_fits(cfg, "fsdp", 2, budget_bytes=2 * 2**30, overhead_bytes=0)


def test_prediction_arithmetic():
    """The table of the module docstring on ViT-H/14: ddp holds 16 bytes per trainable parameter (+4 per
    frozen one), fsdp half of that at 2 ranks, and the largest micro-batch is the last that fits."""
    cfg = config.load(ROOT / "configs" / "tvtsv2_vit_h14.yaml", H14 + ["train.precision=fp32"])
    counts = memory.count_parameters(cfg)
    ddp = memory.predict(cfg, "ddp", 2, counts=counts)
    assert ddp.params_bytes == 4 * counts.total and ddp.grads_bytes == 4 * counts.trainable
    fsdp = memory.predict(cfg, "fsdp", 2, counts=counts)
    assert fsdp.model_state_bytes == pytest.approx(ddp.model_state_bytes / 2, rel=1e-3)
    assert fsdp.assumptions and all(isinstance(a, str) for a in fsdp.assumptions)
    budget = fsdp.total_bytes + 3 * fsdp.activations_bytes // 2
    best = memory.largest_micro_batch(cfg, "fsdp", 2, budget, counts=counts)
    assert best == 2
    assert memory.predict(cfg, "fsdp", 2, best, counts).total_bytes <= budget
    assert memory.predict(cfg, "fsdp", 2, best + 1, counts).total_bytes > budget


def test_projection_table():
    """--project: every cluster x strategy; fits iff the prediction is under the usable memory; the clips/s
    bound is GPUs x peak x MFU / training FLOPs per clip; the markdown states its assumptions."""
    from tvts.perf.projection import CLUSTERS, Cluster, STRATEGIES, format_projection, project

    cfg = config.load(ROOT / "configs" / "tvtsv2_vit_h14.yaml")
    tiny_gpu = Cluster("2x 16GB", 2, 16 * 10**9, 100e12)
    result = project(cfg, list(CLUSTERS) + [tiny_gpu], mfu=0.5)
    assert len(result["rows"]) == (len(CLUSTERS) + 1) * len(STRATEGIES)
    for row in result["rows"]:
        cluster = next(c for c in list(CLUSTERS) + [tiny_gpu] if c.name == row["cluster"])
        assert row["fits"] == (row["per_gpu_gib"] * 2**30 <= 0.9 * cluster.memory_bytes)
        if row["largest_micro_batch"]:
            bound = cluster.gpus * cluster.peak_flops * 0.5 / result["train_flops_per_clip"]
            assert row["clips_per_s_bound"] == pytest.approx(bound)
    small = {r["strategy"]: r for r in result["rows"] if r["cluster"] == "2x 16GB"}
    assert not small["ddp"]["fits"] and small["fsdp"]["fits"]  # 1.2 B parameters: ddp needs ~17 GiB per GPU
    text = format_projection(result)
    assert "| 2x 16GB | ddp | no |" in text and "MFU 50%" in text and "upper bound" in text
