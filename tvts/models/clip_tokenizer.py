"""CLIP's byte-level BPE tokenizer (OpenAI CLIP, also used by OpenCLIP), written for this project.

Ids match ``clip.tokenize(texts, truncate=True)`` and OpenCLIP's ``tokenize``: text is cleaned (ftfy, HTML
unescaped twice, whitespace collapsed, lowercased), split with CLIP's regex, each piece mapped byte by
byte to printable unicode and merged with the 48,894 BPE merges of ``assets/bpe_simple_vocab_16e6.txt.gz``
(OpenAI's MIT-licensed file, see ``assets/LICENSE-clip-bpe.txt``). A row is
``[SOT] + ids + [EOT]`` zero-padded to the context length; a longer text is cut and its last kept token
replaced by EOT, so the text tower always finds EOT.

One deliberate difference: the literal strings ``<|startoftext|>`` / ``<|endoftext|>`` inside a text are
tokenised as ordinary text instead of becoming SOT / EOT. An EOT inside a transcript would move the
tower's EOT read-out (``argmax`` of the ids) to the wrong position; OpenAI and OpenCLIP disagree on these
strings anyway (OpenCLIP spells them ``<start_of_text>`` / ``<end_of_text>``).

The vocabulary loads lazily and is not pickled, so the tokenizer is cheap to send to DataLoader workers.
"""
from __future__ import annotations

import gzip
import html
from pathlib import Path
from typing import Optional, Sequence

import ftfy
import regex
import torch

VOCAB_FILE = Path(__file__).resolve().parent / "assets" / "bpe_simple_vocab_16e6.txt.gz"
NUM_MERGES = 49152 - 256 - 2  # CLIP reads merge lines 1 .. 48894 of the file (line 0 is a header)
SOT = 49406  # <|startoftext|>
EOT = 49407  # <|endoftext|>, the largest id: the text tower finds it with argmax
VOCAB_SIZE = 49408
CONTEXT_LENGTH = 77

# CLIP's pre-tokenisation: English contractions, runs of letters, single digits, runs of other
# non-space symbols. Texts are lowercased first, so IGNORECASE only matters for the contractions.
_PIECES = regex.compile(r"'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+", regex.IGNORECASE)
_WORD_CACHE_MAX = 200_000  # per-word BPE results kept before the cache is emptied (bounds worker memory)


def byte_units() -> dict[int, str]:
    """Byte value -> one printable unicode character (GPT-2 / CLIP table).

    The 188 printable Latin-1 bytes map to themselves; the 68 others (controls, space, soft hyphen...)
    map to code points 256, 257, ... in byte order. The dict's insertion order is the vocabulary order
    of the first 256 ids.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def clean(text: str) -> str:
    """ftfy repair, HTML unescape (twice, for double-escaped scrapes), collapse whitespace, lowercase."""
    text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return " ".join(text.split()).lower()


class CLIPTokenizer:
    """``encode(text) -> list[int]``; ``tokenizer(texts, context_length) -> LongTensor (N, context_length)``."""

    def __init__(self, vocab_file: str | Path = VOCAB_FILE):
        self.vocab_file = str(vocab_file)
        self._ids: Optional[dict[str, int]] = None  # BPE unit -> id
        self._ranks: Optional[dict[tuple[str, str], int]] = None  # merge pair -> priority (lower first)
        self._units: dict[int, str] = byte_units()
        self._word_cache: dict[str, list[int]] = {}

    # -- pickling: ship only the file name to worker processes -----------------------------------
    def __getstate__(self) -> dict:
        return {"vocab_file": self.vocab_file}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["vocab_file"])

    def _load(self) -> None:
        lines = gzip.open(self.vocab_file, "rt", encoding="utf-8").read().split("\n")
        merges = [tuple(line.split()) for line in lines[1:NUM_MERGES + 1]]
        units = list(self._units.values())
        vocab = units + [u + "</w>" for u in units] + ["".join(m) for m in merges]
        vocab += ["<|startoftext|>", "<|endoftext|>"]
        if len(vocab) != VOCAB_SIZE:
            raise ValueError(f"{self.vocab_file}: expected {VOCAB_SIZE} vocabulary entries, built {len(vocab)}")
        self._ids = {unit: i for i, unit in enumerate(vocab)}
        self._ranks = {pair: i for i, pair in enumerate(merges)}

    @property
    def vocab(self) -> dict[str, int]:
        if self._ids is None:
            self._load()
        return self._ids

    def _bpe(self, piece: str) -> list[int]:
        """Ids of one pre-tokenised piece (already mapped to byte units). The last unit ends the word."""
        ids = self._word_cache.get(piece)
        if ids is not None:
            return ids
        ranks = self._ranks
        symbols = list(piece[:-1]) + [piece[-1] + "</w>"]
        while len(symbols) > 1:
            best, best_rank = None, None
            for pair in zip(symbols, symbols[1:]):
                rank = ranks.get(pair)
                if rank is not None and (best_rank is None or rank < best_rank):
                    best, best_rank = pair, rank
            if best is None:
                break
            merged, i = [], 0
            while i < len(symbols):  # merge every occurrence of the best pair, left to right
                if i + 1 < len(symbols) and symbols[i] == best[0] and symbols[i + 1] == best[1]:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        ids = [self._ids[s] for s in symbols]
        if len(self._word_cache) >= _WORD_CACHE_MAX:
            self._word_cache.clear()
        self._word_cache[piece] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """BPE ids of one text, without SOT / EOT."""
        if self._ids is None:
            self._load()
        out: list[int] = []
        for piece in _PIECES.findall(clean(text)):
            out.extend(self._bpe("".join(self._units[b] for b in piece.encode("utf-8"))))
        return out

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ids (special tokens spelled out); for inspection only, cleaning is not undone."""
        inverse = {i: u for u, i in self.vocab.items()}
        to_byte = {u: b for b, u in self._units.items()}
        out = bytearray()
        for i in map(int, ids):
            unit = inverse[i]
            if i in (SOT, EOT):
                out += unit.encode() + b" "
                continue
            word_end = unit.endswith("</w>")
            out += bytes(to_byte[c] for c in (unit[:-4] if word_end else unit))
            if word_end:
                out += b" "
        return out.decode("utf-8", errors="replace").strip()

    def batch(self, texts: Sequence[str], context_length: int = CONTEXT_LENGTH) -> dict[str, torch.Tensor]:
        """``input_ids`` and ``attention_mask``, both (N, context_length) int64.

        The mask marks SOT .. EOT. It is built from lengths, not from ``ids != 0``: id 0 is the unit "!".
        """
        if context_length < 2:
            raise ValueError(f"context_length {context_length}: needs room for SOT and EOT")
        ids = torch.zeros(len(texts), context_length, dtype=torch.long)
        mask = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            tokens = [SOT] + self.encode(text)[:context_length - 2] + [EOT]
            ids[row, :len(tokens)] = torch.tensor(tokens)
            mask[row, :len(tokens)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def __call__(self, texts: str | Sequence[str], context_length: int = CONTEXT_LENGTH) -> torch.Tensor:
        """(N, context_length) int64 ids, as ``clip.tokenize(texts, context_length, truncate=True)``."""
        if isinstance(texts, str):
            texts = [texts]
        return self.batch(texts, context_length)["input_ids"]


__all__ = ["CLIPTokenizer", "SOT", "EOT", "VOCAB_SIZE", "CONTEXT_LENGTH", "byte_units", "clean"]
