"""The synthetic corpus and downstream set files (tvts/data/synthetic/corpus.py)."""
from __future__ import annotations

import collections
import json
import re

import av
import numpy as np
import pytest

from tvts.data import synthetic as syn

VTT_TIME = r"(\d\d):(\d\d):(\d\d)\.(\d\d\d)"
CUE_LINE = re.compile(rf"^{VTT_TIME} --> {VTT_TIME}")
WORD_TAG = re.compile(rf"<{VTT_TIME}><c> ([^<]*)</c>")


def _seconds(h, m, s, ms) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def parse_vtt(text: str) -> list[dict]:
    """Cues as {start, end, text, word_times}: a minimal reader, independent of the ingest code."""
    cues = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = CUE_LINE.match(line)
        if not m:
            continue
        payload = lines[i + 1]
        word_times = [_seconds(*t[:4]) for t in WORD_TAG.findall(payload)]
        plain = re.sub(r"</?c>", "", re.sub(rf"<{VTT_TIME}>", "", payload))
        cues.append({"start": _seconds(*m.groups()[:4]), "end": _seconds(*m.groups()[4:]), "text": plain,
                     "word_times": word_times})
    return cues


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    videos = syn.make_corpus(root, 2, seed=3)
    return root, videos


@pytest.fixture(scope="module")
def downstream(tmp_path_factory):
    root = tmp_path_factory.mktemp("down")
    return syn.make_downstream(root, num_train=16, num_val=8, seed=1)


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------
def test_manifest_and_pairs(corpus):
    _, videos = corpus
    rows = [json.loads(line) for line in (videos / "manifest.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["syn000000", "syn000001"]
    for r in rows:
        assert r["duration"] == 19.0 and r["num_frames"] == 152
        assert (videos / f"{r['id']}.mp4").is_file() and (videos / f"{r['id']}.vtt").is_file()
        assert [(e["start"], e["end"]) for e in r["events"]] == [(0, 4), (5, 9), (10, 14), (15, 19)]
        assert all(e["type"] in syn.EVENT_TYPES for e in r["events"])
    assert not list(videos.glob("*.tmp"))


def test_mp4_decodes_to_the_rendered_frames(corpus):
    _, videos = corpus
    truth = syn.render(syn.sample_video(1, seed=3))
    with av.open(str(videos / "syn000001.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.average_rate == 8
        assert float(stream.duration * stream.time_base) == pytest.approx(19.0)
        frames = list(container.decode(video=0))
    assert len(frames) == 152
    assert (frames[0].width, frames[0].height) == (64, 64)
    assert frames[-1].time == pytest.approx(151 / 8)
    assert [i for i, f in enumerate(frames) if f.key_frame] == list(range(0, 152, 8))  # a keyframe every second
    decoded = np.stack([f.to_ndarray(format="rgb24") for f in frames]).astype(np.float32)
    assert np.abs(decoded - truth).mean() < 4.0  # lossy, but the same pictures
    assert np.abs(decoded[1:] - truth[:-1]).mean() > np.abs(decoded - truth).mean()  # and in the right order


def test_vtt_cues_lie_in_event_windows(corpus):
    _, videos = corpus
    windows = syn.event_windows()
    for index in (0, 1):
        truth = syn.sample_video(index, seed=3)
        text = (videos / f"{truth.id}.vtt").read_text()
        assert text.startswith("WEBVTT")
        cues = parse_vtt(text)
        assert [c["text"] for c in cues] == [c.text for c in truth.cues]
        for cue, (start, end) in zip(cues, windows):
            assert start < cue["start"] < cue["end"] < end
            assert all(cue["start"] < t < cue["end"] for t in cue["word_times"])
            assert cue["word_times"] == sorted(cue["word_times"])


def test_half_of_the_vtt_files_are_word_timed(corpus):
    _, videos = corpus
    plain, timed = (videos / "syn000000.vtt").read_text(), (videos / "syn000001.vtt").read_text()
    assert not WORD_TAG.search(plain) and "<c>" not in plain
    cues = parse_vtt(timed)
    for cue in cues:  # every word after the first carries its own start time
        assert len(cue["word_times"]) == len(cue["text"].split()) - 1
    assert re.search(rf"^[a-z]+<{VTT_TIME}><c> [a-z]+</c>", timed, re.M)
    assert [syn.sample_video(i).word_timed for i in range(10)] == [i % 2 == 1 for i in range(10)]


def test_same_seed_same_bytes_any_workers(tmp_path):
    a = syn.make_corpus(tmp_path / "a", 4, seed=7)
    b = syn.make_corpus(tmp_path / "b", 4, seed=7, workers=2)
    c = syn.make_corpus(tmp_path / "c", 1, seed=8)
    for name in ("syn000000.mp4", "syn000003.mp4", "syn000001.vtt", "manifest.jsonl"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / "syn000000.mp4").read_bytes() != (c / "syn000000.mp4").read_bytes()
    assert (a / "syn000000.vtt").read_text() != (c / "syn000000.vtt").read_text()


def test_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="even"):
        syn.make_corpus(tmp_path, 1, size=63)
    with pytest.raises(ValueError, match="noise"):
        syn.sample_video(0, noise=1.5)


# ----------------------------------------------------------------------------------------------
# Downstream set
# ----------------------------------------------------------------------------------------------
def test_downstream_files(downstream):
    labels = json.loads((downstream / "labels.json").read_text())
    assert labels == {name: i for i, name in enumerate(syn.DOWNSTREAM_CLASSES)}
    for split, n in (("train", 16), ("val", 8)):
        lines = (downstream / f"{split}.txt").read_text().splitlines()
        assert len(lines) == n
        names = [line.split()[0] for line in lines]
        ids = [int(line.split()[1]) for line in lines]
        assert all(re.fullmatch(r"ds[tv]\d{6}\.webm", name) for name in names)
        assert collections.Counter(ids) == {i: n // 8 for i in range(8)}  # balanced
        for name in names:
            assert (downstream / "videos" / name).is_file()
    with av.open(str(downstream / "videos" / names[0])) as container:
        assert container.streams.video[0].codec_context.name == "vp9"
        frames = list(container.decode(video=0))
    assert 16 <= len(frames) <= 24 and frames[0].width == 64  # 2 to 3 s at 8 fps


def test_order_downstream_classes_are_the_order_of_two_narrated_events(tmp_path):
    out = syn.make_order_downstream(tmp_path, num_train=12, num_val=9, seed=0)
    assert json.loads((out / "labels.json").read_text()) == {name: i for i, name in enumerate(syn.ORDER_CLASSES)}
    assert len(syn.ORDER_CLASSES) == 2 * len(syn.ORDER_PAIRS) == 8
    seen = {}
    for split, n in (("train", 12), ("val", 9)):
        rows = [line.split() for line in (out / f"{split}.txt").read_text().splitlines()]
        labels = [int(label) for _, label in rows]
        assert len(rows) == n and max(labels.count(c) for c in range(8)) - min(labels.count(c) for c in range(8)) <= 1
        for (name, _), label in zip(rows, labels):
            index = int(name[len("syn"):-len(".webm")])
            assert index >= 1 << 31  # never a corpus (0 .. N-1) or training-stream (2**30 + i) scene
            video = syn.sample_video(index, seed=0, size=32, fps=8, events=2, event_s=4.0, gap_s=1.0)
            first, second = (e.type for e in video.events)
            assert syn.ORDER_CLASSES[label] == f"{first}_then_{second}"
            # the pair is in the words of both orders; which came first is not
            assert {first, second} in [set(p) for p in syn.ORDER_PAIRS]
            assert (out / "videos" / name).stat().st_size > 0
            seen[name] = split
    assert len(seen) == 21  # the splits are disjoint
    assert syn.order_class(["grow", "move_left"]) == syn.ORDER_CLASSES.index("grow_then_move_left")
    assert syn.order_class(["grow", "shrink"]) is None and syn.order_class(["grow"]) is None
