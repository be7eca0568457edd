"""The public one-layer kernel API: validation, backend choice and the tape for backward.

    y, hT, cT, tape = lstm_forward(x, W_ih, W_hh, b, h0, c0, lengths, reverse=..., training=True)
    dx, dW_ih, dW_hh, db, dh0, dc0 = lstm_backward(dy, dhT, dcT, tape)

T = time steps, B = batch, I = input features, H = hidden units; time-major (T, B, I).
The tape remembers the inputs and the backend that ran forward, so backward runs on the same
one. The raw kernels (same names, the contract of DESIGN.md §2) live in fastlstm.backends.*.

The tape owns what backward reads: x, W_ih and W_hh are copied into it unless validation
already made private copies, so changing the caller's arrays in place between forward and
backward cannot change the gradients (PyTorch raises on that through version counters; NumPy
has none, so the tape copies). The copy costs a few percent of a training forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from . import _validate, backends


@dataclass
class Tape:
    """What lstm_backward needs from one lstm_forward call. x, W_ih, W_hh and lengths are the
    tape's own arrays; h0 and c0 are the call's (no backend reads them in backward: every
    workspace keeps the initial state)."""

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
    reverse, training = _validate.flag("reverse", reverse), _validate.flag("training", training)
    given = (x, W_ih, W_hh)
    x, W_ih, W_hh, b, h0, c0, lengths = _validate.forward_args(x, W_ih, W_hh, b, h0, c0, lengths,
                                                              check_finite)
    mod = backends.for_dtype(x.dtype, backend)
    if training:  # the tape's own copies (before forward, so forward and backward read the same)
        x, W_ih, W_hh = (_private(a, g) for a, g in zip((x, W_ih, W_hh), given))
    y, hT, cT, ws = mod.lstm_forward(x, W_ih, W_hh, b, h0, c0, lengths, reverse, training)
    tape = Tape(mod, ws, x, W_ih, W_hh, h0, c0, lengths, reverse) if training else None
    return y, hT, cT, tape


def _private(a: np.ndarray, given) -> np.ndarray:
    """a, validated from the caller's `given`, as an array no caller can reach: a copy unless
    validation made a new array already (a conversion, or a list turned into an array)."""
    if a is given or not a.flags.owndata:
        return a.copy()
    return a


def lstm_backward(dy, dhT, dcT, tape: Tape, *, need_dx=True, need_dh0=True):
    """Gradients of lstm_forward(..., training=True). dy/dhT/dcT may be None (zeros).

    Returns dx (T,B,I), dW_ih (4H,I), dW_hh (4H,H), db (4H,), dh0 (B,H), dc0 (B,H); with
    need_dx=False dx is None and not computed (a first layer whose input needs no gradient),
    with need_dh0=False dh0 is None (an initial state nobody learns: the native kernels then
    skip the first step's dz · W_hh).
    """
    need_dx = _validate.flag("need_dx", need_dx)
    need_dh0 = _validate.flag("need_dh0", need_dh0)
    if not isinstance(tape, Tape):
        raise TypeError("lstm_backward needs the tape returned by lstm_forward(..., training=True)")
    T, B, _ = tape.x.shape
    H = tape.W_hh.shape[1]
    dy, dhT, dcT = _validate.backward_args(dy, dhT, dcT, T, B, H, tape.x.dtype)
    args = (dy, dhT, dcT, tape.workspace, tape.x, tape.W_ih, tape.W_hh, tape.h0, tape.c0, tape.lengths,
            tape.reverse)
    # the flags only when False: a backend module written to the contract without them still works
    flags = {k: False for k, v in (("need_dx", need_dx), ("need_dh0", need_dh0)) if not v}
    return tape.backend.lstm_backward(*args, **flags)


class Prepacked:
    """One layer's weights packed once for repeated inference (what an ONNX Runtime session
    does at creation): whole sequences with forward(), single streaming steps with step().

    A snapshot: the weights are copied (native: into the kernels' packed layout), so later
    changes to the arrays passed in do not reach it; prepack again after a weight update.
    Pickling keeps the weights and the backend choice and packs again when loaded (for the
    loading process's CPU), so a Prepacked travels to multiprocessing workers.
    """

    def __init__(self, W_ih, W_hh, b, *, backend=None):
        W_ih, W_hh, b = _validate.weights(W_ih, W_hh, b)
        self._backend_arg = backend
        self.backend = backends.for_dtype(W_hh.dtype, backend)
        # private, read-only copies: nothing can change the snapshot in place
        self._W_ih, self._W_hh, self._b = (np.array(a, copy=True) for a in (W_ih, W_hh, b))
        for a in (self._W_ih, self._W_hh, self._b):
            a.flags.writeable = False
        self.input_size, self.hidden_size = W_ih.shape[1], W_hh.shape[1]
        self._cell = self.backend.Cell(self._W_ih, self._W_hh, self._b) if hasattr(self.backend, "Cell") else None
        if self._cell is not None:
            self.step = self._cell.step  # straight to C++: a step of a small model is ~1 µs

    def __getstate__(self):
        return {"W_ih": self._W_ih, "W_hh": self._W_hh, "b": self._b, "backend": self._backend_arg}

    def __setstate__(self, state):
        self.__init__(state["W_ih"], state["W_hh"], state["b"], backend=state["backend"])

    @property
    def backend_name(self) -> str:
        return self.backend.NAME

    def forward(self, x, h0=None, c0=None, lengths=None, *, reverse=False, check_finite=None):
        """lstm_forward's inference with these weights: x (T,B,I) -> y (T,B,H), hT, cT."""
        reverse = _validate.flag("reverse", reverse)
        x, _, _, _, h0, c0, lengths = _validate.forward_args(x, self._W_ih, self._W_hh, self._b, h0, c0,
                                                             lengths, check_finite)
        return self._forward_validated(x, h0, c0, lengths, reverse)

    def _forward_validated(self, x, h0, c0, lengths, reverse):
        """forward() for arguments a caller has validated already (x of this dtype, C-contiguous;
        h0/c0 arrays; lengths normalised): no Python checks — the extension checks shapes again."""
        if self._cell is not None:
            return self._cell.forward(x, h0, c0, lengths, reverse)
        return self.backend.lstm_forward(x, self._W_ih, self._W_hh, self._b, h0, c0, lengths, reverse, False)[:3]

    def step(self, x, h, c):
        """One time step, x (B, I); h and c (B, H) are updated in place; returns h.

        The same checks as the native step: h and c writeable arrays of the weights' dtype,
        no two of x, h, c sharing memory; a rejected call leaves h and c as they were."""
        dt = self._W_hh.dtype
        given = x
        x = _validate.as_float_array("x", x, dt)
        if x.ndim != 2 or x.shape[1] != self.input_size:
            raise ValueError(f"x must have shape (B, I) with I = {self.input_size}, got {x.shape}")
        if x.shape[0] == 0:
            raise ValueError("x has an empty batch, B = 0")
        for name, s in (("h", h), ("c", c)):
            if not isinstance(s, np.ndarray) or s.dtype != dt or not s.dtype.isnative:
                got = s.dtype.str if isinstance(s, np.ndarray) else type(s).__name__
                raise TypeError(f"{name} must be a {dt} array in native byte order, got {got}")
            if s.shape != (x.shape[0], self.hidden_size):
                raise ValueError(f"{name} must have shape (B, H) = ({x.shape[0]}, {self.hidden_size}), "
                                 f"got {s.shape}")
            if not s.flags.writeable:
                raise ValueError(f"{name} must be writeable (it is updated in place)")
        xs = given if isinstance(given, np.ndarray) else x  # the caller's x, even if validation copied it
        for a, b, names in ((h, c, "h and c"), (xs, h, "x and h"), (xs, c, "x and c")):
            if np.may_share_memory(a, b):
                raise ValueError(f"{names} must not overlap")
        h0, c0 = np.ascontiguousarray(h), np.ascontiguousarray(c)
        _, hT, cT, _ = self.backend.lstm_forward(x[None], self._W_ih, self._W_hh, self._b, h0, c0, None, False, False)
        h[...] = hT
        c[...] = cT
        return h


def prepack(W_ih, W_hh, b, *, backend=None) -> Prepacked:
    """Pack one layer's weights once for repeated inference:

        model = prepack(W_ih, W_hh, b)
        y, hT, cT = model.forward(x, h0, c0, lengths)     # as lstm_forward, inference only

    Saves the per-call packing (about a tenth of a (100,1,256,256) forward). See Prepacked.
    """
    return Prepacked(W_ih, W_hh, b, backend=backend)


def stepper(W_ih, W_hh, b, *, backend=None) -> Prepacked:
    """Streaming inference, one time step per call with the state kept by the caller:

        cell = stepper(W_ih, W_hh, b)
        h, c = np.zeros((B, H), np.float32), np.zeros((B, H), np.float32)
        for x_t in stream:            # x_t (B, I)
            cell.step(x_t, h, c)      # h and c are updated in place; returns h

    The weights are packed once (the same object as prepack()); on the native backend a step
    of a small model costs about a microsecond. The arrays must be C-contiguous and of the
    weights' dtype.
    """
    return Prepacked(W_ih, W_hh, b, backend=backend)
