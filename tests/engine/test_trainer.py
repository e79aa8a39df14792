"""End-to-end runs of launch/pretrain.py as a user runs it: subprocesses, real shards, real signals."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tvts import config
from tvts.data.prepare import ensure_demo_corpus

ROOT = Path(__file__).resolve().parents[2]
PRETRAIN = str(ROOT / "launch" / "pretrain.py")

# a tiny TVTS: 32 px, 2-block ViT, 1-block CLIP text tower (no weights to load), batches of 4
TINY = ["model.video.size=atto", "model.video.patch_size=8", "sample.image_size=32", "model.sort.heads=2",
        "data.resize_short=32", "data.num_workers=0", "train.micro_batch=4", "data.decoded_cache_mb=0",
        "model.text.kind=clip", "model.text.width=32", "model.text.layers=1", "model.text.heads=2",
        "model.text.output_dim=32", "model.text.frozen=false", "model.text.cache=false",
        "model.sort.transcript_norm=none", "data.synthetic=false", "data.synthetic_stream=false", "train.log_every=1", "train.eval_every=0",
        "train.threads=1", "optim.warmup_steps=2"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    cfg = config.load(ROOT / "configs" / "demo.yaml", TINY[:3] + [f"data.root={root}", "data.synthetic=true", "data.synthetic_stream=false"])
    ensure_demo_corpus(cfg, None, num_videos=12, downstream=(8, 8), workers=1)
    return cfg.data.train[0]


def _args(shards, run_dir, *extra):
    return [sys.executable, PRETRAIN, *TINY, f"data.train=[{shards}]", f"train.run_dir={run_dir}", *extra]


def _env(**extra):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _run(args, **env):
    return subprocess.run(args, env=_env(**env), capture_output=True, text=True, timeout=300, cwd=ROOT)


def _steps(run_dir) -> dict[int, dict]:
    """The last record of each logged step (a resumed run logs some steps twice)."""
    out = {}
    for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "skipped" in rec:  # a training record (held-out records carry val/* keys only)
            out[rec["step"]] = rec
    return out


def _wait_for(path: Path, proc, timeout=120.0) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, f"training ended before {path} appeared:\n{proc.stderr.read() if proc.stderr else ''}"
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.01)


STEPS = ["train.steps=12", "train.ckpt_every=4"]


@pytest.fixture(scope="module")
def reference(shards, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference")
    res = _run(_args(shards, run_dir, *STEPS))
    assert res.returncode == 0, res.stderr
    return _steps(run_dir)


# SIGKILL / SIGTERM / kill-during-save resume cases: tests/engine/test_resume.py


FINAL_EVAL = ["train.steps=3", "train.ckpt_every=100", "train.eval_every=3"]


def _val_steps(run_dir) -> list[int]:
    return [json.loads(line)["step"] for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
            if '"val/' in line]


@pytest.mark.slow
def test_rerunning_a_finished_run_changes_nothing(shards, tmp_path):
    args = _args(shards, tmp_path, *FINAL_EVAL, f"data.val=[{shards}]")
    assert _run(args).returncode == 0
    metrics, recipe = (tmp_path / "metrics.jsonl").read_text(), (tmp_path / "config.yaml").read_text()
    ckpt = tmp_path / "checkpoints" / "step_00000003"
    stamps = {p: p.stat().st_mtime_ns for p in ckpt.iterdir()}
    res = _run(args + ["train.log_every=2"])  # another setting that does not change what was trained
    assert res.returncode == 0, res.stderr
    assert "already has 3 of 3 steps; nothing to do" in res.stdout
    # no second held-out evaluation appended, the final checkpoint and the recorded config not written again
    assert (tmp_path / "metrics.jsonl").read_text() == metrics and _val_steps(tmp_path) == [3]
    assert (tmp_path / "config.yaml").read_text() == recipe
    assert {p: p.stat().st_mtime_ns for p in ckpt.iterdir()} == stamps


@pytest.mark.slow
def test_a_run_stopped_in_its_last_step_gets_its_final_evaluation_on_resume(shards, tmp_path, monkeypatch):
    from tvts.engine.distributed import env_info
    from tvts.engine.trainer import Trainer

    cfg = lambda: config.load(ROOT / "configs" / "demo.yaml", [  # noqa: E731
        *TINY, *FINAL_EVAL, f"data.train=[{shards}]", f"data.val=[{shards}]", f"train.run_dir={tmp_path}"])
    threads = torch.get_num_threads()  # the tiny recipe sets 1 for this process
    step = Trainer.train_step

    def sigterm_during_the_last_step(self, batches):
        if self.step == self.cfg.train.steps - 1:
            self.stop_requested = True  # what the SIGTERM handler sets
        return step(self, batches)

    try:
        monkeypatch.setattr(Trainer, "train_step", sigterm_during_the_last_step)
        Trainer(cfg(), env_info()).train()
        assert (tmp_path / "checkpoints" / "step_00000003").is_dir() and _val_steps(tmp_path) == []
        monkeypatch.undo()
        Trainer(cfg(), env_info()).train()  # resumed at step 3 of 3: not finished, so it evaluates
        assert _val_steps(tmp_path) == [3]
        Trainer(cfg(), env_info()).train()  # now finished: nothing more
        assert _val_steps(tmp_path) == [3]
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_stop_at_slices_a_run_that_then_goes_on_exactly(shards, reference, tmp_path):
    """train.stop_at: the schedule still spans train.steps; the slice ends with a checkpoint, the same command
    again does nothing, and the run without it goes on to the end, bitwise the uninterrupted run."""
    args = _args(shards, tmp_path, *STEPS)
    res = _run(args + ["train.stop_at=6"])
    assert res.returncode == 0, res.stderr
    assert "train.stop_at: checkpoint written at step 6 of 12" in res.stdout
    assert sorted(_steps(tmp_path)) == list(range(1, 7))
    assert (tmp_path / "checkpoints" / "step_00000006" / "meta.json").is_file()
    res = _run(args + ["train.stop_at=6"])
    assert res.returncode == 0 and "the run is at step 6, train.stop_at=6; nothing to do" in res.stdout, res.stderr
    res = _run(args)
    assert res.returncode == 0, res.stderr
    steps = _steps(tmp_path)
    assert sorted(steps) == sorted(reference)
    for step, ref in reference.items():
        for key in ("loss", "loss_sort", "loss_vtc", "grad_norm", "sort_acc", "lr/all"):
            if key in ref:
                assert steps[step][key] == ref[key], (step, key)


def test_a_resumed_run_keeps_its_worker_count(shards, tmp_path):
    """data.num_workers=-1 is sized for the machine at the first start; a resume (maybe on another node of a
    sliced job) takes the count the run recorded, since the data split by worker depends on it."""
    from tvts.engine.distributed import env_info
    from tvts.engine.trainer import Trainer

    def workers():
        cfg = config.load(ROOT / "configs" / "demo.yaml", [*TINY, "data.num_workers=-1", f"data.train=[{shards}]",
                                                           f"train.run_dir={tmp_path}"])
        threads = torch.get_num_threads()
        try:
            return Trainer(cfg, env_info()).cfg.data.num_workers
        finally:
            torch.set_num_threads(threads)

    assert workers() == 2  # CPU
    (tmp_path / "config.yaml").write_text("data:\n  num_workers: 5\n")
    assert workers() == 5


@pytest.mark.slow
def test_nonfinite_loss_is_skipped_and_counted(shards, reference, tmp_path):
    res = _run(_args(shards, tmp_path, *STEPS), TVTS_FAULT_NAN_STEPS="3")
    assert res.returncode == 0, res.stderr
    steps = _steps(tmp_path)
    assert steps[3]["skipped"] == 1.0 and steps[3]["nonfinite_total"] == 1.0
    assert steps[2]["loss"] == reference[2]["loss"]  # untouched before
    assert steps[12]["nonfinite_total"] == 1.0 and steps[12]["skipped"] == 0.0
    assert "non-finite loss, step skipped" in res.stdout


@pytest.mark.slow
def test_nonfinite_losses_in_a_row_abort_with_a_checkpoint(shards, tmp_path):
    res = _run(_args(shards, tmp_path, *STEPS, "train.max_nonfinite=3"), TVTS_FAULT_NAN_STEPS="2,3,4")
    assert res.returncode == 3
    assert "3 non-finite losses in a row at step 4" in res.stderr
    assert (tmp_path / "checkpoints" / "step_00000004" / "meta.json").is_file()


@pytest.mark.slow
def test_sigterm_checkpoints_then_exits_0(shards, tmp_path):
    proc = subprocess.Popen(_args(shards, tmp_path, "train.steps=100000", "train.ckpt_every=100000"), env=_env(),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(tmp_path / "metrics.jsonl", proc)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "SIGTERM: checkpoint written at step" in out
    step = int(out.split("SIGTERM: checkpoint written at step ")[1].split(";")[0])
    assert 0 < step < 100000
    assert (tmp_path / "checkpoints" / f"step_{step:08d}" / "meta.json").is_file()


def test_config_error_stops_before_any_work(tmp_path):
    res = _run([sys.executable, PRETRAIN, "model.vdeo.depth=3", f"train.run_dir={tmp_path / 'run'}"])
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == ["config error: model.vdeo.depth: unknown key; did you mean model.video.depth?"]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_torchrun_two_ranks_and_export(shards, tmp_path):
    """The same launcher under torchrun (2 gloo ranks, ddp) trains, and its checkpoint exports."""
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", PRETRAIN, *TINY,
            f"data.train=[{shards}]", f"train.run_dir={tmp_path}", "train.steps=3", "train.strategy=ddp"]
    res = _run(args)
    assert res.returncode == 0, res.stderr[-3000:]
    assert set(_steps(tmp_path)) == {1, 2, 3}
    res = _run([sys.executable, str(ROOT / "launch" / "export.py"), str(tmp_path), "--out", str(tmp_path / "exp")])
    assert res.returncode == 0, res.stderr
    from safetensors.torch import load_file

    video = load_file(str(tmp_path / "exp" / "video_encoder.safetensors"))
    assert video["patch_embed"].shape[1:] == (3, 2, 8, 8)
    assert (tmp_path / "exp" / "config.yaml").is_file()


@pytest.mark.slow
def test_a_dead_rank_stops_the_job(shards, tmp_path):
    """Rank 1 dies mid-run: the job exits with an error instead of hanging."""
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", PRETRAIN, *TINY,
            f"data.train=[{shards}]", f"train.run_dir={tmp_path}", "train.steps=1000", "train.strategy=ddp"]
    start = time.time()
    res = _run(args, TVTS_FAULT_EXIT_RANK_STEP="1:3")
    assert res.returncode != 0
    assert time.time() - start < 240
