"""The checkpoint component on its own: files listed with their sizes, refused when truncated or corrupt
(one line naming the file), the previous one taken instead, everything loadable with weights_only=True."""
import json
import random
import zlib

import numpy as np
import pytest
import torch

from tvts.engine.checkpoint import CheckpointError, Checkpointer, rng_state, set_rng_state, verify
from tvts.engine.distributed import DistInfo


class FileStrategy:
    """The two calls a Checkpointer makes of a strategy, over one tensor file."""

    def __init__(self, value: float):
        self.value = torch.tensor([value])

    def save(self, directory):
        torch.save({"value": self.value}, directory / "model_optim.pt")

    def load(self, directory):
        self.value = torch.load(directory / "model_optim.pt", weights_only=True)["value"]


def _saved(tmp_path, steps=(1, 2)) -> Checkpointer:
    ckpt = Checkpointer(tmp_path, DistInfo(), keep_last=5)
    for step in steps:
        ckpt.save(step, FileStrategy(float(step)), {"data": {"g": step}})
    return ckpt


def test_meta_lists_every_file_with_its_size_and_checksum(tmp_path):
    ckpt = _saved(tmp_path, (1,))
    directory = ckpt.latest()
    files = json.loads((directory / "meta.json").read_text())["files"]
    assert files == {name: [(directory / name).stat().st_size, zlib.crc32((directory / name).read_bytes())]
                     for name in ("model_optim.pt", "trainer_rank0.pt")}
    assert verify(directory) is None


@pytest.mark.parametrize("damage", ["truncate", "corrupt", "remove"])
def test_a_damaged_checkpoint_is_refused_and_the_previous_one_resumed(tmp_path, capsys, damage):
    ckpt = _saved(tmp_path)
    newest = ckpt.latest()
    path = newest / ("trainer_rank0.pt" if damage == "corrupt" else "model_optim.pt")
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "corrupt":  # same size, garbage in the middle: only reading it can tell
        mid = len(data) // 2
        path.write_bytes(data[:mid - 64] + bytes(128) + data[mid + 64:])
    else:
        path.unlink()
    strategy = FileStrategy(0.0)
    directory, state = ckpt.resume(strategy)
    assert directory.name == "step_00000001" and state["step"] == 1 and float(strategy.value) == 1.0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("checkpoint refused:")]
    assert len(lines) == 1 and str(path) in lines[0], lines
    assert {"truncate": "truncated", "corrupt": "corrupt", "remove": "missing"}[damage] in lines[0]
    assert (newest.parent / f"{newest.name}.refused").is_dir() and not newest.exists()
    assert ckpt.latest().name == "step_00000001"  # a refused checkpoint is never picked again


def test_no_readable_checkpoint_is_one_clear_error(tmp_path):
    ckpt = _saved(tmp_path, (1,))
    (ckpt.latest() / "model_optim.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"no checkpoint can be resumed .*model_optim.pt.*start afresh"):
        ckpt.resume(FileStrategy(0.0))
    assert ckpt.resume(FileStrategy(0.0)) is None  # the refused one is out of the way: a fresh start


def test_rng_state_round_trips_through_weights_only(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.normal()  # a cached gaussian in numpy's state
    torch.save(rng_state(), tmp_path / "rng.pt")
    expected = (random.random(), np.random.normal(), float(torch.rand(1)))
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.normal(), float(torch.rand(1))) == expected
