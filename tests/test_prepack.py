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
