"""Bad input gets a clear Python exception naming the problem, on every backend."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import random_problem

import fastlstm

from backends_under_test import ALL_BACKENDS, load_backend


@pytest.fixture(params=ALL_BACKENDS)
def backend(request):
    return load_backend(request.param)


def _args(rng, dtype=np.float32, T=4, B=3, I=2, H=5):
    return list(random_problem(rng, T, B, I, H, dtype=dtype))


@pytest.mark.parametrize("index,bad,exc,match", [
    (0, np.zeros((4, 3)), ValueError, r"x must have shape \(T, B, I\)"),
    (0, np.zeros((0, 3, 2), np.float32), ValueError, "T = 0"),
    (0, np.zeros((4, 0, 2), np.float32), ValueError, "empty batch"),
    (0, np.zeros((4, 3, 2), np.int32), TypeError, "x must have dtype float32 or float64"),
    (0, np.zeros((4, 3, 2), np.complex64), TypeError, "x must have dtype"),
    (1, np.zeros((20, 3), np.float32), ValueError, r"W_ih must have shape \(4H, I\)"),
    (2, np.zeros((20, 4), np.float32), ValueError, r"W_hh must have shape \(4H, H\)"),
    (2, np.zeros((20, 5), np.float64), TypeError, "W_hh has dtype float64 but x has dtype float32"),
    (3, np.zeros(19, np.float32), ValueError, r"b must have shape \(4H,\)"),
    (4, np.zeros((2, 5), np.float32), ValueError, r"h0 must have shape \(B, H\)"),
    (5, np.zeros((3, 6), np.float32), ValueError, r"c0 must have shape \(B, H\)"),
])
def test_bad_arrays(backend, rng, index, bad, exc, match):
    args = _args(rng)
    args[index] = bad
    with pytest.raises(exc, match=match):
        fastlstm.lstm_forward(*args, backend=backend.NAME)


@pytest.mark.parametrize("lengths,exc,match", [
    ([4, 5, 1], ValueError, r"lengths must lie in \[0, T\] = \[0, 4\], got lengths\[1\] = 5"),
    ([4, -1, 1], ValueError, r"lengths\[1\] = -1"),
    ([4, 1], ValueError, r"lengths must have shape \(B,\)"),
    ([4.5, 1, 1], TypeError, "lengths must be integers"),
])
def test_bad_lengths(backend, rng, lengths, exc, match):
    with pytest.raises(exc, match=match):
        fastlstm.lstm_forward(*_args(rng), lengths=lengths, backend=backend.NAME)


def test_non_contiguous_inputs_are_accepted(backend, rng):
    args = _args(rng, T=6, B=4, I=3, H=5)
    want = fastlstm.lstm_forward(*args, backend=backend.NAME)
    x = np.asfortranarray(args[0])
    W_hh = np.ascontiguousarray(args[2].T).T          # Fortran-ordered view
    W_ih = np.repeat(args[1], 2, axis=1)[:, ::2]      # strided view
    got = fastlstm.lstm_forward(x, W_ih, W_hh, *args[3:], backend=backend.NAME)
    for a, b in zip(got[:3], want[:3]):
        np.testing.assert_array_equal(a, b)


def test_nan_propagates_by_default_and_check_finite_raises(backend, rng):
    args = _args(rng)
    args[0][2, 1, 0] = np.nan
    y, hT, cT, _ = fastlstm.lstm_forward(*args, backend=backend.NAME)
    assert np.isnan(y[2:, 1]).all() and np.isnan(hT[1]).all()
    assert np.isfinite(y[:, 0]).all() and np.isfinite(y[:2, 1]).all()  # other rows untouched
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        fastlstm.lstm_forward(*args, backend=backend.NAME, check_finite=True)
    args[0][2, 1, 0] = 0
    args[2][0, 0] = np.inf
    with pytest.raises(ValueError, match="W_hh contains NaN or Inf"):
        fastlstm.lstm_forward(*args, backend=backend.NAME, check_finite=True)


def test_nan_in_padding_is_ignored_by_check_finite(backend, rng):
    args = _args(rng)
    args[0][3:, 1] = np.nan
    y, _, _, _ = fastlstm.lstm_forward(*args, lengths=[4, 3, 4], backend=backend.NAME, check_finite=True)
    assert np.isfinite(y).all()


def test_backward_validates_gradients(backend, rng):
    y, hT, cT, tape = fastlstm.lstm_forward(*_args(rng), training=True, backend=backend.NAME)
    with pytest.raises(ValueError, match=r"dy must have shape \(T, B, H\)"):
        fastlstm.lstm_backward(np.zeros((4, 3, 4), np.float32), None, None, tape)
    with pytest.raises(TypeError, match="dhT has dtype float64"):
        fastlstm.lstm_backward(None, np.zeros((3, 5)), None, tape)
    with pytest.raises(TypeError, match="needs the tape"):
        fastlstm.lstm_backward(None, None, None, None)


def test_forced_backend_that_cannot_load_fails_loudly(tmp_path):
    import os
    import subprocess
    import sys

    code = "import fastlstm"
    env = {**os.environ, "FASTLSTM_BACKEND": "nonsense"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode != 0 and "unknown backend 'nonsense'" in r.stderr


def test_stack_shape_errors(rng):
    m = fastlstm.LSTM(3, 4, 2, bidirectional=True)
    with pytest.raises(ValueError, match=r"h0 must have shape \(num_layers·D, B, H\)"):
        m(np.zeros((5, 2, 3), np.float32), (np.zeros((2, 2, 4), np.float32), np.zeros((4, 2, 4), np.float32)))
    with pytest.raises(ValueError, match=r"LSTM expects x of shape \(T, B, input_size=3\), got shape \(5, 2, 7\)"):
        m(np.zeros((5, 2, 7), np.float32))
