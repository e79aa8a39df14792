"""Reading and writing checkpoint files, from local paths only.

Read: PyTorch pickles (``weights_only`` first; official training checkpoints also pickle their
``parse_config.ConfigParser``, which is replaced by an inert stub, never imported or run), safetensors,
TorchScript archives (OpenAI CLIP's ``ViT-B-32.pt``), and run checkpoint directories of this engine
(``model_optim.pt``). A file of the wrong kind stops with one line naming the format that was expected and
what was found. DDP / compile / checkpoint-wrapper prefixes are removed from every key read.
"""
from __future__ import annotations

import pickle
import struct
import types
import warnings
import zipfile
from pathlib import Path
from typing import Mapping, Optional

import torch

from tvts.models.convert.rules import ConversionError

Tensor = torch.Tensor


class _Opaque:
    """Stand-in for a pickled object whose class is not a tensor container (the official checkpoints'
    ``parse_config.ConfigParser``, paths, loggers): keeps its arguments and state, runs nothing."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs, self.state, self.items = args, kwargs, None, []

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):
        self.items.append((key, value))

    def append(self, value):
        self.items.append(value)

    def extend(self, values):
        self.items.extend(values)


_SAFE_GLOBALS = {
    ("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor_v3"),
    ("torch._utils", "_rebuild_parameter"), ("torch._utils", "_rebuild_parameter_with_state"), ("torch", "Size"),
    ("torch", "device"), ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice"),
    ("builtins", "complex"), ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "dtype"), ("_codecs", "encode"),
}


class _StubUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        allowed = (module, name) in _SAFE_GLOBALS
        if allowed or (module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)):
            return super().find_class(module, name)
        return type(name, (_Opaque,), {"__module__": module})


def _stub_pickle_module() -> types.ModuleType:
    mod = types.ModuleType("tvts_stub_pickle")
    mod.Unpickler = _StubUnpickler
    mod.load = lambda f, **kw: _StubUnpickler(f, **kw).load()
    return mod


def _torch_load(path: Path):
    mmap = zipfile.is_zipfile(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        if "weights_only" not in str(err) and "Weights only" not in str(err):
            raise
    # classes outside the weights-only allowlist (official checkpoints pickle their config object)
    return torch.load(path, map_location="cpu", weights_only=False, mmap=mmap, pickle_module=_stub_pickle_module())


def is_safetensors(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(9)
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and 0 < n < path.stat().st_size


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in z.namelist())


def _unwrap(obj, where: str) -> dict[str, Tensor]:
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, Tensor) for v in obj.values()):
            return dict(obj)
        for key in ("state_dict", "model", "module"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, Tensor) for v in inner.values()):
                return dict(inner)
        top = ", ".join(map(str, list(obj)[:6]))
        raise ConversionError(f"{where}: no state dict inside (top-level keys: {top}); expected tensors or a "
                              "'state_dict' / 'model' entry")
    raise ConversionError(f"{where}: holds a {type(obj).__name__}, not a state dict")


def strip_wrappers(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    from tvts.runtime import unwrapped_name  # DDP module., compile _orig_mod., checkpoint wrappers

    return {unwrapped_name(k): v for k, v in sd.items()}


def read_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """A local checkpoint as (flat state dict, metadata).

    Accepts safetensors, TorchScript archives (their ``state_dict()``), ``torch.save`` pickles (a state dict,
    or one under ``state_dict`` / ``model`` / ``module``) and a run checkpoint directory of this engine
    (``model_optim.pt``). DDP / compile prefixes are removed. Metadata: safetensors metadata, or the
    ``meta`` entry of a pickle written by :func:`write_checkpoint`.
    """
    p = Path(path)
    if p.is_dir():
        if (p / "model_optim.pt").is_file():
            p = p / "model_optim.pt"
        else:
            raise ConversionError(f"{path}: a directory without model_optim.pt (sharded fsdp/zero checkpoints: "
                                  "export a consolidated state dict first)")
    if not p.is_file():
        raise ConversionError(f"{path}: no such file")
    meta: dict[str, str] = {}
    try:
        if is_safetensors(p):
            from safetensors import safe_open
            from safetensors.torch import load_file

            with safe_open(str(p), framework="pt") as fh:
                meta = dict(fh.metadata() or {})
            return strip_wrappers(load_file(str(p), device="cpu")), meta
        if _is_torchscript(p):
            with warnings.catch_warnings():  # torch deprecates TorchScript; OpenAI's CLIP files are TorchScript
                warnings.simplefilter("ignore", DeprecationWarning)
                archive = torch.jit.load(str(p), map_location="cpu")
            return strip_wrappers(dict(archive.state_dict())), meta
        obj = _torch_load(p)
    except ConversionError:
        raise
    except Exception as err:  # torch.load / safetensors / jit raise many types for a file that is not theirs
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise ConversionError(f"{path}: not a checkpoint that torch.load, safetensors or TorchScript can read "
                              f"({first})") from err
    if isinstance(obj, Mapping) and isinstance(obj.get("meta"), Mapping):
        meta = {str(k): str(v) for k, v in obj["meta"].items()}
    return strip_wrappers(_unwrap(obj, str(path))), meta


def write_checkpoint(state_dict: Mapping[str, Tensor], path: str | Path,
                     meta: Optional[Mapping[str, str]] = None) -> Path:
    """``.safetensors``: the flat tensors + string metadata; anything else: ``torch.save({"state_dict": ...,
    "meta": ...})`` (the layout official loaders read with ``checkpoint['state_dict']``)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    meta = {str(k): str(v) for k, v in (meta or {}).items()}
    if p.suffix == ".safetensors":
        from safetensors.torch import save_file

        seen, tensors = set(), {}
        for k, v in state_dict.items():
            v = v.detach().contiguous()
            ptr = v.untyped_storage().data_ptr()
            tensors[k] = v.clone() if ptr in seen else v  # safetensors refuses tensors that share storage
            seen.add(ptr)
        save_file(tensors, str(p), metadata=meta)
    else:
        torch.save({"state_dict": dict(state_dict), "meta": meta}, p)
    return p
