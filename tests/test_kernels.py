"""The shared kernel suite: every fast backend (Numba, native on each ISA) against the NumPy
reference in float64, on awkward shapes. Tolerances (float32 kernels vs float64 spec):
forward elementwise |fast - ref| <= 2e-5 + 1e-5·|ref|; each gradient tensor's max error
<= 1e-4 × its max |ref|.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from backends_under_test import KERNEL_VARIANTS, variant
from conftest import random_lengths, random_problem

import fastlstm
from fastlstm.backends import reference as ref

ODD = [  # (T, B, I, H)
    (1, 1, 1, 1), (1, 1, 1, 3), (3, 1, 1, 37), (1, 2, 3, 45), (2, 3, 1, 257), (4, 1, 7, 45),
    (5, 3, 2, 1), (1, 1, 17, 8), (6, 5, 1, 16), (3, 7, 9, 33), (2, 2, 64, 64), (7, 13, 5, 31),
    (2, 17, 3, 100), (1, 64, 8, 24), (3, 2, 2, 129),
    # the dW product's orientations: gemm_tn with T·B rows past its K block (128); Gemm4 (a result
    # of 4H·(I + H + 1) > 2^18 floats), with db in a ones column, and with db as dZᵀ's row sums
    # (I + H a multiple of every vector width) over T·B rows past Gemm4's K block (1024)
    (40, 5, 3, 20), (2, 3, 300, 257), (3, 400, 64, 256),
]
_r = np.random.default_rng(2026)
RANDOM = [(int(_r.integers(1, 10)), int(_r.integers(1, 20)), int(_r.integers(1, 40)),
           int(_r.choice([1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 23, 31, 37, 45, 48, 63, 65, 70])))
          for _ in range(55)]
# each shape with and without (reverse, lengths with zeros, initial state): 4 x 70 = 280 configs
CONFIGS = [(shape, lens, rev) for shape in ODD + RANDOM for lens in (False, True) for rev in (False, True)]


def _id(c):
    (T, B, I, H), lens, rev = c
    return f"T{T}B{B}I{I}H{H}" + ("-len" if lens else "") + ("-rev" if rev else "")


def forward_close(name, got, want):
    tol = 2e-5 + 1e-5 * np.abs(want)
    err = np.abs(got.astype(np.float64) - want)
    assert np.all(err <= tol), f"{name}: max error {err.max():.3g} beyond 2e-5 + 1e-5·|ref|"


def grad_close(name, got, want):
    scale = max(np.abs(want).max(), 1e-30)
    err = np.abs(got.astype(np.float64) - want).max()
    assert err <= 1e-4 * scale, f"{name}: max error {err:.3g} > 1e-4 × max|ref| = {1e-4 * scale:.3g}"


@pytest.mark.parametrize("name", KERNEL_VARIANTS)
@pytest.mark.parametrize("config", CONFIGS, ids=_id)
def test_fast_backend_matches_reference(name, config, rng):
    (T, B, I, H), with_lengths, reverse = config
    args32 = random_problem(rng, T, B, I, H, dtype=np.float32, scale=0.6, state=with_lengths or rng.random() < 0.5)
    args64 = [a.astype(np.float64) for a in args32]
    lengths = random_lengths(rng, T, B) if with_lengths else None
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    dhT = rng.standard_normal((B, H)).astype(np.float32)
    dcT = rng.standard_normal((B, H)).astype(np.float32)

    y_r, h_r, c_r, ws_r = ref.lstm_forward(*args64, lengths, reverse, True)
    g_r = ref.lstm_backward(dy.astype(np.float64), dhT.astype(np.float64), dcT.astype(np.float64), ws_r,
                            args64[0], args64[1], args64[2], args64[4], args64[5], lengths, reverse)

    with variant(name) as mod:
        for training in (False, True):
            y, hT, cT, tape = fastlstm.lstm_forward(*args32, lengths, reverse=reverse, training=training,
                                                    backend=mod.NAME)
            assert y.dtype == np.float32
            forward_close("y", y, y_r)
            forward_close("hT", hT, h_r)
            forward_close("cT", cT, c_r)
        assert tape.backend_name == mod.NAME  # the fast backend really ran
        if hasattr(mod, "last_isa"):
            assert mod.last_isa() == name.partition(":")[2]
        grads = fastlstm.lstm_backward(dy, dhT, dcT, tape)
        # a first layer's backward from a zero state nobody learns: neither dx nor dh0
        part = fastlstm.lstm_backward(dy, dhT, dcT, tape, need_dx=False, need_dh0=False)
    for gname, got, want in zip(("dx", "dW_ih", "dW_hh", "db", "dh0", "dc0"), grads, g_r):
        assert got.shape == want.shape and got.dtype == np.float32, gname
        grad_close(gname, got, want)
    assert part[0] is None and part[4] is None
    for gname, got, want in zip(("dW_ih", "dW_hh", "db", "dc0"), part[1:4] + part[5:], g_r[1:4] + g_r[5:]):
        grad_close(gname, got, want)
    if lengths is not None:  # padding gets exactly zero output and zero input gradient
        pad = np.arange(T)[:, None] >= lengths[None, :]
        assert (y[pad] == 0).all() and (grads[0][pad] == 0).all()


@pytest.mark.parametrize("name", KERNEL_VARIANTS)
def test_nan_in_nan_out_and_padding_ignored(name, rng):
    T, B, I, H = 5, 4, 3, 19
    x, W_ih, W_hh, b, h0, c0 = random_problem(rng, T, B, I, H, dtype=np.float32)
    lengths = np.array([5, 3, 0, 4])
    x[3:, 1] = np.nan       # padding of row 1: must be ignored
    x[1, 3, 2] = np.nan     # a real NaN in row 3: must propagate
    with variant(name) as mod:
        y, hT, cT, tape = fastlstm.lstm_forward(x, W_ih, W_hh, b, h0, c0, lengths, training=True, backend=mod.NAME)
        dx, dW_ih, dW_hh, db, dh0, dc0 = fastlstm.lstm_backward(np.ones_like(y), None, None, tape)
    assert np.isnan(y[1:4, 3]).all() and np.isnan(hT[3]).all()
    assert np.isfinite(y[:, :3]).all() and np.isfinite(hT[:3]).all() and np.isfinite(cT[:3]).all()
    assert (y[3:, 1] == 0).all()
    assert np.isfinite(dx[:3, 1]).all() and (dx[3:, 1] == 0).all()


@pytest.mark.parametrize("name", KERNEL_VARIANTS)
def test_float64_and_stack_through_fast_backend(name, rng):
    """A stacked bidirectional layer on a fast backend agrees with the reference stack."""
    T, B, I, H = 6, 3, 5, 11
    with variant(name) as mod:
        m = fastlstm.LSTM(I, H, 2, bidirectional=True, batch_first=True, seed=3, backend=mod.NAME)
        x = rng.standard_normal((B, T, I)).astype(np.float32)
        y, (hn, cn) = m(x, lengths=[6, 2, 4], training=True)
        dx, _ = m.backward(np.ones_like(y))
    r = fastlstm.LSTM(I, H, 2, bidirectional=True, batch_first=True, dtype=np.float64, backend="reference")
    r.load_state_dict(m.state_dict())
    yr, (hr, cr) = r(x.astype(np.float64), lengths=[6, 2, 4], training=True)
    dxr, _ = r.backward(np.ones_like(yr))
    forward_close("y", y, yr)
    forward_close("h_n", hn, hr)
    grad_close("dx", dx, dxr)
    for k in m.grads:
        grad_close(k, m.grads[k], r.grads[k])


BATCH_FIRST = [(1, 1, 1, 3), (1, 5, 3, 17), (6, 1, 2, 45), (7, 13, 5, 31), (40, 5, 3, 20), (2, 3, 300, 257)]


@pytest.mark.parametrize("name", ["reference"] + KERNEL_VARIANTS)
@pytest.mark.parametrize("shape", BATCH_FIRST, ids=lambda s: "T{}B{}I{}H{}".format(*s))
def test_batch_first_matches_time_major(name, shape, rng):
    """batch_first=True: x, y, dy and dx are (B, T, ·) — the native kernels read and write those
    rows in place, the others go through transposed copies — and every output and gradient is
    what the time-major call gives (transposed), with lengths, reverse, padding and need_dx.
    A backward whose batch_first differs from its forward's raises."""
    T, B, I, H = shape
    x, W_ih, W_hh, b, h0, c0 = random_problem(rng, T, B, I, H, dtype=np.float32, scale=0.6)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    dhT, dcT = (rng.standard_normal((B, H)).astype(np.float32) for _ in range(2))
    tb = lambda a: np.ascontiguousarray(a.swapaxes(0, 1))  # noqa: E731
    with (variant(name) if name != "reference" else _plain(ref)) as mod:
        for lengths in (None, random_lengths(rng, T, B)):
            for reverse in (False, True):
                y, hT, cT, ws = mod.lstm_forward(x, W_ih, W_hh, b, h0, c0, lengths, reverse, True)
                g = mod.lstm_backward(dy, dhT, dcT, ws, x, W_ih, W_hh, h0, c0, lengths, reverse, True)
                yb, hTb, cTb, wsb = mod.lstm_forward(tb(x), W_ih, W_hh, b, h0, c0, lengths, reverse, True, True)
                gb = mod.lstm_backward(tb(dy), dhT, dcT, wsb, tb(x), W_ih, W_hh, h0, c0, lengths, reverse, True, True)
                nb = mod.lstm_backward(tb(dy), dhT, dcT, wsb, tb(x), W_ih, W_hh, h0, c0, lengths, reverse, False, True)
                assert yb.shape == (B, T, H) and gb[0].shape == (B, T, I) and nb[0] is None
                for got, want in [(tb(yb), y), (hTb, hT), (cTb, cT), (tb(gb[0]), g[0])] + list(zip(gb[1:], g[1:])) \
                        + list(zip(nb[1:], g[1:])):
                    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
                if lengths is not None:  # padding: zero output, zero input gradient
                    pad = np.arange(T)[None, :] >= lengths[:, None]
                    assert (yb[pad] == 0).all() and (gb[0][pad] == 0).all()
                with pytest.raises(ValueError, match="batch_first"):
                    mod.lstm_backward(tb(dy), dhT, dcT, wsb, tb(x), W_ih, W_hh, h0, c0, lengths, reverse, True, False)
                if hasattr(mod, "_core"):  # the prepacked inference path (fastlstm.prepack)
                    yc, hTc, cTc = mod._core.Cell(W_ih, W_hh, b).forward(tb(x), h0, c0, lengths, reverse, True)
                    for got, want in ((tb(yc), y), (hTc, hT), (cTc, cT)):
                        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
        if hasattr(mod, "last_isa"):
            assert mod.last_isa() == name.partition(":")[2]


@contextlib.contextmanager
def _plain(mod):
    yield mod
