"""Checkpoints: everything stateful, saved atomically, the last k kept, resumed automatically.

Layout of a run directory::

    <run>/checkpoints/step_00000200/   model/optimizer/scheduler as the strategy writes them
                                        trainer_rank{r}.pt: step, RNG states, data position, counters
                                        meta.json: step, world size, strategy (written last)
    <run>/checkpoints/latest           name of the newest complete checkpoint

A save goes to ``step_N.tmp`` and is renamed only when every rank has written its part, so a process
killed during a save leaves the previous checkpoint loadable. ``meta.json`` lists every file with its size
and CRC-32 (the ranks share the reading: ~2 GB/s per rank). Resume takes the newest checkpoint whose files
are all there with their sizes and checksums and load without error; one
that is not (a truncated or corrupt file) is refused with one line naming the file, renamed
``step_N.refused`` and the previous one is tried. Every file the project writes here loads with
``torch.load(weights_only=True)``: RNG states and positions are stored as tensors and plain types, so a run
directory on a shared filesystem cannot execute code.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
import zlib
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from tvts.engine.distributed import DistInfo, all_gather_objects, all_reduce_max, barrier
from tvts.errors import UserError, one_line

_STEP_DIR = re.compile(r"step_\d{8}")


class CheckpointError(UserError):
    """No checkpoint of a run directory can be resumed; the message names the files and what to do."""


def rng_state() -> dict:
    """This process's RNG states as tensors and plain types (``weights_only``-loadable)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
             "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def file_digest(path: Path) -> list[int]:
    """[bytes, CRC-32] of one file, read in 16 MiB blocks."""
    crc, size = 0, 0
    with open(path, "rb") as f:
        while block := f.read(16 << 20):
            crc, size = zlib.crc32(block, crc), size + len(block)
    return [size, crc]


def _files(directory: Path) -> list[str]:
    return [f.relative_to(directory).as_posix() for f in sorted(directory.rglob("*")) if f.is_file()]


def _problem(directory: Path, name: str, expected: list[int]) -> Optional[str]:
    path = directory / name
    if not path.is_file():
        return f"{path}: missing"
    size = path.stat().st_size
    if size != expected[0]:
        return f"{path}: {size} bytes, {expected[0]} written (truncated or overwritten)"
    if len(expected) > 1 and file_digest(path)[1] != expected[1]:
        return f"{path}: its CRC-32 is not the one written (corrupt)"
    return None


def verify(directory: Path, rank: int = 0, world: int = 1) -> Optional[str]:
    """Why the checkpoint ``directory`` cannot be resumed (one line naming the file), or None when the files
    of this rank's share of ``meta.json``'s list (every ``world``-th from ``rank``) are there with their sizes
    and checksums. Checkpoints written before the list existed pass."""
    try:
        meta = json.loads((directory / "meta.json").read_text())
    except (OSError, ValueError) as err:
        return f"{directory / 'meta.json'}: unreadable ({one_line(err)})"
    files = sorted(meta.get("files", {}).items())
    for name, expected in files[rank::world]:
        problem = _problem(directory, name, expected)
        if problem:
            return problem
    return None


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
        dirs = [p for p in self.root.iterdir() if p.is_dir() and _STEP_DIR.fullmatch(p.name)
                and (p / "meta.json").is_file()]
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
        names = _files(tmp)  # every rank's share of the checksums, then one list on rank 0
        files = {}
        for share in all_gather_objects({n: file_digest(tmp / n) for n in names[self.info.rank::self.info.world_size]}):
            files.update(share)
        if self.info.is_main:
            info = {"step": step, "world_size": self.info.world_size, "time": time.time(), **(meta or {}),
                    "files": files}
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
        state = torch.load(directory / f"trainer_rank{rank}.pt", map_location="cpu", weights_only=True)
        if meta["world_size"] == self.info.world_size:
            set_rng_state(state["rng"])
        return state

    def resume(self, strategy) -> Optional[tuple[Path, dict]]:
        """Load the newest checkpoint that verifies and reads (see the module docstring); every rank calls
        this and all take the same one. Returns (directory, this rank's trainer state), or None when the
        run has no checkpoint. Raises :class:`CheckpointError` when it has some and none can be read."""
        found = self.complete()
        refused = []
        for directory in reversed(found):
            problems = [p for p in all_gather_objects(verify(directory, self.info.rank, self.info.world_size)) if p]
            problem = problems[0] if problems else None
            state = None
            if problem is None:
                try:
                    state = self.load(directory, strategy)
                except Exception as err:  # noqa: BLE001 - any reader's error means the same: not this one
                    problem = f"{directory}: cannot be loaded ({type(err).__name__}: {one_line(err)})"
            if all_reduce_max(1.0 if problem else 0.0) == 0:
                return directory, state
            problem = problem or f"{directory}: another rank could not read its part"
            refused.append(problem)
            if self.info.is_main:
                print(f"checkpoint refused: {problem}; renamed {directory.name}.refused, trying the previous one",
                      flush=True)
                os.replace(directory, directory.with_name(directory.name + ".refused"))
            barrier()
        if refused:
            raise CheckpointError(f"{self.root}: no checkpoint can be resumed ({'; '.join(refused)}); move the "
                                  f"run directory away (or set train.run_dir) to start afresh")
        return None
