"""Environment section: the GPU, driver, CUDA, torch and Triton versions, and which optional packages import.

It always runs in its own process: importing DeepSpeed probes accelerators (and can build ops), and DALI,
flash-attn and xformers load CUDA libraries that can abort a process built against another CUDA; none of
that should happen in the process that goes on to time kernels.
"""
from __future__ import annotations

import importlib
import os
import platform
import subprocess

from tvts.errors import one_line
from tvts.perf.gpucheck.core import Context

# module: distribution whose version to report. The optional GPU stack first, then what the data side needs
PACKAGES = {"flash_attn": "flash-attn", "xformers": "xformers", "nvidia.dali": "nvidia-dali-cuda130",
            "deepspeed": "deepspeed", "av": "av", "webdataset": "webdataset", "transformers": "transformers",
            "matplotlib": "matplotlib"}


def _version(module, dist: str):
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return getattr(module, "__version__", None)


def try_import(name: str, dist: str) -> dict:
    """{"imports": True, "version"} or {"imports": False, "error": one line}."""
    try:
        module = importlib.import_module(name)
    except Exception as err:  # noqa: BLE001 - any failure to import is the answer
        return {"imports": False, "error": f"{type(err).__name__}: {one_line(err)}"}
    return {"imports": True, "version": _version(module, dist)}


def nvidia_smi() -> dict:
    """Driver version, name and memory of GPU 0 as nvidia-smi reports them ({} without nvidia-smi)."""
    query = "name,driver_version,memory.total,clocks.max.sm,power.limit"
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20).stdout.strip().splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return dict(zip(query.split(","), (v.strip() for v in out[0].split(",")))) if out else {}


def _nccl_version() -> str:
    import torch

    version = torch.cuda.nccl.version()  # a tuple in recent torch, an int before
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)


def run(ctx: Context) -> None:
    import torch

    from tvts.perf.common import environment

    with ctx.part("versions"):
        triton = try_import("triton", "triton")
        ctx.put("versions", {"python": platform.python_version(), "torch": torch.__version__,
                             "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                             "triton": triton.get("version"), "triton_interpret": os.environ.get("TRITON_INTERPRET", "0"),
                             "numpy": try_import("numpy", "numpy").get("version")})
        host = environment(ctx.device)
        ctx.put("host", {"cpu": host["cpu"], "cpu_count": os.cpu_count(), "commit": host["commit"],
                         "memory_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30})
    with ctx.part("gpu"):
        ctx.require_cuda()
        props = torch.cuda.get_device_properties(0)
        gpu = {"name": props.name, "capability": f"{props.major}.{props.minor}", "count": torch.cuda.device_count(),
               "memory_gib": props.total_memory / 2**30, "multiprocessors": props.multi_processor_count,
               "bf16": torch.cuda.is_bf16_supported(), "nccl": _nccl_version(),
               "free_gib": torch.cuda.mem_get_info()[0] / 2**30}
        ctx.put("gpu", {**gpu, **{f"smi_{k}": v for k, v in nvidia_smi().items()}})
    with ctx.part("imports"):
        for name, dist in PACKAGES.items():
            ctx.check(name)
            ctx.add("imports", {"module": name, **try_import(name, dist)})


def markdown(result: dict) -> list[str]:
    from tvts.perf.common import markdown_table

    facts = {**result.get("versions", {}), **result.get("host", {}), **result.get("gpu", {})}
    out = ["| what | value |", "|---|---|"] + [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
                                              for k, v in facts.items()]
    out.append("")
    if result.get("imports"):
        out += [markdown_table(result["imports"], [("module", "module", ""), ("imports", "imports", ""),
                                                   ("version", "version", ""), ("error", "error", "")]), ""]
    return out
