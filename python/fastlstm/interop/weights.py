"""Weight interchange between fastlstm's LSTM and PyTorch, Keras and ONNX layouts (NumPy only).

L = layers, D = directions, I = input features (D·H above layer 0), H = hidden units.

    layout     per layer and direction                                   gate order  bias
    fastlstm   weight_ih (4H, I), weight_hh (4H, H), bias_ih, bias_hh    i f g o     two (4H,)
    PyTorch    the same names and shapes (torch.nn.LSTM state_dict)      i f g o     two (4H,)
    Keras      kernel (I, 4H), recurrent_kernel (H, 4H), bias (4H,)      i f c o     one (4H,)
    ONNX       W (D, 4H, I), R (D, 4H, H), B (D, 8H) = [Wb, Rb] per layer i o f c     two per direction

Round trips: PyTorch and ONNX hold two biases, so fastlstm -> them -> fastlstm is exact array
for array. Keras holds one bias: fastlstm -> Keras stores b_ih + b_hh (one rounding, the sum the
kernels compute anyway), Keras -> fastlstm sets b_ih = bias, b_hh = 0, so Keras -> fastlstm ->
Keras is exact array for array, and fastlstm -> Keras -> fastlstm computes the same function.
"""

from __future__ import annotations

import re

import numpy as np

from ..layers import LSTM

# Block permutations of the 4H gate rows: ONNX's i,o,f,c from fastlstm's i,f,g,o and back.
_TO_ONNX = (0, 3, 1, 2)
_FROM_ONNX = (0, 2, 3, 1)


def _blocks(a: np.ndarray, order, axis: int = 0) -> np.ndarray:
    """Reorder the four gate blocks of `a` along `axis` (its length is 4H)."""
    parts = np.split(np.asarray(a), 4, axis=axis)
    return np.ascontiguousarray(np.concatenate([parts[k] for k in order], axis=axis))


def _suffix(l: int, d: int) -> str:
    return f"_l{l}" + ("_reverse" if d else "")


def _new_lstm(input_size, hidden_size, num_layers, bias, bidirectional, batch_first, dtype, lstm_cls):
    cls = lstm_cls or LSTM
    dtype = np.dtype(np.dtype(dtype).name)   # NumPy's builtin dtype object (see keras._canonical)
    return cls(input_size, hidden_size, num_layers, bias=bias, batch_first=batch_first,
               bidirectional=bidirectional, dtype=dtype)


# --- PyTorch -------------------------------------------------------------------------------

_TORCH_KEY = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh)_l(\d+)(_reverse)?$")


def from_torch_state_dict(state: dict, *, prefix: str = "", batch_first: bool = True, lstm_cls=None):
    """A fastlstm LSTM from a torch.nn.LSTM state_dict (tensors or arrays), its configuration read
    from the names and shapes. `prefix` selects one LSTM inside a bigger model ("encoder.lstm.")."""
    arrays = {}
    for k, v in state.items():
        if not k.startswith(prefix):
            continue
        name = k[len(prefix):]
        if not _TORCH_KEY.match(name):
            if "weight_hr" in name:
                raise ValueError(f"{k}: LSTMs with proj_size > 0 have no fastlstm equivalent")
            continue
        arrays[name] = np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
    if "weight_hh_l0" not in arrays:
        raise ValueError(f"no torch LSTM parameters (weight_hh_l0) under prefix {prefix!r}")
    L = 1 + max(int(_TORCH_KEY.match(k).group(2)) for k in arrays)
    bidirectional = "weight_hh_l0_reverse" in arrays
    H = arrays["weight_hh_l0"].shape[1]
    dtype = arrays["weight_hh_l0"].dtype
    lstm = _new_lstm(arrays["weight_ih_l0"].shape[1], H, L, "bias_ih_l0" in arrays, bidirectional,
                     batch_first, dtype, lstm_cls)
    lstm.load_state_dict(arrays)
    return lstm


def to_torch_state_dict(lstm, prefix: str = "") -> dict:
    """torch.nn.LSTM's state_dict (torch tensors, copies) of a fastlstm LSTM."""
    import torch

    return {prefix + k: torch.from_numpy(np.array(v, copy=True)) for k, v in lstm.params.items()}


# --- Keras ---------------------------------------------------------------------------------

def keras_from_torch_layout(W_ih, W_hh, b_ih=None, b_hh=None):
    """One direction: (kernel (I,4H), recurrent_kernel (H,4H), bias (4H,) or None). i,f,g,o = i,f,c,o."""
    kernel, recurrent = np.ascontiguousarray(np.asarray(W_ih).T), np.ascontiguousarray(np.asarray(W_hh).T)
    if b_ih is None and b_hh is None:
        return kernel, recurrent, None
    bias = sum(np.asarray(b) for b in (b_ih, b_hh) if b is not None)
    return kernel, recurrent, np.ascontiguousarray(bias)


def torch_from_keras_layout(kernel, recurrent_kernel, bias=None):
    """One direction: (W_ih (4H,I), W_hh (4H,H), b_ih, b_hh) with b_ih = bias, b_hh = 0."""
    kernel, recurrent_kernel = np.asarray(kernel), np.asarray(recurrent_kernel)
    if kernel.ndim != 2 or recurrent_kernel.ndim != 2 or recurrent_kernel.shape[1] != 4 * recurrent_kernel.shape[0] \
            or kernel.shape[1] != recurrent_kernel.shape[1]:
        raise ValueError("Keras LSTM weights must be kernel (I, 4H), recurrent_kernel (H, 4H), got "
                         f"{kernel.shape} and {recurrent_kernel.shape}")
    W_ih, W_hh = np.ascontiguousarray(kernel.T), np.ascontiguousarray(recurrent_kernel.T)
    if bias is None:
        return W_ih, W_hh, None, None
    bias = np.asarray(bias)
    if bias.shape != (kernel.shape[1],):
        raise ValueError(f"Keras LSTM bias must have shape (4H,) = ({kernel.shape[1]},), got {bias.shape}")
    return W_ih, W_hh, np.ascontiguousarray(bias), np.zeros_like(bias)


def to_keras_weights(lstm) -> list:
    """Per layer, the list Keras' layer.set_weights() takes: [kernel, recurrent_kernel, bias] for
    LSTM(units=H), twice (forward then backward) for Bidirectional(LSTM(H)); without bias, no bias."""
    out = []
    D = 2 if lstm.bidirectional else 1
    for l in range(lstm.num_layers):
        arrays = []
        for d in range(D):
            s = _suffix(l, d)
            p = lstm.params
            k = keras_from_torch_layout(p["weight_ih" + s], p["weight_hh" + s], p.get("bias_ih" + s), p.get("bias_hh" + s))
            arrays += [a for a in k if a is not None]
        out.append(arrays)
    return out


def from_keras_weights(layers: list, *, batch_first: bool = True, lstm_cls=None):
    """A fastlstm LSTM from stacked Keras LSTM layers' get_weights() lists: per layer 3 arrays
    (kernel, recurrent_kernel, bias), 6 for Bidirectional (forward then backward), 2 / 4 without
    bias. Every layer must have the same units and directions (Keras' return_sequences=True between)."""
    if not layers:
        raise ValueError("from_keras_weights needs at least one layer's weights")
    n = len(layers[0])
    if n not in (2, 3, 4, 6) or any(len(w) != n for w in layers):
        raise ValueError(f"each layer needs 3 arrays (6 if bidirectional; 2 / 4 without bias), got "
                         f"{[len(w) for w in layers]}")
    bias = n in (3, 6)
    D = 2 if n in (4, 6) else 1
    per = n // D
    dirs = [[torch_from_keras_layout(*(list(w[d * per:(d + 1) * per]) + ([None] if not bias else [])))
             for d in range(D)] for w in layers]
    W_ih0, W_hh0 = dirs[0][0][0], dirs[0][0][1]
    lstm = _new_lstm(W_ih0.shape[1], W_hh0.shape[1], len(layers), bias, D == 2, batch_first, W_hh0.dtype, lstm_cls)
    state = {}
    for l, per_dir in enumerate(dirs):
        for d, (W_ih, W_hh, b_ih, b_hh) in enumerate(per_dir):
            s = _suffix(l, d)
            state["weight_ih" + s], state["weight_hh" + s] = W_ih, W_hh
            if bias:
                state["bias_ih" + s], state["bias_hh" + s] = b_ih, b_hh
    lstm.load_state_dict(state)
    return lstm


def dense_from_keras(kernel, bias=None):
    """Keras Dense kernel (in, out), bias (out,) -> Linear weight (out, in), bias (out,)."""
    kernel = np.asarray(kernel)
    if kernel.ndim != 2:
        raise ValueError(f"Keras Dense kernel must be 2-d (in, out), got shape {kernel.shape}")
    return np.ascontiguousarray(kernel.T), None if bias is None else np.ascontiguousarray(bias)


def dense_to_keras(weight, bias=None):
    """Linear weight (out, in), bias (out,) -> Keras Dense [kernel (in, out), bias]."""
    out = [np.ascontiguousarray(np.asarray(weight).T)]
    return out + ([np.ascontiguousarray(bias)] if bias is not None else [])


# --- ONNX ----------------------------------------------------------------------------------

def to_onnx_weights(lstm) -> list:
    """Per layer (W (D,4H,I), R (D,4H,H), B (D,8H) or None): the ONNX LSTM operator's tensors,
    gates reordered to i,o,f,c; B = [b_ih, b_hh] per direction."""
    out = []
    D = 2 if lstm.bidirectional else 1
    p = lstm.params
    for l in range(lstm.num_layers):
        W, R, B = [], [], []
        for d in range(D):
            s = _suffix(l, d)
            W.append(_blocks(p["weight_ih" + s], _TO_ONNX))
            R.append(_blocks(p["weight_hh" + s], _TO_ONNX))
            if lstm.bias:
                B.append(np.concatenate([_blocks(p["bias_ih" + s], _TO_ONNX), _blocks(p["bias_hh" + s], _TO_ONNX)]))
        out.append((np.stack(W), np.stack(R), np.stack(B) if B else None))
    return out


def from_onnx_weights(layers: list, *, batch_first: bool = True, lstm_cls=None):
    """A fastlstm LSTM from per-layer ONNX LSTM tensors (W, R, B or None); D = W.shape[0]."""
    if not layers:
        raise ValueError("from_onnx_weights needs at least one layer's (W, R, B)")
    W0, R0, B0 = (np.asarray(a) if a is not None else None for a in layers[0])
    if W0.ndim != 3 or R0.ndim != 3 or R0.shape[1] != 4 * R0.shape[2] or W0.shape[0] not in (1, 2):
        raise ValueError(f"ONNX LSTM tensors must be W (D,4H,I), R (D,4H,H) with D in (1, 2), got {W0.shape}, {R0.shape}")
    D, H = W0.shape[0], R0.shape[2]
    bias = B0 is not None
    lstm = _new_lstm(W0.shape[2], H, len(layers), bias, D == 2, batch_first, R0.dtype, lstm_cls)
    state = {}
    for l, (W, R, B) in enumerate(layers):
        W, R = np.asarray(W), np.asarray(R)
        if W.shape[0] != D or R.shape != (D, 4 * H, H) or (B is None) == bias:
            raise ValueError(f"layer {l}: ONNX tensors do not match layer 0 (D={D}, H={H}, bias={bias})")
        for d in range(D):
            s = _suffix(l, d)
            state["weight_ih" + s] = _blocks(W[d], _FROM_ONNX)
            state["weight_hh" + s] = _blocks(R[d], _FROM_ONNX)
            if bias:
                Bd = np.asarray(B)[d]
                if Bd.shape != (8 * H,):
                    raise ValueError(f"layer {l}: ONNX B must have shape (D, 8H) = ({D}, {8 * H}), got {np.shape(B)}")
                state["bias_ih" + s] = _blocks(Bd[:4 * H], _FROM_ONNX)
                state["bias_hh" + s] = _blocks(Bd[4 * H:], _FROM_ONNX)
    lstm.load_state_dict(state)
    return lstm
