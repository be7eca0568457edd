"""Stacked and bidirectional LSTM composed from the one-layer kernel (core.lstm_forward).

L = layers, D = directions (1 or 2), T = time steps, B = batch, I = input features,
H = hidden units. Layouts follow torch.nn.LSTM:
    weights    list of L·D tuples (W_ih, W_hh, b_ih, b_hh), index l·D + d (d = 1 is reverse);
               W_ih (4H, I) for layer 0 and (4H, D·H) above; b_ih/b_hh (4H,) or None
    x          (T, B, I), or (B, T, I) with batch_first
    y          (T, B, D·H): the directions concatenated along the last axis
    h_n, c_n   (L·D, B, H)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _validate, core


@dataclass
class StackTape:
    tapes: list            # core.Tape per (layer, direction), index l·D + d
    num_layers: int
    num_directions: int
    batch_first: bool
    has_bias: list         # per weight tuple: (b_ih is not None, b_hh is not None)

    @property
    def backend_name(self) -> str:
        return self.tapes[0].backend_name


def _check_weights(weights, num_directions):
    weights = list(weights)
    D = num_directions
    if not weights or len(weights) % D:
        raise ValueError(f"weights must hold num_layers·{D} tuples (W_ih, W_hh, b_ih, b_hh), got {len(weights)}")
    for k, w in enumerate(weights):
        if len(w) != 4:
            raise ValueError(f"weights[{k}] must be a tuple (W_ih, W_hh, b_ih, b_hh), got {len(w)} items")
    return weights


def _bias_sum(b_ih, b_hh, H, dtype):
    b = np.zeros(4 * H, dtype)
    for name, v in (("b_ih", b_ih), ("b_hh", b_hh)):
        if v is not None:
            v = _validate.as_float_array(name, v, dtype)
            _validate.check_shape(name, v, (4 * H,), "(4H,)")
            b = b + v
    return b


def _inputs(x, h0, c0, batch_first, L, D, H, dtype=None):
    """Validated time-major x (T, B, I) and h0/c0 (L·D, B, H) or None."""
    x = _validate.as_float_array("x", x, dtype)
    if x.ndim != 3:
        raise ValueError(f"x must be 3-d ({'B, T, I' if batch_first else 'T, B, I'}), got shape {x.shape}")
    if batch_first:
        x = np.ascontiguousarray(x.transpose(1, 0, 2))
    B = x.shape[1]
    if h0 is not None:
        h0 = _validate.as_float_array("h0", h0, x.dtype)
        _validate.check_shape("h0", h0, (L * D, B, H), "(num_layers·D, B, H)")
    if c0 is not None:
        c0 = _validate.as_float_array("c0", c0, x.dtype)
        _validate.check_shape("c0", c0, (L * D, B, H), "(num_layers·D, B, H)")
    return x, h0, c0


def _stack(x, h0, c0, L, D, batch_first, run):
    """Layers bottom-up, directions side by side: run(k, inp, h0_k, c0_k, reverse) -> (y, hT, cT,
    extra) is one layer·direction k = l·D + d. Returns y, h_n, c_n and the extras."""
    hs, cs, extras = [], [], []
    inp = x
    for l in range(L):
        outs = []
        for d in range(D):
            k = l * D + d
            y, hT, cT, extra = run(k, inp, None if h0 is None else h0[k], None if c0 is None else c0[k], d == 1)
            outs.append(y)
            hs.append(hT)
            cs.append(cT)
            extras.append(extra)
        inp = outs[0] if D == 1 else np.concatenate(outs, axis=2)
    y = inp
    if batch_first:
        y = np.ascontiguousarray(y.transpose(1, 0, 2))
    if len(hs) == 1:  # one layer, one direction: a view, not a copy
        return y, hs[0][None], cs[0][None], extras
    return y, np.stack(hs), np.stack(cs), extras


def lstm(x, weights, h0=None, c0=None, lengths=None, *, bidirectional=False, batch_first=False,
         training=False, backend=None, check_finite=None):
    """Multi-layer (bidirectional) LSTM. Returns y, h_n, c_n, tape (None unless training)."""
    D = 2 if bidirectional else 1
    weights = _check_weights(weights, D)
    L = len(weights) // D
    H = np.shape(weights[0][1])[-1] if np.ndim(weights[0][1]) == 2 else None
    if H is None:
        raise ValueError(f"weights[0][1] (W_hh) must be 2-d (4H, H), got shape {np.shape(weights[0][1])}")
    x, h0, c0 = _inputs(x, h0, c0, batch_first, L, D, H)

    def run(k, inp, h0_k, c0_k, reverse):
        W_ih, W_hh, b_ih, b_hh = weights[k]
        W_hh_arr = _validate.as_float_array(f"weights[{k}] W_hh", W_hh, x.dtype)
        b = _bias_sum(b_ih, b_hh, W_hh_arr.shape[1] if W_hh_arr.ndim == 2 else H, x.dtype)
        return core.lstm_forward(inp, W_ih, W_hh_arr, b, h0_k, c0_k, lengths, reverse=reverse,
                                 training=training, backend=backend, check_finite=check_finite)

    y, h_n, c_n, tapes = _stack(x, h0, c0, L, D, batch_first, run)
    has_bias = [(w[2] is not None, w[3] is not None) for w in weights]
    tape = StackTape(tapes, L, D, batch_first, has_bias) if training else None
    return y, h_n, c_n, tape


def lstm_grad(dy, dh_n, dc_n, tape: StackTape, *, need_dh0=True):
    """Backward of lstm(..., training=True).

    dy like y, dh_n/dc_n (L·D, B, H); any may be None (zeros). Returns dx (like x),
    dweights (list of (dW_ih, dW_hh, db_ih, db_hh), None where that bias was None),
    dh0 and dc0 (L·D, B, H); dh0 None with need_dh0=False (not computed: an initial state
    nobody learns).
    """
    need_dh0 = _validate.flag("need_dh0", need_dh0)
    if not isinstance(tape, StackTape):
        raise TypeError("lstm_grad needs the tape returned by lstm(..., training=True)")
    L, D = tape.num_layers, tape.num_directions
    t0 = tape.tapes[0]
    T, B, _ = t0.x.shape
    H = t0.W_hh.shape[1]
    dt = t0.x.dtype
    if dy is not None:
        dy = _validate.as_float_array("dy", dy, dt)
        if tape.batch_first:
            _validate.check_shape("dy", dy, (B, T, D * H), "(B, T, D·H)")
            dy = np.ascontiguousarray(dy.transpose(1, 0, 2))
        else:
            _validate.check_shape("dy", dy, (T, B, D * H), "(T, B, D·H)")
    if dh_n is not None:
        dh_n = _validate.as_float_array("dh_n", dh_n, dt)
        _validate.check_shape("dh_n", dh_n, (L * D, B, H), "(num_layers·D, B, H)")
    if dc_n is not None:
        dc_n = _validate.as_float_array("dc_n", dc_n, dt)
        _validate.check_shape("dc_n", dc_n, (L * D, B, H), "(num_layers·D, B, H)")

    dweights = [None] * (L * D)
    dh0 = np.zeros((L * D, B, H), dt) if need_dh0 else [None] * (L * D)
    dc0 = np.zeros((L * D, B, H), dt)
    dout = dy
    for l in reversed(range(L)):
        dinp = None
        for d in range(D):
            k = l * D + d
            dy_d = None if dout is None else np.ascontiguousarray(dout[:, :, d * H:(d + 1) * H])
            dx, dW_ih, dW_hh, db, dh0[k], dc0[k] = core.lstm_backward(
                dy_d, None if dh_n is None else dh_n[k], None if dc_n is None else dc_n[k], tape.tapes[k],
                need_dh0=need_dh0)
            has_ih, has_hh = tape.has_bias[k]
            dweights[k] = (dW_ih, dW_hh, db.copy() if has_ih else None, db.copy() if has_hh else None)
            dinp = dx if dinp is None else dinp + dx
        dout = dinp
    dx = dout
    if tape.batch_first:
        dx = np.ascontiguousarray(dx.transpose(1, 0, 2))
    return dx, dweights, dh0 if need_dh0 else None, dc0
