"""Timed words and the transcript parsers (WebVTT, SRT, YT-Temporal/MERLOT JSON, HowTo100M JSON).

Every parser returns :class:`TimedWords`: one start time per word, sorted by time. Unusable input
raises :class:`~tvts.data.errors.SkipSample` with a stable reason and the file in the detail:

* ``unreadable``: the file cannot be read;
* ``undecodable_transcript``: the bytes are in no encoding :func:`decode_transcript` can tell with
  confidence (random bytes, binary junk), or a byte-order mark is followed by bytes that its codec
  rejects;
* ``bad_subtitle``: malformed cue timing, invalid JSON or a JSON without the expected fields;
* ``unsupported_format``: :func:`load_subtitles` got an extension it does not know;
* ``empty_transcript``: nothing is left once tags, sound cues and duplicates are removed.

Subtitle text is cleaned the same way in every format: tags (``<c>``, ``<i>``, ``<v Name>``, SRT
``{\\an8}``) removed, then HTML entities unescaped, speaker-change marks ``>>`` and ``♪`` removed,
bracketed sound cues (``[Music]``, ``[Applause]``) removed.

Files are read in the encodings subtitle collections come in (:func:`decode_transcript`): a byte-order
mark (UTF-8, UTF-16 or UTF-32, either byte order) is obeyed, BOM-less UTF-8 is read as such, and any
other file goes to charset-normalizer, restricted to the legacy code pages subtitles are written in
(Windows-1252 for Western Europe, Windows-1250/1251/..., KOI8-R, GB18030, Big5, Shift-JIS, EUC-JP,
EUC-KR). The encoding used is kept in :attr:`TimedWords.encoding`. Nothing is ever decoded with
replacement characters: a file without a confident decoding is skipped.
"""
from __future__ import annotations

import codecs
import collections
import html
import json
import math
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from tvts.data.align import align_words
from tvts.data.errors import SkipSample


@dataclass
class TimedWords:
    """Words with their start times, sorted by time (stable: equal times keep their order).

    ``times``: float64 array ``(N,)``, seconds from the start of the video; ``ends``: float64 ``(N,)`` or
    None when the source has no word ends (MERLOT); ``duration``: seconds, when the source knows it;
    ``encoding``: the text encoding the transcript file was read in (``utf-8``, ``utf-8-sig``,
    ``utf-16-le``, ``cp1252``..., see :func:`decode_transcript`), None when the words did not come from
    a file (a dict, a HowTo100M entry).
    """

    words: list[str]
    times: np.ndarray
    ends: Optional[np.ndarray] = None
    duration: Optional[float] = None
    encoding: Optional[str] = None

    def __post_init__(self) -> None:
        self.words = list(self.words)
        self.times = np.asarray(self.times, dtype=np.float64).reshape(-1)
        if len(self.times) != len(self.words):
            raise ValueError(f"TimedWords: {len(self.words)} words but {len(self.times)} times")
        if not np.isfinite(self.times).all():
            raise ValueError("TimedWords: times must be finite")
        if self.ends is not None:
            self.ends = np.asarray(self.ends, dtype=np.float64).reshape(-1)
            if len(self.ends) != len(self.words):
                raise ValueError(f"TimedWords: {len(self.words)} words but {len(self.ends)} ends")
        if len(self.times) > 1 and (np.diff(self.times) < 0).any():
            order = np.argsort(self.times, kind="stable")
            self.words = [self.words[i] for i in order]
            self.times = self.times[order]
            if self.ends is not None:
                self.ends = self.ends[order]

    def __len__(self) -> int:
        return len(self.words)

    def words_between(self, t0: float, t1: float) -> list[str]:
        """Words whose time lies strictly inside ``(t0, t1)`` seconds, as the official loader selects them."""
        lo = int(np.searchsorted(self.times, t0, side="right"))
        hi = int(np.searchsorted(self.times, t1, side="left"))
        return self.words[lo:hi]


# ----------------------------------------------------------------------------------------------
# Text cleaning shared by the cue formats
# ----------------------------------------------------------------------------------------------
_TS = r"(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})"  # [hh:]mm:ss.ttt (SRT: a comma)
_TIMESTAMP = re.compile(_TS)
_TIMING = re.compile(rf"^\s*{_TS}\s*-->\s*{_TS}(?:\s.*)?$")
_INLINE_TIME = re.compile(r"<((?:\d+:)?\d{1,2}:\d{2}[.,]\d{1,3})>")
_TAG = re.compile(r"<[^>]*>|\{\\[^}]*\}")
_NOISE = re.compile(r">>+|♪")
_BRACKETED = re.compile(r"\[[^\]]*\]")


def _seconds(h: Optional[str], m: str, s: str, frac: str) -> float:
    return int(h or 0) * 3600 + int(m) * 60 + int(s) + int(frac) / 10 ** len(frac)


def _plain_words(fragment: str) -> list[str]:
    """Tags stripped (before unescaping, so an escaped ``&lt;b&gt;`` stays text), entities unescaped,
    ``>>`` and ``♪`` removed; split on whitespace. Brackets are handled by :func:`_drop_bracketed`."""
    return _NOISE.sub(" ", html.unescape(_TAG.sub("", fragment))).split()


def _drop_bracketed(words: list[str]) -> list[int]:
    """Indices of the words left once bracketed sound cues are removed (a cue may span several words).

    A word with a cue glued to it (``well[Music]``) is shortened in place."""
    keep, inside = [], False
    for idx, word in enumerate(words):
        word = _BRACKETED.sub("", word)
        if inside:
            if "]" not in word:
                continue
            word, inside = word.split("]", 1)[1], False
        if "[" in word:
            word, inside = word.split("[", 1)[0], True
        if word:
            keep.append(idx)
            words[idx] = word
    return keep


def _spread(words: list[str], start: float, end: float) -> tuple[list[float], list[float]]:
    """Cue-level timing: ``len(words)`` equal slots over ``[start, end)``; each word starts its slot."""
    step = max(end - start, 0.0) / max(len(words), 1)
    return [start + i * step for i in range(len(words))], [start + (i + 1) * step for i in range(len(words))]


# ----------------------------------------------------------------------------------------------
# WebVTT and SRT
# ----------------------------------------------------------------------------------------------
@dataclass
class _Cue:
    start: float
    end: float
    lines: list[str]


@dataclass
class _Line:
    words: list[str]
    times: list[float]  # word-timed lines only
    ends: list[float]
    word_timed: bool  # carries inline <hh:mm:ss.ttt> tags (YouTube auto-captions)

    @property
    def key(self) -> str:
        return " ".join(self.words)


def parse_vtt(path: str | Path) -> TimedWords:
    """A WebVTT file. Inline word timestamps (YouTube auto-captions) are used when present: the first
    word of a line takes the cue start, each tagged word its tag time. Lines without them are spread
    evenly over the cue. Rolling duplicates (a cue repeating the previous cue's lines, and the ~10 ms
    transition cues that only repeat text) are emitted once."""
    return _parse_cues(path, word_timing=True)


def parse_srt(path: str | Path) -> TimedWords:
    """An SRT file: cue-level timing spread evenly over each cue's words; tags stripped."""
    return _parse_cues(path, word_timing=False)


def _parse_cues(path: str | Path, word_timing: bool) -> TimedWords:
    text, encoding = _read_text(path)
    cues = _read_cues(text, path)
    if not cues:
        if not text.strip() or text.lstrip().startswith("WEBVTT"):
            raise SkipSample("empty_transcript", f"{path}: no cues")
        raise SkipSample("bad_subtitle", f"{path}: no cue timing line found")
    words: list[str] = []
    times: list[float] = []
    ends: list[float] = []
    prev_keys: list[str] = []
    for cue in cues:
        lines = [line for line in (_parse_line(raw, cue, word_timing) for raw in cue.lines) if line.words]
        if not lines:
            continue
        keys = [line.key for line in lines]
        repeated = _rolling_overlap(lines, keys, prev_keys)
        prev_keys = keys
        spread_words = [w for line in lines[repeated:] if not line.word_timed for w in line.words]
        starts, stops = _spread(spread_words, cue.start, cue.end)
        words += spread_words
        times += starts
        ends += stops
        for line in lines[repeated:]:
            if line.word_timed:
                words += line.words
                times += line.times
                ends += line.ends
    if not words:
        raise SkipSample("empty_transcript", f"{path}: no words after cleaning")
    return TimedWords(words, np.array(times), np.array(ends), encoding=encoding)


def _rolling_overlap(lines: list[_Line], keys: list[str], prev_keys: list[str]) -> int:
    """How many leading lines of a cue repeat the last lines of the previous cue (rolling captions).

    A line with inline timestamps is new speech by construction (YouTube tags only the new line), so it
    never counts as a repeat. A cue that only repeats (a transition cue) gives ``len(lines)``. A line
    spoken twice in a row in two plain cues is therefore kept only once: indistinguishable from a roll.
    """
    leading_plain = next((i for i, line in enumerate(lines) if line.word_timed), len(lines))
    for k in range(min(leading_plain, len(prev_keys)), 0, -1):
        if keys[:k] == prev_keys[-k:]:
            return k
    return 0


def _parse_line(raw: str, cue: _Cue, word_timing: bool) -> _Line:
    """Words of one cue line; with ``word_timing`` and inline timestamps, each word's time and end."""
    parts = _INLINE_TIME.split(raw)  # text, time, text, time, text ...
    if not word_timing or len(parts) == 1:
        words = _plain_words(_INLINE_TIME.sub("", raw))
        keep = _drop_bracketed(words)
        return _Line([words[i] for i in keep], [], [], word_timed=False)
    seg_times = [cue.start] + [_seconds(*_TIMESTAMP.match(t).groups()) for t in parts[1::2]]
    seg_ends = seg_times[1:] + [max(cue.end, seg_times[-1])]
    words, times, ends = [], [], []
    for fragment, t0, t1 in zip(parts[0::2], seg_times, seg_ends):
        seg_words = _plain_words(fragment)
        starts, stops = _spread(seg_words, t0, t1)  # one word per tag in YouTube files: its tag time
        words += seg_words
        times += starts
        ends += stops
    keep = _drop_bracketed(words)
    return _Line([words[i] for i in keep], [times[i] for i in keep], [ends[i] for i in keep], word_timed=True)


def _read_cues(text: str, path: str | Path) -> list[_Cue]:
    """Cues of a WebVTT or SRT text. A cue is its timing line plus the lines up to an empty line.

    Outside cues everything is skipped: the WEBVTT header, NOTE / STYLE / REGION blocks, SRT counters.
    A line that directly precedes a timing line is that cue's identifier, not text of the previous cue
    (this also covers separators that hold spaces; YouTube puts a lone space *inside* cues).
    """
    cues: list[_Cue] = []
    in_cue = False
    last_was_text = False
    for lineno, line in enumerate(re.split(r"\r\n|\r|\n", text), 1):
        if "-->" in line:
            match = _TIMING.match(line)
            if match is None:
                raise SkipSample("bad_subtitle", f"{path}:{lineno}: malformed cue timing {line.strip()[:80]!r}")
            g = match.groups()
            start, end = _seconds(*g[:4]), _seconds(*g[4:])
            if in_cue and last_was_text:
                cues[-1].lines.pop()
            cues.append(_Cue(start, max(end, start), []))
            in_cue, last_was_text = True, False
        elif not line:
            in_cue = last_was_text = False
        elif in_cue:
            cues[-1].lines.append(line)
            last_was_text = True
    return cues


# ----------------------------------------------------------------------------------------------
# JSON formats
# ----------------------------------------------------------------------------------------------
def parse_merlot(path_or_dict: str | Path | dict, source: Optional[str] = None) -> TimedWords:
    """A YT-Temporal / MERLOT annotation: ``subtitles`` (word-level ASR ``{"word", "time"}``), ``denoised``
    (segments with punctuated, cased ``cleanasr`` text) and ``info.duration``.

    As the official loader: ASR words starting with ``&`` or ending with ``;`` (HTML entities) are
    dropped, the rest and the ``cleanasr`` text go through ``ftfy.fix_text``, and the denoised words are
    aligned to the ASR words by DTW (:func:`tvts.data.align.align_words`), here once. Each ASR word's
    time is given to the denoised words aligned to it; an ASR word that got none contributes no word and
    moves no other time. Without a ``denoised`` field the cleaned ASR words themselves are used.
    """
    import ftfy

    data, source, encoding = _json_source(path_or_dict, source)
    subtitles = data.get("subtitles") if isinstance(data, dict) else None
    if not isinstance(subtitles, list):
        raise SkipSample("bad_subtitle", f"{source}: no 'subtitles' list")
    asr_words: list[str] = []
    asr_times: list[float] = []
    for n, item in enumerate(subtitles):
        word = item.get("word") if isinstance(item, dict) else None
        time = item.get("time") if isinstance(item, dict) else None
        if not isinstance(word, str) or not _is_number(time):
            raise SkipSample("bad_subtitle", f"{source}: subtitles[{n}] is not a {{'word': str, 'time': seconds}} entry")
        if word.startswith("&") or word.endswith(";"):
            continue
        asr_words.append(ftfy.fix_text(word))
        asr_times.append(float(time))
    if not asr_words:
        raise SkipSample("empty_transcript", f"{source}: no ASR words")
    denoised = data.get("denoised")
    if denoised is None:
        aligned = asr_words
    else:
        if not isinstance(denoised, list) or not all(isinstance(d, dict) and isinstance(d.get("cleanasr", ""), str) for d in denoised):
            raise SkipSample("bad_subtitle", f"{source}: 'denoised' is not a list of {{'cleanasr': str}} segments")
        clean_words = " ".join(ftfy.fix_text(d.get("cleanasr", "")) for d in denoised).split()
        aligned = align_words(asr_words, clean_words)
    words: list[str] = []
    times: list[float] = []
    for joined, time in zip(aligned, asr_times):
        for word in joined.split():
            words.append(word)
            times.append(time)
    if not words:
        raise SkipSample("empty_transcript", f"{source}: no words after alignment")
    info = data.get("info")
    duration = info.get("duration") if isinstance(info, dict) else None
    return TimedWords(words, np.array(times), None, float(duration) if _is_number(duration) else None, encoding)


def parse_howto(entry: dict, source: str = "<howto entry>") -> TimedWords:
    """A HowTo100M caption entry: parallel lists ``start``, ``end`` (seconds) and ``text``; each caption's
    words are spread evenly over ``[start, end)``."""
    starts, stops, texts = (entry.get(k) if isinstance(entry, dict) else None for k in ("start", "end", "text"))
    if not all(isinstance(v, list) for v in (starts, stops, texts)) or not len(starts) == len(stops) == len(texts):
        raise SkipSample("bad_subtitle", f"{source}: expected parallel lists 'start', 'end', 'text'")
    words: list[str] = []
    times: list[float] = []
    ends: list[float] = []
    for n, (t0, t1, text) in enumerate(zip(starts, stops, texts)):
        if not (_is_number(t0) and _is_number(t1) and isinstance(text, str)):
            raise SkipSample("bad_subtitle", f"{source}: caption {n} is not (seconds, seconds, text)")
        caption = _plain_words(text)
        caption = [caption[i] for i in _drop_bracketed(caption)]
        a, b = _spread(caption, float(t0), float(t1))
        words += caption
        times += a
        ends += b
    if not words:
        raise SkipSample("empty_transcript", f"{source}: no words")
    return TimedWords(words, np.array(times), np.array(ends))


def load_subtitles(path: str | Path) -> TimedWords:
    """Parse a transcript file by its extension: ``.vtt``, ``.srt`` or ``.json`` (a MERLOT annotation
    when it has ``subtitles``, a HowTo100M entry when it has ``start``/``end``/``text``)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".vtt":
        return parse_vtt(path)
    if suffix == ".srt":
        return parse_srt(path)
    if suffix == ".json":
        data, source, encoding = _json_source(path, None)
        if isinstance(data, dict) and "subtitles" in data:
            words = parse_merlot(data, source)
        elif isinstance(data, dict) and {"start", "end", "text"} <= data.keys():
            words = parse_howto(data, source)
        else:
            raise SkipSample("bad_subtitle", f"{source}: JSON is neither a MERLOT annotation nor a HowTo100M entry")
        words.encoding = encoding
        return words
    raise SkipSample("unsupported_format", f"{path}: unknown transcript extension {suffix!r} (expected .vtt, .srt, .json)")


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------
# Byte-order marks and their codecs. UTF-32 first: the UTF-32-LE mark FF FE 00 00 starts with the
# UTF-16-LE one FF FE.
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))

# The legacy code pages charset-normalizer may pick from, commonest in subtitle collections first (the
# order breaks exact ties). ISO-8859-1 files come out as cp1252, its superset on printable characters.
# Left out on purpose: DOS, Mac, EBCDIC and the rarer ISO pages decode almost any short byte string
# with little mess and won ties against the right page in our measurements; cp1258 (Vietnamese,
# combining accents) did the same for Italian.
LEGACY_ENCODINGS = ("cp1252", "cp1250", "cp1251", "cp1253", "cp1254", "cp1255", "cp1256", "cp1257", "iso8859_2",
                    "koi8_r", "cp874", "gb18030", "big5", "cp932", "euc_jp", "cp949")

# Confidence bound on charset-normalizer's mess ratio (0: clean text, 1: noise), its own default cut-off.
# Measured on 1- to 1500-cue SRTs in 19 languages in their legacy code pages: the right decoding had at
# most 0.105 (two French cues; at most 0.04 from four cues on), while random bytes of 64 B and more never
# came under it in any listed page.
MAX_MESS = 0.2
_EVIDENCE_BYTES = 16384  # enough lines to tell pages apart; the mess ratio costs time linear in it

# Accented letters of the Latin-script languages the pages above serve. charset-normalizer ranks cp1257
# over cp1252 for French ("trčs" is as clean to it as "très") and cannot tell Czech in cp1250 from the
# same bytes read as cp1252 (both mess-free); the decoding whose accented letters one language has wins.
# No Icelandic: its ð ý þ are the bytes of Turkish ğ ı ş (cp1252 vs cp1254), and Turkish files are the
# far commoner ones.
_LATIN_ALPHABETS = tuple(frozenset(a) for a in (
    "àâæçéèêëîïôœùûüÿ",  # French
    "äöüß", "áéíñóúü", "àáâãçéêíóôõú", "àèéìíîòóùú", "àçèéíïòóúü", "áéëíïóöúü",  # de es pt it ca nl
    "åäöé", "åäöšž", "åæøé",  # sv fi da/no
    "ąćęłńóśźż", "áčďéěíňóřšťúůýž", "áäčďéíĺľňóôŕšťúýž", "áéíóöőúüű", "ăâîşţșț", "čćđšž",  # pl cs sk hu ro hr/sl/bs
    "âçğıîöşûü", "ąčęėįšųūž", "āčēģīķļņšūž", "äõöüšž", "çë",  # tr lt lv et sq
))
MIN_LATIN_FIT = 0.8  # share of accented letters in one alphabet: names and loanwords leave some out


def decode_transcript(data: bytes, source: str = "<bytes>") -> tuple[str, str]:
    """The text of a transcript file's bytes and the encoding it was read in.

    A byte-order mark decides (``utf-32-le``, ``utf-32-be``, ``utf-8-sig``, ``utf-16-le``,
    ``utf-16-be``); else valid UTF-8 is ``utf-8``; else the legacy code page (one of
    :data:`LEGACY_ENCODINGS`, e.g. ``cp1252``) of :func:`detect_legacy_encoding`. Raises SkipSample
    ``undecodable_transcript`` (the detail names ``source``) when a BOM is followed by bytes its codec
    rejects or when no code page decodes the bytes confidently; never decodes with replacement characters.
    """
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom):].decode("utf-8" if codec == "utf-8-sig" else codec), codec
            except UnicodeDecodeError as err:
                raise SkipSample("undecodable_transcript", f"{source}: byte {err.start + len(bom)} is not "
                                 f"{codec.upper()} although the file starts with that byte-order mark") from None
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as err:
        first_bad = err.start
    encoding = detect_legacy_encoding(data)
    if encoding is not None:
        try:
            return data.decode(encoding), encoding
        except UnicodeDecodeError as err:  # a byte past the lines the detection read
            raise SkipSample("undecodable_transcript", f"{source}: byte {err.start} is not {encoding} (detected "
                             f"from the file's first {_EVIDENCE_BYTES} B of non-ASCII lines)") from None
    raise SkipSample("undecodable_transcript", f"{source}: byte {first_bad} is not UTF-8 and no legacy code page "
                     f"decodes the file with a mess ratio <= {MAX_MESS} (binary or mixed encodings?)")


def detect_legacy_encoding(data: bytes) -> Optional[str]:
    """The legacy code page of non-UTF-8 bytes without a BOM, or None when none is confident.

    charset-normalizer (restricted to :data:`LEGACY_ENCODINGS`) proposes the pages that decode the
    bytes strictly with a mess ratio <= :data:`MAX_MESS`. Among them the page whose accented Latin
    letters best fit one language (share >= :data:`MIN_LATIN_FIT`; ties: less mess, then the order of
    :data:`LEGACY_ENCODINGS`) wins; with none such (Cyrillic, Greek, CJK...), charset-normalizer's best.
    """
    from charset_normalizer import from_bytes

    # Only lines with a byte >= 0x80 tell pages apart. Cue numbers and timing lines would only add
    # symbols to the mess ratio, and it is measured on one chunk: charset-normalizer's default chunks
    # start mid-word and pushed right decodings of long files to 0.19.
    evidence = b"\n".join(line for line in data.splitlines() if max(line, default=0) >= 0x80)
    if len(evidence) > _EVIDENCE_BYTES:
        cut = evidence.rfind(b"\n", 0, _EVIDENCE_BYTES)
        evidence = evidence[:cut] if cut > 0 else evidence
    if not evidence:
        return None
    plausible = []
    for encoding in LEGACY_ENCODINGS:  # one page at a time: a joint call prunes pages it deems similar
        match = from_bytes(evidence, steps=1, chunk_size=len(evidence), threshold=MAX_MESS, cp_isolation=[encoding],
                           enable_fallback=False).best()
        if match is not None and match.encoding == encoding and match.chaos <= MAX_MESS:
            plausible.append(match)
    if not plausible:
        return None
    ranked = []
    for match in plausible:
        fit = _latin_fit(str(match))
        if fit >= MIN_LATIN_FIT:
            ranked.append((fit, -match.chaos, -LEGACY_ENCODINGS.index(match.encoding), match.encoding))
    return max(ranked)[-1] if ranked else min(plausible).encoding  # min: charset-normalizer's order


def _latin_fit(text: str) -> float:
    """Share of the non-ASCII letters and combining marks of ``text`` (by occurrence) that the best-fitting
    alphabet of :data:`_LATIN_ALPHABETS` holds; 1.0 when there is none (only ``’``, ``€``, ``…``...)."""
    letters = collections.Counter(c.lower() for c in text if ord(c) > 127 and unicodedata.category(c)[0] in "LM")
    total = sum(letters.values())
    if not total:
        return 1.0
    return max(sum(n for c, n in letters.items() if c in alphabet) for alphabet in _LATIN_ALPHABETS) / total


def _read_text(path: str | Path) -> tuple[str, str]:
    """The decoded text of a transcript file and its encoding (:func:`decode_transcript`)."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise SkipSample("unreadable", f"{path}: {err.strerror or err}") from None
    return decode_transcript(data, str(path))


def _json_source(path_or_dict: Any, source: Optional[str]) -> tuple[Any, str, Optional[str]]:
    """(parsed JSON, source name, encoding of the file; None for a dict)."""
    if isinstance(path_or_dict, dict):
        return path_or_dict, source or "<dict>", None
    text, encoding = _read_text(path_or_dict)
    try:
        return json.loads(text), source or str(path_or_dict), encoding
    except json.JSONDecodeError as err:
        raise SkipSample("bad_subtitle", f"{path_or_dict}: invalid JSON (line {err.lineno}: {err.msg})") from None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
