"""Checkpoints: everything stateful, saved atomically, the last k kept, resumed automatically.

Layout of a run directory::

    <run>/checkpoints/step_00000200/   model/optimizer/scheduler as the strategy writes them
                                        trainer_rank{r}.pt: step, RNG states, data position, counters
                                        meta.json: step, world size, strategy (written last)
    <run>/checkpoints/latest           name of the newest complete checkpoint

A save goes to ``step_N.tmp`` and is renamed only when every rank has written its part, so a process
killed during a save leaves the previous checkpoint loadable. Resume picks the newest directory with a
``meta.json``.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from tvts.engine.distributed import DistInfo, barrier


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Checkpointer:
    def __init__(self, run_dir: Path, info: DistInfo, keep_last: int = 2):
        self.root = Path(run_dir) / "checkpoints"
        self.info = info
        self.keep_last = keep_last
        if info.is_main:
            self.root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def name(step: int) -> str:
        return f"step_{step:08d}"

    def complete(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        dirs = [p for p in self.root.iterdir() if p.is_dir() and p.name.startswith("step_")
                and not p.name.endswith(".tmp") and (p / "meta.json").is_file()]
        return sorted(dirs)

    def latest(self) -> Optional[Path]:
        found = self.complete()
        return found[-1] if found else None

    def save(self, step: int, strategy, trainer_state: dict, meta: Optional[dict] = None) -> Path:
        """Every rank calls this. ``trainer_state`` is this rank's: data position, counters."""
        final = self.root / self.name(step)
        tmp = self.root / (self.name(step) + ".tmp")
        if self.info.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        barrier()
        strategy.save(tmp)
        torch.save({"step": step, "rng": rng_state(), **trainer_state}, tmp / f"trainer_rank{self.info.rank}.pt")
        delay = float(os.environ.get("TVTS_FAULT_SAVE_DELAY_S", "0") or 0)  # test hook: widen the save window
        if delay:
            time.sleep(delay)
        barrier()
        if self.info.is_main:
            info = {"step": step, "world_size": self.info.world_size, "time": time.time(), **(meta or {})}
            (tmp / "meta.json").write_text(json.dumps(info, indent=1))
            if final.exists():  # a rerun of the same step: replace it
                shutil.rmtree(final)
            os.replace(tmp, final)
            (self.root / "latest.tmp").write_text(final.name)
            os.replace(self.root / "latest.tmp", self.root / "latest")
            for old in self.complete()[:-self.keep_last]:
                shutil.rmtree(old, ignore_errors=True)
        barrier()
        return final

    def load(self, directory: Path, strategy) -> dict:
        """Restore the strategy's state and this rank's RNG; return this rank's trainer state.

        At a different world size the state of rank ``rank % old_world`` is used and the RNG is left
        as seeded; the loader then sees positions that do not map onto its new split and restarts the
        current epoch (see :mod:`tvts.data.loader`)."""
        meta = json.loads((directory / "meta.json").read_text())
        strategy.load(directory)
        rank = self.info.rank % meta["world_size"]
        state = torch.load(directory / f"trainer_rank{rank}.pt", map_location="cpu", weights_only=False)
        if meta["world_size"] == self.info.world_size:
            set_rng_state(state["rng"])
        return state
