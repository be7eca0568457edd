"""The contenders a benchmark times: fastlstm backends and the peers (PyTorch, ONNX Runtime).

Every contender turns one float32 Problem into a zero-argument callable (the thing that is
timed) and converts that callable's result into NumPy arrays for the correctness gate:
    forward -> y (T,B,H), hT (B,H), cT (B,H)
    train   -> the same plus dx, dW_ih, dW_hh, db, dh0, dc0: the gradients of y.sum()
Streaming contenders step one time step at a time with the state carried by the caller.

T = time steps, B = batch, I = input features, H = hidden units; gate order i, f, g, o.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, Callable

import numpy as np

import fastlstm
from fastlstm import _validate, core

from .shapes import Problem

FORWARD_KEYS = ("y", "hT", "cT")
GRAD_KEYS = ("dx", "dW_ih", "dW_hh", "db", "dh0", "dc0")
PEER_NAMES = ("torch", "onnxruntime")


class Contender:
    """One implementation under test. kind is 'fastlstm' or 'peer'."""

    name: str
    kind: str
    modes: tuple = ("forward", "train")
    streaming: bool = False

    def version(self) -> str:
        return ""

    def set_threads(self, n: int) -> None:
        pass

    def prepare(self, p: Problem, mode: str) -> Callable[[], Any]:
        raise NotImplementedError

    def outputs(self, result, mode: str) -> dict:
        raise NotImplementedError

    def stepper(self, W_ih, W_hh, b, h0, c0) -> Stepper:
        raise NotImplementedError


class Stepper:
    """step(x_t (B,I)) advances the state by one time step; state() -> (h, c) as NumPy."""

    def step(self, x_t) -> None:
        raise NotImplementedError

    def state(self) -> tuple:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# fastlstm backends, through the public API (fastlstm.lstm_forward / lstm_backward)

def _is_registered(mod: ModuleType) -> bool:
    try:
        return fastlstm.backends.load(mod.NAME) is mod
    except (ValueError, ImportError):
        return False


class FastlstmBackend(Contender):
    """A fastlstm backend given by name or as a module.

    A registered backend runs through fastlstm.lstm_forward(..., backend=NAME). A module that is
    not registered (a test double) runs through the same validation and Tape, with only the
    registry lookup skipped, so the benchmark can be pointed at any kernel-contract module.
    """

    kind = "fastlstm"
    streaming = True

    def __init__(self, backend: str | ModuleType):
        self.module = fastlstm.backends.load(backend) if isinstance(backend, str) else backend
        self.name = self.module.NAME
        self._registered = _is_registered(self.module)

    def version(self) -> str:
        info = self.module.info()
        return ", ".join(f"{k}={v}" for k, v in info.items() if k != "name")

    def set_threads(self, n: int) -> None:
        fastlstm.set_num_threads(n)

    def forward(self, x, W_ih, W_hh, b, h0, c0, lengths, training):
        if self._registered:
            return fastlstm.lstm_forward(x, W_ih, W_hh, b, h0, c0, lengths, training=training,
                                         backend=self.name)
        # the body of core.lstm_forward with the module instead of the registry lookup
        x, W_ih, W_hh, b, h0, c0, lengths = _validate.forward_args(x, W_ih, W_hh, b, h0, c0,
                                                                  lengths, None)
        y, hT, cT, ws = self.module.lstm_forward(x, W_ih, W_hh, b, h0, c0, lengths, False, training)
        tape = core.Tape(self.module, ws, x, W_ih, W_hh, h0, c0, lengths, False) if training else None
        return y, hT, cT, tape

    def prepare(self, p: Problem, mode: str):
        args = (p.x, p.W_ih, p.W_hh, p.b, p.h0, p.c0, p.lengths)
        if mode == "forward":
            return lambda: self.forward(*args, False)[:3]
        dy = np.ones_like(p.x, shape=(p.T, p.B, p.H))       # d(y.sum())/dy

        def train():
            y, hT, cT, tape = self.forward(*args, True)
            return (y, hT, cT) + tuple(fastlstm.lstm_backward(dy, None, None, tape))
        return train

    def outputs(self, result, mode: str) -> dict:
        keys = FORWARD_KEYS + (GRAD_KEYS if mode == "train" else ())
        return dict(zip(keys, (np.asarray(r) for r in result)))

    def stepper(self, W_ih, W_hh, b, h0, c0) -> Stepper:
        return _FastlstmStepper(self, W_ih, W_hh, b, h0, c0)


class FastlstmPrepacked(FastlstmBackend):
    """A registered backend's inference with the weights packed once, outside the timed call
    (fastlstm.prepack), as an ONNX Runtime session packs them at its creation."""

    modes = ("forward",)
    streaming = False

    def __init__(self, backend: str):
        super().__init__(backend)
        if not self._registered:
            raise ValueError("prepacked contenders run registered backends only")
        self.name = f"{self.module.NAME}-prepacked"

    def prepare(self, p: Problem, mode: str):
        model = fastlstm.prepack(p.W_ih, p.W_hh, p.b, backend=self.module.NAME)
        return lambda: model.forward(p.x, p.h0, p.c0, p.lengths)


class _FastlstmStepper(Stepper):
    """fastlstm.stepper(): weights packed once, state updated in place (a test double that is
    not registered steps through its own lstm_forward with T = 1)."""

    def __init__(self, c: FastlstmBackend, W_ih, W_hh, b, h0, c0):
        self.c, self.w = c, (W_ih, W_hh, b)
        self.h, self.cs = h0.copy(), c0.copy()
        self.cell = fastlstm.stepper(W_ih, W_hh, b, backend=c.name) if c._registered else None

    def step(self, x_t) -> None:
        if self.cell is not None:
            self.cell.step(x_t, self.h, self.cs)
        else:
            _, self.h, self.cs, _ = self.c.forward(x_t[None], *self.w, self.h, self.cs, None, False)

    def state(self):
        return np.asarray(self.h), np.asarray(self.cs)


# ---------------------------------------------------------------------------------------------
# PyTorch: torch.nn.LSTM (inference under no_grad, training = forward + backward of y.sum()),
# torch.nn.LSTMCell for streaming

class TorchLSTM(Contender):
    kind = "peer"
    name = "torch"
    streaming = True

    def __init__(self):
        self.torch = importlib.import_module("torch")

    def version(self) -> str:
        return self.torch.__version__

    def set_threads(self, n: int) -> None:
        self.torch.set_num_threads(n)

    def _module(self, p: Problem):
        torch = self.torch
        m = torch.nn.LSTM(p.I, p.H)
        with torch.no_grad():
            m.weight_ih_l0.copy_(torch.from_numpy(p.W_ih))
            m.weight_hh_l0.copy_(torch.from_numpy(p.W_hh))
            m.bias_ih_l0.copy_(torch.from_numpy(p.b))   # b = b_ih + b_hh
            m.bias_hh_l0.zero_()
        return m

    def prepare(self, p: Problem, mode: str):
        torch = self.torch
        from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

        m = self._module(p)
        train = mode == "train"
        x = torch.from_numpy(p.x.copy()).requires_grad_(train)
        h0 = torch.from_numpy(p.h0[None].copy()).requires_grad_(train)
        c0 = torch.from_numpy(p.c0[None].copy()).requires_grad_(train)
        lengths = None if p.lengths is None else torch.from_numpy(p.lengths)
        T = p.T
        leaves = (x, h0, c0) + tuple(m.parameters())

        def fwd():
            if lengths is None:
                y, (hT, cT) = m(x, (h0, c0))
                return y, hT, cT
            packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
            y, (hT, cT) = m(packed, (h0, c0))
            return pad_packed_sequence(y, total_length=T)[0], hT, cT

        if not train:
            def forward():
                with torch.no_grad():
                    return fwd()
            return forward

        def train_step():
            for t in leaves:
                t.grad = None
            y, hT, cT = fwd()
            y.sum().backward()
            return (y.detach(), hT.detach(), cT.detach(), x.grad, m.weight_ih_l0.grad,
                    m.weight_hh_l0.grad, m.bias_ih_l0.grad, h0.grad, c0.grad)
        return train_step

    def outputs(self, result, mode: str) -> dict:
        arrs = [r.detach().numpy() for r in result]
        arrs[1], arrs[2] = arrs[1][0], arrs[2][0]               # (1,B,H) -> (B,H)
        if mode == "train":
            arrs[7], arrs[8] = arrs[7][0], arrs[8][0]
        keys = FORWARD_KEYS + (GRAD_KEYS if mode == "train" else ())
        return dict(zip(keys, arrs))

    def stepper(self, W_ih, W_hh, b, h0, c0) -> Stepper:
        return _TorchCellStepper(self.torch, W_ih, W_hh, b, h0, c0)


class _TorchCellStepper(Stepper):
    def __init__(self, torch, W_ih, W_hh, b, h0, c0):
        self.torch = torch
        self.cell = torch.nn.LSTMCell(W_ih.shape[1], W_hh.shape[1])
        with torch.no_grad():
            self.cell.weight_ih.copy_(torch.from_numpy(W_ih))
            self.cell.weight_hh.copy_(torch.from_numpy(W_hh))
            self.cell.bias_ih.copy_(torch.from_numpy(b))
            self.cell.bias_hh.zero_()
        self.hc = (torch.from_numpy(h0.copy()), torch.from_numpy(c0.copy()))

    def step(self, x_t) -> None:
        with self.torch.no_grad():
            self.hc = self.cell(self.torch.from_numpy(x_t), self.hc)

    def state(self):
        return self.hc[0].numpy(), self.hc[1].numpy()


# ---------------------------------------------------------------------------------------------
# ONNX Runtime: the ONNX LSTM operator (inference only; gate order i, o, f, c)

ONNX_GATES = (0, 3, 1, 2)    # ONNX block k holds our gate ONNX_GATES[k]: i, o, f, c(=g)


def onnx_gate_order(a: np.ndarray, H: int) -> np.ndarray:
    """Reorder the 4H leading axis from i, f, g, o to ONNX's i, o, f, c."""
    return np.concatenate([a[k * H:(k + 1) * H] for k in ONNX_GATES], axis=0)


class OrtLSTM(Contender):
    kind = "peer"
    name = "onnxruntime"
    modes = ("forward",)

    def __init__(self):
        self.ort = importlib.import_module("onnxruntime")
        self.onnx = importlib.import_module("onnx")
        self.threads = 1

    def version(self) -> str:
        return f"{self.ort.__version__} (onnx {self.onnx.__version__})"

    def set_threads(self, n: int) -> None:
        self.threads = n          # applied when the session is built

    def model(self, p: Problem):
        """An ONNX model with one LSTM node; the weights are initializers (constant, as deployed)."""
        from onnx import TensorProto, helper, numpy_helper

        T, B, I, H = p.T, p.B, p.I, p.H
        W = onnx_gate_order(p.W_ih, H)[None]                          # (1, 4H, I)
        R = onnx_gate_order(p.W_hh, H)[None]                          # (1, 4H, H)
        Bias = np.concatenate([onnx_gate_order(p.b, H), np.zeros(4 * H, np.float32)])[None]  # Wb, Rb
        inits = [numpy_helper.from_array(np.ascontiguousarray(a, np.float32), n)
                 for a, n in ((W, "W"), (R, "R"), (Bias, "B"))]
        f = TensorProto.FLOAT
        inputs = [helper.make_tensor_value_info("X", f, [T, B, I])]
        seq = ""
        if p.lengths is not None:
            seq = "sequence_lens"
            inputs.append(helper.make_tensor_value_info(seq, TensorProto.INT32, [B]))
        inputs += [helper.make_tensor_value_info("initial_h", f, [1, B, H]),
                   helper.make_tensor_value_info("initial_c", f, [1, B, H])]
        outputs = [helper.make_tensor_value_info("Y", f, [T, 1, B, H]),
                   helper.make_tensor_value_info("Y_h", f, [1, B, H]),
                   helper.make_tensor_value_info("Y_c", f, [1, B, H])]
        node = helper.make_node("LSTM", ["X", "W", "R", "B", seq, "initial_h", "initial_c"],
                                ["Y", "Y_h", "Y_c"], hidden_size=H)
        graph = helper.make_graph([node], "fastlstm_bench_lstm", inputs, outputs, initializer=inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8      # the IR of opset 17; newer onnx writes IRs older runtimes reject
        return model

    def prepare(self, p: Problem, mode: str):
        if mode != "forward":
            raise ValueError("onnxruntime's LSTM operator is inference only")
        ort = self.ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        sess = ort.InferenceSession(self.model(p).SerializeToString(), so,
                                    providers=["CPUExecutionProvider"])
        feeds = {"X": p.x, "initial_h": p.h0[None], "initial_c": p.c0[None]}
        if p.lengths is not None:
            feeds["sequence_lens"] = p.lengths.astype(np.int32)
        return lambda: sess.run(None, feeds)

    def outputs(self, result, mode: str) -> dict:
        Y, Y_h, Y_c = result
        return {"y": Y[:, 0], "hT": Y_h[0], "cT": Y_c[0]}


PEERS = {"torch": TorchLSTM, "onnxruntime": OrtLSTM}


def load_peer(name: str) -> tuple[Contender | None, str | None]:
    """(contender, None), or (None, reason) when the peer is not installed."""
    try:
        return PEERS[name](), None
    except ImportError as e:
        return None, f"not installed ({e})"
