"""fastlstm.data: padding + lengths, batching, sliding windows, splits, scalers, encoders.

Each function against a plain-loop reference on awkward cases (N = 1, zero lengths, stride > 1,
multivariate targets), the memory claims (windows are read-only views), round trips
(scalers, encoders, state through np.savez), and every bad-input message.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest

import fastlstm
from backends_under_test import ALL_BACKENDS, load_backend
from fastlstm import data
from fastlstm.data import (LabelEncoder, MinMaxScaler, NotFittedError, StandardScaler, bucket_batches,
                           one_hot, pad_sequences, padding_fraction, random_split, sliding_windows,
                           time_split, unpad)


def _npz_round_trip(state: dict, allow_pickle=False) -> dict:
    buf = io.BytesIO()
    np.savez(buf, **state)
    buf.seek(0)
    with np.load(buf, allow_pickle=allow_pickle) as f:
        return {k: f[k] for k in f.files}


# ---------------------------------------------------------------- pad_sequences / unpad

def test_pad_tokens_post_1d():
    x, lengths = pad_sequences([[1, 2, 3], [4], [], [5, 6]])
    assert x.dtype == np.int64 and lengths.dtype == np.int64
    np.testing.assert_array_equal(x, [[1, 2, 3], [4, 0, 0], [0, 0, 0], [5, 6, 0]])
    np.testing.assert_array_equal(lengths, [3, 1, 0, 2])
    assert x.flags.c_contiguous


def test_pad_features_float64_to_float32_and_explicit_dtype(rng):
    seqs = [rng.standard_normal((T, 3)) for T in (5, 1, 0, 3)]
    x, lengths = pad_sequences(seqs)
    assert x.shape == (4, 5, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(lengths, [5, 1, 0, 3])
    for n, s in enumerate(seqs):
        np.testing.assert_array_equal(x[n, :len(s)], s.astype(np.float32))
        assert not x[n, len(s):].any()
    x64, _ = pad_sequences(seqs, dtype=np.float64)
    assert x64.dtype == np.float64
    np.testing.assert_array_equal(x64[0], seqs[0])
    # ints cast to float on request; bools count as integers
    xi, _ = pad_sequences([np.array([1, 2]), np.array([3])], dtype=np.float32)
    assert xi.dtype == np.float32 and xi.tolist() == [[1, 2], [3, 0]]
    xb, _ = pad_sequences([np.array([True, False])])
    assert xb.dtype == np.int64


def test_pad_mixed_int_float_is_float32_and_empty_only_is_float32():
    x, _ = pad_sequences([np.array([1, 2]), np.array([0.5])])
    assert x.dtype == np.float32 and x.tolist() == [[1, 2], [0.5, 0]]
    x, lengths = pad_sequences([[], []])
    assert x.shape == (2, 0) and x.dtype == np.float32 and lengths.tolist() == [0, 0]
    # [] (float64 to NumPy) does not decide the dtype of a token batch
    x, _ = pad_sequences([[], [7, 8]])
    assert x.dtype == np.int64


def test_pad_empty_1d_among_2d_and_n1():
    x, lengths = pad_sequences([np.ones((2, 4)), [], np.zeros((0, 4))])
    assert x.shape == (3, 2, 4) and lengths.tolist() == [2, 0, 0]
    x, lengths = pad_sequences([np.arange(3.0)])
    assert x.shape == (1, 3) and lengths.tolist() == [3]


def test_pad_pre_and_unpad_pre():
    seqs = [np.array([1, 2, 3]), np.array([4]), np.array([], np.int64)]
    x, lengths = pad_sequences(seqs, padding="pre", value=-1)
    np.testing.assert_array_equal(x, [[1, 2, 3], [-1, -1, 4], [-1, -1, -1]])
    np.testing.assert_array_equal(lengths, [3, 1, 0])  # still counts real steps
    back = unpad(x, lengths, padding="pre")
    for a, b in zip(seqs, back):
        np.testing.assert_array_equal(a, b)
    # the post-padded unpad of a pre-padded batch reads padding: pre lengths are not kernel lengths
    assert unpad(x, lengths)[1].tolist() == [-1]


@pytest.mark.parametrize("truncating,expect", [("post", [[1, 2], [5, 6], [7, 0]]),
                                               ("pre", [[3, 4], [5, 6], [7, 0]])])
def test_pad_truncating(truncating, expect):
    x, lengths = pad_sequences([[1, 2, 3, 4], [5, 6], [7]], maxlen=2, truncating=truncating)
    np.testing.assert_array_equal(x, expect)
    np.testing.assert_array_equal(lengths, [2, 2, 1])


def test_pad_truncating_pre_with_pre_padding_and_maxlen_bounds():
    x, lengths = pad_sequences([[1, 2, 3, 4], [5]], maxlen=3, padding="pre", truncating="pre")
    np.testing.assert_array_equal(x, [[2, 3, 4], [0, 0, 5]])
    np.testing.assert_array_equal(lengths, [3, 1])
    x, lengths = pad_sequences([[1, 2]], maxlen=5)
    assert x.tolist() == [[1, 2, 0, 0, 0]] and lengths.tolist() == [2]
    x, lengths = pad_sequences([[1, 2], [3]], maxlen=0)
    assert x.shape == (2, 0) and lengths.tolist() == [0, 0]


def test_pad_fill_value_nan_and_nan_data_is_kept():
    x, _ = pad_sequences([np.array([np.nan, 1.0]), np.array([2.0])], value=np.nan)
    assert np.isnan(x[0, 0]) and x[0, 1] == 1 and x[1, 0] == 2 and np.isnan(x[1, 1])


def test_pad_accepts_any_iterable_of_arrays():
    x, lengths = pad_sequences(np.array([1, 2, 3]) for _ in range(2))
    assert x.shape == (2, 3) and lengths.tolist() == [3, 3]
    x, lengths = pad_sequences(np.zeros((4, 6, 2)))  # a (N, T, F) array: N sequences (T, F)
    assert x.shape == (4, 6, 2) and lengths.tolist() == [6] * 4


@pytest.mark.parametrize("seqs,kwargs,exc,match", [
    ([], {}, ValueError, "seqs is empty"),
    (None, {}, TypeError, "seqs must be a list of arrays"),
    ("abc", {}, TypeError, "seqs must be a list of arrays"),
    (5, {}, TypeError, "seqs must be a list of arrays"),
    ([np.ones((3, 2)), np.ones((2, 3))], {}, ValueError, r"ragged feature dims: seqs\[0\].*seqs\[1\]"),
    ([np.ones(3), np.ones((2, 1))], {}, ValueError, r"ragged feature dims: seqs\[0\].*seqs\[1\]"),
    ([np.ones(3), np.ones((2, 2, 2))], {}, ValueError, r"seqs\[1\] must be 1-D \(T,\) or 2-D"),
    ([5], {}, ValueError, r"seqs\[0\] must be 1-D"),
    ([[1], [[1, 2], [3]]], {}, ValueError, r"seqs\[1\] is not a rectangular"),
    ([[1], ["a"]], {}, TypeError, r"seqs\[1\] must be numeric"),
    ([[1]], {"maxlen": -1}, ValueError, "maxlen must be >= 0"),
    ([[1]], {"maxlen": 2.0}, TypeError, "maxlen must be an integer"),
    ([[1]], {"padding": "mid"}, ValueError, "padding must be 'post' or 'pre'"),
    ([[1]], {"truncating": "end"}, ValueError, "truncating must be 'post' or 'pre'"),
    ([[1], [0.5]], {"dtype": np.int64}, TypeError, r"seqs\[1\] has dtype float64.*dtype=int64"),
    ([[1]], {"dtype": str}, TypeError, "dtype must be a numeric dtype"),
    ([[1]], {"value": np.nan}, ValueError, "value=nan cannot be stored in the integer dtype int64"),
    ([[1]], {"value": 0.5}, ValueError, "value=0.5 cannot be stored"),
    ([[1]], {"value": 300, "dtype": np.int8}, ValueError, "value=300 is out of range for dtype int8"),
    ([[1]], {"value": "x"}, TypeError, "value must be a real scalar"),
    ([[1.0]], {"value": [0]}, TypeError, "value must be a real scalar"),
])
def test_pad_bad_input(seqs, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        pad_sequences(seqs, **kwargs)


def test_unpad_round_trip_with_zero_lengths(rng):
    seqs = [rng.standard_normal((T, 2)).astype(np.float32) for T in (0, 4, 1, 0, 3)]
    x, lengths = pad_sequences(seqs)
    back = unpad(x, lengths)
    assert len(back) == len(seqs)
    for a, b in zip(seqs, back):
        assert b.shape == a.shape
        np.testing.assert_array_equal(a, b)
    assert not np.shares_memory(back[1], x)  # copies: editing x later leaves them alone


@pytest.mark.parametrize("x,lengths,exc,match", [
    (np.zeros((2, 3)), [1, 4], ValueError, r"lengths out of range: lengths\[1\] = 4 > T = 3"),
    (np.zeros((2, 3)), [1, -1], ValueError, r"lengths out of range: lengths\[1\] = -1 < 0"),
    (np.zeros((2, 3)), [1, 2, 3], ValueError, r"lengths must have shape \(N,\) = \(2,\)"),
    (np.zeros((2, 3)), [1.0, 2.0], TypeError, "lengths must be integers"),
    (np.zeros((2, 3)), [[1, 2]], ValueError, r"lengths must be 1-D"),
    (np.zeros(3), [1], ValueError, "x must be a padded batch"),
])
def test_unpad_bad_input(x, lengths, exc, match):
    with pytest.raises(exc, match=match):
        unpad(x, lengths)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_post_padded_batch_with_lengths_matches_per_sequence_lstm(rng, backend):
    """The point of the lengths: a post-padded batch run with its lengths gives each sequence the
    same final state and outputs as running it alone; padded outputs are zero."""
    load_backend(backend)
    weights = fastlstm.LSTM(input_size=3, hidden_size=7, seed=0).weights()
    seqs = [rng.standard_normal((T, 3)) for T in (5, 1, 0, 3)]
    x, lengths = pad_sequences(seqs, value=np.nan)  # NaN padding: proves the padding is never read

    def run(xb, lengths=None):
        y, h_n, _, tape = fastlstm.lstm(xb, weights, lengths=lengths, batch_first=True, training=True,
                                        backend=backend)
        assert tape.backend_name == backend  # this backend really ran
        return y, h_n

    y, h_n = run(x, lengths)
    assert np.isfinite(y).all() and np.isfinite(h_n).all()
    for n, s in enumerate(seqs):
        if len(s) == 0:
            np.testing.assert_array_equal(h_n[0, n], 0)  # no step: the initial state
            continue
        y1, h1 = run(s[None].astype(np.float32))
        np.testing.assert_allclose(h_n[0, n], h1[0, 0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(y[n, :len(s)], y1[0], rtol=1e-5, atol=1e-6)
        assert not y[n, len(s):].any()


# ---------------------------------------------------------------- batches / bucketing

def test_batches_partition_and_order():
    got = list(data.batches(10, 4, shuffle=False))
    assert [b.tolist() for b in got] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    got = list(data.batches(10, 4, shuffle=True, seed=3))
    assert [len(b) for b in got] == [4, 4, 2]
    assert sorted(np.concatenate(got).tolist()) == list(range(10))
    again = list(data.batches(10, 4, shuffle=True, seed=3))
    assert all((a == b).all() for a, b in zip(got, again))
    assert list(data.batches(0, 4)) == []
    assert [b.tolist() for b in data.batches(1, 4)] == [[0]]


def test_batches_generator_seed_gives_new_order_each_epoch():
    g = np.random.default_rng(0)
    e1 = np.concatenate(list(data.batches(50, 8, seed=g)))
    e2 = np.concatenate(list(data.batches(50, 8, seed=g)))
    assert sorted(e1) == sorted(e2) and not (e1 == e2).all()


@pytest.mark.parametrize("args,exc,match", [
    ((10, 0), ValueError, "batch_size must be >= 1"),
    ((-1, 2), ValueError, "n must be >= 0"),
    ((10, 2.5), TypeError, "batch_size must be an integer"),
    ((10, True), TypeError, "batch_size must be an integer"),
])
def test_batches_bad_input_raises_at_call(args, exc, match):
    with pytest.raises(exc, match=match):
        data.batches(*args)  # eager: no next() needed


def test_bucket_batches_partition_sizes_and_determinism(rng):
    lengths = rng.integers(0, 100, 1003)
    out = bucket_batches(lengths, 32, seed=1, bucket_size_multiplier=10)
    flat = np.concatenate(out)
    assert flat.dtype == np.int64 and sorted(flat.tolist()) == list(range(1003))
    assert all(1 <= len(b) <= 32 for b in out)
    # short batches only at chunk ends: 1003 = 3 chunks of 320 + 43 -> 4 short batches at most
    assert sum(len(b) < 32 for b in out) <= 4
    again = bucket_batches(lengths, 32, seed=1, bucket_size_multiplier=10)
    assert all((a == b).all() for a, b in zip(out, again))
    other = bucket_batches(lengths, 32, seed=2, bucket_size_multiplier=10)
    assert not all(len(a) == len(b) and (a == b).all() for a, b in zip(out, other))


def test_bucketing_cuts_padding(rng):
    lengths = rng.integers(1, 101, 2000)
    plain = [b for b in data.batches(2000, 32, seed=0)]
    bucketed = bucket_batches(lengths, 32, seed=0)
    f_plain, f_bucket = padding_fraction(lengths, plain), padding_fraction(lengths, bucketed)
    assert f_plain > 0.3 and f_bucket < 0.05, (f_plain, f_bucket)
    # the batch order is shuffled: not monotone in length
    maxes = [lengths[b].max() for b in bucketed]
    assert maxes != sorted(maxes) and maxes != sorted(maxes, reverse=True)


def test_bucket_batches_no_shuffle_is_sorted_within_chunks(rng):
    lengths = rng.integers(0, 50, 100)
    out = bucket_batches(lengths, 8, shuffle=False, bucket_size_multiplier=1000)  # one chunk: global sort
    flat = np.concatenate(out)
    assert (np.diff(lengths[flat]) >= 0).all() and sorted(flat.tolist()) == list(range(100))
    out = bucket_batches(lengths, 8, shuffle=False, bucket_size_multiplier=2)  # chunks of 16, in order
    for c in range(0, 100, 16):
        chunk = np.concatenate(out[c // 8: c // 8 + 2])
        assert sorted(chunk.tolist()) == list(range(c, min(c + 16, 100)))
        assert (np.diff(lengths[chunk]) >= 0).all()


def test_bucket_batches_small_cases():
    assert [b.tolist() for b in bucket_batches([5], 4)] == [[0]]
    assert bucket_batches([], 4) == []
    out = bucket_batches([0, 0, 3, 0], 2, seed=0)
    assert sorted(np.concatenate(out).tolist()) == [0, 1, 2, 3]


@pytest.mark.parametrize("lengths,kwargs,exc,match", [
    ([1, -2], {}, ValueError, r"lengths out of range: lengths\[1\] = -2 < 0"),
    ([[1, 2]], {}, ValueError, "lengths must be 1-D"),
    ([1.5, 2.0], {}, TypeError, "lengths must be integers"),
    ([1, 2], {"batch_size": 0}, ValueError, "batch_size must be >= 1"),
    ([1, 2], {"bucket_size_multiplier": 0}, ValueError, "bucket_size_multiplier must be >= 1"),
])
def test_bucket_batches_bad_input(lengths, kwargs, exc, match):
    kwargs = {"batch_size": 2, **kwargs}
    with pytest.raises(exc, match=match):
        bucket_batches(lengths, **kwargs)


def test_padding_fraction_by_hand():
    lengths = np.array([1, 3, 2, 2])
    assert padding_fraction(lengths, [np.array([0, 1]), np.array([2, 3])]) == pytest.approx(1 - 8 / 10)
    assert padding_fraction(lengths) == pytest.approx(1 - 8 / 12)
    assert padding_fraction([0, 0], [np.array([0, 1])]) == 0.0
    assert padding_fraction([2, 2]) == 0.0
    with pytest.raises(ValueError, match=r"batches\[1\] holds an index out of range"):
        padding_fraction(lengths, [np.array([0]), np.array([4])])
    with pytest.raises(TypeError, match=r"batches\[0\] must be a 1-D integer index array"):
        padding_fraction(lengths, [np.array([0.0])])


# ---------------------------------------------------------------- sliding_windows

def _windows_ref(s2, n_in, n_out, stride, gap, cols):
    """The plain loop the views must equal."""
    X, Y, start = [], [], 0
    while start + n_in + gap + n_out <= len(s2):
        X.append(s2[start:start + n_in])
        Y.append(s2[start + n_in + gap:start + n_in + gap + n_out][:, cols])
        start += stride
    return np.array(X), np.array(Y).reshape(len(Y), n_out, len(cols))


@pytest.mark.parametrize("N,n_in,n_out,stride,gap", [
    (10, 3, 1, 1, 0), (10, 3, 2, 2, 0), (11, 4, 3, 3, 1), (7, 7, 0, 1, 0), (6, 2, 2, 5, 2),
    (5, 1, 1, 1, 0), (9, 1, 4, 2, 3)])
@pytest.mark.parametrize("target_cols,cols", [
    (None, [0, 1, 2, 3]), (1, [1]), (-1, [3]), ([0, 2], [0, 2]), ([3, 1], [3, 1]),
    ([0, 1, 3], [0, 1, 3]), (slice(1, 3), [1, 2]), (slice(None, None, -1), [3, 2, 1, 0])])
def test_sliding_windows_match_loop(N, n_in, n_out, stride, gap, target_cols, cols):
    s = np.arange(N * 4, dtype=np.float64).reshape(N, 4)
    X, Y = sliding_windows(s, n_in, n_out, stride=stride, target_cols=target_cols, gap=gap)
    M = (N - n_in - n_out - gap) // stride + 1
    Xr, Yr = _windows_ref(s, n_in, n_out, stride, gap, cols)
    assert X.shape == (M, n_in, 4) and Y.shape == (M, n_out, len(cols))
    np.testing.assert_array_equal(X, Xr)
    np.testing.assert_array_equal(Y, Yr)
    # views, not copies, and read-only
    assert np.shares_memory(X, s) and not X.flags.writeable and not Y.flags.writeable
    evenly_spaced = not isinstance(target_cols, list) or target_cols in ([0, 2], [3, 1])
    if n_out:
        assert np.shares_memory(Y, s) == evenly_spaced
    with pytest.raises(ValueError, match="read-only"):
        X[0, 0, 0] = 1.0


def test_sliding_windows_irregular_target_cols_copy_once():
    s = np.arange(40.0).reshape(10, 4)
    X, Y = sliding_windows(s, 3, 2, target_cols=[0, 1, 3])
    assert np.shares_memory(X, s) and not np.shares_memory(Y, s) and not Y.flags.writeable
    root = Y
    while root.base is not None:
        root = root.base
    assert root.size == (10 - 3) * 3  # one copy of the 3 target columns, not one per window
    np.testing.assert_array_equal(Y[2], s[5:7][:, [0, 1, 3]])


def test_sliding_windows_univariate_shapes_and_squeeze():
    s = np.arange(8.0)
    X, Y = sliding_windows(s, 3, 1)
    assert X.shape == (5, 3, 1) and Y.shape == (5, 1, 1)
    np.testing.assert_array_equal(Y[:, 0, 0], s[3:])
    np.testing.assert_array_equal(Y.squeeze(-1), s[3:, None])
    assert np.shares_memory(X, s) and np.shares_memory(Y, s)


def test_sliding_windows_exact_fit_and_n_out_zero():
    s = np.arange(6.0)
    X, Y = sliding_windows(s, 4, 2)
    assert X.shape == (1, 4, 1) and Y[0, :, 0].tolist() == [4, 5]
    X, Y = sliding_windows(s, 4, 0, stride=2)  # inference framing: the last window ends at the end
    assert Y.shape == (2, 0, 1) and X[-1, :, 0].tolist() == [2, 3, 4, 5]


def test_sliding_windows_dtype_cast_and_array_likes():
    s = np.linspace(0, 1, 20).reshape(10, 2)
    X, Y = sliding_windows(s, 3, dtype=np.float32)
    assert X.dtype == Y.dtype == np.float32 and not X.flags.writeable
    np.testing.assert_array_equal(X[4], s[4:7].astype(np.float32))
    X, _ = sliding_windows(s, 3)
    assert X.dtype == np.float64  # float64 stays float64 unless asked

    class Frame:  # duck-typed like a pandas DataFrame: only __array__
        def __init__(self, a):
            self.a = a

        def __array__(self, dtype=None, copy=None):
            return self.a

    X, Y = sliding_windows(Frame(s), 2, 1, target_cols=0)
    assert np.shares_memory(X, s) and Y[0, 0, 0] == s[2, 0]
    X, Y = sliding_windows([1, 2, 3, 4], 2)  # a list: windows of its one array
    assert X[:, :, 0].tolist() == [[1, 2], [2, 3]] and Y[:, 0, 0].tolist() == [3, 4]


def test_sliding_windows_nan_carried():
    s = np.array([0.0, np.nan, 2.0, 3.0, 4.0])
    X, Y = sliding_windows(s, 2, 1)
    assert np.isnan(X[0, 1, 0]) and np.isnan(X[1, 0, 0]) and not np.isnan(X[2]).any()


@pytest.mark.parametrize("series,kwargs,exc,match", [
    (np.arange(4.0), {"n_in": 3, "n_out": 2}, ValueError,
     r"series of length 4 is too short for n_in=3, gap=0, n_out=2.*5 steps"),
    (np.arange(6.0), {"n_in": 3, "n_out": 2, "gap": 2}, ValueError, r"length 6 is too short.*gap=2"),
    (np.zeros((0, 2)), {"n_in": 1}, ValueError, "series of length 0 is too short"),
    (np.arange(9.0), {"n_in": 0}, ValueError, "n_in must be >= 1"),
    (np.arange(9.0), {"n_in": 2, "n_out": -1}, ValueError, "n_out must be >= 0"),
    (np.arange(9.0), {"n_in": 2, "stride": 0}, ValueError, "stride must be >= 1"),
    (np.arange(9.0), {"n_in": 2, "gap": -1}, ValueError, "gap must be >= 0"),
    (np.arange(9.0), {"n_in": 2.0}, TypeError, "n_in must be an integer"),
    (np.zeros((9, 2)), {"n_in": 2, "target_cols": 2}, ValueError, "target_cols holds column 2, out of range for F = 2"),
    (np.zeros((9, 2)), {"n_in": 2, "target_cols": [0, -3]}, ValueError, "column -3, out of range"),
    (np.zeros((9, 3)), {"n_in": 2, "target_cols": [1, 1]}, ValueError, "target_cols has duplicate columns"),
    (np.zeros((9, 3)), {"n_in": 2, "target_cols": slice(3, None)}, ValueError, "target_cols selects no column"),
    (np.zeros((9, 3)), {"n_in": 2, "target_cols": 1.0}, TypeError, "target_cols must be an int, a slice"),
    (np.zeros((9, 3)), {"n_in": 2, "target_cols": True}, TypeError, "target_cols must be an int, a slice"),
    (np.zeros((9, 3, 1)), {"n_in": 2}, ValueError, r"series must be 1-D \(N,\) or 2-D \(N, F\)"),
    (np.zeros((9, 0)), {"n_in": 2}, ValueError, "series has no features"),
    (np.array(["a", "b"]), {"n_in": 1}, TypeError, "series must be numeric"),
    ([[1, 2], [3]], {"n_in": 1}, ValueError, "series is not a rectangular"),
    (np.arange(9.0), {"n_in": 2, "dtype": "U3"}, TypeError, "dtype must be a numeric dtype"),
])
def test_sliding_windows_bad_input(series, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        sliding_windows(series, **kwargs)


# ---------------------------------------------------------------- splits

def test_time_split():
    assert time_split(10, 0.3) == (slice(0, 7), slice(7, 10))
    assert time_split(10, 0.25) == (slice(0, 7), slice(7, 10))  # 2.5 rounds half up
    assert time_split(10, 0.0) == (slice(0, 10), slice(10, 10))
    assert time_split(10, 0.3, gap=2) == (slice(0, 7), slice(9, 10))
    assert time_split(1, 0.0) == (slice(0, 1), slice(1, 1))


def test_time_split_gap_keeps_overlapping_window_targets_apart():
    """The documented gap = ceil(n_out / stride) - 1 leaves no target step in both sets."""
    N, n_in = 60, 5
    for n_out, stride in [(4, 1), (4, 2), (5, 2), (1, 1), (3, 3)]:
        X, Y = sliding_windows(np.arange(float(N)), n_in, n_out, stride=stride)
        gap = math.ceil(n_out / stride) - 1
        tr, va = time_split(len(X), 0.3, gap=gap)
        assert not set(Y[tr].ravel()) & set(Y[va].ravel())
        if gap:  # and one fewer would overlap: the gap is the smallest that works
            tr, va = time_split(len(X), 0.3, gap=gap - 1)
            assert set(Y[tr].ravel()) & set(Y[va].ravel())


def test_random_split(rng):
    tr, va = random_split(10, 0.3, seed=0)
    assert tr.dtype == va.dtype == np.int64 and len(tr) == 7 and len(va) == 3
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(10))
    assert (np.diff(tr) > 0).all() and (np.diff(va) > 0).all()
    tr2, va2 = random_split(10, 0.3, seed=0)
    assert (tr == tr2).all() and (va == va2).all()
    tr, va = random_split(5, 0.0)
    assert tr.tolist() == [0, 1, 2, 3, 4] and va.size == 0


@pytest.mark.parametrize("fn", [time_split, random_split])
@pytest.mark.parametrize("args,exc,match", [
    ((10, 1.0), ValueError, r"fraction must be in \[0, 1\), got 1.0"),
    ((10, -0.1), ValueError, r"fraction must be in \[0, 1\)"),
    ((10, "0.2"), TypeError, "fraction must be a number"),
    ((0, 0.2), ValueError, "n must be >= 1"),
    ((3, 0.1), ValueError, "fraction=0.1 of n=3 leaves an empty validation set"),
    ((1, 0.5), ValueError, "fraction=0.5 of n=1 leaves an empty training set"),
])
def test_split_bad_input(fn, args, exc, match):
    with pytest.raises(exc, match=match):
        fn(*args)


def test_time_split_gap_too_large():
    with pytest.raises(ValueError, match="gap=3 swallows the whole validation set"):
        time_split(10, 0.3, gap=3)
    with pytest.raises(ValueError, match="gap must be >= 0"):
        time_split(10, 0.3, gap=-1)


# ---------------------------------------------------------------- scalers

def test_standard_scaler_stats_over_all_but_last_axis(rng):
    X = rng.standard_normal((6, 5, 3)) * [1.0, 10.0, 0.1] + [0.0, 5.0, -2.0]
    sc = StandardScaler().fit(X)
    flat = X.reshape(-1, 3)
    np.testing.assert_allclose(sc.mean_, flat.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sc.scale_, flat.std(0), rtol=1e-12)
    Z = sc.transform(X)
    assert Z.shape == X.shape and Z.dtype == np.float64
    np.testing.assert_allclose(Z.reshape(-1, 3).mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(Z.reshape(-1, 3).std(0), 1, rtol=1e-12)
    np.testing.assert_allclose(sc.inverse_transform(Z), X, rtol=1e-13, atol=1e-13)


def test_standard_scaler_train_only_statistics_and_dtypes(rng):
    train, test = rng.standard_normal((50, 2)) * 3 + 1, rng.standard_normal((7, 4, 2))
    sc = StandardScaler().fit(train)
    np.testing.assert_allclose(sc.transform(test), (test - train.mean(0)) / train.std(0), rtol=1e-12)
    Z32 = sc.transform(test.astype(np.float32))
    assert Z32.dtype == np.float32
    np.testing.assert_allclose(sc.inverse_transform(Z32), test, rtol=1e-5, atol=1e-6)
    assert sc.transform(test, dtype=np.float32).dtype == np.float32
    assert sc.transform(np.array([[1, 2]])).dtype == np.float64  # ints become float64
    assert sc.fit_transform(train, dtype=np.float32).dtype == np.float32


def test_scalers_nan_ignored_in_fit_propagated_in_transform():
    X = np.array([[1.0, 10.0], [np.nan, 20.0], [3.0, np.nan], [5.0, 30.0]])
    sc = StandardScaler().fit(X)
    np.testing.assert_allclose(sc.mean_, [3.0, 20.0])
    np.testing.assert_allclose(sc.scale_, [np.std([1, 3, 5]), np.std([10, 20, 30])])
    Z = sc.transform(X)
    assert (np.isnan(Z) == np.isnan(X)).all()
    mm = MinMaxScaler().fit(X)
    np.testing.assert_array_equal(mm.data_min_, [1, 10])
    np.testing.assert_array_equal(mm.data_max_, [5, 30])
    Z = mm.transform(X)
    assert (np.isnan(Z) == np.isnan(X)).all()
    np.testing.assert_allclose(Z[0], [0, 0])
    np.testing.assert_allclose(Z[3], [1, 1])


def test_scalers_constant_feature_no_division_by_zero():
    X = np.array([[2.0, 1.0], [2.0, 3.0], [2.0, 5.0]])
    sc = StandardScaler().fit(X)
    assert sc.scale_[0] == 1.0 and np.isfinite(sc.transform(X)).all()
    np.testing.assert_array_equal(sc.transform(X)[:, 0], 0)
    back = sc.inverse_transform(sc.transform(X))
    np.testing.assert_array_equal(back[:, 0], 2.0)  # the constant comes back exactly
    np.testing.assert_allclose(back, X, rtol=1e-15, atol=0)
    mm = MinMaxScaler(feature_range=(-1, 1)).fit(X)
    np.testing.assert_array_equal(mm.transform(X)[:, 0], -1)
    back = mm.inverse_transform(mm.transform(X))
    np.testing.assert_array_equal(back[:, 0], 2.0)
    np.testing.assert_allclose(back, X, rtol=1e-15, atol=0)


def test_standard_scaler_options_and_1d():
    X = np.array([1.0, 2.0, 3.0, 6.0])
    sc = StandardScaler(with_mean=False).fit(X)
    np.testing.assert_allclose(sc.transform(X), X / X.std())
    sc = StandardScaler(with_std=False).fit(X)
    np.testing.assert_allclose(sc.transform(X), X - 3.0)
    assert (sc.scale_ == 1).all()
    sc = StandardScaler().fit(X)  # 1-D: one feature
    assert sc.n_features_in_ == 1 and sc.transform(X).shape == (4,)
    assert sc.transform(X[:, None]).shape == (4, 1)  # (N, 1) is the same one feature


def test_minmax_scaler_range_round_trip_and_no_clipping(rng):
    X = rng.uniform(-5, 5, (20, 3, 2))
    mm = MinMaxScaler(feature_range=(-1, 2)).fit(X)
    Z = mm.transform(X)
    np.testing.assert_allclose(Z.reshape(-1, 2).min(0), -1, atol=1e-12)
    np.testing.assert_allclose(Z.reshape(-1, 2).max(0), 2, atol=1e-12)
    np.testing.assert_allclose(mm.inverse_transform(Z), X, rtol=1e-13, atol=1e-13)
    Z32 = mm.transform(X.astype(np.float32))
    assert Z32.dtype == np.float32
    np.testing.assert_allclose(mm.inverse_transform(Z32), X, rtol=1e-5, atol=1e-5)
    out = mm.transform(np.array([[100.0, -100.0]]))
    assert out[0, 0] > 2 and out[0, 1] < -1  # outside the training range maps outside, unclipped


@pytest.mark.parametrize("Scaler", [StandardScaler, MinMaxScaler])
def test_scaler_state_round_trip_through_npz(Scaler, rng):
    X = rng.standard_normal((30, 4)) * 2 + 1
    sc = Scaler().fit(X)
    state = _npz_round_trip(sc.get_state())
    sc2 = Scaler.from_state(state)
    np.testing.assert_array_equal(sc2.transform(X), sc.transform(X))
    np.testing.assert_array_equal(sc2.inverse_transform(X), sc.inverse_transform(X))
    assert sc2.n_features_in_ == 4
    st = sc.get_state()
    st2 = Scaler.from_state(st).get_state()
    assert st.keys() == st2.keys()
    for k in st:
        np.testing.assert_array_equal(st[k], st2[k])


def test_scaler_state_keeps_options():
    sc = StandardScaler(with_mean=False).fit(np.array([[1.0], [3.0]]))
    sc2 = StandardScaler.from_state(_npz_round_trip(sc.get_state()))
    assert sc2.with_mean is False and sc2.transform(np.array([[2.0]]))[0, 0] == pytest.approx(2.0)
    mm = MinMaxScaler((-3, 3)).fit(np.array([[1.0], [3.0]]))
    mm2 = MinMaxScaler.from_state(_npz_round_trip(mm.get_state()))
    assert mm2.feature_range == (-3.0, 3.0) and mm2.transform(np.array([[3.0]]))[0, 0] == 3.0


@pytest.mark.parametrize("Scaler", [StandardScaler, MinMaxScaler])
def test_scaler_bad_input(Scaler):
    sc = Scaler()
    for call in (lambda: sc.transform(np.zeros((2, 2))), lambda: sc.inverse_transform(np.zeros((2, 2))),
                 sc.get_state):
        with pytest.raises(NotFittedError, match=f"{Scaler.__name__} is not fitted yet"):
            call()
    assert issubclass(NotFittedError, ValueError)
    sc.fit(np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"X has 2 features \(last axis of shape \(5, 2\)\), but "
                                         f"{Scaler.__name__} was fitted with 3"):
        sc.transform(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="X has 1 features"):
        sc.inverse_transform(np.zeros(3))
    with pytest.raises(TypeError, match="X must be numeric"):
        sc.transform(np.array([["a", "b", "c"]]))
    with pytest.raises(TypeError, match="dtype must be a float dtype"):
        sc.transform(np.zeros((1, 3)), dtype=np.int32)
    for bad, exc, match in [
        (np.array([[1.0, np.inf]]), ValueError, "X contains Inf"),
        (np.array([[1.0, np.nan], [2.0, np.nan]]), ValueError, "X feature 1 has no non-NaN value"),
        (np.zeros((0, 3)), ValueError, "X has no samples"),
        (np.zeros((3, 0)), ValueError, "X has no features"),
        (np.float64(1.0), ValueError, "X must have at least one axis"),
        (None, TypeError, "X must be an array, got None"),
        (np.array(["a"]), TypeError, "X must be numeric"),
    ]:
        with pytest.raises(exc, match=match):
            Scaler().fit(bad)
    state = Scaler().fit(np.ones((2, 3))).get_state()
    with pytest.raises(ValueError, match=f"state is for 'Other', not {Scaler.__name__}"):
        Scaler.from_state({**state, "kind": "Other"})
    key = "scale_"
    with pytest.raises(ValueError, match=r"state lacks key\(s\) \['scale_'\]"):
        Scaler.from_state({k: v for k, v in state.items() if k != key})
    with pytest.raises(ValueError, match=r"state\['scale_'\] has shape \(2,\), expected \(n_features_in_,\) = \(3,\)"):
        Scaler.from_state({**state, key: np.ones(2)})
    with pytest.raises(TypeError, match="state must be a dict"):
        Scaler.from_state([1, 2])


@pytest.mark.parametrize("fr,exc,match", [
    ((1, 0), ValueError, "feature_range must be finite with lo < hi"),
    ((0, np.inf), ValueError, "feature_range must be finite"),
    ((0,), TypeError, "feature_range must be two numbers"),
    ("ab", TypeError, "feature_range must be two numbers"),
    (None, TypeError, "feature_range must be two numbers"),
])
def test_minmax_bad_feature_range(fr, exc, match):
    with pytest.raises(exc, match=match):
        MinMaxScaler(feature_range=fr).fit(np.ones((2, 1)))


# ---------------------------------------------------------------- LabelEncoder

def test_label_encoder_strings_sorted_round_trip():
    le = LabelEncoder()
    codes = le.fit_transform(["cat", "dog", "ant", "dog"])
    assert le.classes_.tolist() == ["ant", "cat", "dog"] and codes.tolist() == [1, 2, 0, 2]
    assert codes.dtype == np.int64
    assert le.inverse_transform(codes).tolist() == ["cat", "dog", "ant", "dog"]


def test_label_encoder_ndarray_keeps_shape_and_matches_dict_path(rng):
    y = rng.integers(-3, 40, (6, 7))
    le = LabelEncoder().fit(y)
    assert le.classes_.dtype == np.int64 and (np.diff(le.classes_) > 0).all()
    codes = le.transform(y)  # vectorised searchsorted path
    assert codes.shape == (6, 7)
    np.testing.assert_array_equal(codes.ravel(), le.transform(y.ravel().tolist()))  # dict path
    np.testing.assert_array_equal(le.inverse_transform(codes), y)
    s = np.array([["b", "a"], ["c", "a"]])
    le = LabelEncoder().fit(s)
    np.testing.assert_array_equal(le.transform(s), [[1, 0], [2, 0]])


def test_label_encoder_tuples_mixed_and_equal_labels():
    le = LabelEncoder().fit([("b", 1), ("a", 2), ("b", 1)])
    assert le.classes_.dtype == object and le.classes_.tolist() == [("a", 2), ("b", 1)]
    assert le.transform([("b", 1)]).tolist() == [1]
    assert le.inverse_transform([0]).tolist() == [("a", 2)]
    le = LabelEncoder().fit(["x", 3, ("t",), None, 3])  # not comparable: first-seen order
    assert le.classes_.tolist() == ["x", 3, ("t",), None]
    assert le.transform([None, ("t",), "x"]).tolist() == [3, 2, 0]
    le = LabelEncoder().fit([2, 1.5, 1])  # comparable mixed numbers: sorted
    assert le.classes_.tolist() == [1, 1.5, 2]
    assert len(LabelEncoder().fit([1, 1.0, True]).classes_) == 1  # equal under == -> one class
    le = LabelEncoder().fit(np.array([("a", 1), ("b", 2)], dtype=object).reshape(2, 2)[:, 0])
    assert le.classes_.tolist() == ["a", "b"]


def test_label_encoder_object_array_input_like_a_series():
    arr = np.empty(3, dtype=object)
    arr[:] = [("p", 1), ("q", 2), ("p", 1)]
    le = LabelEncoder().fit(arr)
    assert le.transform(arr).tolist() == [0, 1, 0]


@pytest.mark.parametrize("labels", [["ant", "zebra"], np.array(["ant", "zebra"])])
def test_label_encoder_unknown_label_named(labels):
    le = LabelEncoder().fit(["ant", "bee"])
    with pytest.raises(ValueError, match=r"1 unknown label\(s\), first 'zebra'; known classes: \['ant', 'bee'\]"):
        le.transform(labels)


def test_label_encoder_bad_input():
    with pytest.raises(ValueError, match="labels is empty"):
        LabelEncoder().fit([])
    with pytest.raises(TypeError, match="wrap a single label in a list"):
        LabelEncoder().fit("abc")
    with pytest.raises(TypeError, match="wrap a single label in a list"):
        LabelEncoder().fit(np.array(3))
    with pytest.raises(TypeError, match=r"labels\[1\] = \[1, 2\] is not hashable"):
        LabelEncoder().fit(["a", [1, 2]])
    with pytest.raises(ValueError, match=r"labels\[1\] is NaN"):
        LabelEncoder().fit(["a", float("nan")])
    with pytest.raises(ValueError, match="labels contains NaN"):
        LabelEncoder().fit(np.array([1.0, np.nan]))
    with pytest.raises(NotFittedError, match="LabelEncoder is not fitted yet"):
        LabelEncoder().transform(["a"])
    le = LabelEncoder().fit([1, 2, 3])
    with pytest.raises(ValueError, match="unknown label"):
        le.transform(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match=r"codes holds 3, out of range for 3 classes \(0..2\)"):
        le.inverse_transform([0, 3])
    with pytest.raises(ValueError, match="codes holds -1"):
        le.inverse_transform(np.array([[-1]]))
    with pytest.raises(TypeError, match="codes must be integers"):
        le.inverse_transform([0.0])


def test_label_encoder_state_round_trip():
    le = LabelEncoder().fit(["b", "a", "c"])
    le2 = LabelEncoder.from_state(_npz_round_trip(le.get_state()))  # typed classes: npz-safe
    assert le2.classes_.tolist() == ["a", "b", "c"] and le2.transform(["c", "a"]).tolist() == [2, 0]
    le = LabelEncoder().fit([("x", 1), 5])
    le2 = LabelEncoder.from_state(_npz_round_trip(le.get_state(), allow_pickle=True))
    assert le2.transform([5, ("x", 1)]).tolist() == le.transform([5, ("x", 1)]).tolist()
    with pytest.raises(ValueError, match="state is for 'StandardScaler', not LabelEncoder"):
        LabelEncoder.from_state({"kind": "StandardScaler"})
    with pytest.raises(ValueError, match="state lacks key 'classes_'"):
        LabelEncoder.from_state({"kind": "LabelEncoder"})
    with pytest.raises(ValueError, match="must be sorted and unique"):
        LabelEncoder.from_state({"kind": "LabelEncoder", "classes_": np.array([2, 1])})
    with pytest.raises(ValueError, match="non-empty 1-D"):
        LabelEncoder.from_state({"kind": "LabelEncoder", "classes_": np.array([])})


# ---------------------------------------------------------------- one_hot

def test_one_hot_shapes_and_values():
    np.testing.assert_array_equal(one_hot([0, 2, 1]), np.eye(3, dtype=np.float32)[[0, 2, 1]])
    y = np.array([[0, 3], [1, 1]])
    oh = one_hot(y, num_classes=5, dtype=np.int8)
    assert oh.shape == (2, 2, 5) and oh.dtype == np.int8
    np.testing.assert_array_equal(oh.argmax(-1), y)
    assert (oh.sum(-1) == 1).all()
    assert one_hot(np.zeros((0, 4), np.int64), num_classes=3).shape == (0, 4, 3)
    assert one_hot(np.int64(2), num_classes=3).tolist() == [0, 0, 1]


@pytest.mark.parametrize("y,kwargs,exc,match", [
    ([0, 3], {"num_classes": 3}, ValueError, r"y holds class 3, out of range for num_classes=3 \(0..2\)"),
    ([0, -1], {}, ValueError, "y holds class -1"),
    ([0.0, 1.0], {}, TypeError, "y must be integer class ids"),
    (np.zeros(0, np.int64), {}, ValueError, "y is empty: pass num_classes"),
    ([0], {"num_classes": 0}, ValueError, "num_classes must be >= 1"),
    ([0], {"num_classes": 2.0}, TypeError, "num_classes must be an integer"),
])
def test_one_hot_bad_input(y, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        one_hot(y, **kwargs)


def test_all_names_exported():
    for name in data.__all__:
        assert hasattr(data, name), name
