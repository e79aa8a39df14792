"""The project's user-facing error base and the one way every launcher reports it.

A :class:`UserError` is bad input the user can fix (a config key, a path, a file's format, a world size
that does not fit the strategy). Its ``str()`` is one line that names the key or file and what to do.
Launchers wrap ``main`` in :func:`cli`, which prints that line (``<label>: <message>``) and exits 2, so
none of them ends in a traceback for such input. This module imports nothing of the project: every
floor may raise these.
"""
from __future__ import annotations

import sys
from typing import Callable, Optional, Sequence

EXIT_USER_ERROR = 2
# OS errors that name a path the user gave: reported like a UserError (other OSErrors keep their traceback)
PATH_ERRORS = (FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError)


class UserError(ValueError):
    """Bad input with a one-line message naming the key or file and what to do about it."""

    label = "error"  # how :func:`cli` prefixes the line


def one_line(err: BaseException) -> str:
    """``str(err)`` folded onto one line (never empty)."""
    text = " ".join(str(err).split())
    return text or type(err).__name__


def cli(main: Callable[[Optional[Sequence[str]]], int], argv: Optional[Sequence[str]] = None) -> int:
    """Run a launcher's ``main``; a :class:`UserError` becomes ``<label>: <message>`` on stderr and exit 2."""
    try:
        return main(argv)
    except UserError as err:
        print(f"{err.label}: {one_line(err)}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    except PATH_ERRORS as err:  # an output or input path of the wrong kind (a file where a folder goes...)
        if err.filename is None:
            raise
        print(f"error: {err.filename}: {err.strerror or one_line(err)}; pass another path", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
