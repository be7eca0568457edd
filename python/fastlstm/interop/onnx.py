"""ONNX export of a trained fastlstm model, to serve with ONNX Runtime (needs the `onnx` package).

    export_onnx(lstm, "model.onnx")                                   # LSTM alone: y, h_n, c_n
    export_onnx(lstm, "model.onnx", head=(W, b), head_on="last_step") # LSTM + Linear head: output
    export_onnx(nn.Sequential(nn.LSTM(..., batch_first=True), nn.LastStep(), nn.Linear(...)), path)

Sequential layers exported: Embedding (first; then "x" is int64 ids (B, T)), LSTM (batch_first),
Dropout (identity), LastStep(directions), MeanPool, Linear/Dense (with its activation), ReLU, Tanh,
Sigmoid; the output "output" is batch-first. Other layers raise ValueError naming them.

L = layers, D = directions, T = time steps, B = batch, I = input features, H = hidden units.
Graph inputs: "x" in the model's layout ((B, T, I) with batch_first, else (T, B, I); B and T are
dynamic) and, with lengths=True (default), "sequence_lens" int32 (B,) — pass T for full rows.
Every LSTM layer is one ONNX LSTM node (direction forward or bidirectional, gates reordered to
ONNX's i,o,f,c by interop.weights.to_onnx_weights) fed `sequence_lens`; its Y (T, D, B, H) is
transposed and reshaped to (T, B, D·H) for the next layer, as fastlstm concatenates directions.
Initial states are zeros (the models' default).

Where a head reads a sequence (head_on):
  "last_step"    y at each row's last real step, t = lengths[b] − 1 (fastlstm.nn.LastStep):
                 GatherND over (B, T, D·H). For a bidirectional layer the reverse half of that
                 vector has seen one step only; that is what LastStep computes, so it is kept.
  "final_state"  the last layer's final states, [h_fwd(t = len−1), h_rev(t = 0)] (B, D·H): what
                 Keras' Bidirectional(LSTM(return_sequences=False)) and h_n-based torch heads use.
  "per_step"     the head on every step (B, T, ·); padded steps see y = 0 (outputs there = bias).
Files are written atomically (temp file, fsync, rename) after onnx.checker.check_model.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from .weights import to_onnx_weights

OPSET = 17
IR_VERSION = 8    # the IR of opset 17; a newer onnx package writes IRs older runtimes reject
HEAD_ON = ("last_step", "final_state", "per_step")
_ACTIVATIONS = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid"}


class _Graph:
    """A growing ONNX graph: nodes, initializers and fresh names."""

    def __init__(self, dtype):
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.dtype = np.dtype(dtype)
        self.nodes, self.inits, self._n = [], [], 0

    def name(self, base):
        self._n += 1
        return f"{base}_{self._n}"

    def const(self, array, base="const", dtype=None):
        n = self.name(base)
        self.inits.append(self.numpy_helper.from_array(np.asarray(array, dtype or self.dtype, order="C"), n))
        return n

    def ints(self, values, base="shape"):
        return self.const(np.asarray(values, np.int64), base, np.int64)

    def op(self, op_type, inputs, n_out=1, base=None, **attrs):
        outs = [self.name(base or op_type.lower()) for _ in range(n_out)]
        self.nodes.append(self.helper.make_node(op_type, list(inputs), outs, **attrs))
        return outs[0] if n_out == 1 else outs


def _head_arrays(head):
    """(weight (O, F), bias (O,) or None, activation or None) from (W, b), a Linear-like object
    with .params["weight"]/.params["bias"], or a torch.nn.Linear."""
    act = None
    if isinstance(head, (tuple, list)):
        if len(head) not in (1, 2, 3):
            raise ValueError("head must be (weight, bias[, activation]) or a Linear layer")
        W = head[0]
        b = head[1] if len(head) > 1 else None
        act = head[2] if len(head) > 2 else None
    elif hasattr(head, "params"):
        W, b = head.params["weight"], head.params.get("bias")
        act = getattr(head, "activation", None)
    elif hasattr(head, "weight") and hasattr(head, "bias"):   # torch.nn.Linear
        W = head.weight.detach().cpu().numpy()
        b = None if head.bias is None else head.bias.detach().cpu().numpy()
    else:
        raise TypeError(f"head must be (weight, bias) arrays or a Linear layer, got {type(head).__name__}")
    W = np.asarray(W)
    if W.ndim != 2:
        raise ValueError(f"head weight must be 2-d (out_features, in_features), got shape {W.shape}")
    if b is not None:
        b = np.asarray(b)
        if b.shape != (W.shape[0],):
            raise ValueError(f"head bias must have shape (out_features,) = ({W.shape[0]},), got {b.shape}")
    if act is not None and not callable(act) and act not in _ACTIVATIONS:
        raise ValueError(f"head activation must be one of {sorted(_ACTIVATIONS)} or None, got {act!r}")
    if callable(act):
        act = getattr(act, "__name__", None)
        if act not in _ACTIVATIONS:
            raise ValueError(f"head activation {act!r} has no ONNX export; use one of {sorted(_ACTIVATIONS)}")
    return W, b, act


class _Builder:
    """Walks a model's steps, tracking the current tensor: a sequence held time-major
    (T, B, F) or a batch of vectors (B, F)."""

    def __init__(self, g: _Graph, seq_lens: str | None):
        self.g, self.seq_lens = g, seq_lens
        self.cur, self.kind, self.width = None, None, None    # kind: "seq" | "vec"
        self.final_h = None                                   # (B, D·H) of the last LSTM
        self.states = []                                      # per layer (Y_h, Y_c), (D, B, H)

    def lstm(self, lstm):
        g = self.g
        if self.kind != "seq":
            raise ValueError("an LSTM needs a sequence input")
        if self.width != lstm.input_size:
            raise ValueError(f"the LSTM expects {lstm.input_size} input features, gets {self.width}")
        D, H = (2 if lstm.bidirectional else 1), lstm.hidden_size
        for W, R, B in to_onnx_weights(lstm):
            ins = [self.cur, g.const(W, "W"), g.const(R, "R"), "" if B is None else g.const(B, "B"),
                   self.seq_lens or ""]
            while ins[-1] == "":
                ins.pop()
            Y, Y_h, Y_c = g.op("LSTM", ins, 3, base="lstm", hidden_size=H,
                               direction="bidirectional" if D == 2 else "forward")
            self.states.append((Y_h, Y_c))
            Y = g.op("Transpose", [Y], perm=[0, 2, 1, 3])                  # (T, D, B, H) -> (T, B, D, H)
            self.cur = g.op("Reshape", [Y, g.ints([0, 0, D * H])])         # (T, B, D·H)
        self.width = D * H
        Y_h = self.states[-1][0]
        hb = g.op("Transpose", [Y_h], perm=[1, 0, 2])                      # (B, D, H)
        self.final_h = g.op("Reshape", [hb, g.ints([0, D * H])])           # (B, D·H)

    def _time_steps(self):
        g = self.g
        return g.op("Gather", [g.op("Shape", [self.cur]), g.ints(0, "t")], axis=0)       # T, int64 scalar

    def _float(self, name):
        return self.g.op("Cast", [name], to=1 if self.g.dtype == np.float32 else 11)

    def last_step(self, directions=1):
        """(T, B, F) -> (B, F) at t = lengths[b] − 1; directions=2: the reverse half at t = 0.
        A row of length 0 gives zeros (as fastlstm.nn.LastStep)."""
        g = self.g
        yb = g.op("Transpose", [self.cur], perm=[1, 0, 2])                 # (B, T, F)
        if self.seq_lens is None:
            last = g.op("Gather", [yb, g.ints(-1, "last")], axis=1)       # (B, F)
        else:
            lens = g.op("Cast", [self.seq_lens], to=7)                     # int64
            idx = g.op("Max", [g.op("Sub", [lens, g.ints(1, "one")]), g.ints(0, "zero")])
            idx = g.op("Unsqueeze", [idx, g.ints([1], "axes")])            # (B, 1)
            last = g.op("GatherND", [yb, idx], batch_dims=1)               # (B, F)
        if directions == 2:
            half = self.width // 2
            first = g.op("Gather", [yb, g.ints(0, "first")], axis=1)      # (B, F)
            fwd = g.op("Slice", [last, g.ints([0]), g.ints([half]), g.ints([1])])
            rev = g.op("Slice", [first, g.ints([half]), g.ints([self.width]), g.ints([1])])
            last = g.op("Concat", [fwd, rev], axis=1)
        if self.seq_lens is not None:                                      # empty rows read nothing
            valid = self._float(g.op("Greater", [self.seq_lens, g.const(np.array(0, np.int32), "zero", np.int32)]))
            last = g.op("Mul", [last, g.op("Unsqueeze", [valid, g.ints([1], "axes")])])
        self.cur, self.kind = last, "vec"

    def final_state(self):
        if self.final_h is None:
            raise ValueError("head_on='final_state' needs an LSTM before the head")
        self.cur, self.kind = self.final_h, "vec"

    def mean_pool(self):
        """(T, B, F) -> (B, F): the mean over each row's real steps (zeros for an empty row)."""
        g = self.g
        T = self._time_steps()
        if self.seq_lens is None:
            s = g.op("ReduceSum", [self.cur, g.ints([0], "axes")], keepdims=0)
            n = self._float(T)
        else:
            lens = g.op("Cast", [self.seq_lens], to=7)
            t = g.op("Unsqueeze", [g.op("Range", [g.ints(0, "zero"), T, g.ints(1, "one")]), g.ints([1], "axes")])
            real = g.op("Less", [t, g.op("Unsqueeze", [lens, g.ints([0], "axes")])])          # (T, B)
            mask = g.op("Unsqueeze", [self._float(real), g.ints([2], "axes")])              # (T, B, 1)
            s = g.op("ReduceSum", [g.op("Mul", [self.cur, mask]), g.ints([0], "axes")], keepdims=0)
            n = g.op("Unsqueeze", [self._float(g.op("Max", [lens, g.ints(1, "one")])), g.ints([1], "axes")])
        self.cur, self.kind = g.op("Div", [s, n]), "vec"

    def linear(self, W, b, act=None):
        g = self.g
        if W.shape[1] != self.width:
            raise ValueError(f"the head expects {W.shape[1]} input features, gets {self.width}")
        if self.kind == "vec":
            ins = [self.cur, g.const(W, "head_W")] + ([g.const(b, "head_b")] if b is not None else [])
            self.cur = g.op("Gemm", ins, transB=1)
        else:                                                              # per step on (T, B, F)
            self.cur = g.op("MatMul", [self.cur, g.const(W.T, "head_WT")])
            if b is not None:
                self.cur = g.op("Add", [self.cur, g.const(b, "head_b")])
        self.width = W.shape[0]
        if act is not None:
            self.activation(act)

    def activation(self, act):
        self.cur = self.g.op(_ACTIVATIONS[act], [self.cur])

    def embedding(self, weight):
        g = self.g
        ids = g.op("Transpose", [self.cur], perm=[1, 0])                    # (B, T) -> (T, B)
        self.cur = g.op("Gather", [g.const(weight, "embedding"), ids], axis=0)   # (T, B, E)
        self.kind, self.width = "seq", weight.shape[1]


def _is_lstm(m) -> bool:
    return hasattr(m, "params") and hasattr(m, "num_layers") and hasattr(m, "bidirectional")


def _finish(g, inputs, outputs, opset):
    from onnx import checker, helper

    graph = helper.make_graph(g.nodes, "fastlstm", inputs, outputs, initializer=g.inits)
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="fastlstm")
    onnx_model.ir_version = IR_VERSION
    checker.check_model(onnx_model)
    return onnx_model


def _elem(dtype):
    from onnx import TensorProto

    return {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE}[np.dtype(dtype)]


def to_onnx_model(model, *, head=None, head_on: str = "last_step", lengths: bool = True, opset: int = OPSET):
    """The onnx.ModelProto of a fastlstm LSTM (with an optional Linear head) or of a
    fastlstm.nn.Sequential; see the module doc."""
    if head_on not in HEAD_ON:
        raise ValueError(f"head_on must be one of {HEAD_ON}, got {head_on!r}")
    if _is_lstm(model):
        return _lstm_model(model, head, head_on, lengths, opset)
    if hasattr(model, "layers") and isinstance(getattr(model, "layers"), list):
        if head is not None:
            raise ValueError("a Sequential model carries its own head; pass head=None")
        return _sequential_model(model, lengths, opset)
    raise TypeError(f"model must be a fastlstm LSTM or a fastlstm.nn.Sequential, got {type(model).__name__}")


def _lstm_model(model, head, head_on, lengths, opset):
    from onnx import TensorProto, helper

    dtype = np.dtype(model.dtype)
    elem = _elem(dtype)
    g = _Graph(dtype)
    bf = model.batch_first
    x_shape = ["batch", "time", model.input_size] if bf else ["time", "batch", model.input_size]
    inputs = [helper.make_tensor_value_info("x", elem, x_shape)]
    seq = None
    if lengths:
        seq = "sequence_lens"
        inputs.append(helper.make_tensor_value_info(seq, TensorProto.INT32, ["batch"]))
    b = _Builder(g, seq)
    b.cur = g.op("Transpose", ["x"], perm=[1, 0, 2]) if bf else g.op("Identity", ["x"])
    b.kind, b.width = "seq", model.input_size
    b.lstm(model)
    D, L = (2 if model.bidirectional else 1), model.num_layers
    if head is None:
        y = g.op("Transpose", [b.cur], perm=[1, 0, 2]) if bf else b.cur
        g.nodes.append(helper.make_node("Identity", [y], ["y"]))
        g.nodes.append(helper.make_node("Concat", [s[0] for s in b.states], ["h_n"], axis=0))
        g.nodes.append(helper.make_node("Concat", [s[1] for s in b.states], ["c_n"], axis=0))
        H = model.hidden_size
        outputs = [helper.make_tensor_value_info("y", elem, x_shape[:2] + [D * H]),
                   helper.make_tensor_value_info("h_n", elem, [L * D, "batch", H]),
                   helper.make_tensor_value_info("c_n", elem, [L * D, "batch", H])]
        return _finish(g, inputs, outputs, opset)
    W, bias, act = _head_arrays(head)
    if head_on == "last_step":
        b.last_step()
    elif head_on == "final_state":
        b.final_state()
    b.linear(W.astype(dtype), None if bias is None else bias.astype(dtype), act)
    return _finish(g, inputs, [_output(g, b, bf, elem, x_shape)], opset)


def _output(g, b, batch_first, elem, x_shape):
    from onnx import helper

    out = b.cur
    if b.kind == "seq" and batch_first:
        out = g.op("Transpose", [out], perm=[1, 0, 2])
    g.nodes.append(helper.make_node("Identity", [out], ["output"]))
    shape = ["batch", b.width] if b.kind == "vec" else x_shape[:2] + [b.width]
    return helper.make_tensor_value_info("output", elem, shape)


def _sequential_model(model, lengths, opset):
    """Sequential(Embedding?, LSTM(batch_first=True)..., Dropout, LastStep / MeanPool, Linear,
    ReLU / Tanh / Sigmoid ...): batch-first in and out, as fastlstm.nn computes in eval mode."""
    from onnx import TensorProto, helper

    from ..nn import layers as L

    layers = [m for m in model.layers if not isinstance(m, L.Dropout)]   # identity at inference
    if not layers:
        raise ValueError("the Sequential model is empty")
    lstms = [m for m in layers if _is_lstm(m)]
    if not lstms:
        raise ValueError("the Sequential model has no LSTM")
    for m in lstms:
        if not m.batch_first:
            raise ValueError("LSTMs inside a Sequential must be batch_first=True (fastlstm.nn is batch-first)")
        if getattr(m, "stateful", False):
            raise ValueError("a stateful LSTM has no ONNX export (its state lives between calls)")
    dtype = np.dtype(lstms[0].dtype)
    elem = _elem(dtype)
    g = _Graph(dtype)
    first = layers[0]
    if isinstance(first, L.Embedding):
        inputs = [helper.make_tensor_value_info("x", TensorProto.INT64, ["batch", "time"])]
    elif _is_lstm(first):
        inputs = [helper.make_tensor_value_info("x", elem, ["batch", "time", first.input_size])]
    else:
        raise ValueError(f"a Sequential exported to ONNX starts with an Embedding or an LSTM, not {type(first).__name__}")
    seq = None
    if lengths:
        seq = "sequence_lens"
        inputs.append(helper.make_tensor_value_info(seq, TensorProto.INT32, ["batch"]))
    b = _Builder(g, seq)
    b.cur, b.kind = "x", "ids"
    acts = {L.ReLU: "relu", L.Tanh: "tanh", L.Sigmoid: "sigmoid"}
    for i, m in enumerate(layers):
        if isinstance(m, L.Embedding):
            if i != 0:
                raise ValueError("an Embedding must be the first layer")
            b.embedding(np.asarray(m.params["weight"], dtype))
        elif _is_lstm(m):
            if i == 0:
                b.cur = g.op("Transpose", ["x"], perm=[1, 0, 2])
                b.kind, b.width = "seq", m.input_size
            b.lstm(m)
        elif isinstance(m, L.LastStep):
            b.last_step(m.directions)
        elif isinstance(m, L.MeanPool):
            b.mean_pool()
        elif isinstance(m, L.Linear):
            W, bias, act = _head_arrays(m)
            b.linear(W.astype(dtype), None if bias is None else bias.astype(dtype), act)
        elif type(m) in acts:
            b.activation(acts[type(m)])
        else:
            raise ValueError(f"layer {i} ({type(m).__name__}) has no ONNX export; supported: Embedding, LSTM, "
                             "Dropout, LastStep, MeanPool, Linear/Dense, ReLU, Tanh, Sigmoid")
    x_shape = ["batch", "time"]
    return _finish(g, inputs, [_output(g, b, True, elem, x_shape)], opset)


def save_onnx_model(onnx_model, path) -> str:
    """Write an onnx.ModelProto atomically: a temp file in the same folder, fsync, rename."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".onnx", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(onnx_model.SerializeToString())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def export_onnx(model, path, *, head=None, head_on: str = "last_step", lengths: bool = True,
                opset: int = OPSET) -> str:
    """Export `model` to an ONNX file at `path` (see the module doc); returns the path."""
    return save_onnx_model(to_onnx_model(model, head=head, head_on=head_on, lengths=lengths, opset=opset), path)
