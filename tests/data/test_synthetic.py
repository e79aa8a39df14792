"""The synthetic narrated corpus and downstream set (tvts/data/synthetic.py)."""
from __future__ import annotations

import collections
import json
import math
import re

import av
import numpy as np
import pytest

from tvts.data import synthetic as syn

VTT_TIME = r"(\d\d):(\d\d):(\d\d)\.(\d\d\d)"
CUE_LINE = re.compile(rf"^{VTT_TIME} --> {VTT_TIME}")
WORD_TAG = re.compile(rf"<{VTT_TIME}><c> ([^<]*)</c>")
SHAPE_WORDS = {w for names in syn.SHAPES.values() for name in names for w in name.split()}
FILLER_WORDS = {w for filler in syn.FILLERS for w in filler.split()}


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
# Scene
# ----------------------------------------------------------------------------------------------
def test_duration_and_windows_follow_the_arguments():
    v = syn.sample_video(0, size=32, fps=4, events=3, event_s=2.0, gap_s=0.5)
    assert v.duration == syn.video_duration(3, 2.0, 0.5) == 7.0
    assert syn.render(v).shape == (28, 32, 32, 3)
    assert [(e.start, e.end) for e in v.events] == [(0.0, 2.0), (2.5, 4.5), (5.0, 7.0)]


def test_gaps_are_still_and_windows_change():
    for index in range(6):
        v = syn.sample_video(index)
        frames = syn.render(v).astype(np.int16)
        for start, end in syn.event_windows():
            a, b = int(math.ceil(start * v.fps)), min(int(end * v.fps), v.num_frames - 1)
            assert np.abs(frames[b] - frames[a]).max() > 20  # something visibly changed in the window
        for (_, end), (start, _) in zip(syn.event_windows()[:-1], syn.event_windows()[1:]):
            assert np.array_equal(frames[int(end * v.fps)], frames[int(start * v.fps)])  # still in the gap


def test_state_carries_over_and_stays_on_canvas():
    """Events act on visible objects only, change what they say, and keep every object inside."""
    for index in range(150):
        v = syn.sample_video(index)
        states = v.key_states  # key 2k+1: window k start, 2k+2: its end
        for k, ev in enumerate(v.events):
            before, after = states[ev.target, 2 * k + 1], states[ev.target, 2 * k + 2]
            others = np.delete(states[:, 2 * k + 2], ev.target, 0)
            assert np.array_equal(others, np.delete(states[:, 2 * k + 1], ev.target, 0))
            assert before[3] == (0.0 if ev.type == "appear" else 1.0)
            assert after[3] == (0.0 if ev.type == "disappear" else 1.0)
            dx, dy, dr = after[0] - before[0], after[1] - before[1], after[2] / before[2]
            expect = {"move_left": dx < -4, "move_right": dx > 4, "move_up": dy < -4, "move_down": dy > 4,
                      "grow": dr > 1.1, "shrink": dr < 0.9}
            assert expect.get(ev.type, dx == dy == 0 and dr == 1)
            if ev.type == "recolour":
                assert not np.array_equal(before[4:], after[4:])
        shown = states[:, :, 3] > 0
        x, y, r = states[..., 0][shown], states[..., 1][shown], states[..., 2][shown]
        assert (x - r >= 0).all() and (x + r <= 64).all() and (y - r >= 0).all() and (y + r <= 64).all()
        assert (r >= 2.9).all()


# ----------------------------------------------------------------------------------------------
# Narration
# ----------------------------------------------------------------------------------------------
def test_clean_narration_names_its_event_type_only():
    for index in range(100):
        v = syn.sample_video(index, noise=0.0)
        for ev, cue in zip(v.events, v.cues):
            words = set(cue.clean.split())
            assert words & syn.KEYWORDS[ev.type], cue.clean
            for other, keys in syn.KEYWORDS.items():
                assert other == ev.type or not words & keys, (ev.type, cue.clean)
            assert cue.text == cue.clean


def test_noisy_narration_mostly_names_the_right_event():
    hits = changed = content = 0
    cues = 0
    for index in range(100):
        v = syn.sample_video(index, seed=5, noise=0.2)
        for ev, cue in zip(v.events, v.cues):
            cues += 1
            assert re.fullmatch(r"[a-z]+( [a-z]+)*", cue.text), cue.text  # auto-caption style
            noisy, clean = cue.text.split(), cue.clean.split()
            assert len(noisy) == len(clean)
            hits += bool(set(noisy) & syn.KEYWORDS[ev.type])
            changed += sum(a != b for a, b in zip(noisy, clean))
            content += sum(w not in syn._FUNCTION_WORDS and w not in FILLER_WORDS for w in clean)
    assert 0.65 < hits / cues < 0.95  # the noise removes some, most survive
    assert 0.13 < changed / content < 0.27  # about 20 % of the content words
    assert any(w in syn.FILLERS for index in range(5) for c in syn.sample_video(index).cues for w in c.text.split())


def test_event_types_are_uniform_per_position():
    """The type of an event does not depend on its position: chi-square on 200 chains."""
    counts = np.zeros((4, len(syn.EVENT_TYPES)))
    for index in range(200):
        events = syn.sample_video(index, seed=11).events
        assert len({ev.type for ev in events}) == 4  # no two windows show the same event
        for k, ev in enumerate(events):
            counts[k, syn.EVENT_TYPES.index(ev.type)] += 1
    expected = 200 / len(syn.EVENT_TYPES)
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 66.6  # 99.9th percentile of chi-square with 35 degrees of freedom
    assert counts.min() > 5


def _position_accuracy(train: list, test: list) -> float:
    """Naive Bayes over bag-of-words: how well one cue's words predict its position."""
    vocab = sorted({w for words, _ in train + test for w in words})
    index = {w: i for i, w in enumerate(vocab)}
    counts = np.ones((4, len(vocab)))
    for words, pos in train:
        for w in words:
            counts[pos, index[w]] += 1
    log_p = np.log(counts / counts.sum(1, keepdims=True))
    right = sum(int(np.argmax([log_p[p, [index[w] for w in words]].sum() for p in range(4)])) == pos
                for words, pos in test)
    return right / len(test)


def test_one_transcript_does_not_reveal_its_position():
    cues = [(c.text.split(), k) for i in range(300) for k, c in enumerate(syn.sample_video(i, seed=2).cues)]
    train, test = cues[:800], cues[800:]
    assert _position_accuracy(train, test) < 0.32  # chance is 0.25
    # the same classifier finds a position that the words do carry
    leaky = [(words + [f"pos{pos}"] if i % 2 else words, pos) for i, (words, pos) in enumerate(cues)]
    assert _position_accuracy(leaky[:800], leaky[800:]) > 0.5


def test_no_cue_dates_another():
    """Cues never name an object in a way that fixes its order against another cue."""
    for index in range(200):
        v = syn.sample_video(index, noise=0.0)
        recoloured = {e.target for e in v.events if e.type == "recolour"}
        for ev, cue in zip(v.events, v.cues):
            words = set(cue.clean.split())
            named_colours = words & set(syn.COLOURS)
            if ev.type in ("appear", "disappear"):
                assert not words & (SHAPE_WORDS | set(syn.COLOURS)), cue.clean
            elif ev.type == "recolour":
                assert named_colours == {ev.new_colour}, cue.clean
            elif ev.target in recoloured:
                assert not named_colours, cue.clean
            else:
                assert named_colours <= {ev.colour}, cue.clean


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


def _clips(label: int, n: int = 80) -> list:
    # other clip indices per class: clip i of two classes would share every random draw but the direction
    return [syn.sample_clip(1000 * label + i, seed=4, label=label) for i in range(n)]


def _histograms(frames: np.ndarray) -> np.ndarray:
    """(N, 65) single-frame statistics of (N, H, W, 3) frames: a colour histogram (4 levels per
    channel) and the fraction of bright pixels (objects are bright, backgrounds dark)."""
    q = frames.astype(np.int64) // 64
    codes = (q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]).reshape(len(frames), -1)
    hist = np.stack([np.bincount(c, minlength=64) for c in codes]) / codes.shape[1]
    bright = (frames.max(-1) > 110).reshape(len(frames), -1).mean(1, keepdims=True)
    return np.concatenate([hist, bright], 1)


def _max_z(a: np.ndarray, b: np.ndarray) -> float:
    se = np.sqrt(a.var(0) / len(a) + b.var(0) / len(b)) + 1e-4
    return float((np.abs(a.mean(0) - b.mean(0)) / se).max())


@pytest.mark.parametrize("pair", [(0, 1), (2, 3), (4, 5), (6, 7)])
def test_a_first_frame_does_not_tell_the_direction(pair):
    first = [_histograms(np.stack([syn.render_clip(c)[0] for c in _clips(label)])) for label in pair]
    assert _max_z(*first) < 4.0  # max |z| over 65 statistics; > 4 has p < 0.5 % under equal distributions


def test_downstream_classes_differ_in_motion():
    def foreground(clip, frame):  # pixels that differ from the (known) background
        return np.abs(frame.astype(np.float32) - clip.background).sum(-1) > 40

    def centroid_x(mask):
        return (mask * np.arange(mask.shape[1])).sum() / mask.sum()

    shift = {}
    for label in (0, 1):
        shift[label] = []
        for clip in _clips(label, 30):
            frames = syn.render_clip(clip)
            shift[label].append(centroid_x(foreground(clip, frames[-1])) - centroid_x(foreground(clip, frames[0])))
    assert max(shift[0]) < 0 < min(shift[1])  # every left clip moves left, every right clip right
    area = {label: [foreground(c, syn.render_clip(c)[-1]).sum() / foreground(c, syn.render_clip(c)[0]).sum()
                    for c in _clips(label, 30)] for label in (2, 3)}
    assert min(area[2]) > 1.1 and max(area[3]) < 0.95  # still objects dilute the target's change
    # the same statistics on the last frame do tell the direction: the first-frame test has power
    for pair in ((2, 3), (4, 5)):
        last = [_histograms(np.stack([syn.render_clip(c)[-1] for c in _clips(label)])) for label in pair]
        assert _max_z(*last) > 8.0


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
