"""What every training loop here shares (pre-training, fine-tuning): the run directory, the on-purpose
abort, and the fault-injection hooks the failure tests set through the environment.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

import torch

from tvts.engine import distributed
from tvts.errors import one_line


class TrainingAborted(RuntimeError):
    """Training stopped on purpose (too many non-finite losses); a checkpoint was written first."""


def run_training(body: Callable[[distributed.DistInfo], object]) -> int:
    """What a training launcher does around its loop: start this rank's process group, run ``body(info)``, shut
    the group down. Returns the exit status: 0, or 3 after one ``aborted: ...`` line if training aborted."""
    info = distributed.init()
    try:
        body(info)
    except TrainingAborted as err:
        print(f"aborted: {one_line(err)}", file=sys.stderr)
        return 3
    finally:
        distributed.shutdown()
    return 0


def run_dir_for(cfg) -> Path:
    return Path(cfg.train.run_dir.format(name=cfg.name))


def to_device(value, device):
    """A batch (tensors, nested dicts of them, anything else as it is) on ``device``, copied asynchronously."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


def fault_nan(step: int) -> bool:
    """Test hook: TVTS_FAULT_NAN_STEPS="3,4" makes the loss of those steps NaN (failure-handling tests)."""
    spec = os.environ.get("TVTS_FAULT_NAN_STEPS", "")
    return bool(spec) and str(step) in spec.split(",")


def fault_exit(rank: int, step: int) -> None:
    """Test hook: TVTS_FAULT_EXIT_RANK_STEP="1:3" kills rank 1 at step 3 (dead-rank tests)."""
    spec = os.environ.get("TVTS_FAULT_EXIT_RANK_STEP", "")
    if spec and spec == f"{rank}:{step}":
        os._exit(1)
