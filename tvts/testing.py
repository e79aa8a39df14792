"""Helpers for tests that need several ranks on one CPU machine (gloo)."""
from __future__ import annotations

import os
import socket
import tempfile

import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, init_file: str, fn, args, queue) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        queue.put((rank, fn(rank, world, *args)))
    except BaseException as err:  # report, do not hang the parent
        queue.put((rank, err))
        raise
    finally:
        dist.destroy_process_group()


def spawn_ranks(fn, world: int, *args, timeout: float = 120.0) -> list:
    """Run ``fn(rank, world, *args)`` in ``world`` gloo processes; return their results in rank order.

    ``fn`` must be importable (a module-level function); results must be picklable.
    """
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        procs = [ctx.Process(target=_worker, args=(r, world, init_file, fn, args, queue)) for r in range(world)]
        for p in procs:
            p.start()
        results = {}
        for _ in range(world):
            rank, value = queue.get()
            if isinstance(value, BaseException):
                for p in procs:
                    p.terminate()
                raise RuntimeError(f"rank {rank} failed: {value!r}") from value
            results[rank] = value
        for p in procs:
            p.join(timeout)
    return [results[r] for r in range(world)]
