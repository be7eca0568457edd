"""NumPy reference LSTM kernels: this file is the spec.

Every other backend (Numba, native C++) implements the same two functions with the same
arguments and is tested against these, and these are tested against float64 finite
differences and against torch.nn.LSTM. Written for reading, not for speed: no caching,
no in-place tricks, one time step per loop iteration, the equations of DESIGN.md §1 verbatim.

T = time steps, B = batch, I = input features, H = hidden units.
Gate order i, f, g, o (PyTorch / oneDNN); all four gates live in one (4H, ...) matrix.

Variable lengths: row b has lengths[b] real steps. Beyond them its state is carried
unchanged, its output is 0 and its inputs are never read (not even multiplied by zero,
so NaN padding cannot leak). With reverse=True row b is read from lengths[b]-1 down to 0
and outputs are written back at their own positions (PyTorch's packed semantics).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import _validate

NAME = "reference"
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def info() -> dict:
    return {"name": NAME, "dtypes": "float32, float64"}


def sigmoid(x):
    # tanh form: no overflow warning for large |x|, exact symmetry sigmoid(-x) = 1 - sigmoid(x)
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def step_order(T: int, lengths: np.ndarray, reverse: bool):
    """Which time index row b reads at step s, and whether that step is real.

    returns tidx (T, B) int64 and valid (T, B) bool. Steps s >= lengths[b] are padding;
    their tidx is s (in range, never used for reading).
    """
    s = np.arange(T)[:, None]
    valid = s < lengths[None, :]
    if reverse:
        tidx = np.where(valid, lengths[None, :] - 1 - s, s)
    else:
        tidx = np.broadcast_to(s, valid.shape).copy()
    return tidx, valid


class Workspace(NamedTuple):
    """What forward keeps for backward, all in step order (step s, not time t)."""

    gates: np.ndarray   # (T, B, 4H) activated i, f, g, o
    c: np.ndarray       # (T, B, H)  c_t after the step
    c_prev: np.ndarray  # (T, B, H)  c_{t-1} before the step
    h_prev: np.ndarray  # (T, B, H)  h_{t-1} before the step
    batch_first: bool = False  # the call's x, y (and backward's dy, dx) were (B, T, ·)


def lstm_forward(x, W_ih, W_hh, b, h0, c0, lengths=None, reverse=False, training=False, batch_first=False):
    """One layer, one direction.

    x (T,B,I), W_ih (4H,I), W_hh (4H,H), b (4H,), h0 (B,H), c0 (B,H), lengths (B,) or None
    -> y (T,B,H), hT (B,H), cT (B,H), workspace (None unless training)
    batch_first: x and y are (B,T,·) (served through time-major copies here)
    """
    if _validate.flag("batch_first", batch_first):
        y, hT, cT, ws = lstm_forward(_validate.swap_tb(x), W_ih, W_hh, b, h0, c0, lengths, reverse, training)
        return _validate.swap_tb(y), hT, cT, None if ws is None else ws._replace(batch_first=True)
    T, B, I = x.shape
    H = W_hh.shape[1]
    if lengths is None:
        lengths = np.full(B, T, dtype=np.int64)
    tidx, valid = step_order(T, lengths, reverse)
    rows = np.arange(B)

    h, c = h0.copy(), c0.copy()
    y = np.zeros((T, B, H), dtype=x.dtype)
    ws = None
    if training:
        ws = Workspace(np.zeros((T, B, 4 * H), x.dtype), np.zeros((T, B, H), x.dtype),
                       np.zeros((T, B, H), x.dtype), np.zeros((T, B, H), x.dtype))
    for s in range(T):
        m = valid[s]
        x_s = np.where(m[:, None], x[tidx[s], rows], 0)       # padding is never read
        # z_t = x_t · W_ihᵀ + h_{t-1} · W_hhᵀ + b
        z = x_s @ W_ih.T + h @ W_hh.T + b
        i = sigmoid(z[:, 0 * H:1 * H])
        f = sigmoid(z[:, 1 * H:2 * H])
        g = np.tanh(z[:, 2 * H:3 * H])
        o = sigmoid(z[:, 3 * H:4 * H])
        c_new = f * c + i * g                                   # the constant error carousel
        h_new = o * np.tanh(c_new)
        if training:
            ws.gates[s] = np.concatenate([i, f, g, o], axis=1)
            ws.c[s], ws.c_prev[s], ws.h_prev[s] = c_new, c, h
        y[tidx[s][m], rows[m]] = h_new[m]
        c = np.where(m[:, None], c_new, c)                      # padding rows carry their state
        h = np.where(m[:, None], h_new, h)
    return y, h, c, ws


def lstm_backward(dy, dhT, dcT, workspace, x, W_ih, W_hh, h0, c0, lengths=None, reverse=False, need_dx=True,
                  batch_first=False, need_dh0=True):
    """Gradients of one layer, one direction, given the forward's workspace.

    dy (T,B,H), dhT (B,H), dcT (B,H) -> dx (T,B,I), dW_ih (4H,I), dW_hh (4H,H), db (4H,),
    dh0 (B,H), dc0 (B,H). dhT/dcT carry the gradient from a later chunk (truncated BPTT).
    need_dx=False: dx is not computed and None is returned in its place (a first layer whose
    input needs no gradient); need_dh0=False likewise for dh0 (an initial state that is not
    learned: the first step's dz · W_hh is skipped).
    h0 and c0 are not read (the workspace keeps h_{t-1} and c_{t-1} of every step); they are
    in the signature because the kernel contract (DESIGN.md §2) has them.

    batch_first: dy, x and dx are (B,T,·), as x and y were in the forward call.
    """
    bf = _validate.flag("batch_first", batch_first)
    if isinstance(workspace, Workspace) and workspace.batch_first != bf:
        raise ValueError("batch_first differs from the forward call")
    if bf:
        dx, *grads = lstm_backward(_validate.swap_tb(dy), dhT, dcT,
                                   workspace._replace(batch_first=False) if isinstance(workspace, Workspace) else workspace,
                                   _validate.swap_tb(x), W_ih, W_hh, h0, c0, lengths, reverse, need_dx,
                                   need_dh0=need_dh0)
        return (_validate.swap_tb(dx), *grads)
    need_dh0 = _validate.flag("need_dh0", need_dh0)
    T, B, I = x.shape
    H = W_hh.shape[1]
    if lengths is None:
        lengths = np.full(B, T, dtype=np.int64)
    tidx, valid = step_order(T, lengths, reverse)
    rows = np.arange(B)
    ws = workspace

    dh, dc = dhT.copy(), dcT.copy()
    dZ = np.zeros((T, B, 4 * H), dtype=x.dtype)                # step order
    for s in reversed(range(T)):
        m = valid[s][:, None]
        i, f, g, o = (ws.gates[s][:, k * H:(k + 1) * H] for k in range(4))
        dh = dh + np.where(m, dy[tidx[s], rows], 0)
        # h_t = o ⊙ tanh(c_t)
        tc = np.tanh(ws.c[s])
        do = dh * tc
        dcs = dc + dh * o * (1 - tc * tc)
        # c_t = f ⊙ c_{t-1} + i ⊙ g
        di = dcs * g
        dg = dcs * i
        df = dcs * ws.c_prev[s]
        # back through the activations: σ' = σ(1−σ), tanh' = 1−tanh²
        dz = np.concatenate([di * i * (1 - i), df * f * (1 - f), dg * (1 - g * g), do * o * (1 - o)], axis=1)
        dz = np.where(m, dz, 0)
        dZ[s] = dz
        # z_t = ... + h_{t-1} · W_hhᵀ (at s = 0, every row's first step, dh_{-1} = dh0)
        if s > 0 or need_dh0:
            dh = np.where(m, dz @ W_hh, dh)
        dc = np.where(m, dcs * f, dc)

    # the non-recurrent gradients, merged over all T·B rows
    X = np.where(valid[:, :, None], x[tidx, rows], 0)          # step-ordered inputs, padding zeroed
    dZ2 = dZ.reshape(T * B, 4 * H)
    dW_ih = dZ2.T @ X.reshape(T * B, I)
    dW_hh = dZ2.T @ ws.h_prev.reshape(T * B, H)
    db = dZ2.sum(axis=0)
    dh0 = dh if need_dh0 else None
    if not need_dx:
        return None, dW_ih, dW_hh, db, dh0, dc
    dX = dZ @ W_ih                                               # (T,B,I), step order
    dx = np.zeros_like(x)
    dx[tidx[valid], np.broadcast_to(rows, valid.shape)[valid]] = dX[valid]
    return dx, dW_ih, dW_hh, db, dh0, dc
