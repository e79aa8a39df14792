"""DTW alignment of denoised words to ASR words, against hand-built cases and a plain reference DTW."""
import random
import string
import time

import numpy as np
import pytest

from tvts.data.align import align_words, levenshtein_matrix, normalise_word


def reference_levenshtein(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[:], i
        for j, cb in enumerate(b, 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (ca != cb))
    return row[-1]


def reference_align(asr, clean):
    """Full-matrix DTW with the tslearn backtrack (diagonal, then up, then left on ties) and the
    official first-mapped collection; valid when the band covers every cell (short lists)."""
    n, m = len(asr), len(clean)
    cost = np.array([[reference_levenshtein(normalise_word(a), normalise_word(c)) for c in clean] for a in asr], float)
    acc = np.full((n, m), np.inf)
    for i in range(n):
        for j in range(m):
            best = 0.0 if i == j == 0 else min(
                acc[i - 1, j - 1] if i and j else np.inf, acc[i - 1, j] if i else np.inf, acc[i, j - 1] if j else np.inf
            )
            acc[i, j] = cost[i, j] + best
    path = [(n - 1, m - 1)]
    while path[-1] != (0, 0):
        i, j = path[-1]
        if i == 0:
            path.append((0, j - 1))
        elif j == 0:
            path.append((i - 1, 0))
        else:
            k = int(np.argmin([acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]]))
            path.append([(i - 1, j - 1), (i - 1, j), (i, j - 1)][k])
    out, used = [[] for _ in asr], set()
    for i, j in reversed(path):
        if j not in used:
            used.add(j)
            out[i].append(clean[j])
    return [" ".join(words) for words in out]


def test_levenshtein_matrix_matches_reference():
    rng = random.Random(0)
    words = ["", "a", "ab", "ba", "kitten", "sitting", "x" * 64, "y" * 70]
    words += ["".join(rng.choice("abcde") for _ in range(rng.randint(0, 14))) for _ in range(40)]
    dist = levenshtein_matrix(words, words[::-1])
    expected = [[reference_levenshtein(a[:64], b) for b in words[::-1]] for a in words]
    np.testing.assert_array_equal(dist, expected)
    assert dist[words.index("kitten"), words[::-1].index("sitting")] == 3


def test_insertion_goes_to_one_asr_word():
    assert align_words(["elephants", "cannot", "jump"], ["Elephants", "can", "not", "jump."]) == ["Elephants", "can not", "jump."]


def test_deleted_asr_word_gets_nothing():
    assert align_words(["the", "the", "elephant", "sleeps"], ["The", "elephant", "sleeps."]) == ["The", "", "elephant", "sleeps."]


def test_mixed_insertions_deletions_and_substitutions():
    asr = "so uh so today were makin a cake because elephants cannot really really bake".split()
    clean = "So, today we're making a cake, because elephants can not really bake!".split()
    assert align_words(asr, clean) == [
        "So,", "", "", "today", "we're", "making", "a", "cake,", "because", "elephants", "can not", "really", "", "bake!",
    ]


def test_split_word_can_go_to_a_short_neighbour():
    # Official behaviour, kept: "cake," is nearer (edit distance 4) to the next ASR word "and" than to
    # "chocolatecake" (9), so DTW hands it to "and".
    asr = ["a", "chocolatecake", "and", "tea"]
    assert align_words(asr, ["a", "chocolate", "cake,", "and", "tea"]) == ["a", "chocolate", "cake, and", "tea"]


@pytest.mark.parametrize("seed", range(12))
def test_matches_full_matrix_dtw_on_short_lists(seed):
    rng = random.Random(seed)
    vocab = ["".join(rng.choice("abcdef") for _ in range(rng.randint(1, 6))) for _ in range(12)]
    asr = [rng.choice(vocab) for _ in range(rng.randint(1, 25))]
    clean = [w.upper() + rng.choice(["", ",", "."]) for w in asr if rng.random() > 0.2]
    clean += [rng.choice(vocab) for _ in range(rng.randint(0, 4))]
    if seed % 4 == 0:
        rng.shuffle(clean)  # some cases far from the diagonal
    assert len(clean) <= 32  # within the 32-word band, the banded DTW is the full DTW
    assert align_words(asr, clean) == reference_align(asr, clean)


def test_clean_words_truncated_to_asr_length_plus_radius():
    asr = ["one", "two", "three"]
    clean = ["One", "two", "three"] + [f"extra{i}" for i in range(40)]
    out = align_words(asr, clean)  # radius = max(0.1 * 3, 32) = 32: clean keeps 3 + 32 words
    assert out[:2] == ["One", "two"]
    assert out[2].split() == ["three"] + [f"extra{i}" for i in range(32)]


def test_empty_inputs():
    assert align_words([], ["a"]) == []
    assert align_words(["a", "b"], []) == ["", ""]
    assert align_words(["...", "b"], ["b"]) == ["b", ""]  # punctuation-only ASR word normalises to ""


def test_long_video_aligns_fast_and_correctly():
    rng = random.Random(1)
    vocab = ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(1, 9))) for _ in range(900)]
    asr = [rng.choice(vocab) for _ in range(3000)]
    clean, owner = [], []  # owner: the ASR index each clean word should go to
    for i, word in enumerate(asr):
        if i % 50 == 7:
            continue  # dropped by the denoiser
        clean.append(word.capitalize() + ("." if i % 9 == 0 else ""))
        owner.append(i)
    start = time.perf_counter()
    out = align_words(asr, clean)
    elapsed = time.perf_counter() - start
    got = {}
    for i, joined in enumerate(out):
        for word in joined.split():
            got.setdefault(word, []).append(i)
    hits = sum(1 for i, word in zip(owner, clean) if i in got.get(word, []))
    assert hits >= 0.97 * len(clean)
    assert sum(len(joined.split()) for joined in out) == len(clean)  # every clean word placed once
    assert elapsed < 2.5, f"3000-word alignment took {elapsed:.2f} s"  # ~0.3 s on one shared CPU core
