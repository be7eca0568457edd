"""LSTM layer holding its parameters in torch.nn.LSTM's layout and names.

Parameters: weight_ih_l{k}[_reverse] (4H, I or D·H), weight_hh_l{k}[_reverse] (4H, H),
bias_ih_l{k}[_reverse], bias_hh_l{k}[_reverse] (4H,), so state_dicts round-trip with PyTorch.
"""

from __future__ import annotations

import numpy as np

from . import _validate, core, functional


class LSTM:
    """Multi-layer, optionally bidirectional LSTM (forward + backward) on NumPy arrays.

    >>> lstm = LSTM(input_size=8, hidden_size=32, num_layers=2, batch_first=True)
    >>> y, (h_n, c_n) = lstm(x)                       # x (B, T, 8) -> y (B, T, 32)
    >>> y, _ = lstm(x, training=True); dx = lstm.backward(dy)   # grads in lstm.grads
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 bidirectional=False, dtype=np.float32, seed=None, backend=None):
        if input_size < 1 or hidden_size < 1 or num_layers < 1:
            raise ValueError("input_size, hidden_size and num_layers must be >= 1, got "
                             f"{input_size}, {hidden_size}, {num_layers}")
        self.input_size, self.hidden_size, self.num_layers = int(input_size), int(hidden_size), int(num_layers)
        self.bias, self.batch_first, self.bidirectional = bool(bias), bool(batch_first), bool(bidirectional)
        self.dtype = np.dtype(dtype)
        self.backend = backend
        D = 2 if bidirectional else 1
        H = self.hidden_size
        rng = np.random.default_rng(seed)
        k = 1.0 / np.sqrt(H)  # torch's init: U(-1/sqrt(H), 1/sqrt(H)) for every parameter
        self.params: dict[str, np.ndarray] = {}
        for l in range(num_layers):
            in_l = input_size if l == 0 else D * H
            for d in range(D):
                sfx = f"_l{l}" + ("_reverse" if d else "")
                self.params["weight_ih" + sfx] = rng.uniform(-k, k, (4 * H, in_l)).astype(self.dtype)
                self.params["weight_hh" + sfx] = rng.uniform(-k, k, (4 * H, H)).astype(self.dtype)
                if bias:
                    self.params["bias_ih" + sfx] = rng.uniform(-k, k, 4 * H).astype(self.dtype)
                    self.params["bias_hh" + sfx] = rng.uniform(-k, k, 4 * H).astype(self.dtype)
        self.grads = {name: np.zeros_like(p) for name, p in self.params.items()}
        self._tape = None

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

    def __call__(self, x, hx=None, lengths=None, training=False):
        return self.forward(x, hx, lengths, training)

    def forward(self, x, hx=None, lengths=None, training=False):
        """x (T,B,I) or (B,T,I) with batch_first; hx = (h0, c0) each (L·D, B, H) or None.

        Returns y, (h_n, c_n). With training=True keeps what backward() needs; an inference
        call in between (training=False) leaves that tape alone.
        """
        h0, c0 = (None, None) if hx is None else hx
        y, h_n, c_n, tape = functional.lstm(
            x, self.weights(), h0, c0, lengths, bidirectional=self.bidirectional,
            batch_first=self.batch_first, training=training, backend=self.backend)
        if tape is not None:
            self._tape = tape
        return y, (h_n, c_n)

    def backward(self, dy, dh_n=None, dc_n=None):
        """Accumulate parameter gradients into self.grads; returns dx, (dh0, dc0)."""
        if self._tape is None:
            raise RuntimeError("backward() needs a preceding forward(..., training=True)")
        dx, dweights, dh0, dc0 = functional.lstm_grad(dy, dh_n, dc_n, self._tape)
        for s, (dW_ih, dW_hh, db_ih, db_hh) in zip(self._suffixes(), dweights):
            self.grads["weight_ih" + s] += dW_ih
            self.grads["weight_hh" + s] += dW_hh
            if self.bias:
                self.grads["bias_ih" + s] += db_ih
                self.grads["bias_hh" + s] += db_hh
        self._tape = None
        return dx, (dh0, dc0)

    def prepack(self) -> PrepackedLSTM:
        """An inference-only snapshot with every layer's weights packed once (fastlstm.prepack):
        the same call as forward() minus training, without the per-call packing and with one
        validation per call instead of one per layer and direction."""
        return PrepackedLSTM(self)

    def zero_grad(self):
        for g in self.grads.values():
            g[...] = 0

    def state_dict(self) -> dict:
        return {k: v.copy() for k, v in self.params.items()}

    def load_state_dict(self, state: dict) -> None:
        """Load arrays (NumPy, or anything np.asarray takes, e.g. torch tensors via .numpy())."""
        missing = set(self.params) - set(state)
        unexpected = set(state) - set(self.params)
        if missing or unexpected:
            raise KeyError(f"state_dict mismatch: missing {sorted(missing)}, unexpected {sorted(unexpected)}")
        for k, v in state.items():
            arr = np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
            if arr.shape != self.params[k].shape:
                raise ValueError(f"{k}: expected shape {self.params[k].shape}, got {arr.shape}")
            self.params[k] = np.ascontiguousarray(arr, dtype=self.dtype)


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
