"""fastlstm.torch: a drop-in for torch.nn.LSTM that runs fastlstm's kernels on CPU tensors.

    from fastlstm.torch import LSTM            # the one line to change (was torch.nn.LSTM)
    lstm = LSTM(input_size, hidden_size, num_layers=2, batch_first=True, bidirectional=True)
    out, (h_n, c_n) = lstm(x, (h0, c0))         # a tensor or a PackedSequence in, the same out

L = layers, D = directions (1 or 2), T = time steps, B = batch, I = input features,
H = hidden units. Gate order i, f, g, o in both libraries, so the weights need no conversion.

`LSTM` *is* a torch.nn.LSTM (a subclass): the constructor, parameter names, shapes and
initialisation, state_dict, .to(), flatten_parameters are torch's own; only forward() differs.
Each layer (both its directions) is one torch.autograd.Function that hands zero-copy NumPy views
of the CPU tensors to fastlstm.core.lstm_forward / lstm_backward and wraps the results with
torch.from_numpy. torch is an optional extra: nothing in fastlstm is compiled against it.

What runs where (and why):
  float32 CPU tensors        fastlstm, the active backend (native C++ kernels when built)
  float64 CPU tensors        fastlstm on the first float64 backend (Numba, else the NumPy
                             reference), so torch.autograd.gradcheck works; `backend=` picks one
  CUDA / other devices       torch's computation, FallbackWarning once: the kernels are CPU-only
  float16 / bfloat16         torch's computation, FallbackWarning once: the kernels compute in
                             float32/float64 and a silent up-cast would change results
  proj_size > 0              torch's computation, FallbackWarning once: no projection in the kernels
  torch.jit trace/script,    torch's computation, FallbackWarning once: a trace of an opaque
  torch.compile, ONNX export Python Function cannot be scripted, compiled or exported
  mixed dtypes / devices     torch's computation, no warning: torch raises its own error
  double backward            RuntimeError (the Function is once_differentiable): the kernels'
                             backward is not itself differentiable, and whether create_graph
                             will be used is unknown at forward time, so no fallback is possible.
                             Use .to_torch() for Hessian-vector products.
Dropout between layers (dropout > 0, training mode) is torch.nn.functional.dropout on the output
of every layer but the last, as in torch (the random masks differ from torch's own kernel).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch.autograd.function import once_differentiable
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import core

__all__ = ["LSTM", "FallbackWarning"]


class FallbackWarning(UserWarning):
    """fastlstm.torch.LSTM handed a call to torch.nn.LSTM's own computation."""


_warned: set = set()


def _fall_back(reason: str) -> None:
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(f"fastlstm.torch.LSTM: {reason}; using torch.nn.LSTM's computation "
                      "(warned once)", FallbackWarning, stacklevel=4)


def _np(t: torch.Tensor) -> np.ndarray:
    """A zero-copy NumPy view of a CPU tensor (one copy only if it is not contiguous)."""
    return t.detach().contiguous().numpy()


def _layer_forward(x, h0, c0, weights, lengths, backend, training):
    """One layer, D directions, time-major, on NumPy arrays.

    x (T,B,I), h0/c0 (D,B,H), weights D tuples (W_ih, W_hh, b_ih, b_hh) with biases or None.
    Returns y (T,B,D·H), h_n, c_n (D,B,H) and the tapes (None unless training)."""
    ys, hs, cs, tapes = [], [], [], []
    for d, (W_ih, W_hh, b_ih, b_hh) in enumerate(weights):
        H = W_hh.shape[1]
        b = np.zeros(4 * H, W_hh.dtype) if b_ih is None else b_ih + b_hh   # b = b_ih + b_hh
        y, hT, cT, tape = core.lstm_forward(x, W_ih, W_hh, b, h0[d], c0[d], lengths, reverse=d == 1,
                                            training=training, backend=backend)
        ys.append(y)
        hs.append(hT)
        cs.append(cT)
        tapes.append(tape)
    y = ys[0] if len(ys) == 1 else np.concatenate(ys, axis=2)
    return y, np.stack(hs), np.stack(cs), tapes


class _LSTMLayer(torch.autograd.Function):
    """One layer, both directions: (x, h0, c0, *weights) -> (y, h_n, c_n), time-major.

    weights: per direction W_ih, W_hh and (with bias) b_ih, b_hh, flat in torch's order."""

    @staticmethod
    def forward(ctx, meta, x, h0, c0, *weights):
        lengths, backend, D, has_bias = meta
        n = 4 if has_bias else 2
        arrs = [_np(w) for w in weights]
        per_dir = [tuple(arrs[d * n:(d + 1) * n]) + ((None, None) if not has_bias else ())
                   for d in range(D)]
        y, h_n, c_n, tapes = _layer_forward(_np(x), _np(h0), _np(c0), per_dir, lengths, backend, True)
        ctx.tapes, ctx.D, ctx.has_bias = tapes, D, has_bias
        ctx.backend_name = tapes[0].backend_name
        # saved only so that torch's version counters catch an in-place change before backward
        ctx.save_for_backward(x, h0, c0, *weights)
        ctx.set_materialize_grads(False)
        return torch.from_numpy(y), torch.from_numpy(h_n), torch.from_numpy(c_n)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dh_n, dc_n):
        ctx.saved_tensors  # raises if an input was modified in place since forward
        D, tapes = ctx.D, ctx.tapes
        H = tapes[0].W_hh.shape[1]
        dy = None if dy is None else _np(dy)
        dh_n = None if dh_n is None else _np(dh_n)
        dc_n = None if dc_n is None else _np(dc_n)
        dx = None
        dh0, dc0, dweights = [], [], []
        for d in range(D):
            # undoes y[..., d·H:(d+1)·H], hT = h_n[d], cT = c_n[d] = lstm_forward(x, ..., reverse=d == 1)
            dx_d, dW_ih, dW_hh, db, dh0_d, dc0_d = core.lstm_backward(
                None if dy is None else dy[:, :, d * H:(d + 1) * H],
                None if dh_n is None else dh_n[d], None if dc_n is None else dc_n[d], tapes[d])
            dx = dx_d if dx is None else dx + dx_d
            dh0.append(dh0_d)
            dc0.append(dc0_d)
            dweights += [dW_ih, dW_hh] + ([db, db.copy()] if ctx.has_bias else [])  # b = b_ih + b_hh
        need = ctx.needs_input_grad  # (meta, x, h0, c0, *weights)
        grads = [torch.from_numpy(dx) if need[1] else None,
                 torch.from_numpy(np.stack(dh0)) if need[2] else None,
                 torch.from_numpy(np.stack(dc0)) if need[3] else None]
        grads += [torch.from_numpy(g) if need[4 + k] else None for k, g in enumerate(dweights)]
        return (None, *grads)


class LSTM(torch.nn.LSTM):
    """torch.nn.LSTM with fastlstm's kernels on CPU float32/float64 tensors (see the module doc).

    Same constructor (plus keyword-only `backend`: None = fastlstm's choice for the dtype, or
    "native" | "numba" | "reference"), parameters, inputs and outputs as torch.nn.LSTM.
    `last_backend` names the fastlstm backend that ran the last call ("torch" after a fallback).
    """

    def __init__(self, *args, backend: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.backend = backend
        self.last_backend: str | None = None     # set per call through __dict__ (see forward)

    # --- conversions -----------------------------------------------------------------------
    @classmethod
    def from_torch(cls, module: torch.nn.LSTM, *, backend: str | None = None) -> LSTM:
        """A fastlstm.torch.LSTM with a copy of `module`'s configuration, weights and mode."""
        if not isinstance(module, torch.nn.LSTM):
            raise TypeError(f"from_torch needs a torch.nn.LSTM, got {type(module).__name__}")
        w = next(module.parameters())
        new = cls(**_config(module), device=w.device, dtype=w.dtype, backend=backend)
        new.load_state_dict(module.state_dict())
        return new.train(module.training)

    def to_torch(self) -> torch.nn.LSTM:
        """A plain torch.nn.LSTM with a copy of this module's configuration, weights and mode."""
        w = next(self.parameters())
        new = torch.nn.LSTM(**_config(self), device=w.device, dtype=w.dtype)
        new.load_state_dict(self.state_dict())
        return new.train(self.training)

    @classmethod
    def from_fastlstm(cls, layer, *, backend: str | None = None) -> LSTM:
        """From a NumPy fastlstm.LSTM (or fastlstm.nn.LSTM): same configuration, a copy of the weights."""
        p = layer.params
        dtype = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[np.dtype(layer.dtype)]
        new = cls(layer.input_size, layer.hidden_size, layer.num_layers, bias=layer.bias,
                  batch_first=layer.batch_first, dropout=float(getattr(layer, "dropout", 0.0)),
                  bidirectional=layer.bidirectional, dtype=dtype, backend=backend)
        new.load_state_dict({k: torch.from_numpy(np.array(v, copy=True)) for k, v in p.items()})
        return new

    def to_fastlstm(self):
        """A NumPy fastlstm.LSTM with this module's configuration and a copy of its weights."""
        from .layers import LSTM as NpLSTM

        if self.proj_size:
            raise ValueError("fastlstm.LSTM has no projection (proj_size > 0)")
        dtype = np.float64 if next(self.parameters()).dtype == torch.float64 else np.float32
        layer = NpLSTM(self.input_size, self.hidden_size, self.num_layers, bias=self.bias,
                       batch_first=self.batch_first, bidirectional=self.bidirectional, dtype=dtype)
        layer.load_state_dict({k: v.detach().cpu().numpy() for k, v in self.state_dict().items()})
        return layer

    # --- forward ---------------------------------------------------------------------------
    def _why_not(self, data: torch.Tensor, hx, weights) -> tuple[str | None, bool]:
        """(reason, warn) when fastlstm cannot run this call, else (None, False)."""
        if torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling():
            return "torch.jit / torch.compile / ONNX export is tracing the module", True
        if self.proj_size > 0:
            return "proj_size > 0 is not implemented by fastlstm's kernels", True
        tensors = [data, *weights, *([] if hx is None else hx)]
        if data.device.type != "cpu" or any(t.device != data.device for t in tensors):
            return f"input on device {data.device.type!r}: fastlstm's kernels are CPU-only", \
                all(t.device == data.device for t in tensors)
        if data.dtype not in _NP_DTYPE:
            return f"dtype {data.dtype} is not float32/float64", \
                all(t.dtype == data.dtype for t in tensors) and data.is_floating_point()
        if any(t.dtype != data.dtype for t in tensors):
            return "mixed dtypes", False   # torch raises its own error
        return None, False

    def _set_last_backend(self, name: str) -> None:
        self.__dict__["last_backend"] = name   # a plain attribute: skip Module.__setattr__ per call

    def forward(self, input, hx=None):
        is_packed = isinstance(input, PackedSequence)
        # every parameter once, in torch's order: per layer·direction W_ih, W_hh[, b_ih, b_hh]
        weights = [getattr(self, name) for name in self._flat_weights_names]
        reason, warn = self._why_not(input.data if is_packed else input, hx, weights)
        if reason is not None:
            if warn:
                _fall_back(reason)
            self._set_last_backend("torch")
            return super().forward(input, hx)

        L, D, H = self.num_layers, 2 if self.bidirectional else 1, self.hidden_size
        if is_packed:
            data, batch_sizes, sorted_indices, unsorted_indices = input
            # padded (T, B, I) in the packed (length-sorted) order; lengths descending
            x, lengths = pad_packed_sequence(PackedSequence(data, batch_sizes), batch_first=False)
            lengths_np = lengths.numpy()
            is_batched = True
            if hx is not None:
                self.check_forward_args(data, hx, batch_sizes)
                hx = self.permute_hidden(hx, sorted_indices)
            elif data.shape[-1] != self.input_size:
                self.check_input(data, batch_sizes)                  # torch's error message
        else:
            if input.dim() not in (2, 3):
                raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {input.dim()}D instead")
            is_batched = input.dim() == 3
            x = input if is_batched else input.unsqueeze(0 if self.batch_first else 1)
            lengths_np = sorted_indices = unsorted_indices = None
            if hx is not None:
                if is_batched and (hx[0].dim() != 3 or hx[1].dim() != 3):
                    raise RuntimeError("For batched 3-D input, hx and cx should also be 3-D but got "
                                       f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors")
                if not is_batched:
                    if hx[0].dim() != 2 or hx[1].dim() != 2:
                        raise RuntimeError("For unbatched 2-D input, hx and cx should also be 2-D but "
                                           f"got ({hx[0].dim()}-D, {hx[1].dim()}-D) tensors")
                    hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
                self.check_forward_args(x, hx, None)
            elif x.shape[-1] != self.input_size:
                self.check_input(x, None)                            # torch's error message
            if self.batch_first:
                x = x.transpose(0, 1)                  # the kernels are time-major
        B = x.shape[1]
        if hx is None:
            zeros = torch.zeros(L * D, B, H, dtype=x.dtype)
            hx = (zeros, zeros)
        h0, c0 = hx

        grad = torch.is_grad_enabled() and (x.requires_grad or h0.requires_grad or c0.requires_grad
                                            or any(w.requires_grad for w in weights))
        n = len(weights) // (L * D)          # 4 with bias, 2 without
        hs, cs = [], []
        inp = x.contiguous()
        for l in range(L):
            ws = weights[l * D * n:(l + 1) * D * n]
            h0_l, c0_l = h0[l * D:(l + 1) * D], c0[l * D:(l + 1) * D]
            if grad:
                y, h_l, c_l = _LSTMLayer.apply((lengths_np, self.backend, D, self.bias), inp, h0_l, c0_l, *ws)
            else:   # inference: no autograd node, no tape
                arrs = [_np(w) for w in ws]
                per_dir = [tuple(arrs[d * n:(d + 1) * n]) + ((None, None) if not self.bias else ())
                           for d in range(D)]
                y, h_l, c_l, _ = _layer_forward(_np(inp), _np(h0_l), _np(c0_l), per_dir, lengths_np,
                                                self.backend, False)
                y, h_l, c_l = torch.from_numpy(y), torch.from_numpy(h_l), torch.from_numpy(c_l)
            hs.append(h_l)
            cs.append(c_l)
            if self.dropout > 0 and self.training and l < L - 1:
                y = torch.nn.functional.dropout(y, self.dropout, training=True)
            inp = y
        self._set_last_backend(core.backends.for_dtype(_NP_DTYPE[x.dtype], self.backend).NAME)
        h_n, c_n = (hs[0], cs[0]) if L == 1 else (torch.cat(hs), torch.cat(cs))
        if is_packed:
            out = pack_padded_sequence(inp, lengths, enforce_sorted=True).data
            return PackedSequence(out, batch_sizes, sorted_indices, unsorted_indices), \
                self.permute_hidden((h_n, c_n), unsorted_indices)
        out = inp.transpose(0, 1) if self.batch_first else inp
        if not is_batched:
            out = out.squeeze(0 if self.batch_first else 1)
            h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
        return out, (h_n, c_n)


_NP_DTYPE = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64)}


def _config(m: torch.nn.LSTM) -> dict:
    return dict(input_size=m.input_size, hidden_size=m.hidden_size, num_layers=m.num_layers, bias=m.bias,
                batch_first=m.batch_first, dropout=m.dropout, bidirectional=m.bidirectional,
                proj_size=m.proj_size)
