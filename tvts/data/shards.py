"""Shard sets on disk: tar shards in webdataset layout, their done markers and ``index.json``.

A shard set is a directory::

    OUT/shard-000000.tar, shard-000001.tar, ...   webdataset tars: members <key>.mp4|webm + <key>.json
    OUT/index.json                                 {"kind", "shards": [{"name", "samples"}], "samples",
                                                    "skipped": {reason: count}, "encodings": {codec: count},
                                                    "inputs", "config"}
    OUT/.ingest/plan.json, shard-NNNNNN.done       resume state of launch/prepare_data.py

Shards are written with the standard library's ``tarfile`` (webdataset's own writer imports torch,
which costs seconds in every worker process). Writes are deterministic (fixed mtime, owner and mode,
members in sample order) and atomic: a tar appears under its final name only once complete, and its
done marker only after that, so a half-written shard is never mistaken for a finished one.
"""
from __future__ import annotations

import glob
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from tvts.data import sources
from tvts.errors import UserError

INDEX_NAME = "index.json"
STATE_DIR = ".ingest"
SHARD_PATTERN = "shard-{:06d}.tar"
_MTIME = 946684800  # 2000-01-01: a fixed member mtime, so a rebuilt shard has the same bytes


class ShardError(UserError):
    """A shard set that cannot be used; ``str(err)`` is one line naming the file."""


def shard_name(index: int) -> str:
    return SHARD_PATTERN.format(index)


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------
def write_json_atomic(path: str | Path, obj: Any) -> None:
    """``obj`` as indented JSON with sorted keys, replacing ``path`` only once fully written.

    Not fsynced (that costs ~0.1 s per file on some filesystems): a marker lost or emptied by a power
    cut only makes its shard be rebuilt, and a marker never vouches for a tar of another size.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def write_shard(path: str | Path, samples: Iterable[tuple[str, dict[str, bytes]]]) -> int:
    """Write ``(key, {extension: bytes})`` samples as one webdataset tar; returns the sample count.

    Members are ``<key>.<extension>`` in the order given (keys must not contain ``.`` or ``/``).
    The tar is built under ``<path>.tmp`` and renamed into place when complete.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    with open(tmp, "wb") as f:
        with tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for key, members in samples:
                if "." in key or "/" in key:
                    raise ValueError(f"sample key {key!r}: must not contain '.' or '/'")
                for ext, data in members.items():
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size, info.mtime, info.mode = len(data), _MTIME, 0o444
                    info.uname = info.gname = ""
                    tar.addfile(info, io.BytesIO(data))
                count += 1
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return count


def read_shard(path: str | Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """The samples of one tar shard in order: ``(key, {extension: bytes})``.

    Members are grouped by key as webdataset does (the key is the name up to its first ``.``).
    """
    with tarfile.open(path, "r") as tar:
        key, members = None, {}
        for info in tar:
            if not info.isfile():
                continue
            name = info.name.rsplit("/", 1)[-1]
            this_key, _, ext = name.partition(".")
            if this_key != key and members:
                yield key, members
                members = {}
            key = this_key
            members[ext] = tar.extractfile(info).read()
        if members:
            yield key, members


# ----------------------------------------------------------------------------------------------
# Resume state
# ----------------------------------------------------------------------------------------------
def state_dir(out: str | Path) -> Path:
    return Path(out) / STATE_DIR


def marker_path(out: str | Path, index: int) -> Path:
    return state_dir(out) / (shard_name(index)[: -len(".tar")] + ".done")


def write_marker(out: str | Path, index: int, marker: dict) -> None:
    """Record shard ``index`` as finished (after its tar is in place)."""
    state_dir(out).mkdir(parents=True, exist_ok=True)
    write_json_atomic(marker_path(out, index), marker)


def read_marker(out: str | Path, index: int) -> Optional[dict]:
    """The done marker of shard ``index`` when the shard is finished and intact, else None.

    Finished: the marker parses, and a shard with samples has its tar with the recorded size. A
    shard whose inputs all were skipped has a marker and no tar.
    """
    try:
        marker = json.loads(marker_path(out, index).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or not isinstance(marker.get("samples"), int):
        return None
    if marker["samples"] > 0:
        tar = Path(out) / shard_name(index)
        try:
            if tar.stat().st_size != marker.get("bytes"):
                return None
        except OSError:
            return None
    return marker


# ----------------------------------------------------------------------------------------------
# Index and listing
# ----------------------------------------------------------------------------------------------
def write_index(out: str | Path, kind: str, markers: list[dict], config: dict) -> dict:
    """Merge the per-shard markers into ``OUT/index.json`` and return it. Shards without samples are
    left out of ``shards`` (they have no tar); their skips still count."""
    skipped: dict[str, int] = {}
    encodings: dict[str, int] = {}
    for m in markers:
        for reason, n in m.get("skipped", {}).items():
            skipped[reason] = skipped.get(reason, 0) + n
        for encoding, n in m.get("encodings", {}).items():
            encodings[encoding] = encodings.get(encoding, 0) + n
    shards = [{"name": m["name"], "samples": m["samples"]} for m in sorted(markers, key=lambda m: m["name"]) if m["samples"]]
    index = {
        "kind": kind,
        "shards": shards,
        "samples": sum(s["samples"] for s in shards),
        "skipped": dict(sorted(skipped.items())),
        "encodings": dict(sorted(encodings.items())),  # input videos by the encoding of their transcript file
        "inputs": sum(m.get("inputs", 0) for m in markers),
        "inputs_used": sum(m.get("inputs_used", 0) for m in markers),
        "config": config,
    }
    write_json_atomic(Path(out) / INDEX_NAME, index)
    return index


def load_index(directory: str | Path) -> dict:
    """``<directory>/index.json`` of a shard set. Raises :class:`ShardError` (one line naming the file)
    when it is missing, not JSON, or lacks ``kind`` / ``shards`` / ``samples``."""
    path = Path(directory) / INDEX_NAME
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ShardError(f"{path}: missing; is {directory} a shard set written by launch/prepare_data.py "
                         f"(an interrupted run writes it only at the end: rerun to resume)?") from None
    except OSError as err:
        raise ShardError(f"{path}: cannot read ({err.strerror or err})") from None
    try:
        index = json.loads(text)
    except json.JSONDecodeError as err:
        raise ShardError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    return check_index(index, str(path))


def check_index(index: Any, path: str) -> dict:
    """``index`` if it is a shard index, else a one-line :class:`ShardError` naming ``path``."""
    if not isinstance(index, dict) or not {"kind", "shards", "samples"} <= index.keys() or not isinstance(index["shards"], list):
        raise ShardError(f"{path}: not a shard index (expected the keys kind, shards, samples)")
    for n, shard in enumerate(index["shards"]):
        if not isinstance(shard, dict) or not isinstance(shard.get("name"), str) or not isinstance(shard.get("samples"), int):
            raise ShardError(f"{path}: shards[{n}] is not {{'name': str, 'samples': int}}")
    return index


def remote_index(prefix: str, policy: sources.IOPolicy = sources.IOPolicy()) -> Optional[dict]:
    """The ``index.json`` under a URL prefix, None when there is none (it is optional for remote sets)."""
    url = sources.join(prefix, INDEX_NAME)
    index = sources.read_json(url, policy)
    return None if index is None else check_index(index, url)


def index_of(spec: str, policy: sources.IOPolicy = sources.IOPolicy()) -> Optional[dict]:
    """The ``index.json`` of the set that ``spec`` names (a directory or URL prefix, or the folder of a
    pattern / shard), None when there is none."""
    if sources.is_pipe(spec):
        return None
    if sources.is_local(spec):
        spec = sources.local_path(spec)
        directory = spec if os.path.isdir(spec) else os.path.dirname(spec)
        try:
            return load_index(directory)
        except ShardError:
            return None
    prefix = spec if _is_prefix(spec) else sources.parent(spec)
    return remote_index(prefix, policy)


def _is_prefix(spec: str) -> bool:
    """A URL naming a shard set (its prefix), not shards: no pattern, not a .tar."""
    return not spec.endswith(".tar") and "{" not in spec and not any(c in spec for c in "*?[")


def list_shards(spec: str | Path, policy: sources.IOPolicy = sources.IOPolicy()) -> list[tuple[str, Optional[int]]]:
    """The tar shards named by ``spec``, as ``(path or URL, samples)`` in a stable order.

    ``spec`` is a shard-set directory (read through its ``index.json``), a brace pattern
    (``dir/shard-{000000..000003}.tar``), a glob (``dir/shard-*.tar``) or one tar file; each of them
    may also be a URL (see :func:`_list_remote`). ``samples`` comes from the ``index.json`` beside the
    shards when there is one, else None. Raises :class:`ShardError` (one line) when nothing matches or a
    named local shard is missing.
    """
    spec = str(spec)
    if not sources.is_local(spec):
        return _list_remote(spec, policy)
    spec = sources.local_path(spec)
    if os.path.isdir(spec):
        index = load_index(spec)
        out = []
        for shard in index["shards"]:
            path = os.path.join(spec, shard["name"])
            if not os.path.isfile(path):
                raise ShardError(f"{path}: listed in {os.path.join(spec, INDEX_NAME)} but missing")
            out.append((path, shard["samples"]))
        return out
    if "{" in spec:
        import braceexpand

        paths = list(braceexpand.braceexpand(spec))
        for path in paths:
            if not os.path.isfile(path):
                raise ShardError(f"{path}: no such shard (from the pattern {spec})")
    elif any(c in spec for c in "*?["):
        paths = sorted(glob.glob(spec))
        if not paths:
            raise ShardError(f"{spec}: no file matches this pattern")
    else:
        if not os.path.isfile(spec):
            raise ShardError(f"{spec}: no such shard set, shard or pattern")
        paths = [spec]
    counts: dict[str, dict[str, int]] = {}  # directory -> {shard name: samples}, from its index.json if any
    out = []
    for path in paths:
        directory = os.path.dirname(os.path.abspath(path))
        if directory not in counts:
            try:
                counts[directory] = {s["name"]: s["samples"] for s in load_index(directory)["shards"]}
            except ShardError:
                counts[directory] = {}
        out.append((path, counts[directory].get(os.path.basename(path))))
    return out


def _list_remote(spec: str, policy: sources.IOPolicy) -> list[tuple[str, Optional[int]]]:
    """Shards of a URL or ``pipe:`` spec, without listing a bucket where the spec names its shards.

    * ``pipe:COMMAND`` with a brace pattern: one command per expansion (webdataset's convention, e.g.
      ``pipe:aws s3 cp s3://b/shard-{000000..000009}.tar -``); no counts.
    * a URL brace pattern: its expansion, counts from the ``index.json`` under the shards' prefix if any;
    * a URL glob (``s3://b/sets/shard-*.tar``): the store's listing (fsspec ``glob``);
    * a URL prefix (``https://host/shards``): its ``index.json``, required (HTTP has no listing);
    * a URL ending in ``.tar``: that shard.
    A remote shard that turns out to be missing is skipped and counted when it is read.
    """
    import braceexpand

    if sources.is_pipe(spec):
        return [(command, None) for command in braceexpand.braceexpand(spec)]
    sources.filesystem(spec, policy)  # an unknown protocol or a missing client package: one line naming spec
    if "{" in spec:
        urls = list(braceexpand.braceexpand(spec))
    elif any(c in spec for c in "*?["):
        fs, path = sources.filesystem(spec, policy)
        name = sources.protocol(spec)
        found = sorted(sources.with_retries(spec, lambda: fs.glob(path), policy))
        urls = [u if "://" in u else f"{name}://{u}" for u in found]
        if not urls:
            raise ShardError(f"{spec}: no shard matches this pattern")
    elif spec.endswith(".tar"):
        urls = [spec]
    else:
        index = remote_index(spec, policy)
        if index is None:
            raise ShardError(f"{sources.join(spec, INDEX_NAME)}: not found; a remote shard set is read through its "
                             f"index.json, or name its shards with a brace pattern ({spec.rstrip('/')}/shard-{{000000..000009}}.tar)")
        return [(sources.join(spec, shard["name"]), shard["samples"]) for shard in index["shards"]]
    counts: dict[str, dict[str, int]] = {}
    out = []
    for url in urls:
        prefix = sources.parent(url)
        if prefix not in counts:
            index = remote_index(prefix, policy)
            counts[prefix] = {s["name"]: s["samples"] for s in index["shards"]} if index else {}
        out.append((url, counts[prefix].get(url.rsplit("/", 1)[-1])))
    return out
