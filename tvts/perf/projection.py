"""Scaling projection on paper: for a config, a list of GPU clusters and every strategy, whether the run
fits per GPU, the largest micro-batch, and an upper bound on clips/s at a stated MFU.

Bytes come from :func:`tvts.engine.memory.predict` (the analytic model the tests hold within 15 % of
measurement), optionally rescaled by a measurement; FLOPs from :func:`tvts.models.flops.flops`.

    from tvts.perf.projection import project, format_projection
    print(format_projection(project(cfg)))          # launch/profile.py --project prints this
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Sequence

from tvts.engine import memory

GB = 10**9


@dataclass(frozen=True)
class Cluster:
    name: str
    gpus: int
    memory_bytes: int  # per GPU, as sold (80 GB = 80e9 bytes)
    peak_flops: float  # per GPU, dense bf16 FLOP/s


# dense bf16 peaks: H100 SXM and H200 share the GH100 compute (tvts.engine.metrics.PEAK_FLOPS)
CLUSTERS = (
    Cluster("8x H100 80GB", 8, 80 * GB, 989e12),
    Cluster("64x H100 80GB", 64, 80 * GB, 989e12),
    Cluster("256x H200 141GB", 256, 141 * GB, 989e12),
)
STRATEGIES = ("ddp", "zero1", "zero2", "zero3", "fsdp")


def project(cfg, clusters: Optional[Sequence[Cluster]] = None, mfu: float = 0.4, usable: float = 0.9,
            measured: Optional[dict] = None) -> dict:
    """The projection of ``cfg`` (its micro-batch, precision, checkpointing and frozen parameters).

    Args:
        clusters: :class:`Cluster` list (default :data:`CLUSTERS`).
        mfu: model FLOPs utilisation assumed for the clips/s bound (0-1).
        usable: fraction of a GPU's memory the run may use (CUDA context, allocator fragmentation).
        measured: optional ``{"strategy", "world_size", "params_bytes", "grads_bytes", "optim_bytes"}`` from
            :func:`tvts.engine.memory.measure_model_state` on a real run: model-state bytes are rescaled by
            measured / predicted for that strategy and world size.

    Returns ``{"config", "train_flops_per_clip", "mfu", "assumptions", "rows"}``; each row: cluster, gpus,
    strategy, fits (at the config's micro-batch), per_gpu_gib, largest_micro_batch, clips_per_s_bound.
    """
    from tvts.engine.metrics import train_flops_per_clip
    from tvts.models.flops import flops

    clusters = list(clusters or CLUSTERS)
    counts = memory.count_parameters(cfg)
    text = cfg.model.text
    text_trainable = not text.frozen
    per_clip = train_flops_per_clip(flops(cfg), text_trainable, text.cache)
    scale, note = 1.0, "model-state bytes from the analytic model (no measurement given)"
    if measured:
        ref = memory.predict(cfg, measured["strategy"], measured["world_size"], counts=counts)
        got = sum(measured[k] for k in ("params_bytes", "grads_bytes", "optim_bytes"))
        scale = got / max(1, ref.model_state_bytes)
        note = (f"model-state bytes rescaled by {scale:.3f} = measured / predicted ({measured['strategy']}, "
                f"{measured['world_size']} ranks)")
    rows = []
    for cluster in clusters:
        budget = int(cluster.memory_bytes * usable)
        bound = cluster.gpus * cluster.peak_flops * mfu / per_clip
        for name in STRATEGIES:
            est = memory.predict(cfg, name, cluster.gpus, counts=counts)
            rescaled = int((scale - 1) * est.model_state_bytes)  # model states do not depend on the micro-batch
            largest = memory.largest_micro_batch(cfg, name, cluster.gpus, budget - rescaled, counts)
            total = est.total_bytes + rescaled
            rows.append({"cluster": cluster.name, "gpus": cluster.gpus, "strategy": name,
                         "fits": total <= budget, "per_gpu_gib": total / 2**30,
                         "largest_micro_batch": largest, "clips_per_s_bound": bound if largest else 0.0})
    assumptions = [
        f"config {cfg.name}: micro-batch {cfg.train.micro_batch} per GPU, {cfg.train.precision}, "
        f"activation checkpointing {'on' if cfg.model.video.grad_checkpointing else 'off'}, "
        f"{counts.total / 1e6:.0f} M parameters ({counts.trainable / 1e6:.0f} M trainable)",
        f"usable GPU memory: {usable:.0%} of the memory as sold (CUDA context, fragmentation); AdamW with fp32 "
        "moments; bytes per parameter by strategy as in tvts.engine.memory",
        f"clips/s bound = GPUs x peak x MFU / training FLOPs per clip, MFU {mfu:.0%}, "
        f"{per_clip / 1e12:.2f} TFLOP per clip (3x forward for trained parts, 1 multiply-add = 2 FLOPs); "
        "communication and data loading not modelled, so it is an upper bound",
        note,
    ]
    assumptions += [a for a in memory.predict(cfg, "fsdp", clusters[0].gpus, counts=counts).assumptions[2:]
                    if not a.startswith("fsdp")]
    return {"config": cfg.name, "train_flops_per_clip": per_clip, "mfu": mfu, "assumptions": assumptions,
            "clusters": [asdict(c) for c in clusters], "rows": rows}


def format_projection(result: dict) -> str:
    """Markdown: one table (cluster x strategy) and the assumptions under it."""
    lines = [f"### Projection: {result['config']}", "",
             "| cluster | strategy | fits | GiB per GPU | largest micro-batch | clips/s bound |",
             "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        bound = f"{r['clips_per_s_bound']:,.0f}" if r["largest_micro_batch"] else "-"
        lines.append(f"| {r['cluster']} | {r['strategy']} | {'yes' if r['fits'] else 'no'} | {r['per_gpu_gib']:.1f} | "
                     f"{r['largest_micro_batch']} | {bound} |")
    lines += ["", "Assumptions:"] + [f"- {a}" for a in result["assumptions"]]
    return "\n".join(lines)
