"""prepack(): weights packed once for repeated inference, on every backend and native ISA path."""

from __future__ import annotations

import numpy as np
import pytest
from backends_under_test import KERNEL_VARIANTS, variant
from conftest import random_lengths, random_problem

import fastlstm
from fastlstm.backends import reference as ref

SHAPES = [(1, 1, 1, 1), (5, 1, 3, 37), (4, 13, 7, 45), (3, 20, 17, 33), (2, 2, 9, 257)]  # (T, B, I, H)


@pytest.mark.parametrize("name", KERNEL_VARIANTS + ["reference"])
@pytest.mark.parametrize("T,B,I,H", SHAPES)
@pytest.mark.parametrize("lens,rev", [(False, False), (True, True)])
def test_prepacked_forward_matches_reference(name, T, B, I, H, lens, rev, rng):
    x, W_ih, W_hh, b, h0, c0 = random_problem(rng, T, B, I, H, dtype=np.float32, scale=0.6, state=True)
    lengths = random_lengths(rng, T, B) if lens else None
    a64 = [a.astype(np.float64) for a in (x, W_ih, W_hh, b, h0, c0)]
    want = ref.lstm_forward(*a64, lengths, rev, False)[:3]
    with variant(name) as mod:
        model = fastlstm.prepack(W_ih, W_hh, b, backend=mod.NAME)
        assert model.backend_name == mod.NAME
        for _ in range(2):  # the packed weights are reused, not consumed
            got = model.forward(x, h0, c0, lengths, reverse=rev)
            if hasattr(mod, "last_isa"):
                assert mod.last_isa() == name.partition(":")[2]
            for g, w in zip(got, want):
                assert g.dtype == np.float32 and g.shape == w.shape
                assert np.all(np.abs(g - w) <= 2e-5 + 1e-5 * np.abs(w))


@pytest.mark.parametrize("backend", ["native", "numba", "reference"])
def test_prepacked_is_a_snapshot(backend, rng):
    x, W_ih, W_hh, b, h0, c0 = random_problem(rng, 4, 3, 5, 6, dtype=np.float32)
    model = fastlstm.prepack(W_ih, W_hh, b, backend=backend)
    y0 = model.forward(x)[0]
    W_hh += 1.0  # the caller's arrays change after packing...
    b[:] = 0
    np.testing.assert_array_equal(model.forward(x)[0], y0)  # ...the packed model does not
    assert not np.array_equal(fastlstm.lstm_forward(x, W_ih, W_hh, b, backend=backend)[0], y0)


def test_prepacked_rejects_bad_input(rng):
    x, W_ih, W_hh, b, h0, c0 = random_problem(rng, 2, 3, 4, 5, dtype=np.float32)
    model = fastlstm.prepack(W_ih, W_hh, b)
    with pytest.raises(ValueError, match=r"W_ih must have shape \(4H, I\) = \(20, 3\)"):
        model.forward(x[:, :, :3])
    with pytest.raises(ValueError, match="empty batch"):
        model.forward(x[:, :0])
    with pytest.raises(ValueError, match=r"h0 must have shape \(B, H\)"):
        model.forward(x, h0[:2])
    with pytest.raises(TypeError):
        model.forward(x.astype(np.float64))
    with pytest.raises(ValueError, match="lengths"):
        model.forward(x, lengths=np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        model.forward(np.where(x > 0, np.nan, x).astype(np.float32), check_finite=True)


def test_native_cell_checks_its_own_arguments(rng):
    """The extension's last line of defence, below the Python validation."""
    from fastlstm import _core

    x, W_ih, W_hh, b, h0, c0 = random_problem(rng, 2, 3, 4, 5, dtype=np.float32)
    cell = _core.Cell(W_ih, W_hh, b)
    with pytest.raises(ValueError, match="I = 4"):
        cell.forward(x[:, :, :3].copy(), h0, c0, None, False)
    with pytest.raises(ValueError, match="h0"):
        cell.forward(x, h0[:2].copy(), c0, None, False)
    with pytest.raises(TypeError):
        cell.forward(x.astype(np.float64), h0, c0, None, False)
    with pytest.raises(ValueError, match="lengths"):
        cell.forward(x, h0, c0, np.array([0, 1, 9]), False)


# ---- LSTM.prepack(): the whole stack ----

@pytest.mark.parametrize("name", KERNEL_VARIANTS + ["reference"])
@pytest.mark.parametrize("layers,bidir,batch_first", [(1, False, False), (2, True, True), (3, False, True)])
def test_prepacked_stack_matches_the_reference_stack(name, layers, bidir, batch_first, rng):
    T, B, I, H = 6, 3, 5, 11
    lengths, hx_given = [6, 2, 4], bidir
    with variant(name) as mod:
        m = fastlstm.LSTM(I, H, layers, bidirectional=bidir, batch_first=batch_first, seed=3, backend=mod.NAME)
        model = m.prepack()
        assert model.backend_name == mod.NAME
        D = 2 if bidir else 1
        x = rng.standard_normal((B, T, I) if batch_first else (T, B, I)).astype(np.float32)
        hx = tuple(rng.standard_normal((layers * D, B, H)).astype(np.float32) for _ in range(2)) if hx_given else None
        y, (hn, cn) = model(x, hx, lengths=lengths)
        if hasattr(mod, "last_isa"):
            assert mod.last_isa() == name.partition(":")[2]
        ym, (hm, cm) = m(x, hx, lengths=lengths)  # the same backend, weights packed per call
    r = fastlstm.LSTM(I, H, layers, bidirectional=bidir, batch_first=batch_first, dtype=np.float64, backend="reference")
    r.load_state_dict(m.state_dict())
    yr, (hr, cr) = r(x.astype(np.float64), None if hx is None else tuple(a.astype(np.float64) for a in hx),
                     lengths=lengths)
    for got, want in ((y, yr), (hn, hr), (cn, cr)):
        assert got.shape == want.shape and got.dtype == np.float32
        assert np.all(np.abs(got - want) <= 2e-5 + 1e-5 * np.abs(want))
    for got, want in ((y, ym), (hn, hm), (cn, cm)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_prepacked_stack_is_a_snapshot_and_checks_its_input(rng):
    m = fastlstm.LSTM(4, 6, 2, bidirectional=True, seed=1)
    model = m.prepack()
    x = rng.standard_normal((5, 3, 4)).astype(np.float32)
    y0 = model(x)[0]
    for p in m.params.values():
        p += 1.0
    np.testing.assert_array_equal(model(x)[0], y0)
    assert not np.array_equal(m(x)[0], y0)
    with pytest.raises(ValueError, match="input_size = 4"):
        model(x[:, :, :3])
    with pytest.raises(ValueError, match=r"h0 must have shape \(num_layers·D, B, H\) = \(4, 3, 6\)"):
        model(x, (np.zeros((2, 3, 6), np.float32), np.zeros((4, 3, 6), np.float32)))
    with pytest.raises(TypeError, match="dtype float64"):
        model(x.astype(np.float64))
    with pytest.raises(ValueError, match="lengths"):
        model(x, lengths=[1, 2, 9])
    with pytest.raises(ValueError, match="B >= 1"):
        model(x[:, :0])
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        model(np.where(x > 1, np.nan, x).astype(np.float32), check_finite=True)
    assert np.isnan(model(np.full_like(x, np.nan))[0]).all()  # the default policy: NaN propagates


def test_prepacked_float64_stack_runs_on_a_float64_backend(rng):
    m = fastlstm.LSTM(3, 7, 2, bidirectional=True, dtype=np.float64, seed=2)
    model = m.prepack()
    assert model.backend_name in ("numba", "reference")
    x = rng.standard_normal((4, 2, 3))
    y, (hn, cn) = model(x, lengths=[4, 1])
    ym, (hm, cm) = m(x, lengths=[4, 1])
    assert y.dtype == np.float64
    for got, want in ((y, ym), (hn, hm), (cn, cm)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
