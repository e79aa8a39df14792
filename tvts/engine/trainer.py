"""The training loop: load checkpoint -> loop {step, maybe checkpoint, log} -> final checkpoint.

Strategy-agnostic: sharding, precision and state I/O live in :mod:`tvts.engine.strategies`; the data
position, RNG and step are saved by :class:`tvts.engine.checkpoint.Checkpointer`.
"""
from __future__ import annotations

import math
import signal
import time
from pathlib import Path
from typing import Iterator, Optional

import torch
import yaml

from tvts.config import ConfigError, to_dict
from tvts.engine import memory
from tvts.engine.build import build_strategy
from tvts.engine.checkpoint import Checkpointer
from tvts.engine.distributed import DistInfo, all_reduce_max, all_reduce_mean
from tvts.engine.metrics import (MetricLogger, device_peak_flops, mfu, on_device, peak_memory_bytes, read_window,
                                 train_flops_per_clip)
from tvts.engine.run import TrainingAborted, fault_exit, fault_nan, run_dir_for, to_device
from tvts.errors import UserError
from tvts.runtime import seed_everything



class Trainer:
    def __init__(self, cfg, info: DistInfo, model=None, loader=None):
        from tvts import kernels
        from tvts.models import build_model, flops

        self.cfg = cfg
        self.info = info
        self.run_dir = run_dir_for(cfg)
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        kernels.set_default_backend(cfg.train.attention)
        seed_everything(cfg.seed + info.rank)
        self.checkpointer = Checkpointer(self.run_dir, info, cfg.train.keep_last)
        self.init = self._open_init()  # before anything is built: a missing or unfit file stops the run at once
        if model is None:
            # refuse a run that cannot fit before any rank allocates it; then build so that no rank holds the
            # whole model when the strategy shards it (meta device for fsdp, zero.Init for zero3)
            memory.check_fits(cfg, cfg.train.strategy, info.world_size,
                              memory.machine_budget_bytes(info.local_world_size, info.device))
            with memory.init_context(cfg, info.world_size):
                model = build_model(cfg)
        self.model = model
        if cfg.data.num_workers < 0:
            # a resumed run keeps the worker count it started with (another node of a sliced job may have
            # other cores): the data split by worker, hence the exact position, depends on it
            saved = self.run_dir / "config.yaml"
            recorded = (yaml.safe_load(saved.read_text()) or {}) if saved.is_file() else {}
            workers = recorded.get("data", {}).get("num_workers")
            if isinstance(workers, int) and workers >= 0:
                cfg.data.num_workers = workers
        if loader is None:
            from tvts.data.loader import build_train_loader
            from tvts.models.text import build_tokenizer

            loader = build_train_loader(cfg, info, build_tokenizer(cfg))
        self.loader = loader
        self.strategy = build_strategy(cfg, self.model, info, cfg.train.steps, self.init.source if self.init else None)
        if self.init is not None and info.is_main:
            print(self.init.line(), flush=True)
        memory.trim_host_memory()  # what building and sharding freed
        self.metrics = MetricLogger(self.run_dir, info.is_main, cfg.train.steps)
        text = self.model.text
        self.flops = flops(cfg, text_config=getattr(text, "hf_config", None))
        text_trainable = any(p.requires_grad for p in text.parameters())
        self.flops_per_clip = train_flops_per_clip(self.flops, text_trainable, getattr(text, "cache", None) is not None)
        self.peak_flops, self.peak_name = device_peak_flops(info.device)
        self.step = 0
        self.finished = False  # the final evaluation and checkpoint of train.steps are written
        self.nonfinite_total = 0
        self.nonfinite_in_row = 0
        self.stop_requested = False
        self.window: list[dict] = []  # per-step stats since the last log (losses still on the device: read_window)
        self.memory: dict[str, float] = {}  # this rank's measured bytes since the last log (maxima)
        self.predicted = memory.predict(cfg, cfg.train.strategy, info.world_size)
        self.eval_loader = None

    def _open_init(self):
        """``model.init`` checked and opened, or None: not set, ``none``, or a checkpoint to resume from (which
        always wins: the init applies at step 0 only and is not read again)."""
        from tvts.models import init as init_lib

        cfg, info = self.cfg, self.info
        if not init_lib.wanted(cfg):
            if cfg.optim.groups == "degeneration_free" and info.is_main:
                print(f"warning: no model.init with optim.groups=degeneration_free: the weights meant to come from "
                      f"CLIP train at optim.lr_pretrained={cfg.optim.lr_pretrained:g} from their random init; set "
                      f"model.init, or optim.groups=uniform to train from scratch", flush=True)
            return None
        latest = self.checkpointer.latest()
        if latest is not None:
            if info.is_main:
                print(f"model.init: {cfg.model.init} not read: the run resumes from {latest.name} (a checkpoint "
                      f"always wins over model.init)", flush=True)
            return None
        if not (cfg.model.init_format and info.world_size > 1):
            return init_lib.open_init(cfg)
        # a released file converted once, by rank 0, into the run directory; every rank streams its part
        converted = self.run_dir / "init" / f"{Path(cfg.model.init).stem}.{cfg.model.init_format}.safetensors"
        plan, failed = None, 0.0
        if info.is_main:
            try:
                plan = init_lib.open_init(cfg, convert_to=converted)
            except UserError:
                failed = 1.0
                all_reduce_max(failed)
                raise
        if all_reduce_max(failed) > 0:
            raise ConfigError(f"model.init: {cfg.model.init}: rank 0 could not convert it (its message says why)")
        return plan or init_lib.open_converted(cfg, converted)

    # -- state --------------------------------------------------------------------------------------
    def trainer_state(self) -> dict:
        """Everything of this rank that later steps or logs depend on, beyond the strategy's state: the data
        position (what the loop consumed), counters, the steps not logged yet (so a log interval that spans
        the checkpoint averages the same steps as an uninterrupted run) and the frozen-text cache."""
        read_window(self.window)  # their losses as floats, as the log reads them
        state = {"data": self.loader.state_dict(), "nonfinite_total": self.nonfinite_total,
                 "nonfinite_in_row": self.nonfinite_in_row, "finished": self.finished,
                 "window": self.window, "memory": self.memory}
        cache = getattr(self.model.text, "cache", None)
        if cache is not None:
            state["text_cache"] = cache.state_dict()
        return state

    def save(self) -> Path:
        return self.checkpointer.save(self.step, self.strategy, self.trainer_state(),
                                      {"strategy": self.cfg.train.strategy, "name": self.cfg.name})

    def maybe_resume(self) -> None:
        found = self.checkpointer.resume(self.strategy)
        if found is None:
            return
        latest, state = found
        self.step = state["step"]
        self.nonfinite_total = state.get("nonfinite_total", 0)
        self.nonfinite_in_row = state.get("nonfinite_in_row", 0)
        self.finished = bool(state.get("finished", False))
        self.window = list(state.get("window", []))
        self.memory = dict(state.get("memory", {}))
        self.loader.load_state_dict(state["data"])
        cache = getattr(self.model.text, "cache", None)
        if cache is not None and "text_cache" in state:  # after the weights: loading them clears the cache
            cache.load_state_dict(state["text_cache"])
        if self.info.is_main:
            print(f"resumed from {latest} at step {self.step}", flush=True)

    # -- loop ---------------------------------------------------------------------------------------
    def train(self) -> Path:
        cfg = self.cfg
        if self.info.is_main:
            print(f"run directory: {self.run_dir.resolve()} ({self.info.world_size} rank(s) on {self.info.num_nodes} "
                  f"node(s), {cfg.train.strategy})", flush=True)
        self.maybe_resume()
        # A finished run is left as it is: no second final evaluation or checkpoint, its config.yaml (what
        # evaluation reads) not rewritten. A run stopped at its last step before the final evaluation
        # (SIGTERM, abort) is not finished: it goes on to that evaluation below.
        if self.finished and self.step >= cfg.train.steps:
            self.metrics.close()
            if self.info.is_main:
                print(f"done: the run already has {self.step} of {cfg.train.steps} steps; nothing to do "
                      f"(raise train.steps to train on); checkpoints and logs in {self.run_dir.resolve()}", flush=True)
            return self.run_dir
        stop_at = cfg.train.stop_at if 0 < cfg.train.stop_at < cfg.train.steps else 0
        if stop_at and self.step >= stop_at:
            self.metrics.close()
            if self.info.is_main:
                print(f"done: the run is at step {self.step}, train.stop_at={stop_at}; nothing to do (raise or drop "
                      f"train.stop_at to go on); checkpoints and logs in {self.run_dir.resolve()}", flush=True)
            return self.run_dir
        self.finished = False
        if self.info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        if self.init is not None and self.step == 0:
            self.metrics.record(0, self.init.record())
        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        batches = iter(self.loader)
        try:
            while self.step < cfg.train.steps:
                fault_exit(self.info.rank, self.step + 1)
                self.window.append(self.train_step(batches))
                self.step += 1
                stop = all_reduce_max(1.0 if self.stop_requested else 0.0) > 0
                # a stop does not log early: the unlogged steps go into the checkpoint and are logged
                # with the rest of their interval after the resume, as an uninterrupted run logs them
                if self.step % cfg.train.log_every == 0 or self.step == cfg.train.steps:
                    self.log()
                if stop and self.step != stop_at:  # at stop_at the slice ends below, after its evaluation
                    self.save()
                    if self.info.is_main:
                        print(f"SIGTERM: checkpoint written at step {self.step}; exiting", flush=True)
                    return self.run_dir
                if cfg.train.eval_every and self.step % cfg.train.eval_every == 0 and self.step < cfg.train.steps:
                    self.evaluate()
                if self.step == stop_at:
                    self.save()  # what a ckpt_every checkpoint here holds: running on from it is exact
                    if self.info.is_main:
                        print(f"train.stop_at: checkpoint written at step {self.step} of {cfg.train.steps}; stopping "
                              f"(run again without train.stop_at to go on); checkpoints and logs in "
                              f"{self.run_dir.resolve()}", flush=True)
                    return self.run_dir
                if self.step % cfg.train.ckpt_every == 0 and self.step < cfg.train.steps:
                    self.save()
            if cfg.train.eval_every:
                self.evaluate()
            self.finished = True
            self.save()
        finally:
            signal.signal(signal.SIGTERM, previous)
            self.metrics.close()
        if self.info.is_main:
            print(f"done: {self.step} steps; checkpoints and logs in {self.run_dir.resolve()}", flush=True)
        return self.run_dir

    def _on_sigterm(self, signum, frame) -> None:  # noqa: ARG002
        self.stop_requested = True  # checkpoint at the end of this step, then exit 0 (preemption)

    def train_step(self, batches: Iterator) -> dict:
        cfg = self.cfg
        start = time.perf_counter()
        data_wait = 0.0
        totals: dict[str, torch.Tensor] = {}  # on the device: read with the rest of the log interval (log)
        clips = 0
        skip = False
        accum = cfg.train.grad_accum
        step = self.step + 1
        # memory figures on the steps that are logged (and the first): counting costs a walk over the states
        measure = step == 1 or step % cfg.train.log_every == 0 or step == cfg.train.steps
        for micro in range(accum):
            t0 = time.perf_counter()
            kind, batch = next(batches)
            data_wait += time.perf_counter() - t0
            batch = {k: to_device(v, self.info.device) for k, v in batch.items()}
            last = micro == accum - 1
            with (self.strategy.no_sync() if not last else _null()):
                with memory.ActivationMeter(self.strategy.module) if measure else _null() as meter:
                    out = self.strategy.forward(batch)
                if measure:
                    self._note_memory(activations_bytes=meter.bytes)
                loss = out.loss
                if fault_nan(self.step + 1):
                    loss = loss * float("nan")
                # Read on the host once per micro-step, and it has to be here, before backward: a non-finite loss
                # never reaches backward (DeepSpeed would reduce its gradients into the partitions it steps,
                # and its discard, a step at lr 0, turns NaN gradients into NaN weights; the recompute of
                # checkpointed blocks would draw from the RNG), and the step stops at it, drawing no further
                # micro-batch (the data position, hence every later batch, is that of a run that checks).
                if all_reduce_max(0.0 if torch.isfinite(loss).item() else 1.0) > 0:
                    skip = True
                    break
                self.strategy.backward(loss / accum)
            clips += batch["video"].shape[0]
            for key in ("loss", "loss_vtc", "loss_sort", "sort_acc", "sort_acc_all"):
                value = getattr(out, key)
                if value is not None:  # caption steps log their VTC loss as loss_vtc_captions
                    name = key if kind == "transcripts" or key == "loss" else f"{key}_{kind}"
                    totals[name] = totals.get(name, 0.0) + value.detach().float() / accum
        if skip:
            self.strategy.skip_step()
            self.nonfinite_total += 1
            self.nonfinite_in_row += 1
            if self.info.is_main:
                print(f"step {self.step + 1}: non-finite loss, step skipped ({self.nonfinite_total} so far)", flush=True)
            if self.nonfinite_in_row >= cfg.train.max_nonfinite:
                self.step += 1
                self.save()
                raise TrainingAborted(f"{self.nonfinite_in_row} non-finite losses in a row at step {self.step}: "
                                      f"stopped with a checkpoint in {self.run_dir}; lower optim.lr or use bf16/fp32")
            return {"skipped": 1.0, "clips": 0, "seconds": time.perf_counter() - start, "data_wait": data_wait}
        if measure:
            self._note_memory(grads_bytes=memory.measure_model_state(self.strategy)["grads_bytes"])
        result = self.strategy.step()
        if self.info.device.type == "cpu":
            memory.trim_host_memory()  # this step's gradients and temporaries, before the next step's forward
        if measure:  # after the step: torch's AdamW creates its states in the first one
            state = memory.measure_model_state(self.strategy)
            self._note_memory(params_bytes=state["params_bytes"], optim_bytes=state["optim_bytes"])
        if result.skipped:
            self.nonfinite_total += 1
        else:
            self.nonfinite_in_row = 0
        # the losses stay on the device until the log interval's one read (read_window); the gradient norm is
        # already on the host: the strategy's step read it to decide on a non-finite one
        return {**on_device(totals), "grad_norm": result.grad_norm, "skipped": float(result.skipped), "clips": clips,
                "seconds": time.perf_counter() - start, "data_wait": data_wait}

    def _note_memory(self, **values: int) -> None:
        for key, value in values.items():
            self.memory[key] = max(self.memory.get(key, 0), value)

    def memory_stats(self) -> dict[str, float]:
        """Per-rank memory in GiB, the max over ranks: measured (model states from the strategy's tensors,
        activations saved for backward, process peak RSS) beside the analytic prediction."""
        measured = {**self.memory, "peak_rss_bytes": peak_memory_bytes(self.info.device)}
        self.memory = {}
        measured = all_reduce_mean(measured, op="max")
        p = self.predicted
        stats = {f"mem/{key[:-6]}_gib": value / 2**30 for key, value in measured.items()}
        stats.update({f"mem/pred_{key[:-6]}_gib": getattr(p, key) / 2**30
                      for key in ("params_bytes", "grads_bytes", "optim_bytes", "activations_bytes", "total_bytes")})
        return stats

    def log(self) -> None:
        """Aggregate the steps since the last log: means of losses and accuracies (over ranks too), rates
        from summed clips and seconds, so clips/s and MFU are over the whole interval, not one step."""
        window, self.window = self.window, []
        read_window(window)  # the interval's losses: one host read
        seconds = sum(w["seconds"] for w in window)
        clips = sum(w["clips"] for w in window) * self.info.world_size
        means: dict[str, float] = {}
        for key in {k for w in window for k in w} - {"seconds", "clips", "data_wait", "skipped"}:
            values = [w[key] for w in window if key in w and math.isfinite(w[key])]
            if values:
                means[key] = sum(values) / len(values)
        means = all_reduce_mean(means)
        clips_per_s = clips / seconds if seconds > 0 else 0.0
        stats = {
            **means,
            "clips_per_s": clips_per_s,
            "tflops": clips_per_s * self.flops_per_clip / self.info.world_size / 1e12,  # per device
            "mfu": mfu(clips_per_s / self.info.world_size, self.flops_per_clip, self.peak_flops),
            "data_wait_frac": sum(w["data_wait"] for w in window) / seconds if seconds > 0 else 0.0,
            "step_time_s": seconds / len(window),
            "peak_mem_gib": peak_memory_bytes(self.info.device) / 2**30,
            **self.memory_stats(),
            "skipped": sum(w["skipped"] for w in window),
            "nonfinite_total": float(self.nonfinite_total),
            "data_skipped": float(sum(getattr(self.loader, "skipped", {}).values())),
            # shards that could not be read (after retries) or were corrupt, so far; the log names each
            "data/shard_errors": float(sum(n for reason, n in getattr(self.loader, "skipped", {}).items()
                                           if reason in ("unreadable_shard", "corrupt_shard"))),
        }
        stats.update({f"lr/{name}": lr for name, lr in self.strategy.lrs().items()})
        self.metrics.log(self.step, stats)


    @torch.no_grad()
    def evaluate(self) -> Optional[dict]:
        """Held-out sort accuracy and losses on ``data.val`` (deterministic frames, crops, masks and shuffles).

        Every rank runs the same number of forward passes (sharded strategies need that): a rank that
        runs out of batches repeats its last one with weight 0."""
        if not self.cfg.data.val:
            return None
        if self.eval_loader is None:
            from tvts.data.loader import build_eval_loader
            from tvts.models.text import build_tokenizer

            self.eval_loader = build_eval_loader(self.cfg, self.info, build_tokenizer(self.cfg), self.cfg.data.val)
        module = self.strategy.module
        was_training = module.training
        module.eval()
        sums = {"clips": 0.0, "transcripts": 0.0}  # counts known on the host
        # sums of device values, accumulated there in float64 (the arithmetic of Python floats) and read once
        on_dev: dict[str, float | torch.Tensor] = {"right": 0.0, "all_right": 0.0, "loss": 0.0, "loss_vtc": 0.0}
        batches = iter(self.eval_loader)
        last = None
        while True:
            item = next(batches, None)
            if all_reduce_max(0.0 if item is None else 1.0) == 0:
                break
            weight = 1.0
            if item is None:
                if last is None:
                    raise RuntimeError(f"rank {self.info.rank} has no held-out batch: data.val is smaller than the world size")
                item, weight = last, 0.0
            last = item
            kind, batch = item
            batch = {k: to_device(v, self.info.device) for k, v in batch.items()}
            out = self.strategy.forward(batch)
            clips = batch["video"].shape[0] * weight
            sums["clips"] += clips
            on_dev["loss"] = on_dev["loss"] + out.loss.detach().double() * clips
            on_dev["loss_vtc"] = on_dev["loss_vtc"] + out.loss_vtc.detach().double() * clips
            if out.sort_logits is not None:
                hit = out.sort_logits.argmax(-1) == batch["labels"]
                sums["transcripts"] += hit.numel() * weight
                on_dev["right"] = on_dev["right"] + hit.sum().double() * weight
                on_dev["all_right"] = on_dev["all_right"] + hit.all(-1).sum().double() * weight
        module.train(was_training)
        read = [k for k, v in on_dev.items() if isinstance(v, torch.Tensor)]
        values = dict(zip(read, torch.stack([on_dev[k] for k in read]).tolist())) if read else {}  # one host sync
        sums.update({k: values.get(k, v) for k, v in on_dev.items()})
        world = self.info.world_size
        sums = {k: v * world for k, v in all_reduce_mean(sums).items()}  # sums over ranks
        stats = {"val/loss": sums["loss"] / max(1.0, sums["clips"]), "val/loss_vtc": sums["loss_vtc"] / max(1.0, sums["clips"]),
                 "val/clips": sums["clips"]}
        if sums["transcripts"]:
            stats["val/sort_acc"] = sums["right"] / sums["transcripts"]
            stats["val/sort_acc_all"] = sums["all_right"] / (sums["transcripts"] / self.cfg.sample.num_windows)
        self.metrics.log(self.step, stats)
        return stats


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
