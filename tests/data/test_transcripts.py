"""Transcript parsers: exact words and times from small fixture files written into tmp_path."""
import codecs
import gzip
import json

import numpy as np
import pytest

from tvts.data.errors import SkipSample
from tvts.data.transcripts import (TimedWords, decode_transcript, load_subtitles, parse_howto, parse_merlot,
                                   parse_srt, parse_vtt)

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
        ("random.srt", np.random.default_rng(0).bytes(4096), "undecodable_transcript"),
        ("gzipped.vtt", gzip.compress(("WEBVTT\n\n00:00.000 --> 00:01.000\ncafé crème\n" * 50).encode()),
         "undecodable_transcript"),
        ("random.json", np.random.default_rng(1).bytes(512), "undecodable_transcript"),
        ("odd_utf16.srt", codecs.BOM_UTF16_LE + "1\n00:00:00,000 --> 00:00:01,000\nhi\n".encode("utf-16-le") + b"\x00",
         "undecodable_transcript"),
        ("bad_after_bom.vtt", codecs.BOM_UTF8 + b"WEBVTT\n\n00:00.000 --> 00:01.000\ncaf\xe9\n", "undecodable_transcript"),
        ("beyond_unicode.srt", codecs.BOM_UTF32_BE + b"\x00\x11\x00\x00", "undecodable_transcript"),
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


# ----------------------------------------------------------------------------------------------
# Encodings: byte-order marks obeyed, UTF-8 as is, legacy code pages detected, junk skipped
# ----------------------------------------------------------------------------------------------
# cp1252 proper: ’ (0x92), € (0x80) and … (0x85) are not in ISO-8859-1.
ACCENTED_SRT = """1
00:00:01,000 --> 00:00:03,000
Un café, s’il vous plaît.

2
00:00:03,500 --> 00:00:05,500
Déjà ? Ça coûte 5 € à peine…
"""
ACCENTED_WORDS = ["Un", "café,", "s’il", "vous", "plaît.", "Déjà", "?", "Ça", "coûte", "5", "€", "à", "peine…"]
ACCENTED_TIMES = [1.0, 1.4, 1.8, 2.2, 2.6, 3.5, 3.75, 4.0, 4.25, 4.5, 4.75, 5.0, 5.25]
WORLD_SRT = ACCENTED_SRT + "\n3\n00:00:06,000 --> 00:00:07,000\nПривет, 世界 😀\n"


@pytest.mark.parametrize("encoding, bom, codec", [
    ("utf-8", b"", "utf-8"),
    ("utf-8-sig", codecs.BOM_UTF8, "utf-8"),
    ("utf-16-le", codecs.BOM_UTF16_LE, "utf-16-le"),
    ("utf-16-be", codecs.BOM_UTF16_BE, "utf-16-be"),
    ("utf-32-le", codecs.BOM_UTF32_LE, "utf-32-le"),  # FF FE 00 00: read as UTF-16-LE it would be garbage
    ("utf-32-be", codecs.BOM_UTF32_BE, "utf-32-be"),
])
def test_unicode_files_follow_their_byte_order_mark(tmp_path, encoding, bom, codec):
    path = write(tmp_path, "world.srt", bom + WORLD_SRT.replace("\n", "\r\n").encode(codec))
    words = load_subtitles(path)
    assert words.words == ACCENTED_WORDS + ["Привет,", "世界", "😀"]
    np.testing.assert_allclose(words.times, ACCENTED_TIMES + [6.0, 6 + 1 / 3, 6 + 2 / 3])
    assert words.encoding == encoding
    vtt = write(tmp_path, "world.vtt", bom + ("WEBVTT\n\n" + WORLD_SRT.replace(",", ".")).encode(codec))
    assert load_subtitles(vtt).words[:2] == ["Un", "café."] and load_subtitles(vtt).encoding == encoding


GERMAN_SPANISH_SRT = """1
00:00:00,500 --> 00:00:02,500
Grüße aus München, Señor Müller.

2
00:00:03,000 --> 00:00:04,000
¿Dónde está el niño? Über dem Fluß.
"""
CZECH_SRT = """1
00:00:01,000 --> 00:00:02,000
Děkuji, že jste přišli.

2
00:00:02,000 --> 00:00:03,000
Promiňte, nerozumím. Kde je moje auto?
"""
RUSSIAN_SRT = """1
00:00:01,000 --> 00:00:02,000
Привет, как дела?

2
00:00:02,000 --> 00:00:03,000
Я не знаю, что сказать.
"""
JAPANESE_VTT = """WEBVTT

00:01.000 --> 00:02.000
こんにちは、元気ですか？

00:02.000 --> 00:03.000
すみません、わかりません。
"""


@pytest.mark.parametrize("name, text, written_in, detected", [
    ("fr.srt", ACCENTED_SRT, "cp1252", "cp1252"),
    # ISO-8859-1 without C1 bytes decodes the same in cp1252, its superset on printable characters
    ("de_es.srt", GERMAN_SPANISH_SRT, "latin-1", "cp1252"),
    # Czech in cp1250 is mess-free in cp1252 too ("Dìkuji, ¾e jste pøišli"): the alphabet fit decides
    ("cs.srt", CZECH_SRT, "cp1250", "cp1250"),
    ("ru.srt", RUSSIAN_SRT, "cp1251", "cp1251"),
    ("ja.vtt", JAPANESE_VTT, "shift_jis", "cp932"),  # cp932: Windows' Shift-JIS, a superset
])
def test_legacy_code_pages_are_detected(tmp_path, name, text, written_in, detected):
    reference = load_subtitles(write(tmp_path, "utf8_" + name, text))
    words = load_subtitles(write(tmp_path, name, text.encode(written_in)))
    assert words.encoding == detected and reference.encoding == "utf-8"
    assert words.words == reference.words
    np.testing.assert_allclose(words.times, reference.times)


def test_cp1252_words_and_times(tmp_path):
    words = parse_srt(write(tmp_path, "fr.srt", ACCENTED_SRT.replace("\n", "\r\n").encode("cp1252")))
    assert (words.words, words.encoding) == (ACCENTED_WORDS, "cp1252")
    np.testing.assert_allclose(words.times, ACCENTED_TIMES)
    de_es = load_subtitles(write(tmp_path, "de_es.srt", GERMAN_SPANISH_SRT.encode("latin-1")))
    assert de_es.words == ["Grüße", "aus", "München,", "Señor", "Müller.", "¿Dónde", "está", "el", "niño?", "Über",
                           "dem", "Fluß."]
    cs = load_subtitles(write(tmp_path, "cs.srt", CZECH_SRT.encode("cp1250")))
    assert cs.words[:5] == ["Děkuji,", "že", "jste", "přišli.", "Promiňte,"]


@pytest.mark.parametrize("name, content, words", [
    ("latin1.vtt", b"WEBVTT\n\n00:00.000 --> 00:01.000\ncaf\xe9\n", ["café"]),
    ("latin1.srt", b"1\n00:00:00,000 --> 00:00:01,000\ncaf\xe9 cr\xe8me\n", ["café", "crème"]),
    ("latin1.json", b'{"subtitles": [{"word": "caf\xe9", "time": 1.0}]}', ["café"]),
])
def test_one_line_latin1_files(tmp_path, name, content, words):
    got = load_subtitles(write(tmp_path, name, content))
    assert (got.words, got.encoding) == (words, "cp1252")


def test_decode_transcript_never_replaces_bytes():
    assert decode_transcript("naïve".encode("utf-8")) == ("naïve", "utf-8")
    assert decode_transcript(codecs.BOM_UTF16_BE + "naïve".encode("utf-16-be")) == ("naïve", "utf-16-be")
    junk = bytes(range(128, 256)) * 8  # every high byte: C1 controls in latin-1, undefined bytes in cp1252
    with pytest.raises(SkipSample) as info:
        decode_transcript(junk, "junk.srt")
    assert info.value.reason == "undecodable_transcript" and info.value.detail.startswith("junk.srt: byte 0 ")
