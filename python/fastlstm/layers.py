"""LSTM layer holding its parameters in torch.nn.LSTM's layout and names.

Parameters: weight_ih_l{k}[_reverse] (4H, I or D·H), weight_hh_l{k}[_reverse] (4H, H),
bias_ih_l{k}[_reverse], bias_hh_l{k}[_reverse] (4H,), so state_dicts round-trip with PyTorch.
"""

from __future__ import annotations

import numpy as np

from . import _validate, core, functional
from .nn.module import Module, register


@register
class LSTM(Module):
    """Multi-layer, optionally bidirectional LSTM (forward + backward) on NumPy arrays.

    >>> lstm = LSTM(input_size=8, hidden_size=32, num_layers=2, batch_first=True)
    >>> y, (h_n, c_n) = lstm(x)                       # x (B, T, 8) -> y (B, T, 32)
    >>> y, _ = lstm(x, training=True); dx = lstm.backward(dy)   # grads in lstm.grads

    dropout: applied to the outputs of every layer but the last in training mode (torch's rule).
    forget_bias (default 1.0, Keras' unit_forget_bias): the forget gate's b_ih is set to it and its
    b_hh to 0, so a fresh LSTM keeps its cell state; None keeps torch's init (every bias uniform in
    ±1/√H). Measured (docs/forget-bias.json): echo task, label = token 18 steps back, LSTM(32),
    Adam 1e-2, 30 epochs, 5 seeds (benchmarks/forget_bias.py): 4 of 5 seeds above 0.9 accuracy with 1.0 (first at epochs
    13–28), none with torch's init (final 0.23–0.82).
    stateful: each call starts from the previous call's final state (h_n, c_n) unless hx is
    given — truncated BPTT over chunks of a long sequence; reset_states() starts afresh.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 bidirectional=False, dtype=np.float32, seed=None, backend=None, dropout=0.0,
                 forget_bias=1.0, stateful=False):
        super().__init__()
        if input_size < 1 or hidden_size < 1 or num_layers < 1:
            raise ValueError("input_size, hidden_size and num_layers must be >= 1, got "
                             f"{input_size}, {hidden_size}, {num_layers}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.input_size, self.hidden_size, self.num_layers = int(input_size), int(hidden_size), int(num_layers)
        self.bias, self.batch_first, self.bidirectional = bool(bias), bool(batch_first), bool(bidirectional)
        self.dtype = np.dtype(dtype)
        self.backend = backend
        self.dropout, self.forget_bias, self.stateful = float(dropout), forget_bias, bool(stateful)
        D = 2 if bidirectional else 1
        H = self.hidden_size
        rng = np.random.default_rng(seed)
        k = 1.0 / np.sqrt(H)  # torch's init: U(-1/sqrt(H), 1/sqrt(H)) for every parameter
        for l in range(num_layers):
            in_l = input_size if l == 0 else D * H
            for d in range(D):
                sfx = f"_l{l}" + ("_reverse" if d else "")
                self.add_param("weight_ih" + sfx, rng.uniform(-k, k, (4 * H, in_l)).astype(self.dtype))
                self.add_param("weight_hh" + sfx, rng.uniform(-k, k, (4 * H, H)).astype(self.dtype))
                if bias:
                    b_ih = rng.uniform(-k, k, 4 * H).astype(self.dtype)
                    b_hh = rng.uniform(-k, k, 4 * H).astype(self.dtype)
                    if forget_bias is not None:  # gate order i, f, g, o: f is [H, 2H)
                        b_ih[H:2 * H], b_hh[H:2 * H] = forget_bias, 0
                    self.add_param("bias_ih" + sfx, b_ih)
                    self.add_param("bias_hh" + sfx, b_hh)
        self.rng = np.random.default_rng(seed)  # dropout between layers
        self._tape = None
        self._packed = None
        self.state = None  # (h_n, c_n) carried between calls when stateful

    def get_config(self):
        return dict(input_size=self.input_size, hidden_size=self.hidden_size, num_layers=self.num_layers,
                    bias=self.bias, batch_first=self.batch_first, bidirectional=self.bidirectional,
                    dtype=self.dtype.name, dropout=self.dropout, forget_bias=self.forget_bias,
                    stateful=self.stateful)

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers > 1:
            s += f", num_layers={self.num_layers}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _suffixes(self):
        for l in range(self.num_layers):
            for d in range(self.num_directions):
                yield f"_l{l}" + ("_reverse" if d else "")

    def weights(self):
        """Parameters as functional.lstm's list of (W_ih, W_hh, b_ih, b_hh)."""
        p = self.params
        return [(p["weight_ih" + s], p["weight_hh" + s], p.get("bias_ih" + s), p.get("bias_hh" + s))
                for s in self._suffixes()]

    def __call__(self, x, hx=None, lengths=None, training=None):
        return self.forward(x, hx, lengths, training)

    def forward(self, x, hx=None, lengths=None, training=None):
        """x (T,B,I) or (B,T,I) with batch_first; hx = (h0, c0) each (L·D, B, H) or None.

        Returns y, (h_n, c_n). training (default: the module's mode) keeps what backward()
        needs; an inference call in between leaves a training call's tape in place.
        """
        training = self.training if training is None else training
        if np.ndim(x) != 3 or np.shape(x)[-1] != self.input_size:
            raise ValueError(f"LSTM expects x of shape ({'B, T' if self.batch_first else 'T, B'}, "
                             f"input_size={self.input_size}), got shape {np.shape(x)}")
        if hx is None and self.stateful and self.state is not None:
            hx = self.state
        h0, c0 = (None, None) if hx is None else hx
        if not training and self._packed is not None:
            y, (h_n, c_n) = self._packed(x, (h0, c0) if hx is not None else None, lengths)
        elif training and self.dropout > 0 and self.num_layers > 1:
            y, h_n, c_n, self._tape = self._forward_dropout(x, h0, c0, lengths)
        else:
            y, h_n, c_n, tape = functional.lstm(
                x, self.weights(), h0, c0, lengths, bidirectional=self.bidirectional,
                batch_first=self.batch_first, training=training, backend=self.backend)
            if training:
                self._tape = tape
        if self.stateful:
            self.state = (h_n.copy(), c_n.copy())  # carried, never differentiated through
        return y, (h_n, c_n)

    def _forward_dropout(self, x, h0, c0, lengths):
        """Layer by layer with inverted dropout on the outputs of every layer but the last."""
        D, L, w = self.num_directions, self.num_layers, self.weights()
        inp, hs, cs, tapes, masks = x, [], [], [], []
        for l in range(L):
            sl = slice(l * D, (l + 1) * D)
            y, h_n, c_n, tape = functional.lstm(
                inp, w[sl], None if h0 is None else h0[sl], None if c0 is None else c0[sl], lengths,
                bidirectional=self.bidirectional, batch_first=self.batch_first, training=True,
                backend=self.backend)
            hs.append(h_n)
            cs.append(c_n)
            tapes.append(tape)
            if l < L - 1:
                mask = (self.rng.random(y.shape, dtype=np.float32) >= self.dropout).astype(y.dtype)
                mask /= 1 - self.dropout
                masks.append(mask)
                y = y * mask
            inp = y
        return inp, np.concatenate(hs), np.concatenate(cs), (tapes, masks)

    def backward(self, dy, dh_n=None, dc_n=None, *, need_dh0=True):
        """Accumulate parameter gradients into self.grads; returns dx, (dh0, dc0). need_dh0=False:
        dh0 is None, not computed (a caller that discards it; the kernels skip dz_0·W_hh)."""
        if self._tape is None:
            raise RuntimeError("LSTM.backward() needs a preceding forward in training mode "
                               "(model.train() or forward(..., training=True)); each training "
                               "forward is undone by one backward")
        tape, self._tape = self._tape, None
        if isinstance(tape, tuple):  # dropout between layers: undo layer by layer
            return self._backward_dropout(dy, dh_n, dc_n, *tape, need_dh0=need_dh0)
        dx, dweights, dh0, dc0 = functional.lstm_grad(dy, dh_n, dc_n, tape, need_dh0=need_dh0)
        self._accumulate(self._suffixes(), dweights)
        return dx, (dh0, dc0)

    def _backward_dropout(self, dy, dh_n, dc_n, tapes, masks, need_dh0=True):
        D = self.num_directions
        sfx = list(self._suffixes())
        dh0s, dc0s = [None] * len(tapes), [None] * len(tapes)
        dout = dy
        for l in reversed(range(len(tapes))):
            sl = slice(l * D, (l + 1) * D)
            if l < len(tapes) - 1 and dout is not None:
                dout = dout * masks[l]  # y = y_l · mask_l
            dout, dweights, dh0s[l], dc0s[l] = functional.lstm_grad(
                dout, None if dh_n is None else dh_n[sl], None if dc_n is None else dc_n[sl], tapes[l],
                need_dh0=need_dh0)
            self._accumulate(sfx[sl], dweights)
        return dout, (np.concatenate(dh0s) if need_dh0 else None, np.concatenate(dc0s))

    def _accumulate(self, suffixes, dweights):
        for s, (dW_ih, dW_hh, db_ih, db_hh) in zip(suffixes, dweights):
            self.grads["weight_ih" + s] += dW_ih
            self.grads["weight_hh" + s] += dW_hh
            if self.bias:
                self.grads["bias_ih" + s] += db_ih
                self.grads["bias_hh" + s] += db_hh

    def reset_states(self):
        """Forget the carried state of a stateful LSTM (the next call starts from zeros)."""
        self.state = None

    def _inference_cache(self, on):
        self._packed = self.prepack() if on else None

    def prepack(self) -> PrepackedLSTM:
        """An inference-only snapshot with every layer's weights packed once (fastlstm.prepack):
        the same call as forward() minus training, without the per-call packing and with one
        validation per call instead of one per layer and direction."""
        return PrepackedLSTM(self)


class PrepackedLSTM:
    """LSTM.prepack(): inference with the weights of every layer and direction packed once.

    A snapshot: later changes to the LSTM's parameters do not reach it; prepack again after
    a weight update.

    >>> model = lstm.prepack()
    >>> y, (h_n, c_n) = model(x, lengths=lengths)      # as lstm(x, lengths=lengths)
    """

    def __init__(self, lstm: LSTM):
        self.input_size, self.hidden_size, self.num_layers = lstm.input_size, lstm.hidden_size, lstm.num_layers
        self.bidirectional, self.batch_first, self.dtype = lstm.bidirectional, lstm.batch_first, lstm.dtype
        H = self.hidden_size
        self.cells = [core.prepack(W_ih, W_hh, functional._bias_sum(b_ih, b_hh, H, self.dtype), backend=lstm.backend)
                      for W_ih, W_hh, b_ih, b_hh in lstm.weights()]

    @property
    def backend_name(self) -> str:
        return self.cells[0].backend_name

    def __call__(self, x, hx=None, lengths=None, *, check_finite=None):
        return self.forward(x, hx, lengths, check_finite=check_finite)

    def forward(self, x, hx=None, lengths=None, *, check_finite=None):
        """x (T,B,I) or (B,T,I) with batch_first; hx = (h0, c0) each (L·D, B, H) or None.
        Returns y, (h_n, c_n)."""
        h0, c0 = (None, None) if hx is None else hx
        L, D, H = self.num_layers, 2 if self.bidirectional else 1, self.hidden_size
        x, h0, c0 = functional._inputs(x, h0, c0, self.batch_first, L, D, H, self.dtype)
        T, B, I = x.shape
        if T == 0 or B == 0:
            raise ValueError(f"x needs T >= 1 time steps and B >= 1 rows, got (T, B) = ({T}, {B})")
        if I != self.input_size:
            raise ValueError(f"x must have I = input_size = {self.input_size} features, got {I}")
        lengths = _validate.as_lengths(lengths, T, B)
        _validate.check_finite_inputs(check_finite, x, lengths, h0=h0, c0=c0)
        zeros = np.zeros((B, H), self.dtype)

        def run(k, inp, h0_k, c0_k, reverse):
            h0_k = zeros if h0_k is None else h0_k
            c0_k = zeros if c0_k is None else c0_k
            return self.cells[k]._forward_validated(inp, h0_k, c0_k, lengths, reverse) + (None,)

        y, h_n, c_n, _ = functional._stack(x, h0, c0, L, D, self.batch_first, run)
        return y, (h_n, c_n)
