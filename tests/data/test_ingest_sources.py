"""Ingest, listing sources: caption lists (webvid, jsonl), MERLOT folder and index, HowTo100M, wrong input paths."""
from __future__ import annotations

import json
import shutil

import pytest

from tvts.data import ingest
from tvts.data.ingest import IngestSettings
from tvts.data.transcripts import load_subtitles, parse_merlot

from ingest_helpers import SYN, planned_sets, shard_samples


def test_caption_sources_webvid_and_jsonl(corpus, tmp_path):
    clips = tmp_path / "videos" / "clips"
    clips.mkdir(parents=True)
    for i in range(3):
        shutil.copy(corpus / f"syn00000{i}.mp4", clips / f"c{i}.mp4")
    root = tmp_path / "videos"
    # the official TVTS meta: no header, caption then path without extension
    (tmp_path / "webvid.tsv").write_text("a red square grows\tclips/c0\nthe ball moves left\tclips/c1\n"
                                         "missing\tclips/none\n")
    st = IngestSettings(source="webvid", short_side=32, max_clip_s=5)
    result = ingest.ingest_source("webvid", tmp_path / "webvid.tsv", tmp_path / "wv", st, video_root=root)
    assert result.index["kind"] == "captions" and result.index["skipped"] == {"missing_video": 1}
    metas = [json.loads(m["json"]) for _, m in shard_samples(tmp_path / "wv")]
    assert metas == [
        {"kind": "captions", "source": "clips/c0", "caption": "a red square grows", "duration": 5.0, "fps": 8.0,
         "frames": 40, "width": 32, "height": 32},
        {"kind": "captions", "source": "clips/c1", "caption": "the ball moves left", "duration": 5.0, "fps": 8.0,
         "frames": 40, "width": 32, "height": 32}]
    # headers: caption/path columns, and the official WebVid CSV (name, page_dir + videoid)
    (tmp_path / "h.csv").write_text("path,caption\nclips/c2.mp4,\"a caption, with a comma\"\n")
    assert [(r.id, r.caption) for r in ingest.list_records("webvid", tmp_path / "h.csv", root)] == [
        ("clips/c2", "a caption, with a comma")]
    (tmp_path / "w.csv").write_text("videoid,contentUrl,duration,page_dir,name\nc1,u,PT00H00M19S,clips,Some clip\n")
    (rec,) = ingest.list_records("webvid", tmp_path / "w.csv", root)
    assert (rec.video, rec.caption, rec.problem) == (str(clips / "c1.mp4"), "Some clip", None)

    lines = [json.dumps({"path": "videos/clips/c2.mp4", "caption": "  two   words "}), "not json",
             json.dumps({"path": "videos/clips/c0.mp4", "caption": " "}), json.dumps({"path": "videos/clips/c0.mp4"})]
    (tmp_path / "caps.jsonl").write_text("\n".join(lines) + "\n")
    result = ingest.ingest_source("jsonl", tmp_path / "caps.jsonl", tmp_path / "jl",
                                  IngestSettings(source="jsonl", short_side=32))
    assert result.index["skipped"] == {"bad_record": 2, "empty_caption": 1}
    ((_, members),) = shard_samples(tmp_path / "jl")
    meta = json.loads(members["json"])
    assert (meta["caption"], meta["frames"], meta["duration"]) == ("two words", 152, 19.0)


def _merlot_annotation(vtt_path) -> dict:
    """A MERLOT annotation from a VTT: lower-case ASR words, a cased and punctuated ``denoised`` text."""
    words = load_subtitles(vtt_path)
    clean = " ".join(w.capitalize() + ("," if i % 3 == 2 else "") for i, w in enumerate(words.words))
    return {"subtitles": [{"word": w, "time": float(t)} for w, t in zip(words.words, words.times)],
            "denoised": [{"cleanasr": clean}], "info": {"duration": 60.0}}  # metadata longer than the video


def test_merlot_folder_and_official_index(corpus, tmp_path):
    ann = _merlot_annotation(corpus / "syn000002.vtt")
    folder = tmp_path / "m"
    folder.mkdir()
    shutil.copy(corpus / "syn000002.mp4", folder / "vid.mp4")
    (folder / "vid.json").write_text(json.dumps(ann))
    st = IngestSettings(source="merlot", short_side=32, **SYN)
    result = ingest.ingest_source("merlot", folder, tmp_path / "out", st)
    assert result.index["skipped"] == {} and result.samples == 1  # planned over the real 19 s, not 60 s
    ((_, members),) = shard_samples(tmp_path / "out")
    meta = json.loads(members["json"])
    (ws,) = planned_sets(parse_merlot(ann), 19.0, st, "vid")
    assert meta["transcripts"] == ws.transcripts
    assert any(w[0].isupper() for t in meta["transcripts"] for w in t.split())  # the denoised words
    assert any(t.endswith(",") or ", " in t for t in meta["transcripts"])

    videos = tmp_path / "yt" / "videos"
    (videos / "subset_1" / "data").mkdir(parents=True)
    (videos / "subset_1" / "annotations").mkdir()
    shutil.copy(corpus / "syn000002.mp4", videos / "subset_1" / "data" / "vid.mp4")
    (videos / "subset_1" / "annotations" / "vid.json").write_text(json.dumps(ann))
    (tmp_path / "yt" / "train.tsv").write_text("Name\nsubset_1/data/vid.mp4\nsubset_1/data/gone.mp4\n")
    result = ingest.ingest_source("merlot", tmp_path / "yt" / "train.tsv", tmp_path / "out2", st)
    assert result.index["skipped"] == {"missing_video": 1} and result.samples == 1
    ((key, members2),) = shard_samples(tmp_path / "out2")
    assert key.startswith("subset_1_data_vid_") and "." not in key
    meta2 = json.loads(members2["json"])
    assert meta2["source"] == "subset_1/data/vid"
    assert meta2["transcripts"] == planned_sets(parse_merlot(ann), 19.0, st, "subset_1/data/vid")[0].transcripts


def test_howto_source(corpus, tmp_path):
    (tmp_path / "videos").mkdir()
    shutil.copy(corpus / "syn000000.mp4", tmp_path / "videos" / "abc.mp4")
    captions = {"abc": {"start": [0.5, 5.5, 10.5, 15.5], "end": [3.5, 8.5, 13.5, 18.5],
                        "text": ["first step", "second step", "third step", "fourth step"]},
                "gone": {"start": [0.0], "end": [1.0], "text": ["x"]}}
    (tmp_path / "caption.json").write_text(json.dumps(captions))
    result = ingest.ingest_source("howto", tmp_path / "caption.json", tmp_path / "out",
                                  IngestSettings(source="howto", short_side=32, **SYN))
    assert result.index["skipped"] == {"missing_video": 1}
    ((_, members),) = shard_samples(tmp_path / "out")
    assert json.loads(members["json"])["transcripts"] == ["first step", "second step", "third step", "fourth step"]


def test_wrong_input_paths_raise_one_line(tmp_path):
    with pytest.raises(ingest.IngestError, match="no such folder"):
        ingest.list_records("vtt", tmp_path / "nope")
    with pytest.raises(ingest.IngestError, match="no inputs found"):
        ingest.list_records("vtt", tmp_path)
    (tmp_path / "x.csv").write_text("foo,bar\n1,2\n")
    with pytest.raises(ingest.IngestError, match="'Name' column"):
        ingest.list_records("merlot", tmp_path / "x.csv")
