"""CLIP BPE tokenizer: ids pinned from OpenCLIP 3.3.0's SimpleTokenizer (identical to OpenAI's clip.tokenize)."""
import pickle

import pytest
import torch

from tvts.models.clip_tokenizer import EOT, SOT, VOCAB_SIZE, CLIPTokenizer, byte_units, clean


@pytest.fixture(scope="module")
def tok():
    return CLIPTokenizer()


@pytest.mark.parametrize("text, ids", [
    ("a photo of a cat", [320, 1125, 539, 320, 2368]),
    ("Hello, World!!", [3306, 267, 1002, 748]),
    ("the 1234 dogs're running...", [518, 272, 273, 274, 275, 3255, 982, 2761, 678]),  # digits split one by one
    ("café naïve 日本語 😀", [15304, 1097, 35689, 563, 39121, 44353, 34002, 508, 7334]),
    ("&amp;lt;b&amp;gt; tag", [283, 321, 285, 3640]),  # unescaped twice -> "<b> tag"
    ("I'LL be there, won't you?", [328, 1342, 655, 997, 267, 1749, 713, 592, 286]),
    ("so um yeah we're gonna uh cut the onions now okay", [706, 1008, 3908, 649, 982, 2562, 9219, 3032, 518, 15255, 692, 4917]),
    ("!$", [0, 259]),  # id 0 is a real token ("!" inside a word)
    ("", []),
])
def test_known_ids(tok, text, ids):
    assert tok.encode(text) == ids


def test_row_layout_and_padding(tok):
    out = tok(["a photo of a cat", "!$"], context_length=10)
    assert out.dtype == torch.long and out.shape == (2, 10)
    assert out[0].tolist() == [SOT, 320, 1125, 539, 320, 2368, EOT, 0, 0, 0]
    assert out[1].tolist() == [SOT, 0, 259, EOT, 0, 0, 0, 0, 0, 0]
    batch = tok.batch(["a photo of a cat", "!$"], context_length=10)
    # the mask comes from lengths, so the "!" token (id 0) is not mistaken for padding
    assert batch["attention_mask"].tolist() == [[1] * 7 + [0] * 3, [1] * 4 + [0] * 6]
    assert torch.equal(batch["input_ids"], out)


def test_truncation_keeps_eot_last(tok):
    long_text = " ".join(["cat"] * 200)
    out = tok([long_text])
    assert out.shape == (1, 77)
    assert out[0, 0] == SOT and out[0, 76] == EOT
    assert (out[0, 1:76] == 2368).all()  # "cat</w>"
    short = tok(["cat " * 75])  # exactly 77 tokens: nothing cut
    assert short[0, 76] == EOT and short[0, 75] == 2368


def test_cleaning(tok):
    assert clean("  A   PHOTO of\n a\tCAT ") == "a photo of a cat"
    assert tok.encode("  A   PHOTO of\n a\tCAT ") == tok.encode("a photo of a cat")
    assert tok.encode("&quot;Hi&quot;") == tok.encode('"hi"')


def test_special_strings_are_plain_text(tok):
    """A literal "<|endoftext|>" in a transcript must not create a second EOT (argmax read-out)."""
    ids = tok.encode("<|endoftext|> inside")
    assert EOT not in ids and SOT not in ids and len(ids) > 2


def test_vocab_and_byte_table(tok):
    assert len(tok.vocab) == VOCAB_SIZE
    assert tok.vocab["<|startoftext|>"] == SOT and tok.vocab["<|endoftext|>"] == EOT
    units = byte_units()
    assert len(set(units.values())) == 256 and units[ord("a")] == "a" and units[ord(" ")] == chr(288)
    assert tok.decode(tok("a photo of a cat")[0, :7].tolist()) == "<|startoftext|> a photo of a cat <|endoftext|>"


def test_pickles_without_tables(tok):
    tok.encode("warm the caches")
    blob = pickle.dumps(tok)
    assert len(blob) < 1000  # only the vocab file name travels to DataLoader workers
    assert pickle.loads(blob).encode("a photo of a cat") == [320, 1125, 539, 320, 2368]
