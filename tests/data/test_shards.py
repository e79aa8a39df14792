"""Shard writing, reading, markers, index.json and list_shards (directory, brace pattern, glob)."""
from __future__ import annotations

import json

import pytest

from tvts.data import shards


def _samples(prefix: str, n: int):
    return [(f"{prefix}-{i:03d}", {"mp4": bytes([i]) * (10 + i), "json": json.dumps({"i": i}).encode()}) for i in range(n)]


@pytest.fixture
def shard_set(tmp_path):
    out = tmp_path / "set"
    out.mkdir()
    markers = []
    for index, n in enumerate((3, 2, 4)):
        path = out / shards.shard_name(index)
        assert shards.write_shard(path, _samples(f"s{index}", n)) == n
        markers.append({"name": path.name, "samples": n, "skipped": {"corrupt_video": index}, "inputs": n + 1,
                        "inputs_used": n, "bytes": path.stat().st_size})
    index = shards.write_index(out, "transcripts", markers, {"K": 4})
    return out, index


def test_write_read_roundtrip_and_determinism(tmp_path):
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    samples = _samples("clip", 3)
    shards.write_shard(a, samples)
    shards.write_shard(b, samples)
    assert a.read_bytes() == b.read_bytes()  # fixed mtime/owner: a rebuilt shard is byte-identical
    assert list(shards.read_shard(a)) == samples
    assert not (tmp_path / "a.tar.tmp").exists()
    with pytest.raises(ValueError, match="must not contain"):
        shards.write_shard(tmp_path / "c.tar", [("bad.key", {"json": b"{}"})])


def test_webdataset_reads_our_shards(tmp_path):
    wds = pytest.importorskip("webdataset")
    path = tmp_path / "shard-000000.tar"
    samples = _samples("v", 2)
    shards.write_shard(path, samples)
    got = [(s["__key__"], s["mp4"], s["json"]) for s in wds.WebDataset(str(path), shardshuffle=False)]
    assert got == [(k, m["mp4"], m["json"]) for k, m in samples]


def test_index_merges_markers(shard_set):
    out, index = shard_set
    assert index == shards.load_index(out)
    assert index["kind"] == "transcripts"
    assert index["shards"] == [{"name": "shard-000000.tar", "samples": 3}, {"name": "shard-000001.tar", "samples": 2},
                               {"name": "shard-000002.tar", "samples": 4}]
    assert index["samples"] == 9
    assert index["skipped"] == {"corrupt_video": 3}
    assert (index["inputs"], index["inputs_used"]) == (12, 9)
    assert index["config"] == {"K": 4}


def test_list_shards_directory_brace_glob(shard_set):
    out, _ = shard_set
    expect = [(str(out / f"shard-00000{i}.tar"), n) for i, n in enumerate((3, 2, 4))]
    assert shards.list_shards(out) == expect
    assert shards.list_shards(str(out / "shard-{000000..000002}.tar")) == expect
    assert shards.list_shards(str(out / "shard-{000001..000002}.tar")) == expect[1:]
    assert shards.list_shards(str(out / "shard-*.tar")) == expect
    assert shards.list_shards(str(out / "shard-000001.tar")) == [expect[1]]


def test_list_shards_without_index_has_unknown_counts(tmp_path):
    for i in range(2):
        shards.write_shard(tmp_path / shards.shard_name(i), _samples("x", 1))
    assert shards.list_shards(str(tmp_path / "shard-{000000..000001}.tar")) == [
        (str(tmp_path / "shard-000000.tar"), None), (str(tmp_path / "shard-000001.tar"), None)]


def test_list_shards_errors_are_one_line(shard_set, tmp_path):
    out, _ = shard_set
    with pytest.raises(shards.ShardError, match=r"shard-000003\.tar: no such shard") as err:
        shards.list_shards(str(out / "shard-{000000..000007}.tar"))
    assert "\n" not in str(err.value)
    with pytest.raises(shards.ShardError, match="no file matches"):
        shards.list_shards(str(tmp_path / "nothing-*.tar"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(shards.ShardError, match=r"index\.json: missing"):
        shards.list_shards(empty)
    (empty / "index.json").write_text("{not json")
    with pytest.raises(shards.ShardError, match=r"index\.json: not valid JSON \(line 1"):
        shards.load_index(empty)
    (empty / "index.json").write_text('{"kind": "captions"}')
    with pytest.raises(shards.ShardError, match="not a shard index"):
        shards.load_index(empty)
    (out / "shard-000001.tar").unlink()
    with pytest.raises(shards.ShardError, match=r"shard-000001\.tar: listed in .*index\.json but missing"):
        shards.list_shards(out)


def test_marker_requires_intact_tar(shard_set):
    out, _ = shard_set
    marker = {"name": "shard-000000.tar", "samples": 3, "bytes": (out / "shard-000000.tar").stat().st_size}
    shards.write_marker(out, 0, marker)
    assert shards.read_marker(out, 0) == marker
    with open(out / "shard-000000.tar", "ab") as f:  # a different size: not the tar the marker describes
        f.write(b"\0" * 512)
    assert shards.read_marker(out, 0) is None
    assert shards.read_marker(out, 5) is None
    shards.write_marker(out, 6, {"name": "shard-000006.tar", "samples": 0, "bytes": 0})  # all inputs skipped: no tar
    assert shards.read_marker(out, 6)["samples"] == 0
