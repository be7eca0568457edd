"""ONNX export of a trained fastlstm model, to serve with ONNX Runtime (needs the `onnx` package).

    export_onnx(lstm, "model.onnx")                                   # LSTM alone: y, h_n, c_n
    export_onnx(lstm, "model.onnx", head=(W, b), head_on="last_step") # LSTM + Linear head: output
    export_onnx(fastlstm.nn.Sequential(...), "model.onnx")            # LSTM / LastStep / Linear ...

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

    def last_step(self):
        g = self.g
        yb = g.op("Transpose", [self.cur], perm=[1, 0, 2])                 # (B, T, F)
        if self.seq_lens is None:
            self.cur = g.op("Gather", [yb, g.ints(-1, "last")], axis=1)   # (B, F)
        else:
            lens = g.op("Cast", [self.seq_lens], to=7)                     # int64
            idx = g.op("Max", [g.op("Sub", [lens, g.ints(1, "one")]), g.ints(0, "zero")])
            idx = g.op("Unsqueeze", [idx, g.ints([1], "axes")])            # (B, 1)
            self.cur = g.op("GatherND", [yb, idx], batch_dims=1)           # (B, F)
        self.kind = "vec"

    def final_state(self):
        if self.final_h is None:
            raise ValueError("head_on='final_state' needs an LSTM before the head")
        self.cur, self.kind = self.final_h, "vec"

    def mean_pool(self):
        g = self.g
        s = g.op("ReduceSum", [self.cur, g.ints([0], "axes")], keepdims=0)  # (B, F); padded y = 0
        if self.seq_lens is None:
            n = g.op("Cast", [g.op("Gather", [g.op("Shape", [self.cur]), g.ints(0, "t")], axis=0)], to=1)
        else:
            n = g.op("Cast", [g.op("Max", [self.seq_lens, g.const(np.array(1, np.int32), "one", np.int32)])], to=1)
            n = g.op("Unsqueeze", [n, g.ints([1], "axes")])
        if self.g.dtype != np.float32:
            n = g.op("Cast", [n], to=11)
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
        # ids (T, B) int64 -> (T, B, E)
        self.cur = g.op("Gather", [g.const(weight, "embedding"), self.cur], axis=0)
        self.kind, self.width = "seq", weight.shape[1]


def to_onnx_model(model, *, head=None, head_on: str = "last_step", lengths: bool = True, opset: int = OPSET):
    """The onnx.ModelProto of a fastlstm LSTM (with an optional Linear head); see the module doc."""
    from onnx import TensorProto, checker, helper

    if head_on not in HEAD_ON:
        raise ValueError(f"head_on must be one of {HEAD_ON}, got {head_on!r}")
    if not (hasattr(model, "params") and hasattr(model, "num_layers") and hasattr(model, "bidirectional")):
        raise TypeError(f"model must be a fastlstm LSTM, got {type(model).__name__}")
    dtype = np.dtype(model.dtype)
    elem = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE}[dtype]
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
    else:
        W, bias, act = _head_arrays(head)
        if head_on == "last_step":
            b.last_step()
        elif head_on == "final_state":
            b.final_state()
        b.linear(W.astype(dtype), None if bias is None else bias.astype(dtype), act)
        out = b.cur
        if b.kind == "seq" and bf:
            out = g.op("Transpose", [out], perm=[1, 0, 2])
        g.nodes.append(helper.make_node("Identity", [out], ["output"]))
        shape = ["batch", W.shape[0]] if b.kind == "vec" else x_shape[:2] + [W.shape[0]]
        outputs = [helper.make_tensor_value_info("output", elem, shape)]
    graph = helper.make_graph(g.nodes, "fastlstm", inputs, outputs, initializer=g.inits)
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                                   producer_name="fastlstm")
    onnx_model.ir_version = IR_VERSION
    checker.check_model(onnx_model)
    return onnx_model


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
