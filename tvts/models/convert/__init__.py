"""Checkpoint interop: official TVTS / TVTSv2 files, OpenAI CLIP, OpenCLIP and ImageMAE, both ways.

Convert per checkpoint family behind one registry:

- ``rules``: the key-mapping machinery (:class:`Rule`), :class:`Format` and the registry (``FORMATS``,
  ``register``, ``get_format``);
- ``shared``: rule tables and tensor changes more than one family is built from;
- ``tvts_v1``, ``tvtsv2``, ``clip`` (OpenAI CLIP and OpenCLIP), ``mae``: one module per family, each
  defining and registering its formats (imported here in that order: the order of ``--help`` and of
  error messages);
- ``files``: reading and writing checkpoint files (restricted unpickler, safetensors / TorchScript);
- ``api``: the entry points (``to_ours``, ``to_official``, ``convert_file``, ``export_file``,
  ``load_pretrained``, ``build_target``, ``help_table``) and their :class:`Report`.
"""
from tvts.models.convert import tvts_v1, tvtsv2, clip, mae  # noqa: F401  (registers every format, in order)
from tvts.models.convert.api import (Report, build_target, convert_file, describe, export_file, help_table,
                                     load_pretrained, names, to_official, to_ours)
from tvts.models.convert.files import read_checkpoint, write_checkpoint
from tvts.models.convert.rules import FORMATS, ConversionError, Format, Rule, export_formats

EXPORT_FORMATS = export_formats()

__all__ = ["ConversionError", "Rule", "Format", "FORMATS", "EXPORT_FORMATS", "Report", "describe", "names",
           "to_ours", "to_official", "read_checkpoint", "write_checkpoint", "build_target", "convert_file",
           "export_file", "load_pretrained", "help_table"]
