"""Shards by URL against real servers on loopback: stdlib http.server, moto's S3 server (with s3fs) and
``pipe:cat``; faults (a connection dropped mid-shard, a server that never answers) retried, then skipped
and counted; bad URLs one clear line. Nothing above the source changes: the batches are the local ones."""
from __future__ import annotations

import functools
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from tvts import config
from tvts.data.loader import build_eval_loader, build_train_loader
from tvts.data.prepare import ensure_demo_corpus
from tvts.data.shards import ShardError, list_shards, read_shard, write_index, write_shard
from tvts.data.sources import SourceError
from tvts.engine.distributed import DistInfo
from tvts.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
SHARDS = "shard-{000000..000003}.tar"
TINY = ["model.video.size=atto", "model.video.patch_size=8", "sample.image_size=32", "model.sort.heads=2",
        "data.resize_short=32", "data.num_workers=0", "train.micro_batch=2", "data.decoded_cache_mb=0",
        "model.text.kind=clip", "model.text.width=32", "model.text.layers=1", "model.text.heads=2",
        "model.text.output_dim=32", "model.text.frozen=false", "model.text.cache=false",
        "model.sort.transcript_norm=none", "data.synthetic=false", "data.synthetic_stream=false",
        "data.shuffle_buffer=4", "data.io_backoff_s=0.01"]


@pytest.fixture(scope="module")
def shard_set(tmp_path_factory):
    """The 32 px demo corpus (10 clips) re-cut into 4 shards with an index.json, under ``<root>/set``."""
    root = tmp_path_factory.mktemp("remote")
    cfg = config.load(ROOT / "configs" / "demo.yaml", [*TINY[:3], f"data.root={root / 'demo'}", "data.synthetic=true",
                                                       "data.synthetic_stream=false"])
    ensure_demo_corpus(cfg, None, num_videos=12, downstream=(8, 8), workers=1)
    samples = [s for path, _ in list_shards(cfg.data.train[0]) for s in read_shard(path)]
    out = root / "set"
    out.mkdir()
    markers = []
    for i in range(4):
        part = samples[i::4]
        write_shard(out / f"shard-{i:06d}.tar", part)
        markers.append({"name": f"shard-{i:06d}.tar", "samples": len(part)})
    write_index(out, "transcripts", markers, {})
    return root


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the shard root; ``faults[name] = n`` cuts the body of ``name`` in half and drops the connection
    the next n times it is asked for (n < 0: always); ``stall`` names files it never answers."""

    faults: dict = {}
    stall: set = set()
    requests: list = []

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1]
        type(self).requests.append(name)
        if name in self.stall:
            time.sleep(3)
            return
        left = self.faults.get(name, 0)
        if left:
            self.faults[name] = left - 1
            data = Path(self.translate_path(self.path)).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        super().do_GET()


@pytest.fixture(scope="module")
def server(shard_set):
    handler = functools.partial(_Handler, directory=str(shard_set))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(autouse=True)
def _no_faults():
    _Handler.faults.clear(), _Handler.stall.clear(), _Handler.requests.clear()
    yield
    _Handler.faults.clear(), _Handler.stall.clear()


def _cfg(*extra):
    return config.load(None, [*TINY, *extra])


def _batches(specs, n, *extra):
    """The first n training batches (kind, keys, video, input ids) and the loader."""
    from tvts.models.text import build_tokenizer

    cfg = _cfg(f"data.train=[{', '.join(specs)}]", *extra)
    loader = build_train_loader(cfg, DistInfo(), build_tokenizer(cfg))
    out = []
    for kind, batch, meta in loader.batches():
        out.append((kind, meta["keys"], batch["video"], batch["text"]["input_ids"]))
        if len(out) == n:
            break
    return out, loader


def _same(a, b):
    assert [x[:2] for x in a] == [y[:2] for y in b]
    for x, y in zip(a, b):
        assert torch.equal(x[2], y[2]) and torch.equal(x[3], y[3])


# ----------------------------------------------------------------------------------------------
def test_http_brace_prefix_and_pipe_give_the_local_batches(shard_set, server):
    local, _ = _batches([str(shard_set / "set")], 8)
    assert len({k for b in local for k in b[1]}) == 10  # more than one epoch: every clip seen
    for spec in (f"{server}/set/{SHARDS}", f"{server}/set", f"pipe:cat {shard_set}/set/{SHARDS}"):
        got, loader = _batches([spec], 8)
        _same(got, local)
        assert loader.skipped == {}


def test_listing_reads_counts_from_index_json_and_lists_no_bucket(shard_set, server):
    listed = list_shards(f"{server}/set/{SHARDS}")
    assert [u for u, _ in listed] == [f"{server}/set/shard-{i:06d}.tar" for i in range(4)]
    assert [n for _, n in listed] == [3, 3, 2, 2]
    assert _Handler.requests == ["index.json"]  # one request: no shard touched, no listing
    assert [n for _, n in list_shards(f"pipe:cat {shard_set}/set/{SHARDS}")] == [None] * 4


def test_http_resume_continues_exactly(shard_set, server):
    from tvts.models.text import build_tokenizer

    spec = f"{server}/set/{SHARDS}"
    uninterrupted, _ = _batches([spec], 7)
    first, loader = _batches([spec], 3)
    state = json.loads(json.dumps(loader.state_dict()))
    cfg = _cfg(f"data.train=[{spec}]")
    resumed = build_train_loader(cfg, DistInfo(), build_tokenizer(cfg))
    resumed.load_state_dict(state)
    rest = []
    for kind, batch, meta in resumed.batches():
        rest.append((kind, meta["keys"], batch["video"], batch["text"]["input_ids"]))
        if len(rest) == 4:
            break
    _same(first + rest, uninterrupted)


def test_a_dropped_connection_is_retried_and_a_dead_shard_skipped_and_counted(shard_set, server):
    local, _ = _batches([str(shard_set / "set")], 6)
    _Handler.faults["shard-000001.tar"] = 2  # dropped twice mid-body, then served
    got, loader = _batches([f"{server}/set/{SHARDS}"], 6, "data.io_retries=2")
    _same(got, local)
    assert loader.skipped == {} and _Handler.requests.count("shard-000001.tar") == 3
    _Handler.faults["shard-000002.tar"] = -1  # never whole: retried, then skipped and counted
    _Handler.requests.clear()
    got, loader = _batches([f"{server}/set/{SHARDS}"], 4, "data.io_retries=1")  # the 8 clips of one epoch
    assert loader.skipped == {"unreadable_shard": 1} and _Handler.requests.count("shard-000002.tar") == 2
    assert len({k for b in got for k in b[1]}) == 8  # the other 3 shards' clips, each once


def test_a_server_that_never_answers_times_out(shard_set, server):
    _Handler.stall.add("shard-000000.tar")
    start = time.monotonic()
    got, loader = _batches([f"{server}/set/{SHARDS}"], 2, "data.io_timeout_s=0.3", "data.io_retries=1")
    assert loader.skipped == {"unreadable_shard": 1}
    assert time.monotonic() - start < 2.5  # two tries of 0.3 s, not the server's 3 s


def test_eval_loader_reads_urls(shard_set, server):
    from tvts.models.text import build_tokenizer

    cfg = _cfg()
    tok = build_tokenizer(cfg)
    local = [m["keys"] for _, _, m in build_eval_loader(cfg, DistInfo(), tok, [str(shard_set / "set")]).batches()]
    remote = [m["keys"] for _, _, m in build_eval_loader(cfg, DistInfo(), tok, [f"{server}/set"]).batches()]
    assert remote == local and sum(map(len, local)) == 10


@pytest.mark.parametrize("spec,message", [
    ("foo://bucket/shard-000000.tar", "foo://bucket/shard-000000.tar: unknown protocol 'foo'"),
    ("gs://bucket/set", "gs://bucket/set: reading gs:// needs gcsfs: pip install gcsfs"),
])
def test_bad_urls_are_one_line(spec, message):
    with pytest.raises(UserError) as err:
        list_shards(spec)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_a_remote_set_without_index_needs_a_pattern(server):
    with pytest.raises(ShardError, match=r"/nothing/index.json: not found; .* brace pattern"):
        list_shards(f"{server}/nothing")


def test_training_from_http_matches_local_and_resumes(shard_set, server, tmp_path):
    """launch/pretrain.py from http:// gives the local losses; killed at step 5 and re-run, the same."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    base = [sys.executable, str(ROOT / "launch" / "pretrain.py"), *TINY, "train.log_every=1", "train.threads=1",
            "optim.warmup_steps=2", "train.eval_every=0", "train.ckpt_every=3"]

    def run(spec, run_dir, **fault):
        res = subprocess.run([*base, f"data.train=[{spec}]", f"train.run_dir={run_dir}", "train.steps=6"],
                             env={**env, **fault}, capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert res.returncode == (1 if fault else 0), res.stderr[-3000:]
        return {r["step"]: r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}

    local = run(shard_set / "set", tmp_path / "local")
    run(f"{server}/set/{SHARDS}", tmp_path / "http", TVTS_FAULT_EXIT_RANK_STEP="0:5")  # dies after checkpoint 3
    remote = run(f"{server}/set/{SHARDS}", tmp_path / "http")
    assert sorted(remote) == list(range(1, 7))
    for step in range(1, 7):
        for key in ("loss", "loss_sort", "loss_vtc", "grad_norm"):
            assert remote[step][key] == local[step][key], (step, key)
        assert remote[step]["data/shard_errors"] == 0.0


# ----------------------------------------------------------------------------------------------
# S3: moto's server speaks the real protocol; s3fs is the real client
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def s3(shard_set):
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    import fsspec

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    fsspec.config.conf.setdefault("s3", {})["endpoint_url"] = f"http://{host}:{port}"  # what FSSPEC_S3_ENDPOINT_URL sets
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir("corpus")
    fs.put(str(shard_set / "set") + "/", "corpus/set/", recursive=True)
    yield "s3://corpus/set"
    fsspec.config.conf["s3"].pop("endpoint_url", None)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


def test_s3_bucket_by_prefix_and_by_glob(shard_set, s3):
    assert [n for _, n in list_shards(s3)] == [3, 3, 2, 2]
    assert [u for u, _ in list_shards(f"{s3}/shard-*.tar")] == [f"{s3}/shard-{i:06d}.tar" for i in range(4)]
    local, _ = _batches([str(shard_set / "set")], 6)
    for spec in (s3, f"{s3}/shard-*.tar", f"{s3}/{SHARDS}"):
        got, loader = _batches([spec], 6)
        _same(got, local)
        assert loader.skipped == {}


def test_prepare_data_writes_a_shard_set_to_s3(shard_set, s3, tmp_path, capsys):
    """prepare_data.py --out s3://...: built in --staging, uploaded (index last), then trained from."""
    import importlib.util

    from tvts.errors import cli

    spec = importlib.util.spec_from_file_location("launch_prepare_data", ROOT / "launch" / "prepare_data.py")
    prepare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prepare)
    url = "s3://corpus/prepared"
    argv = ["--source", "vtt", "--input", str(shard_set / "demo" / "raw" / "videos"), "--out", url, "--staging",
            str(tmp_path / "staging"), "--num-windows", "4", "--window-min-s", "4", "--window-max-s", "4", "--gap-s", "1",
            "--short-side", "32", "--samples-per-shard", "4"]
    assert cli(prepare.main, argv) == 0
    out = capsys.readouterr().out
    local = list_shards(str(tmp_path / "staging"))
    assert f"uploaded {len(local) + 1} files to {url}" in out
    assert [(u.rsplit("/", 1)[-1], n) for u, n in list_shards(url)] == [(p.rsplit("/", 1)[-1], n) for p, n in local]
    assert cli(prepare.main, argv) == 0  # a rerun sends only the index again
    assert f"uploaded 1 files to {url}" in capsys.readouterr().out
    got, loader = _batches([url], 2)
    assert len(got) == 2 and loader.skipped == {}
