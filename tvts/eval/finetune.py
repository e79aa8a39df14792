"""Fine-tuning a pre-trained video encoder for classification (the paper's SSV2 / Kinetics evaluation; official v1
``downstream/run_class_finetuning.py``, forked from VideoMAE; method §4.3).

A recipe (``configs/finetune_*.yaml``) has ``name``, ``seed``, ``optim`` and ``train`` (the pre-training
:class:`tvts.config.OptimConfig` / :class:`tvts.config.TrainConfig`, so every strategy, precision and schedule of
pre-training applies) and a ``finetune`` section (:class:`FinetuneConfig`). The encoder's own facts (family,
size, frames, crop, normalisation) are never restated: they come from the config of ``finetune.init``, loaded
by :func:`tvts.eval.loading.load_eval_model` (a run directory, a step directory, an export, a converted weights
file with ``init_config``, or ``random:<config | run dir>`` for the step-0 baseline).

Model: encoder -> [CLS] after the final LayerNorm (official v1; ``pool: mean`` averages the patch tokens
before that LayerNorm, VideoMAE's ``fc_norm``) -> dropout -> linear head. Loss: soft-target cross-entropy
with label smoothing and optional Mixup / CutMix (:mod:`tvts.eval.finetune_data`). AdamW with layer-wise lr
decay (:meth:`VideoClassifier.optimizer_groups`). The encoder has no drop path (``tvts.models.video`` has none;
the official run passes none either, method §4.3). Test: ``test_clips`` temporal x ``test_crops`` spatial views
per clip, their softmax scores (official v1: logits, ``view_merge: logits``) averaged, top-1 / top-5.

Run directory ``runs/{name}``: ``config.yaml`` (the composed encoder + optim + train config),
``finetune.yaml`` (the recipe), ``metrics.jsonl`` / tensorboard, ``checkpoints/`` (exact resume: re-run the
same command), ``finetune.json`` / ``.md`` (the final multi-view result).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Literal, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

from tvts import config as config_lib
from tvts.config import ConfigError, OptimConfig, TrainConfig
from tvts.data.augment import normalize_video
from tvts.engine.checkpoint import Checkpointer
from tvts.engine.distributed import DistInfo, all_gather_objects, all_reduce_max, all_reduce_mean
from tvts.engine.metrics import MetricLogger, on_device, read_window
from tvts.engine.build import build_strategy
from tvts.runtime import unwrapped_name
from tvts.engine.run import TrainingAborted, fault_exit, run_dir_for
from tvts.runtime import seed_everything
from tvts.eval.finetune_data import (Mixup, StepBatches, ViewClips, TrainClips, check_videos, classification_lists,
                                     collate, raise_errors)
from tvts.eval.loading import load_eval_model
from tvts.eval.metrics import topk_accuracy
from tvts.eval.options import EvalOptions, OptionError
from tvts.eval.report import markdown, write_result
from tvts.models.layers import trunc_normal_init


def _ranged(default, lo, hi):
    return field(default=default, metadata={"range": (lo, hi, False)})  # checked by tvts.config's builder


@dataclass
class FinetuneConfig:
    init: str = ""  # run dir | step dir | export dir | weights file (+ init_config) | random:<config | run dir>
    init_config: str = ""  # the recipe of a weights file (launch/convert.py output)
    data: str = ""  # the dataset's metadata directory (lists, label files; videos under <data>/videos)
    format: Literal["auto", "ssv2", "kinetics", "ssv2_json", "kinetics_csv", "csv"] = "auto"
    train_list: str = ""  # relative to data unless absolute; "": found by name (tvts/eval/finetune_data.py)
    eval_list: str = ""
    labels: str = ""
    video_root: str = ""  # "": <data>/videos when it exists, else <data>
    limit: int = _ranged(0, 0, 10**9)  # > 0: the first N clips of each list (smoke runs)
    pool: Literal["cls", "mean"] = "cls"  # official v1: [CLS] after the final LayerNorm
    head_dropout: float = _ranged(0.0, 0.0, 0.99)  # official v1: --drop 0
    layer_decay: float = _ranged(0.75, 0.0, 1.0)  # official v1 (VideoMAE): 0.75; 1: off
    label_smoothing: float = _ranged(0.1, 0.0, 0.99)  # official 0.1
    mixup: float = _ranged(0.8, 0.0, 100.0)  # Beta alpha; official 0.8; 0: off
    cutmix: float = _ranged(1.0, 0.0, 100.0)  # official 1.0; 0: off
    mixup_switch_prob: float = _ranged(0.5, 0.0, 1.0)  # official: CutMix instead of Mixup half the time
    frames: int = _ranged(0, 0, 256)  # M per clip; 0: the encoder's sample.frames (v1 16)
    resize_short: int = _ranged(0, 0, 4096)  # training short side before the random crop; 0: data.resize_short
    test_clips: int = _ranged(2, 1, 64)  # official v1: 2 temporal views
    test_crops: int = _ranged(3, 1, 16)  # x 3 spatial views
    test_resize_short: int = _ranged(0, 0, 4096)  # short side of the test views; 0: sample.image_size (official)
    view_merge: Literal["softmax", "logits"] = "softmax"  # what is averaged over views; official v1: logits
    eval_batch_size: int = _ranged(0, 0, 1 << 16)  # clips per test forward (x views); 0: train.micro_batch
    workers: int = _ranged(2, 0, 256)  # clip-decoding processes


@dataclass
class FinetuneRecipe:
    name: str = "finetune"
    seed: int = _ranged(0, 0, 2**63 - 1)  # head init, data order, augmentation
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


def load_recipe(path: Optional[str | Path] = None, overrides: Optional[List[str]] = None) -> FinetuneRecipe:
    """A :class:`FinetuneRecipe` from a YAML file and ``key=value`` overrides (``finetune.init=runs/demo``);
    ConfigError (one line naming the key) on anything wrong."""
    raw: dict = {}
    if path is not None:
        if not Path(path).is_file():
            raise ConfigError(f"{path}: recipe file not found; pass a YAML file such as configs/finetune_demo.yaml")
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path}: not a YAML recipe ({getattr(err, 'problem', None) or err})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping (name, seed, optim, train, finetune)")
    for item in overrides or []:
        key, sep, value = item.partition("=")
        parts = key.strip().lstrip("-").split(".")
        if not sep or not all(parts):
            raise ConfigError(f"{item}: an override must look like section.key=value")
        node = raw
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        try:
            node[parts[-1]] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            raise ConfigError(f"{key}: cannot read {value!r}; quote it") from None
    for key in raw:
        if key in ("model", "sample", "data"):
            raise ConfigError(f"{key}: the encoder's {key} settings come from finetune.init's config.yaml; a fine-tuning "
                              f"recipe sets only name, seed, optim, train and finetune")
    for prefix, cls, section in (("", FinetuneRecipe, raw), ("finetune.", FinetuneConfig, raw.get("finetune"))):
        names = [f.name for f in dataclasses.fields(cls)]
        for key in section if isinstance(section, dict) else ():
            if key not in names:
                near = difflib.get_close_matches(key, names, n=1)
                hint = f"; did you mean {prefix}{near[0]}?" if near else f"; one of {', '.join(names)}"
                raise ConfigError(f"{prefix}{key}: unknown key{hint}")
    recipe = config_lib.build_section(FinetuneRecipe, raw, "")
    if recipe.train.stop_at:
        raise ConfigError("train.stop_at: fine-tuning runs to train.steps (stop it with SIGTERM: it checkpoints and a "
                          "re-run resumes); drop the key")
    for key in ("init", "data"):
        if not getattr(recipe.finetune, key):
            raise ConfigError(f"finetune.{key}: not set; e.g. finetune.init=runs/demo finetune.data=data/demo/downstream")
    return recipe


def compose(recipe: FinetuneRecipe, encoder_cfg: config_lib.Config) -> config_lib.Config:
    """The run's :class:`tvts.config.Config`: the encoder's model / sample / data, the recipe's name, seed, optim and
    train (what the strategies and the checkpointer read)."""
    cfg = copy.deepcopy(encoder_cfg)
    cfg.name, cfg.seed = recipe.name, recipe.seed
    cfg.optim, cfg.train = copy.deepcopy(recipe.optim), copy.deepcopy(recipe.train)
    # no pre-training shards are read (and DDP's find_unused_parameters follows data.captions)
    cfg.data.train, cfg.data.captions, cfg.data.val = [], [], []
    config_lib.validate(cfg)
    return cfg


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------
@dataclass
class ClassifierOutput:
    logits: torch.Tensor  # (B, C)
    loss: Optional[torch.Tensor] = None  # soft-target cross-entropy, when targets are given


EMBEDDINGS = ("patch_embed", "patch_bias", "cls_token", "pos_embed", "temporal_embed", "norm_pre")
NO_WEIGHT_DECAY = ("video.cls_token", "video.pos_embed")  # official v1 no_weight_decay(), besides 1-D tensors


class VideoClassifier(nn.Module):
    """``video`` (a :class:`tvts.models.video.VideoEncoder`) + ``head_dropout`` + ``head`` (width -> classes)."""

    def __init__(self, video: nn.Module, num_classes: int, pool: str = "cls", head_dropout: float = 0.0,
                 layer_decay: float = 1.0, compat: bool = False):
        super().__init__()
        self.video = video
        self.pool, self.layer_decay, self.compat = pool, layer_decay, compat
        self.head_dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(video.width, num_classes)
        trunc_normal_init(self.head)  # official v1: trunc-normal(0.02), bias 0
        if video.proj is not None:  # v2's CLIP projection is not on the head's path: leave it out of training
            video.proj.requires_grad_(False)

    def forward(self, video: torch.Tensor, targets: Optional[torch.Tensor] = None) -> ClassifierOutput:
        """video (B, M, 3, S, S) float, normalised; targets (B, C) float soft labels -> logits (B, C) [+ loss]."""
        tokens = self.video.forward_features(video)
        pooled = tokens[:, 0] if self.pool == "cls" else tokens[:, 1:].mean(1)
        logits = self.head(self.head_dropout(self.video.norm(pooled)))
        if targets is None:
            return ClassifierOutput(logits)
        loss = -(targets * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean()
        return ClassifierOutput(logits, loss)

    def layer_id(self, name: str) -> int:
        """0: embeddings; i + 1: block i; depth + 1: final norm and head (VideoMAE ``get_num_layer_for_vit``).
        ``compat``: ``temporal_embed`` in the top layer, as the official name matching puts it."""
        depth = len(self.video.blocks)
        parts = unwrapped_name(name).split(".")
        if parts[:2] == ["video", "blocks"]:
            return int(parts[2]) + 1
        if parts[0] == "video" and parts[1] in EMBEDDINGS and not (self.compat and parts[1] == "temporal_embed"):
            return 0
        return depth + 1

    def optimizer_groups(self, optim_cfg) -> list[dict]:
        """AdamW groups (used by :func:`tvts.models.param_groups.param_groups` under every strategy): layer l at
        ``optim.lr * layer_decay ** (depth + 1 - l)``; no weight decay on 1-D tensors, cls_token and pos_embed."""
        depth = len(self.video.blocks)
        buckets: dict[tuple[int, bool], list] = {}
        for name, p in self.named_parameters():
            if p.requires_grad:
                no_decay = p.ndim <= 1 or unwrapped_name(name) in NO_WEIGHT_DECAY
                buckets.setdefault((self.layer_id(name), no_decay), []).append(p)
        return [{"name": f"layer{layer:02d}{'_no_decay' if nd else ''}", "params": params,
                 "lr": optim_cfg.lr * self.layer_decay ** (depth + 1 - layer),
                 "weight_decay": 0.0 if nd else optim_cfg.weight_decay}
                for (layer, nd), params in sorted(buckets.items())]


def merge_views(logits: torch.Tensor, how: str = "softmax") -> torch.Tensor:
    """(B, V, C) per-view logits -> (B, C) clip scores: the mean over views of the softmax (or of the logits)."""
    return logits.softmax(-1).mean(1) if how == "softmax" else logits.mean(1)


def score_metrics(scores: np.ndarray, labels, how: str = "softmax") -> dict[str, float]:
    """top-1 / top-5 (%) of (N, C) merged scores and their loss (-log of the mean probability, or the CE of the
    mean logits)."""
    s = torch.as_tensor(scores, dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    log_p = s.clamp_min(1e-300).log() if how == "softmax" else s.log_softmax(-1)
    return {**topk_accuracy(s, y, (1, 5)), "loss": float(-log_p[torch.arange(len(y)), y].mean())}


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
class Finetuner:
    """Load the encoder, build the classifier and the strategy, then :meth:`run`: resume -> loop {step, maybe
    evaluate, maybe checkpoint, log} -> multi-view test -> final checkpoint."""

    def __init__(self, recipe: FinetuneRecipe, info: DistInfo):
        from tvts import kernels

        ft = self.ft = recipe.finetune
        self.recipe, self.info = recipe, info
        self.lists, self.format = classification_lists(ft.data, ft)
        for name, items in (("train_list", self.lists.train), ("eval_list", self.lists.eval)):
            check_videos(items, self.lists.video_root, self.lists.files[name])
        encoder = load_eval_model(ft.init, "cpu", ft.init_config or None)
        self.init = encoder.describe()
        cfg = self.cfg = compose(recipe, encoder.cfg)
        self.clip = _resolved(cfg, ft.frames, ft.resize_short, "resize_short")
        self.test_short = _resolved(cfg, self.clip.frames, ft.test_resize_short or cfg.sample.image_size,
                                    "test_resize_short").resize_short
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        kernels.set_default_backend(cfg.train.attention)
        self.num_classes = self.lists.num_classes
        seed_everything(cfg.seed)  # the head starts the same on every rank
        model = VideoClassifier(encoder.model.video.requires_grad_(True), self.num_classes, ft.pool, ft.head_dropout,
                                ft.layer_decay, cfg.model.compat).train()
        del encoder
        seed_everything(cfg.seed + info.rank)  # dropout differs per rank, as in pre-training
        self.mixup = Mixup(ft.mixup, ft.cutmix, ft.mixup_switch_prob, ft.label_smoothing, self.num_classes)
        self.run_dir = run_dir_for(cfg)
        self.strategy = build_strategy(cfg, model, info, cfg.train.steps)
        self.checkpointer = Checkpointer(self.run_dir, info, cfg.train.keep_last)
        self.metrics = MetricLogger(self.run_dir, info.is_main, cfg.train.steps)
        self.step, self.window, self.nonfinite_in_row, self.finished = 0, [], 0, False

    def _clips(self, cls, items, resize_short, **kwargs):
        return cls(items, self.lists.video_root, self.clip.frames, self.cfg.sample.image_size, resize_short,
                   self.clip.normalize, **kwargs)

    def save(self) -> Path:
        read_window(self.window)  # the unlogged steps' values as floats, as the log reads them
        state = {"window": self.window, "nonfinite_in_row": self.nonfinite_in_row, "finished": self.finished}
        return self.checkpointer.save(self.step, self.strategy, state, {"strategy": self.cfg.train.strategy,
                                                                       "name": self.cfg.name})

    def run(self) -> dict:
        cfg, info = self.cfg, self.info
        found = self.checkpointer.resume(self.strategy)
        if found is not None:
            state = found[1]
            self.step, self.window = state["step"], list(state["window"])
            self.nonfinite_in_row, self.finished = state["nonfinite_in_row"], state["finished"]
            if info.is_main:
                print(f"resumed from {found[0]} at step {self.step}", flush=True)
        result_file = self.run_dir / "finetune.json"
        if self.finished and self.step >= cfg.train.steps and result_file.is_file():
            self.metrics.close()
            return json.loads(result_file.read_text())
        if info.is_main:
            (self.run_dir / "config.yaml").write_text(yaml.safe_dump(config_lib.to_dict(cfg), sort_keys=False))
            (self.run_dir / "finetune.yaml").write_text(yaml.safe_dump(dataclasses.asdict(self.recipe), sort_keys=False))
            print(f"fine-tuning {self.init['source']} on {len(self.lists.train)} clips ({self.num_classes} classes), "
                  f"run directory {self.run_dir.resolve()}", flush=True)
        self.finished, accum = False, cfg.train.grad_accum
        sampler = StepBatches(len(self.lists.train), cfg.train.micro_batch, cfg.seed, info.rank, info.world_size,
                              start=self.step * accum)
        loader = torch.utils.data.DataLoader(
            self._clips(TrainClips, self.lists.train, self.clip.resize_short, seed=cfg.seed), batch_sampler=sampler,
            num_workers=self.ft.workers, collate_fn=collate, generator=torch.Generator())
        batches = iter(loader)
        try:
            while self.step < cfg.train.steps:
                fault_exit(info.rank, self.step + 1)
                self.window.append(self.train_step(batches))
                self.step += 1
                if self.step % cfg.train.log_every == 0 or self.step == cfg.train.steps:
                    self.log()
                if cfg.train.eval_every and self.step % cfg.train.eval_every == 0 and self.step < cfg.train.steps:
                    self.evaluate()
                if self.step % cfg.train.ckpt_every == 0 and self.step < cfg.train.steps:
                    self.save()
            del batches
            metrics = self.evaluate()
            self.finished = True
            self.save()
        finally:
            self.metrics.close()
        result = self.result(metrics)
        if info.is_main:
            write_result(result, self.run_dir)
        return result

    def train_step(self, batches) -> dict:
        cfg, info = self.cfg, self.info
        start, wait, accum = time.perf_counter(), 0.0, cfg.train.grad_accum
        # on the device, in float64 (the arithmetic of the Python floats they replace): read once per log interval
        totals: dict[str, float | torch.Tensor] = {"loss": 0.0, "train_top1": 0.0}
        for micro in range(accum):
            t0 = time.perf_counter()
            index, video, errors = next(batches)
            wait += time.perf_counter() - t0
            raise_errors(errors)
            labels = torch.tensor([self.lists.train[i].label for i in index.tolist()])
            rng = np.random.default_rng([cfg.seed, 1, self.step * accum + micro, info.rank])
            # the clips come as uint8: normalised once on the device, before mixup, which blends normalised pixels
            video = normalize_video(video.to(info.device, non_blocking=True), self.clip.normalize)
            video, targets, _ = self.mixup(video, labels, rng)
            batch = {"video": video, "targets": targets.to(info.device)}
            with self.strategy.no_sync() if micro < accum - 1 else contextlib.nullcontext():
                out = self.strategy.forward(batch)
                # read here, before backward, as the pre-training loop does (tvts.engine.trainer.Trainer.train_step)
                if all_reduce_max(0.0 if torch.isfinite(out.loss).item() else 1.0) > 0:
                    return self._skip(start)
                self.strategy.backward(out.loss / accum)
            totals["loss"] = totals["loss"] + out.loss.detach().double() / accum
            # against the clips' own labels, also under mixup (where it is only a rough progress signal)
            hit = (out.logits.argmax(-1) == labels.to(out.logits.device)).float().mean()
            totals["train_top1"] = totals["train_top1"] + hit.double() * 100.0 / accum
        result = self.strategy.step()
        self.nonfinite_in_row = 0 if not result.skipped else self.nonfinite_in_row + 1
        return {**on_device(totals), "grad_norm": result.grad_norm, "skipped": float(result.skipped),
                "clips": float(cfg.train.micro_batch * accum), "seconds": time.perf_counter() - start, "data_wait": wait}

    def _skip(self, start: float) -> dict:
        self.strategy.skip_step()
        self.nonfinite_in_row += 1
        if self.nonfinite_in_row >= self.cfg.train.max_nonfinite:
            self.step += 1
            self.save()
            raise TrainingAborted(f"{self.nonfinite_in_row} non-finite losses in a row at step {self.step}; lower optim.lr")
        return {"skipped": 1.0, "clips": 0.0, "seconds": time.perf_counter() - start, "data_wait": 0.0}

    def log(self) -> None:
        window, self.window = self.window, []
        read_window(window)  # the interval's losses: one host read
        seconds = sum(w["seconds"] for w in window)
        means = {}
        for key in {k for w in window for k in w} - {"seconds", "clips", "data_wait", "skipped"}:
            values = [w[key] for w in window if key in w and math.isfinite(w[key])]
            if values:
                means[key] = sum(values) / len(values)
        clips = sum(w["clips"] for w in window) * self.info.world_size
        stats = {**all_reduce_mean(means), "clips_per_s": clips / seconds if seconds else 0.0,
                 "step_time_s": seconds / len(window), "skipped": sum(w["skipped"] for w in window),
                 "data_wait_frac": sum(w["data_wait"] for w in window) / seconds if seconds else 0.0}
        stats.update({f"lr/{name}": lr for name, lr in self.strategy.lrs().items()})
        self.metrics.log(self.step, stats)

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Multi-view test of the evaluation list, sharded over ranks (every rank runs the same number of forwards,
        as sharded strategies need); logs val/top1, val/top5, val/loss; returns them."""
        ft, info, items = self.ft, self.info, self.lists.eval
        if len(items) < info.world_size:
            raise ConfigError(f"finetune.eval_list: {len(items)} clips for {info.world_size} ranks")
        dataset = self._clips(ViewClips, items, self.test_short, clips=ft.test_clips, crops=ft.test_crops)
        size = ft.eval_batch_size or self.cfg.train.micro_batch
        mine = torch.utils.data.Subset(dataset, range(info.rank, len(items), info.world_size))
        loader = torch.utils.data.DataLoader(mine, batch_size=size, num_workers=ft.workers, collate_fn=collate,
                                             generator=torch.Generator())
        module = self.strategy.module
        was_training = module.training
        module.eval()
        scores, last, batches = {}, None, iter(loader)
        for _ in range(math.ceil(math.ceil(len(items) / info.world_size) / size)):
            item = next(batches, None)
            index, views, errors = item if item is not None else last
            raise_errors(errors)
            logits = self.strategy.forward({"video": views.flatten(0, 1).to(info.device)}).logits
            merged = merge_views(logits.float().view(*views.shape[:2], -1), ft.view_merge).double().cpu()
            if item is not None:
                scores.update(zip(index.tolist(), merged.numpy()))
            last = item or last
        module.train(was_training)
        for part in all_gather_objects(scores):
            scores.update(part)
        m = score_metrics(np.stack([scores[i] for i in range(len(items))]), [it.label for it in items], ft.view_merge)
        stats = {"val/loss": m["loss"], "val/top1": m["top1"], "val/top5": m["top5"], "val/clips": float(len(items)),
                 "val/views": float(ft.test_clips * ft.test_crops)}
        self.metrics.log(self.step, stats)
        if info.is_main:
            print(f"multi-view test @ {self.step}: top-1 {m['top1']:.2f}  top-5 {m['top5']:.2f}  "
                  f"({ft.test_clips * ft.test_crops} views per clip)", flush=True)
        return stats

    def result(self, stats: dict) -> dict:
        ft, cfg = self.ft, self.cfg
        views = f"{ft.test_clips} clips x {ft.test_crops} crops, {ft.view_merge} averaged"
        batch = cfg.train.micro_batch * cfg.train.grad_accum * self.info.world_size
        rows = [["top-1", stats["val/top1"]], ["top-5", stats["val/top5"]], ["views per clip", views],
                ["eval clips / classes", f"{len(self.lists.eval)} / {self.num_classes}"],
                ["train clips / steps / global batch", f"{len(self.lists.train)} / {self.step} / {batch}"],
                ["init", self.init["source"]]]
        protocol = {"frames": self.clip.frames, "train_resize_short": self.clip.resize_short, "crop": cfg.sample.image_size,
                    "test_resize_short": self.test_short, "views": views, "normalize": self.clip.normalize,
                    "seed": cfg.seed, "strategy": cfg.train.strategy, "world_size": self.info.world_size}
        return {"task": "finetune", "model": self.init, "data": self.lists.files, "protocol": protocol,
                "metrics": {"top1": stats["val/top1"], "top5": stats["val/top5"], "loss": stats["val/loss"]},
                "recipe": dataclasses.asdict(self.recipe), "table": {"columns": ["metric", "value"], "rows": rows}}


def _resolved(cfg, frames: int, resize_short: int, resize_key: str) -> EvalOptions:
    """Frames, short side and normalisation checked against the encoder (``tvts.eval.options``), errors under
    ``finetune.`` keys."""
    try:
        return EvalOptions(frames=frames, resize_short=resize_short).resolved(cfg)
    except OptionError as err:
        key, _, rest = str(err).partition(":")
        raise ConfigError(f"finetune.{resize_key if key == 'resize_short' else key}:{rest}") from None


def finetune(recipe: FinetuneRecipe, info: DistInfo) -> dict:
    """Fine-tune and test; returns the result (also ``<run>/finetune.json``). Prints its table on rank 0."""
    result = Finetuner(recipe, info).run()
    if info.is_main:
        print(markdown(result), flush=True)
    return result
