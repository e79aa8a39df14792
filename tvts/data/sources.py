"""Where shard bytes come from: local paths, any fsspec URL (``http(s)://``, ``s3://``, ``gs://``, ...) and
webdataset's ``pipe:COMMAND``, opened with bounded retries and a read timeout.

* Local paths (and ``file://``) are opened directly.
* ``pipe:COMMAND`` runs COMMAND with its standard output as the shard (``webdataset.gopen``), e.g.
  ``pipe:aws s3 cp s3://bucket/shard-000000.tar -``; the command's own tools own its timeouts.
* Every other ``protocol://`` goes through fsspec. ``http(s)`` needs aiohttp (in the base install), ``s3``
  s3fs and ``gs`` gcsfs (``pip install tvts-engine[remote]``); a missing one is a one-line error naming the
  package. Credentials and endpoints come from the environment or fsspec's own configuration
  (``AWS_ACCESS_KEY_ID`` / ``AWS_PROFILE``, ``GOOGLE_APPLICATION_CREDENTIALS``, ``FSSPEC_S3_ENDPOINT_URL``,
  ``~/.config/fsspec/*.json``), never from a recipe.

:class:`IOPolicy` (``data.io_timeout_s``, ``data.io_retries``, ``data.io_backoff_s``): a read that stalls
longer than the timeout fails; a failure that may pass (connection reset, timeout, a 5xx answer) is
retried after ``backoff * 2**attempt`` seconds, at most ``retries`` times; a missing file or a refused
permission is not retried.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import IO, Callable, Optional, TypeVar

from tvts.errors import UserError

T = TypeVar("T")


class SourceError(UserError):
    """A shard source that cannot be opened at all (unknown protocol, missing client package, bad JSON)."""

# the package each fsspec protocol needs, for the "pip install" line
PROTOCOL_PACKAGES = {"http": "aiohttp", "https": "aiohttp", "s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs",
                     "az": "adlfs", "abfs": "adlfs", "hf": "huggingface_hub"}


@dataclass(frozen=True)
class IOPolicy:
    timeout_s: float = 60.0  # a remote read (connect or the next bytes) that stalls longer fails
    retries: int = 3  # tries after the first, for failures that may pass
    backoff_s: float = 1.0  # first wait between tries; doubles each time

    @classmethod
    def from_config(cls, data) -> "IOPolicy":
        return cls(data.io_timeout_s, data.io_retries, data.io_backoff_s)


def is_pipe(spec: str) -> bool:
    return spec.startswith("pipe:")


def protocol(spec: str) -> Optional[str]:
    """The fsspec protocol of ``spec`` (``"http"``, ``"s3"``...), None for local paths and pipes."""
    if is_pipe(spec) or "://" not in spec:
        return None
    name = spec.split("://", 1)[0].lower()
    return None if name == "file" else name


def is_local(spec: str) -> bool:
    return not is_pipe(spec) and protocol(spec) is None


def local_path(spec: str) -> str:
    return spec[len("file://"):] if spec.startswith("file://") else spec


def _storage_options(name: str, policy: IOPolicy) -> dict:
    """Timeouts in each client's terms; our own retries replace the clients' (so the bound is ours)."""
    if name in ("http", "https"):
        import aiohttp

        return {"client_kwargs": {"timeout": aiohttp.ClientTimeout(total=None, sock_connect=policy.timeout_s,
                                                                   sock_read=policy.timeout_s)}}
    if name in ("s3", "s3a"):
        return {"config_kwargs": {"connect_timeout": policy.timeout_s, "read_timeout": policy.timeout_s,
                                  "retries": {"max_attempts": 1}}}
    if name in ("gs", "gcs"):
        return {"timeout": policy.timeout_s}
    return {}


def filesystem(url: str, policy: IOPolicy = IOPolicy()):
    """(fsspec filesystem, path inside it) for ``url``; a one-line :class:`SourceError` when the protocol is
    unknown or its package is missing."""
    import fsspec

    name = protocol(url)
    try:
        cls = fsspec.get_filesystem_class(name)
    except ValueError:
        raise SourceError(f"{url}: unknown protocol {name!r}; use a local path, pipe:COMMAND or an fsspec URL "
                         f"(http, https, s3, gs, ...)") from None
    except ImportError:
        package = PROTOCOL_PACKAGES.get(name, f"the fsspec implementation of {name}")
        raise SourceError(f"{url}: reading {name}:// needs {package}: pip install {package}") from None
    fs = cls(**_storage_options(name, policy))
    return fs, cls._strip_protocol(url) if name not in ("http", "https") else url


def _final(err: BaseException) -> bool:
    """A failure that another try cannot mend."""
    return isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, UserError))


# client libraries whose exceptions are transport failures (they do not all derive from OSError)
_CLIENT_MODULES = ("aiohttp", "botocore", "aiobotocore", "urllib3", "requests", "google", "fsspec", "http")


def is_transient_io(err: BaseException) -> bool:
    """A transport failure another try may mend: connection reset or refused, timeout, an incomplete
    body, a 5xx answer. Not a missing file, a refused permission, or a corrupt tar (``tarfile`` errors)."""
    import tarfile

    if isinstance(err, tarfile.TarError) or _final(err):
        return False
    status = getattr(err, "status", None) or getattr(err, "code", None)
    if isinstance(status, int) and 400 <= status < 500 and status not in (408, 429):
        return False
    if isinstance(err, (OSError, EOFError, TimeoutError)):
        return True
    return type(err).__module__.split(".")[0] in _CLIENT_MODULES


def with_retries(what: str, fn: Callable[[], T], policy: IOPolicy,
                 on_retry: Optional[Callable[[int, BaseException], None]] = None) -> T:
    """``fn()``, tried again after transient failures (see the module docstring); raises the last error."""
    for attempt in range(policy.retries + 1):
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - what is transient depends on the client
            if not is_transient_io(err) or attempt == policy.retries:
                raise
            if on_retry is not None:
                on_retry(attempt + 1, err)
            time.sleep(policy.backoff_s * 2**attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def open_stream(spec: str, policy: IOPolicy = IOPolicy()) -> IO[bytes]:
    """A binary file object reading ``spec`` from its start, sequentially (one try; see :func:`with_retries`)."""
    if is_pipe(spec):
        from webdataset.gopen import gopen

        return gopen(spec, "rb")
    if is_local(spec):
        return open(local_path(spec), "rb")
    fs, path = filesystem(spec, policy)
    # http: a streaming read (no range requests, so any server works); object stores: fsspec's read-ahead
    return fs.open(path, "rb", block_size=0) if protocol(spec) in ("http", "https") else fs.open(path, "rb")


def read_bytes(spec: str, policy: IOPolicy = IOPolicy()) -> bytes:
    """All bytes of a (small) file, with retries."""
    def read() -> bytes:
        with open_stream(spec, policy) as f:
            return f.read()
    return with_retries(spec, read, policy)


def exists(spec: str, policy: IOPolicy = IOPolicy()) -> bool:
    if is_local(spec):
        return os.path.exists(local_path(spec))
    if is_pipe(spec):
        return True
    fs, path = filesystem(spec, policy)
    return with_retries(spec, lambda: fs.exists(path), policy)


def join(prefix: str, name: str) -> str:
    """``prefix/name`` for local paths and URLs alike."""
    return os.path.join(prefix, name) if is_local(prefix) else prefix.rstrip("/") + "/" + name


def parent(spec: str) -> str:
    """The directory (or URL prefix) holding ``spec``."""
    return os.path.dirname(os.path.abspath(local_path(spec))) if is_local(spec) else spec.rsplit("/", 1)[0]


def read_json(spec: str, policy: IOPolicy = IOPolicy()) -> Optional[dict]:
    """The JSON object at ``spec``, None when there is no such file; a one-line SourceError when it is not JSON."""
    try:
        data = read_bytes(spec, policy)
    except FileNotFoundError:
        return None
    try:
        return json.loads(data)
    except ValueError as err:
        raise SourceError(f"{spec}: not valid JSON ({err})") from None


def upload_shard_set(local_dir: str | os.PathLike, url: str, policy: IOPolicy = IOPolicy()) -> int:
    """Copy a finished local shard set (its ``shard-*.tar``, then its ``index.json``) to ``url``, e.g.
    ``s3://bucket/corpus``; a shard already there at its size is kept. The index goes last, so a reader never
    finds an index whose shards are not all there. Returns the number of files sent."""
    from pathlib import Path

    local = Path(local_dir)
    fs, root = filesystem(url, policy)
    files = sorted(local.glob("shard-*.tar")) + [local / "index.json"]
    sent = 0
    for path in files:
        target = root.rstrip("/") + "/" + path.name
        try:
            if path.name != "index.json" and fs.size(target) == path.stat().st_size:
                continue
        except FileNotFoundError:
            pass
        with_retries(target, lambda path=path, target=target: fs.put_file(str(path), target), policy)
        sent += 1
    return sent
