"""One log line per message per process, shared by the attention dispatch and the kernels it calls (a
Triton build failure is logged where it happens, so the dispatch's later refusal of the same variant is not
a second line). Logged under ``tvts.kernels.attention``, the dispatch's name, wherever it comes from."""
from __future__ import annotations

import logging

import torch

log = logging.getLogger("tvts.kernels.attention")
logged: set[str] = set()  # the messages logged so far (tests clear it)


def note_once(msg: str, level: int = logging.INFO) -> None:
    """Log ``msg`` the first time it comes up in this process."""
    # logging inside a torch.compile trace would break the graph; the eager (or first) call logs instead
    if msg not in logged and not torch.compiler.is_compiling():
        logged.add(msg)
        log.log(level, msg)
