"""Frame selection: equal bins over the span, one time per bin, exact time -> frame mapping."""
from fractions import Fraction

import numpy as np
import pytest

from tvts.data.sampling import cfr_frame_starts, frame_indices, frame_times


def test_eval_takes_bin_middles():
    assert np.allclose(frame_times(1.0, 3.0, 4, train=False), [1.25, 1.75, 2.25, 2.75])


def test_train_draws_one_time_per_bin_in_order():
    start, end, n = 2.0, 21.0, 16  # a 4 x 4 s + 3 x 1 s span, gaps included in the bins
    edges = np.linspace(start, end, n + 1)
    for seed in range(20):
        times = frame_times(start, end, n, train=True, rng=np.random.default_rng(seed))
        assert times.shape == (n,) and times.dtype == np.float64
        assert np.all(times >= edges[:-1]) and np.all(times < edges[1:])
        assert np.all(np.diff(times) > 0)


def test_train_is_seeded_and_uniform_within_bins():
    a = frame_times(0.0, 8.0, 8, True, np.random.default_rng(3))
    assert np.array_equal(a, frame_times(0.0, 8.0, 8, True, np.random.default_rng(3)))
    assert not np.array_equal(a, frame_times(0.0, 8.0, 8, True, np.random.default_rng(4)))
    rng = np.random.default_rng(0)
    offsets = np.concatenate([frame_times(0.0, 8.0, 8, True, rng) - np.arange(8) for _ in range(500)])
    assert abs(offsets.mean() - 0.5) < 0.03 and offsets.min() < 0.01 and offsets.max() > 0.99


def test_bad_arguments():
    with pytest.raises(ValueError, match="Generator"):
        frame_times(0.0, 1.0, 4, train=True)
    with pytest.raises(ValueError, match="empty span"):
        frame_times(2.0, 2.0, 4, train=False)
    with pytest.raises(ValueError, match="at least 1"):
        frame_times(0.0, 1.0, 0, train=False)


def test_cfr_starts_are_the_exact_rationals():
    starts = cfr_frame_starts(30, 100)
    assert all(starts[k] == k / 30 for k in range(100))
    ntsc = cfr_frame_starts(Fraction(30000, 1001), 50)
    assert all(ntsc[k] == float(Fraction(k * 1001, 30000)) for k in range(50))


def test_frame_at_time_is_the_one_whose_interval_contains_it():
    starts = cfr_frame_starts(30, 90)
    ks = np.arange(1, 90)
    at = ks / 30  # exactly on a boundary: the frame that starts there
    just_before = np.nextafter(at, -np.inf)
    assert np.array_equal(frame_indices(at, starts), ks)
    assert np.array_equal(frame_indices(just_before, starts), ks - 1)
    assert np.array_equal(frame_indices(at + 0.5 / 30, starts), ks)
    # clamped at both ends (checking past-the-end is the decoder's job)
    assert frame_indices([-1.0, 0.0, 100.0], starts).tolist() == [0, 0, 89]


def test_irregular_timestamps():
    starts = np.array([0.0, 0.033, 0.067, 0.1])  # a 1 ms time base (webm)
    # 2/30 = 0.0667 is still inside frame 1's interval [0.033, 0.067)
    assert frame_indices([0.0329, 0.033, 2 / 30, 0.067, 0.5], starts).tolist() == [0, 1, 1, 2, 3]
