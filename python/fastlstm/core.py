"""The public one-layer kernel API: validation, backend choice and the tape for backward.

    y, hT, cT, tape = lstm_forward(x, W_ih, W_hh, b, h0, c0, lengths, reverse=..., training=True)
    dx, dW_ih, dW_hh, db, dh0, dc0 = lstm_backward(dy, dhT, dcT, tape)

T = time steps, B = batch, I = input features, H = hidden units; time-major (T, B, I).
The tape remembers the inputs and the backend that ran forward, so backward runs on the same
one. The raw kernels (same names, the contract of DESIGN.md §2) live in fastlstm.backends.*.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from . import _validate, backends


@dataclass
class Tape:
    """What lstm_backward needs from one lstm_forward call."""

    backend: ModuleType
    workspace: Any
    x: np.ndarray
    W_ih: np.ndarray
    W_hh: np.ndarray
    h0: np.ndarray
    c0: np.ndarray
    lengths: np.ndarray | None
    reverse: bool

    @property
    def backend_name(self) -> str:
        return self.backend.NAME


def lstm_forward(x, W_ih, W_hh, b, h0=None, c0=None, lengths=None, *, reverse=False,
                 training=False, backend=None, check_finite=None):
    """One LSTM layer, one direction, time-major.

    x (T,B,I), W_ih (4H,I), W_hh (4H,H), b (4H,) = b_ih + b_hh, h0/c0 (B,H) or None for zeros,
    lengths (B,) ints in [0, T] or None. Returns y (T,B,H), hT (B,H), cT (B,H) and a Tape
    (None unless training=True) for lstm_backward.
    """
    x, W_ih, W_hh, b, h0, c0, lengths = _validate.forward_args(x, W_ih, W_hh, b, h0, c0, lengths,
                                                              check_finite)
    mod = backends.for_dtype(x.dtype, backend)
    y, hT, cT, ws = mod.lstm_forward(x, W_ih, W_hh, b, h0, c0, lengths, bool(reverse), bool(training))
    tape = Tape(mod, ws, x, W_ih, W_hh, h0, c0, lengths, bool(reverse)) if training else None
    return y, hT, cT, tape


def lstm_backward(dy, dhT, dcT, tape: Tape):
    """Gradients of lstm_forward(..., training=True). dy/dhT/dcT may be None (zeros).

    Returns dx (T,B,I), dW_ih (4H,I), dW_hh (4H,H), db (4H,), dh0 (B,H), dc0 (B,H).
    """
    if not isinstance(tape, Tape):
        raise TypeError("lstm_backward needs the tape returned by lstm_forward(..., training=True)")
    T, B, _ = tape.x.shape
    H = tape.W_hh.shape[1]
    dy, dhT, dcT = _validate.backward_args(dy, dhT, dcT, T, B, H, tape.x.dtype)
    return tape.backend.lstm_backward(dy, dhT, dcT, tape.workspace, tape.x, tape.W_ih, tape.W_hh,
                                      tape.h0, tape.c0, tape.lengths, tape.reverse)
