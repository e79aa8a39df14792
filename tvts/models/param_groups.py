"""Optimizer parameter groups, built from explicit module membership (never from name substrings).

``uniform`` (TVTS v1): every trainable parameter at ``optim.lr``.
``degeneration_free`` (TVTSv2): shallow text blocks frozen (the text tower sets requires_grad=False on
them), every weight inherited from CLIP at ``optim.lr_pretrained`` (1e-7), the new modules (temporal
attention, its norm, the sorter) at ``optim.lr`` (1e-4).
Both: no weight decay on biases and normalisation weights.
``model.compat``: the official code lets ``temporal_embedding`` fall into the 1e-7 group through substring
matching (tvts-method.md §1.2, quirk 4); compat reproduces that, otherwise it trains with the new modules.
"""
from __future__ import annotations

import torch.nn as nn

_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _no_decay_ids(model: nn.Module) -> set[int]:
    ids = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if isinstance(module, _NORMS) or name.endswith("bias"):
                ids.add(id(p))
    return ids


def param_groups(model: nn.Module, optim_cfg, compat: bool = False) -> list[dict]:
    """Groups for ``torch.optim.AdamW``: dicts with ``params``, ``lr``, ``weight_decay`` and ``name``.

    The model must provide ``new_modules()`` and (for v2) a ``video.temporal_embed`` parameter, or its own
    ``optimizer_groups(optim_cfg)`` returning such groups (e.g. a fine-tuning classifier's layer-wise lr
    decay), which is then used as it is. Parameters with ``requires_grad=False`` (frozen) are left out.
    Empty groups are dropped.
    """
    own = getattr(model, "optimizer_groups", None)
    if callable(own):
        return own(optim_cfg)
    no_decay = _no_decay_ids(model)
    new = set()
    if optim_cfg.groups == "degeneration_free":
        for m in model.new_modules():
            new.update(id(p) for p in m.parameters())
        temporal = getattr(getattr(model, "video", None), "temporal_embed", None)
        if temporal is not None and not compat:
            new.add(id(temporal))
    buckets: dict[tuple[str, bool], list] = {}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if optim_cfg.groups == "uniform":
            kind = "all"
        else:
            kind = "new" if id(p) in new else "pretrained"
        buckets.setdefault((kind, id(p) in no_decay), []).append(p)
    groups = []
    for (kind, nd), params in sorted(buckets.items()):
        groups.append({
            "name": f"{kind}{'_no_decay' if nd else ''}",
            "params": params,
            "lr": optim_cfg.lr_pretrained if kind == "pretrained" else optim_cfg.lr,
            "weight_decay": 0.0 if nd else optim_cfg.weight_decay,
        })
    return groups
