"""The NumPy reference (the spec) against float64 finite differences, itself, and torch.nn.LSTM."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import random_lengths, random_problem, require
from gradcheck import assert_grad_close, check_kernel_gradients, numeric_grad

import fastlstm
from fastlstm.backends import reference as ref

# (T, B, I, H): the awkward sizes first, then random ones; 64 configurations in all
ODD = [(1, 1, 1, 1), (1, 1, 1, 3), (3, 1, 1, 3), (1, 4, 2, 37), (5, 1, 1, 37), (4, 3, 5, 2),
       (6, 2, 1, 5), (2, 5, 3, 4)]
_r = np.random.default_rng(1234)
RANDOM = [tuple(int(v) for v in (_r.integers(1, 8), _r.integers(1, 6), _r.integers(1, 6), _r.integers(1, 9)))
          for _ in range(24)]
CONFIGS = [(shape, with_lengths, reverse) for shape in ODD + RANDOM
           for with_lengths, reverse in [(False, False), (True, True)]]
assert len(CONFIGS) >= 50


def _id(c):
    (T, B, I, H), lens, rev = c
    return f"T{T}B{B}I{I}H{H}" + ("-len" if lens else "") + ("-rev" if rev else "")


@pytest.mark.parametrize("config", CONFIGS, ids=_id)
def test_kernel_gradients_match_finite_differences(config, rng):
    (T, B, I, H), with_lengths, reverse = config
    x, W_ih, W_hh, b, h0, c0 = random_problem(rng, T, B, I, H)
    lengths = random_lengths(rng, T, B) if with_lengths else None
    check_kernel_gradients(rng, x, W_ih, W_hh, b, h0, c0, lengths, reverse)


@pytest.mark.parametrize("reverse", [False, True])
def test_gradients_with_lengths_only_forward_or_reverse(reverse, rng):
    x, W_ih, W_hh, b, h0, c0 = random_problem(rng, 6, 5, 3, 4)
    check_kernel_gradients(rng, x, W_ih, W_hh, b, h0, c0, np.array([6, 0, 3, 1, 5]), reverse)


def test_gradcheck_catches_a_broken_gate(rng):
    """The check must fail when one gate's derivative is wrong (sign of df flipped)."""
    x, W_ih, W_hh, b, h0, c0 = random_problem(rng, 4, 2, 3, 3)
    H = 3

    def broken_backward(dy, dhT, dcT, ws, *args):
        gates = ws.gates.copy()
        gates[:, :, H:2 * H] = 1 - gates[:, :, H:2 * H]  # corrupt the forget gate the backward sees
        return ref.lstm_backward(dy, dhT, dcT, ref.Workspace(gates, ws.c, ws.c_prev, ws.h_prev), *args)

    with pytest.raises(AssertionError, match="finite-difference"):
        check_kernel_gradients(rng, x, W_ih, W_hh, b, h0, c0, None, False, backward=broken_backward)


@pytest.mark.parametrize("reverse", [False, True])
def test_step_by_step_equals_whole_sequence(reverse, rng):
    T, B, I, H = 7, 3, 4, 5
    x, W_ih, W_hh, b, h0, c0 = random_problem(rng, T, B, I, H)
    y, hT, cT, _ = ref.lstm_forward(x, W_ih, W_hh, b, h0, c0, None, reverse, False)
    h, c = h0, c0
    order = range(T - 1, -1, -1) if reverse else range(T)
    for t in order:
        yt, h, c, _ = ref.lstm_forward(x[t:t + 1], W_ih, W_hh, b, h, c, None, False, False)
        np.testing.assert_allclose(yt[0], y[t], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(h, hT, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(c, cT, rtol=1e-12, atol=1e-14)


def test_two_chained_halves_equal_one_call(rng):
    """Forward split in two chunks with state carried, backward with dhT/dcT carried in."""
    T, B, I, H = 8, 3, 2, 4
    x, W_ih, W_hh, b, h0, c0 = random_problem(rng, T, B, I, H)
    dy = rng.standard_normal((T, B, H))
    dhT = rng.standard_normal((B, H))
    dcT = rng.standard_normal((B, H))
    y, hT, cT, ws = ref.lstm_forward(x, W_ih, W_hh, b, h0, c0, None, False, True)
    full = ref.lstm_backward(dy, dhT, dcT, ws, x, W_ih, W_hh, h0, c0)

    k = 3
    y1, h1, c1, ws1 = ref.lstm_forward(x[:k], W_ih, W_hh, b, h0, c0, None, False, True)
    y2, h2, c2, ws2 = ref.lstm_forward(x[k:], W_ih, W_hh, b, h1, c1, None, False, True)
    np.testing.assert_allclose(np.concatenate([y1, y2]), y, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(h2, hT, rtol=1e-12)
    np.testing.assert_allclose(c2, cT, rtol=1e-12)
    dx2, dWi2, dWh2, db2, dh1, dc1 = ref.lstm_backward(dy[k:], dhT, dcT, ws2, x[k:], W_ih, W_hh, h1, c1)
    dx1, dWi1, dWh1, db1, dh0, dc0 = ref.lstm_backward(dy[:k], dh1, dc1, ws1, x[:k], W_ih, W_hh, h0, c0)
    for got, want in zip((np.concatenate([dx1, dx2]), dWi1 + dWi2, dWh1 + dWh2, db1 + db2, dh0, dc0), full):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_padding_is_never_read(rng):
    """NaN beyond lengths[b] must not reach any output or gradient."""
    T, B, I, H = 6, 4, 3, 5
    x, W_ih, W_hh, b, h0, c0 = random_problem(rng, T, B, I, H)
    lengths = np.array([6, 2, 0, 4])
    for reverse in (False, True):
        clean = ref.lstm_forward(x, W_ih, W_hh, b, h0, c0, lengths, reverse, True)
        xn = x.copy()
        for bb, n in enumerate(lengths):
            xn[n:, bb] = np.nan
        dirty = ref.lstm_forward(xn, W_ih, W_hh, b, h0, c0, lengths, reverse, True)
        for a, c in zip(clean[:3], dirty[:3]):
            np.testing.assert_array_equal(a, c)
        dy = rng.standard_normal((T, B, H))
        g1 = ref.lstm_backward(dy, h0, c0, clean[3], x, W_ih, W_hh, h0, c0, lengths, reverse)
        g2 = ref.lstm_backward(dy, h0, c0, dirty[3], xn, W_ih, W_hh, h0, c0, lengths, reverse)
        for a, c in zip(g1, g2):
            assert np.isfinite(c).all()
            np.testing.assert_array_equal(a, c)


def test_lengths_semantics(rng):
    """Outputs past a row's length are zero, its final state is the state after its last step,
    and a length-0 row returns h0/c0 unchanged."""
    T, B, I, H = 5, 3, 2, 3
    x, W_ih, W_hh, b, h0, c0 = random_problem(rng, T, B, I, H)
    lengths = np.array([5, 2, 0])
    y, hT, cT, _ = ref.lstm_forward(x, W_ih, W_hh, b, h0, c0, lengths, False, False)
    assert (y[2:, 1] == 0).all() and (y[:, 2] == 0).all()
    np.testing.assert_array_equal(hT[2], h0[2])
    np.testing.assert_array_equal(cT[2], c0[2])
    y1, h1, c1, _ = ref.lstm_forward(x[:2, 1:2], W_ih, W_hh, b, h0[1:2], c0[1:2], None, False, False)
    np.testing.assert_allclose(hT[1], h1[0], rtol=1e-13)
    np.testing.assert_allclose(y[:2, 1], y1[:, 0], rtol=1e-13)
    # reverse reads row 1 from t=1 down to 0 and writes outputs at their own positions
    yr, hr, _, _ = ref.lstm_forward(x, W_ih, W_hh, b, h0, c0, lengths, True, False)
    y2, h2, _, _ = ref.lstm_forward(x[1::-1, 1:2], W_ih, W_hh, b, h0[1:2], c0[1:2], None, False, False)
    np.testing.assert_allclose(yr[:2, 1], y2[::-1, 0], rtol=1e-13)
    np.testing.assert_allclose(hr[1], h2[0], rtol=1e-13)


# ---- stacked / bidirectional: finite differences through functional.lstm ----

STACK_CONFIGS = [(1, False, False), (2, False, True), (2, True, False), (3, True, True)]


@pytest.mark.parametrize("layers,bidir,with_lengths", STACK_CONFIGS)
def test_stack_gradients_match_finite_differences(layers, bidir, with_lengths, rng):
    T, B, I, H = 4, 3, 2, 3
    D = 2 if bidir else 1
    m = fastlstm.LSTM(I, H, layers, bidirectional=bidir, dtype=np.float64, seed=int(rng.integers(1 << 30)),
                      backend="reference")
    x = rng.standard_normal((T, B, I))
    h0 = rng.standard_normal((layers * D, B, H)) * 0.5
    c0 = rng.standard_normal((layers * D, B, H)) * 0.5
    lengths = np.array([4, 0, 2]) if with_lengths else None
    y, (hn, cn) = m(x, (h0, c0), lengths)
    dy, dhn, dcn = (rng.standard_normal(a.shape) for a in (y, hn, cn))

    def loss():
        y, (hn, cn) = m(x, (h0, c0), lengths)
        return float((dy * y).sum() + (dhn * hn).sum() + (dcn * cn).sum())

    m(x, (h0, c0), lengths, training=True)
    dx, (dh0, dc0) = m.backward(dy, dhn, dcn)
    for name, arr, g in [("x", x, dx), ("h0", h0, dh0), ("c0", c0, dc0)] + \
                        [(k, m.params[k], m.grads[k]) for k in m.params]:
        idx, num = numeric_grad(loss, arr, rng, max_entries=15)
        assert_grad_close(name, g, idx, num)


# ---- parity with torch.nn.LSTM ----

TORCH_CONFIGS = [  # (T, B, I, H, layers, bidirectional, batch_first, variable lengths)
    (1, 1, 1, 1, 1, False, False, False), (5, 1, 1, 37, 1, False, False, False),
    (6, 4, 3, 5, 2, True, False, True), (3, 2, 7, 3, 1, True, True, False),
    (7, 5, 4, 8, 3, False, True, True), (1, 3, 2, 4, 2, True, False, True),
]
_r = np.random.default_rng(99)
TORCH_CONFIGS += [(int(_r.integers(1, 9)), int(_r.integers(1, 6)), int(_r.integers(1, 7)), int(_r.integers(1, 10)),
                   int(_r.integers(1, 4)), bool(_r.integers(2)), bool(_r.integers(2)), bool(_r.integers(2)))
                  for _ in range(48)]


def _tid(c):
    T, B, I, H, L, bi, bf, vl = c
    return f"T{T}B{B}I{I}H{H}L{L}" + ("-bi" if bi else "") + ("-bf" if bf else "") + ("-len" if vl else "")


@pytest.mark.parametrize("config", TORCH_CONFIGS, ids=_tid)
def test_matches_torch_lstm(config, rng):
    torch = require("torch")
    T, B, I, H, L, bidir, batch_first, var_len = config
    D = 2 if bidir else 1
    torch.manual_seed(int(rng.integers(1 << 30)))
    tl = torch.nn.LSTM(I, H, L, bidirectional=bidir, batch_first=batch_first).double()
    m = fastlstm.LSTM(I, H, L, bidirectional=bidir, batch_first=batch_first, dtype=np.float64,
                      backend="reference")
    m.load_state_dict(tl.state_dict())

    shape = (B, T, I) if batch_first else (T, B, I)
    x = rng.standard_normal(shape)
    h0 = rng.standard_normal((L * D, B, H))
    c0 = rng.standard_normal((L * D, B, H))
    # torch's packed sequences need length >= 1; ours also allow 0 (tested elsewhere)
    lengths = rng.integers(1, T + 1, size=B) if var_len else None

    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(h0, requires_grad=True)
    c0t = torch.tensor(c0, requires_grad=True)
    if var_len:
        packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.tensor(lengths), batch_first=batch_first,
                                                         enforce_sorted=False)
        yp, (hn_t, cn_t) = tl(packed, (h0t, c0t))
        yt, _ = torch.nn.utils.rnn.pad_packed_sequence(yp, batch_first=batch_first, total_length=T)
    else:
        yt, (hn_t, cn_t) = tl(xt, (h0t, c0t))

    y, (hn, cn) = m(x, (h0, c0), lengths, training=True)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hn, hn_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(cn, cn_t.detach().numpy(), rtol=1e-10, atol=1e-12)

    dy = rng.standard_normal(y.shape)
    dhn = rng.standard_normal(hn.shape)
    dcn = rng.standard_normal(cn.shape)
    ((yt * torch.tensor(dy)).sum() + (hn_t * torch.tensor(dhn)).sum() + (cn_t * torch.tensor(dcn)).sum()).backward()
    dx, (dh0, dc0) = m.backward(dy, dhn, dcn)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(dh0, h0t.grad.numpy(), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(dc0, c0t.grad.numpy(), rtol=1e-9, atol=1e-11)
    for name, p in tl.named_parameters():
        np.testing.assert_allclose(m.grads[name], p.grad.numpy(), rtol=1e-9, atol=1e-11, err_msg=name)


def test_need_dh0_false_skips_only_dh0(rng):
    """need_dh0=False (an initial state nobody learns): dh0 is None, every other gradient the same,
    with ragged lengths (a row of length 0 too) and reversed."""
    T, B, I, H = 5, 4, 3, 6
    x, W_ih, W_hh, b, h0, c0 = random_problem(rng, T, B, I, H)
    for lengths, rev in ((np.array([5, 2, 0, 4]), False), (None, True)):
        y, hT, cT, ws = ref.lstm_forward(x, W_ih, W_hh, b, h0, c0, lengths, rev, True)
        dy, dhT, dcT = rng.standard_normal(y.shape), rng.standard_normal(hT.shape), rng.standard_normal(cT.shape)
        full = ref.lstm_backward(dy, dhT, dcT, ws, x, W_ih, W_hh, h0, c0, lengths, rev)
        part = ref.lstm_backward(dy, dhT, dcT, ws, x, W_ih, W_hh, h0, c0, lengths, rev, need_dh0=False)
        assert part[4] is None
        for got, want in zip(part[:4] + part[5:], full[:4] + full[5:]):
            np.testing.assert_array_equal(got, want)
    with pytest.raises(TypeError, match="need_dh0"):
        fastlstm.lstm_backward(dy, None, None, fastlstm.lstm_forward(x, W_ih, W_hh, b, training=True,
                                                                     backend="reference")[3], need_dh0="no")


def test_need_dx_false_skips_only_dx(rng):
    """need_dx=False (a first layer's backward): dx is None, every other gradient the same."""
    T, B, I, H = 5, 3, 4, 6
    x, W_ih, W_hh, b, h0, c0 = random_problem(rng, T, B, I, H)
    lengths = np.array([5, 2, 4])
    y, hT, cT, ws = ref.lstm_forward(x, W_ih, W_hh, b, h0, c0, lengths, False, True)
    dy = rng.standard_normal(y.shape)
    full = ref.lstm_backward(dy, hT * 0, cT * 0, ws, x, W_ih, W_hh, h0, c0, lengths, False)
    part = ref.lstm_backward(dy, hT * 0, cT * 0, ws, x, W_ih, W_hh, h0, c0, lengths, False, need_dx=False)
    assert part[0] is None
    for got, want in zip(part[1:], full[1:]):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(TypeError, match="need_dx"):
        fastlstm.lstm_backward(dy, None, None, fastlstm.lstm_forward(x, W_ih, W_hh, b, training=True,
                                                                     backend="reference")[3], need_dx=1)
