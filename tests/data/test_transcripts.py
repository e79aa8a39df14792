"""Transcript parsers: exact words and times from small fixture files written into tmp_path."""
import json

import numpy as np
import pytest

from tvts.data.errors import SkipSample
from tvts.data.transcripts import TimedWords, load_subtitles, parse_howto, parse_merlot, parse_srt, parse_vtt

# YouTube auto-captions: each cue repeats the previous line, ~10 ms transition cues only repeat text,
# a lone space line sits inside cues, the new line carries <hh:mm:ss.ttt> word tags.
YOUTUBE_VTT = """WEBVTT
Kind: captions
Language: en

00:00:00.000 --> 00:00:02.350 align:start position:0%
 
hello<00:00:00.480><c> world</c><00:00:00.960><c> this</c>

00:00:02.350 --> 00:00:02.360 align:start position:0%
hello world this
 

00:00:02.360 --> 00:00:04.500 align:start position:0%
hello world this
is<00:00:02.800><c> rock</c><00:00:03.100><c> &amp;</c><00:00:03.300><c> roll</c>

00:00:04.500 --> 00:00:04.510 align:start position:0%
is rock &amp; roll
 

00:00:04.510 --> 00:00:06.000 align:start position:0%
is rock &amp; roll
[Music]

00:00:06.000 --> 00:00:08.000 align:start position:0%
[Music]
&gt;&gt; okay<00:00:06.500><c> bye</c>
"""
YOUTUBE_WORDS = ["hello", "world", "this", "is", "rock", "&", "roll", "okay", "bye"]
YOUTUBE_TIMES = [0.0, 0.48, 0.96, 2.36, 2.8, 3.1, 3.3, 6.0, 6.5]


def write(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_bytes(content.encode("utf-8"))
    return path


def test_youtube_vtt_word_timing_without_rolling_duplicates(tmp_path):
    words = parse_vtt(write(tmp_path, "yt.vtt", YOUTUBE_VTT))
    assert words.words == YOUTUBE_WORDS
    np.testing.assert_allclose(words.times, YOUTUBE_TIMES)
    np.testing.assert_allclose(words.ends, [0.48, 0.96, 2.35, 2.8, 3.1, 3.3, 4.5, 6.5, 8.0])
    assert words.times.dtype == np.float64 and words.duration is None


def test_vtt_crlf_and_bom_give_the_same_words(tmp_path):
    crlf = write(tmp_path, "crlf.vtt", b"\xef\xbb\xbf" + YOUTUBE_VTT.replace("\n", "\r\n").encode())
    words = load_subtitles(crlf)
    assert words.words == YOUTUBE_WORDS
    np.testing.assert_allclose(words.times, YOUTUBE_TIMES)


def test_cue_timed_vtt_spreads_words_evenly(tmp_path):
    vtt = """WEBVTT - a title
Kind: captions

STYLE
::cue { color: yellow }

NOTE a comment block
spanning two lines

intro
00:01.000 --> 00:03.000 align:middle line:90%
<v Roger>Hello <b>there</b> friend</v>

2
01:00:00.000 --> 01:00:02.000
one two
three four
"""
    words = parse_vtt(write(tmp_path, "cue.vtt", vtt))
    assert words.words == ["Hello", "there", "friend", "one", "two", "three", "four"]
    np.testing.assert_allclose(words.times, [1.0, 1 + 2 / 3, 1 + 4 / 3, 3600.0, 3600.5, 3601.0, 3601.5])
    np.testing.assert_allclose(words.ends, [1 + 2 / 3, 1 + 4 / 3, 3.0, 3600.5, 3601.0, 3601.5, 3602.0])


def test_plain_rolling_captions_emit_each_line_once(tmp_path):
    vtt = """WEBVTT

00:00:00.000 --> 00:00:02.000
first line here

00:00:02.000 --> 00:00:04.000
first line here
second part

00:00:04.000 --> 00:00:04.010
second part
"""
    words = parse_vtt(write(tmp_path, "roll.vtt", vtt))
    assert words.words == ["first", "line", "here", "second", "part"]
    np.testing.assert_allclose(words.times, [0.0, 2 / 3, 4 / 3, 2.0, 3.0])


def test_srt_cue_timing_and_tags(tmp_path):
    srt = """1
00:00:01,000 --> 00:00:03,000
<i>Hello</i> world

2
00:00:03,500 --> 00:00:05,600 X1:10 X2:20 Y1:5 Y2:9
{\\an8}<font color="#ffffff">second line</font>
here &amp; now
"""
    words = parse_srt(write(tmp_path, "a.srt", srt.replace("\n", "\r\n")))
    assert words.words == ["Hello", "world", "second", "line", "here", "&", "now"]
    np.testing.assert_allclose(words.times, [1.0, 2.0, 3.5, 3.92, 4.34, 4.76, 5.18])


def merlot_annotation():
    subtitles = [
        ("so", 0.5), ("today", 0.9), ("&gt;", 1.1), ("we're", 1.3), ("making", 1.6), ("a", 1.9), ("a", 2.0),
        ("cafÃ©", 2.2), ("cake", 2.6), ("amp;", 2.8), ("elephants", 3.0), ("cannot", 3.5), ("jump", 4.0),
    ]
    return {
        "info": {"duration": 60.0, "title": "t"},
        "subtitles": [{"word": w, "time": t} for w, t in subtitles],
        "denoised": [
            {"cleanasr": "So today we're making a café cake.", "start": 0.5, "end": 2.6},
            {"cleanasr": "Elephants can not jump!", "start": 3.0, "end": 4.0},
        ],
    }


def test_merlot_alignment_gives_denoised_words_at_asr_times(tmp_path):
    path = write(tmp_path, "vid.json", json.dumps(merlot_annotation()))
    words = parse_merlot(path)
    # "&gt;" and "amp;" are dropped; ftfy repairs "cafÃ©"; the stuttered second "a" gets no word;
    # "cannot" collects "can not", both at its time.
    assert words.words == ["So", "today", "we're", "making", "a", "café", "cake.", "Elephants", "can", "not", "jump!"]
    np.testing.assert_allclose(words.times, [0.5, 0.9, 1.3, 1.6, 1.9, 2.2, 2.6, 3.0, 3.5, 3.5, 4.0])
    assert words.ends is None and words.duration == 60.0
    assert load_subtitles(path).words == words.words
    assert parse_merlot(merlot_annotation()).words == words.words  # a dict works too


def test_merlot_without_denoised_uses_cleaned_asr():
    data = merlot_annotation()
    del data["denoised"]
    words = parse_merlot(data)
    assert words.words == ["so", "today", "we're", "making", "a", "a", "café", "cake", "elephants", "cannot", "jump"]


def test_howto_entry_is_spread_and_sorted(tmp_path):
    entry = {"start": [4.0, 0.0], "end": [5.0, 2.0], "text": ["[music] bye now", "hello there"]}
    words = parse_howto(entry)
    assert words.words == ["hello", "there", "bye", "now"]
    np.testing.assert_allclose(words.times, [0.0, 1.0, 4.0, 4.5])
    path = write(tmp_path, "howto.json", json.dumps(entry))
    assert load_subtitles(path).words == words.words


def test_words_between_is_strict():
    words = TimedWords(["c", "a", "b", "d"], np.array([3.0, 1.0, 2.0, 3.0]))
    assert words.words == ["a", "b", "c", "d"]  # sorted by time, ties keep their order
    assert words.words_between(1.0, 3.0) == ["b"]
    assert words.words_between(0.999, 3.001) == ["a", "b", "c", "d"]
    assert words.words_between(3.0, 10.0) == []


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("latin1.vtt", b"WEBVTT\n\n00:00.000 --> 00:01.000\ncaf\xe9\n", "non_utf8"),
        ("latin1.srt", b"1\n00:00:00,000 --> 00:00:01,000\ncaf\xe9\n", "non_utf8"),
        ("latin1.json", b'{"subtitles": [{"word": "caf\xe9", "time": 1.0}]}', "non_utf8"),
        ("header_only.vtt", "WEBVTT\nKind: captions\n\n", "empty_transcript"),
        ("music_only.vtt", "WEBVTT\n\n00:00.000 --> 00:05.000\n[Music]\n\n00:05.000 --> 00:09.000\n♪ ♪\n", "empty_transcript"),
        ("empty.srt", "", "empty_transcript"),
        ("entities.json", json.dumps({"subtitles": [{"word": "&amp;", "time": 1.0}], "denoised": []}), "empty_transcript"),
        ("silent.json", json.dumps({"start": [0.0], "end": [1.0], "text": ["  "]}), "empty_transcript"),
        ("bad_timing.vtt", "WEBVTT\n\n00:00.000 --> soon\nhello\n", "bad_subtitle"),
        ("not_subs.srt", "<html>not found</html>\n", "bad_subtitle"),
        ("broken.json", '{"subtitles": [', "bad_subtitle"),
        ("other.json", json.dumps({"captions": []}), "bad_subtitle"),
        ("bad_words.json", json.dumps({"subtitles": [{"word": "hi"}]}), "bad_subtitle"),
        ("subs.txt", "hello", "unsupported_format"),
    ],
)
def test_unusable_inputs_raise_skip_sample(tmp_path, name, content, reason):
    path = write(tmp_path, name, content)
    with pytest.raises(SkipSample) as info:
        load_subtitles(path)
    assert info.value.reason == reason
    assert name in info.value.detail


def test_missing_file_is_unreadable(tmp_path):
    with pytest.raises(SkipSample) as info:
        parse_vtt(tmp_path / "nope.vtt")
    assert info.value.reason == "unreadable" and "nope.vtt" in info.value.detail


def test_howto_with_mismatched_lists_is_bad():
    with pytest.raises(SkipSample) as info:
        parse_howto({"start": [0.0, 1.0], "end": [1.0], "text": ["a", "b"]}, source="vid123")
    assert info.value.reason == "bad_subtitle" and "vid123" in info.value.detail
