"""tvts-engine: pre-train video encoders that understand time (TVTS / TVTSv2), at any scale."""
from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent


def requirements(name):
    out = []
    for line in (here / "requirements" / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-r"):
            out.append(line)
    return out


setup(
    name="tvts-engine",
    version="0.1.0",
    description="Pre-training engine for TVTS / TVTSv2 video encoders: sharding, fused attention, GPU decoding, exact resume",
    long_description=(here / "README.md").read_text() if (here / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["tvts", "tvts.*"]),
    package_data={"tvts.models": ["assets/*"]},
    include_package_data=True,
    # torch is deliberately not listed: pip would pick a CUDA build. CPU machines install
    # requirements/cpu.txt (torch==2.13.0 CPU); GPU machines keep their preinstalled torch.
    install_requires=requirements("common.txt"),
    extras_require={
        "dev": ["pytest==9.2.0", "import-linter==2.17"],
        # GPU machines keep their preinstalled torch / triton; DALI built for their CUDA 13
        "gpu": ["nvidia-dali-cuda130==2.4.0"],
        "flash": ["flash-attn"],  # optional attention backend (source build against the machine's torch)
        # shards in object storage (tvts/data/sources.py); each pins the fsspec of its own release
        "s3": ["s3fs"],
        "gcs": ["gcsfs"],
        "remote": ["s3fs", "gcsfs"],
    },
)
