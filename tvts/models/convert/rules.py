"""Key-mapping machinery shared by every checkpoint family: :class:`Rule`, :class:`Format` and the registry.

A mapping is a table of :class:`Rule` s (one per key family, ``{i}`` = block index, ``*`` = the rest of the
key). A :class:`Format` is one source layout built from such tables; each family module (``tvts_v1``,
``tvtsv2``, ``clip``, ``mae``) defines its formats and :func:`register` s them in :data:`FORMATS`, whose
order (the import order of the family modules) is the order of ``--help`` and of error messages.
"""
from __future__ import annotations

import fnmatch
import functools
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Optional, Sequence

import torch

from tvts.errors import UserError

Tensor = torch.Tensor


class ConversionError(UserError):
    """A conversion that cannot go on; ``str(err)`` is one line."""

    label = "convert error"


# ----------------------------------------------------------------------------------------------
# Key rules
# ----------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _pattern(template: str) -> re.Pattern:
    body = re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)")
    if body.endswith(r"\*"):
        body = body[:-2] + r"(?P<rest>.+)"
    return re.compile(body)


def _fill(template: str, match: re.Match) -> str:
    groups = match.groupdict()
    out = template.replace("{i}", groups.get("i") or "")
    return out[:-1] + groups["rest"] if out.endswith("*") else out


@dataclass(frozen=True)
class Rule:
    """``theirs`` <-> ``ours`` for one key family, with the tensor changes each way.

    ``to_ours(tensor, target_shape)`` and ``to_theirs(tensor)`` default to the identity.
    """

    theirs: str
    ours: str
    to_ours: Optional[Callable[[Tensor, torch.Size], Tensor]] = None
    to_theirs: Optional[Callable[[Tensor], Tensor]] = None

    def under(self, their_prefix: str, our_prefix: str) -> "Rule":
        return Rule(their_prefix + self.theirs, our_prefix + self.ours, self.to_ours, self.to_theirs)


def under(their_prefix: str, our_prefix: str, rules: Iterable[Rule]) -> tuple[Rule, ...]:
    return tuple(r.under(their_prefix, our_prefix) for r in rules)


def same(prefix_theirs: str, prefix_ours: str) -> Rule:
    return Rule(prefix_theirs + "*", prefix_ours + "*")


def map_key(key: str, rules: Sequence[Rule], ours: bool) -> Optional[tuple[str, Rule]]:
    """The other side's name of ``key`` and the rule used (``ours=True``: key is ours)."""
    for rule in rules:
        src, dst = (rule.ours, rule.theirs) if ours else (rule.theirs, rule.ours)
        m = _pattern(src).fullmatch(key)
        if m:
            return _fill(dst, m), rule
    return None


def matches(key: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


# ----------------------------------------------------------------------------------------------
# Formats
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Format:
    """One source layout.

    ``scopes``: our key prefixes the file must fill; ``optional``: prefixes filled all or nothing (the
    released TVTSv2 files are stripped of the sorter); ``new``: our keys no such file holds, left at the
    model's own init; ``ignore``: their keys dropped on purpose; ``signature``: their keys that identify
    the format; ``bare``: keys of a file holding the encoder alone, without the ``video_model.`` prefix;
    ``accepts``: a further test of a file that holds the signature (e.g. ImageMAE's 2D patch kernel).
    """

    name: str
    family: str  # v1 | v2: the video encoder it fits
    text: Optional[str]  # hf | clip | None: the text tower it carries
    rules: tuple[Rule, ...]
    scopes: tuple[str, ...]
    expects: str
    example: str
    signature: tuple[str, ...]
    optional: tuple[str, ...] = ()
    new: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    bare: tuple[str, ...] = ()
    export_scopes: tuple[str, ...] = ()  # what --to writes; empty: not an export target
    accepts: Optional[Callable[[Mapping[str, Tensor]], bool]] = None


FORMATS: dict[str, Format] = {}


def register(fmt: Format) -> Format:
    """Add ``fmt`` to :data:`FORMATS` (after those registered before it) and return it."""
    if fmt.name in FORMATS:
        raise ValueError(f"format {fmt.name!r} is registered twice")
    FORMATS[fmt.name] = fmt
    return fmt


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise ConversionError(f"unknown format {name!r}: one of {', '.join(FORMATS)}")
    return FORMATS[name]


def export_formats() -> tuple[str, ...]:
    """The registered formats ``--to`` can write, in registry order."""
    return tuple(name for name, f in FORMATS.items() if f.export_scopes)


def is_format(fmt: Format, sd: Mapping[str, Tensor]) -> bool:
    if not all(k in sd for k in fmt.signature):
        return False
    return fmt.accepts(sd) if fmt.accepts is not None else True
