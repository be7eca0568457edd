"""fastlstm.torch: a drop-in for torch.nn.LSTM that runs fastlstm's kernels on CPU tensors.

    from fastlstm.torch import LSTM            # the one line to change (was torch.nn.LSTM)
    lstm = LSTM(input_size, hidden_size, num_layers=2, batch_first=True, bidirectional=True)
    out, (h_n, c_n) = lstm(x, (h0, c0))         # a tensor or a PackedSequence in, the same out

L = layers, D = directions (1 or 2), T = time steps, B = batch, I = input features,
H = hidden units. Gate order i, f, g, o in both libraries, so the weights need no conversion.

`LSTM` *is* a torch.nn.LSTM (a subclass): the constructor, parameter names, shapes and
initialisation, state_dict, .to(), flatten_parameters are torch's own; only forward() differs.
forward() checks the call once (torch's own argument checks), then the whole stack of layers is
one torch.autograd.Function (one per layer when dropout runs between layers) that hands
zero-copy NumPy views of the CPU tensors straight to the backend's raw kernels (DESIGN.md §2:
no per-layer Python validation, no private copies: the kernels read x and the weights again in
backward from the tensors' memory, and save_for_backward's version counters raise if anything
changed them in place, as for nn.LSTM) and wraps the results with torch.from_numpy. torch is an
optional extra: nothing in fastlstm is compiled against it.

Nothing derived from the weights is kept between calls. The native kernels pack W_ih and W_hh
inside each call (forward and backward each in their own layout); that costs under 2% of a
forward at the benchmark's shapes (fastlstm._core.Cell, packed once, is no faster there), and
b_ih + b_hh is a 4H-add (~1 µs). A cache keyed on torch's version counters would go stale after
`p.data.add_(...)`, which moves no counter; one keyed on the values would cost what it saves.

Threads: a call's kernels run with min(torch.get_num_threads(), fastlstm.get_num_threads())
threads (torch.set_num_threads(1) makes the drop-in single-threaded too), on torch's own OpenMP
threads where it runs on OpenMP; see the note above use_torch_threads.

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

import ctypes
import os
import re
import warnings

import numpy as np
import torch
from torch.autograd.function import once_differentiable
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import _validate, core

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


_ZEROS: dict = {}


def _zeros(shape: tuple, dtype: np.dtype) -> np.ndarray:
    """Read-only zeros shared by calls: the missing h0/c0 and dh_n/dc_n (the kernels only read them)."""
    z = _ZEROS.get((shape, dtype))
    if z is None:
        if len(_ZEROS) >= 64:      # many batch sizes (packed sequences, last batches): stay bounded
            _ZEROS.clear()
        z = _ZEROS[(shape, dtype)] = np.zeros(shape, dtype)
        z.flags.writeable = False
    return z


# --- threads: fastlstm's kernels on torch's OpenMP team --------------------------------------
#
# The rule: a call's kernels run with min(torch.get_num_threads(), fastlstm.get_num_threads())
# threads, so torch.set_num_threads(1) makes the drop-in single-threaded too.
#
# Whose threads: after every parallel torch op, torch's OpenMP (libgomp) workers spin for a while
# (GOMP_SPINCOUNT) on the cores that the kernels' own pool needs next, and the two teams take each
# other's time slices. Measured on the 2-core VM, PyTorch loops of the fit benchmark at 2 threads
# (nn.LSTM epoch / drop-in epoch): 0.76x at char-LM and 0.87x at seq2seq with the kernels on their
# own pool; with torch's workers made to sleep (OMP_WAIT_POLICY=passive) the drop-in's char-LM
# epoch fell from 0.47 to 0.36 s. So a multi-threaded call runs its teams on torch's own OpenMP
# runtime (GOMP_parallel of the libgomp torch loaded, found among the process's mapped
# libraries): one set of threads, already awake when the call comes. Same run: char-LM 0.76x ->
# 1.06x, seq2seq 0.87x -> 1.11x, forecast 1.16x -> 1.46x, classify 1.09x -> 1.40x.
#
# Where no OpenMP runtime of torch's is found (torch built on TBB or its native pool, macOS,
# Windows) or use_torch_threads is False, the kernels keep their own pool and run with the
# native backend's measured split (set_split("measured"): every loop the rule splits is timed
# split and on one thread, and the faster runs), so a step whose second core is taken by torch's
# spinning workers runs on one thread (static rule -> measured, pool: forecast 0.84x -> 1.14x,
# classify 0.82x -> 1.20x).

use_torch_threads = True        # False: the kernels' own thread pool, with the measured split
_omp_team = None                # (GOMP_parallel, omp_get_thread_num, omp_get_num_threads); False: none


def _torch_openmp_team():
    """The addresses of GOMP_parallel, omp_get_thread_num and omp_get_num_threads in the OpenMP
    runtime torch already loaded (Linux), or None."""
    global _omp_team
    if _omp_team is None:
        _omp_team = False
        try:
            if "parallel backend: OpenMP" in torch.__config__.parallel_info():
                with open("/proc/self/maps") as f:
                    paths = {line.split(None, 5)[5].strip() for line in f if line.count(" ") >= 5 and "/" in line}
                torch_dir = os.path.dirname(torch.__file__)
                omp = sorted((p for p in paths if re.match(r"lib[gi]?omp[-.\w]*\.so", os.path.basename(p))),
                             key=lambda p: not p.startswith(torch_dir))      # torch's own first
                for path in omp:                    # RTLD_NOLOAD: only a runtime already loaded
                    lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
                    try:
                        fns = tuple(ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
                                    for name in ("GOMP_parallel", "omp_get_thread_num", "omp_get_num_threads"))
                    except AttributeError:
                        continue
                    if all(fns):
                        _omp_team = fns
                        break
        except (OSError, IndexError):
            _omp_team = False
    return _omp_team or None


class _KernelThreads:
    """with _KernelThreads(mod): the thread rule around a Function's kernel calls; on more than
    one thread, the teams on torch's OpenMP runtime, or else the measured split (restores the
    backend's thread count, team and split mode after)."""

    __slots__ = ("mod", "restore", "split", "omp")

    def __init__(self, mod):
        self.mod, self.restore, self.split, self.omp = mod, None, None, False

    def __enter__(self):
        n_torch, n_fast = torch.get_num_threads(), core.backends.get_num_threads()
        n = min(n_torch, n_fast)
        if n > 1 and use_torch_threads and hasattr(self.mod, "set_openmp_team"):
            team = _torch_openmp_team()
            self.omp = team is not None and self.mod.set_openmp_team(team)
        if n > 1 and not self.omp and hasattr(self.mod, "set_split"):
            old = self.mod.set_split("measured")
            self.split = old if old != "measured" else None
            if old in ("rows", "units"):  # a forced variant (measurements) stays forced
                self.mod.set_split(old)
                self.split = None
        if n < n_fast and hasattr(self.mod, "set_num_threads"):
            self.mod.set_num_threads(n)
            self.restore = n_fast

    def __exit__(self, *exc):
        if self.omp:
            self.mod.set_openmp_team(None)
            self.omp = False
        if self.restore is not None:
            self.mod.set_num_threads(self.restore)
            self.restore = None
        if self.split is not None:
            self.mod.set_split(self.split)
            self.split = None


class _Stack:
    """What one call runs: layers `layers` of the module, D directions, n = 4 (with bias) or 2
    parameters per layer·direction, the fastlstm backend module `mod` (its raw kernels, DESIGN.md
    §2: the module validated the call once, so no per-layer Python validation), lengths (B,)
    int64 or None (padded packed sequences)."""

    __slots__ = ("layers", "D", "n", "mod", "lengths", "batch_first")

    def __init__(self, layers, D, n, mod, lengths, batch_first=False):
        self.layers, self.D, self.n, self.mod, self.lengths = layers, D, n, mod, lengths
        self.batch_first = batch_first     # x, y, dy, dx (B,T,·): the kernels read them in place


def _stack_forward(run: _Stack, x, h0, c0, w, training):
    """Layers run.layers, D directions, on NumPy arrays.

    x (T,B,I) (or (B,T,I) with run.batch_first) C-contiguous; h0/c0 (L·D,B,H) or None for zeros; w the layers' parameters as
    C-contiguous arrays in torch's order (per layer·direction W_ih, W_hh[, b_ih, b_hh]).
    Returns y (T,B,D·H) (or (B,T,D·H)), h_n, c_n (L·D,B,H) and, when training, per layer its
    input and per direction its workspace (what lstm_backward reads)."""
    D, n, mod, lengths, bf = run.D, run.n, run.mod, run.lengths, run.batch_first
    B = x.shape[0 if bf else 1]
    H = w[1].shape[1]
    zeros = _zeros((B, H), x.dtype) if h0 is None or c0 is None else None
    hs, cs, saved = [], [], []
    for k in range(len(run.layers)):
        ys, wss = [], []
        for d in range(D):
            j = k * D + d
            W_ih, W_hh = w[j * n], w[j * n + 1]
            b = w[j * n + 2] + w[j * n + 3] if n == 4 else _zeros((4 * H,), x.dtype)  # b = b_ih + b_hh
            y, hT, cT, ws = mod.lstm_forward(x, W_ih, W_hh, b, zeros if h0 is None else h0[j],
                                             zeros if c0 is None else c0[j], lengths, d == 1, training, bf)
            ys.append(y)
            hs.append(hT)
            cs.append(cT)
            wss.append(ws)
        if training:
            saved.append((x, wss))
        x = ys[0] if D == 1 else np.concatenate(ys, axis=2)
    h_n = hs[0][None] if len(hs) == 1 else np.stack(hs)
    c_n = cs[0][None] if len(cs) == 1 else np.stack(cs)
    return x, h_n, c_n, saved


def _stack_backward(run: _Stack, saved, w, dy, dh_n, dc_n, need_dx=True, need_dh0=True):
    """Gradients of _stack_forward(..., training=True): dy (T,B,D·H) (or (B,T,D·H)), dh_n, dc_n
    (L·D,B,H) as C-contiguous arrays or None (zeros); saved and w as forward kept them.
    Returns dx (T,B,I) (or (B,T,I); None, not computed, when need_dx is False), dh0 (None, not
    computed, when need_dh0 is False), dc0 (L·D,B,H) and the weights' gradients in torch's order."""
    D, n, mod, lengths, bf = run.D, run.n, run.mod, run.lengths, run.batch_first
    L = len(run.layers)
    H = w[1].shape[1]
    x0 = saved[0][0]
    T, B = x0.shape[1::-1] if bf else x0.shape[:2]
    zeros = _zeros((B, H), x0.dtype)
    dh0, dc0, dw = [None] * (L * D), [None] * (L * D), [None] * len(w)
    for k in reversed(range(L)):
        x, wss = saved[k]
        dx = None
        for d in range(D):
            j = k * D + d
            dy_d = _zeros((B, T, H) if bf else (T, B, H), x0.dtype) if dy is None else \
                dy if D == 1 else np.ascontiguousarray(dy[:, :, d * H:(d + 1) * H])
            # undoes y[..., d·H:(d+1)·H], hT = h_n[j], cT = c_n[j] = lstm_forward(x, ..., reverse=d == 1)
            dx_d, dW_ih, dW_hh, db, dh0[j], dc0[j] = mod.lstm_backward(
                dy_d, zeros if dh_n is None else dh_n[j], zeros if dc_n is None else dc_n[j],
                wss[d], x, w[j * n], w[j * n + 1], None, None, lengths, d == 1, k > 0 or need_dx, bf, need_dh0)
            dx = dx_d if dx is None else dx + dx_d
            dw[j * n:(j + 1) * n] = [dW_ih, dW_hh] + ([db, db.copy()] if n == 4 else [])  # b = b_ih + b_hh
        dy = dx                            # the layer below's output gradient
    dh0 = None if not need_dh0 else dh0[0][None] if L * D == 1 else np.stack(dh0)
    dc0 = dc0[0][None] if L * D == 1 else np.stack(dc0)
    return dy, dh0, dc0, dw


class _LSTMStack(torch.autograd.Function):
    """Layers run.layers (one, or all of them when no dropout runs between), both directions:
    (x, h0, c0, *weights) -> (y, h_n, c_n), time-major. h0/c0 may be None (zeros)."""

    @staticmethod
    def forward(ctx, run, x, h0, c0, *weights):
        w = [_np(t) for t in weights]
        with _KernelThreads(run.mod):
            y, h_n, c_n, saved = _stack_forward(run, _np(x), None if h0 is None else _np(h0),
                                                None if c0 is None else _np(c0), w, True)
        ctx.run, ctx.w, ctx.saved = run, w, saved
        # the kernels read x and the weights again in backward, straight from these tensors' memory
        # (no private copies): torch's version counters catch an in-place change before backward
        ctx.save_for_backward(x, *weights)
        ctx.set_materialize_grads(False)
        return torch.from_numpy(y), torch.from_numpy(h_n), torch.from_numpy(c_n)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dh_n, dc_n):
        ctx.saved_tensors  # raises if an input was modified in place since forward
        run = ctx.run
        need = ctx.needs_input_grad  # (run, x, h0, c0, *weights)
        with _KernelThreads(run.mod):
            dx, dh0, dc0, dw = _stack_backward(run, ctx.saved, ctx.w, None if dy is None else _np(dy),
                                               None if dh_n is None else _np(dh_n),
                                               None if dc_n is None else _np(dc_n), need[1], need[2])
        grads = [torch.from_numpy(dx) if need[1] else None,
                 torch.from_numpy(dh0) if need[2] else None,
                 torch.from_numpy(dc0) if need[3] else None]
        grads += [torch.from_numpy(g) if need[4 + k] else None for k, g in enumerate(dw)]
        return (None, *grads)


def _needs_grad(x, h0, c0, weights) -> bool:
    return torch.is_grad_enabled() and (x.requires_grad or any(w.requires_grad for w in weights)
                                        or (h0 is not None and (h0.requires_grad or c0.requires_grad)))


def _run(run: _Stack, x, h0, c0, weights, grad: bool):
    """(y, h_n, c_n) of run.layers as tensors: one autograd node, or (grad False) a plain
    inference call with no node and no workspaces."""
    if grad:
        return _LSTMStack.apply(run, x, h0, c0, *weights)
    with _KernelThreads(run.mod):
        y, h_n, c_n, _ = _stack_forward(run, _np(x), None if h0 is None else _np(h0),
                                        None if c0 is None else _np(c0), [_np(w) for w in weights], False)
    return torch.from_numpy(y), torch.from_numpy(h_n), torch.from_numpy(c_n)


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

    def _plain_call(self, x: torch.Tensor, hx):
        """The common call, with the checks of forward() done in a few attribute reads: a 3-D CPU
        float32/float64 tensor, hx None or two 3-D tensors of shape (L·D, B, H), one dtype and the
        CPU throughout, no dropout between layers, no tracing. Returns forward()'s result, or None
        for forward()'s general path (which also raises torch's errors). In the seq2seq loop of
        the drop-in benchmark the general path's checks cost 1-3% of an epoch at 2 threads."""
        dt = x.dtype
        if dt not in _NP_DTYPE or x.dim() != 3 or not x.is_cpu or self.proj_size \
                or torch.jit.is_tracing() or torch.compiler.is_compiling():
            return None
        L, D, H = self.num_layers, 2 if self.bidirectional else 1, self.hidden_size
        if self.dropout > 0 and self.training and L > 1:
            return None
        weights = self._flat_weights
        for w in weights:
            if w.dtype != dt or not w.is_cpu:
                return None
        bf = self.batch_first
        T, B, I = x.shape
        if bf:
            T, B = B, T
        if I != self.input_size or T == 0 or B == 0:
            return None
        h0 = c0 = None
        if hx is not None:
            if type(hx) is not tuple or len(hx) != 2:
                return None
            h0, c0 = hx
            for t in hx:
                if not isinstance(t, torch.Tensor) or t.dtype != dt or not t.is_cpu or t.shape != (L * D, B, H):
                    return None
        if _validate._env_check_finite():
            return None
        mod = core.backends.for_dtype(_NP_DTYPE[dt], self.backend)
        run = _Stack(range(L), D, len(weights) // (L * D), mod, None, bf)
        y, h_n, c_n = _run(run, x, h0, c0, weights, _needs_grad(x, h0, c0, weights))
        self._set_last_backend(mod.NAME)
        return y, (h_n, c_n)

    def forward(self, input, hx=None):
        if type(input) is torch.Tensor:
            out = self._plain_call(input, hx)
            if out is not None:
                return out
        is_packed = isinstance(input, PackedSequence)
        # every parameter once, in torch's order: per layer·direction W_ih, W_hh[, b_ih, b_hh]
        weights = self._flat_weights      # torch keeps it current (__setattr__, _apply)
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
        # batch-first tensors go to the kernels as they are: they read x, dy and write y, dx by
        # rows (b, t), so no transposed copy is made (a padded PackedSequence is time-major)
        bf = self.batch_first and not is_packed
        if 0 in x.shape:
            raise ValueError(f"LSTM: input has an empty dimension (shape {tuple(x.shape)}, "
                             f"{'batch' if bf else 'time'}-major); fastlstm needs T, B, I >= 1")
        mod = core.backends.for_dtype(_NP_DTYPE[x.dtype], self.backend)
        h0, c0 = (None, None) if hx is None else hx
        grad = _needs_grad(x, h0, c0, weights)
        if _validate._env_check_finite():      # FASTLSTM_CHECK_FINITE, as fastlstm.core.lstm_forward
            _validate.check_finite_inputs(True, _np(x), lengths_np, h0=None if h0 is None else _np(h0),
                                          c0=None if c0 is None else _np(c0),
                                          **{k: _np(w) for k, w in zip(self._flat_weights_names, weights)})
        n = len(weights) // (L * D)          # 4 with bias, 2 without
        # one autograd node for the whole stack, or one per layer when dropout runs between layers
        per_layer = self.dropout > 0 and self.training and L > 1
        groups = [range(l, l + 1) for l in range(L)] if per_layer else [range(L)]
        hs, cs = [], []
        inp = x
        for layers in groups:
            run = _Stack(layers, D, n, mod, lengths_np, bf)
            a, z = layers.start * D, layers.stop * D       # rows of h0/c0, runs of D·n weights
            h0_l = None if h0 is None else h0[a:z]
            c0_l = None if c0 is None else c0[a:z]
            ws = weights[a * n:z * n]
            y, h_l, c_l = _run(run, inp, h0_l, c0_l, ws, grad)
            hs.append(h_l)
            cs.append(c_l)
            if per_layer and layers.start < L - 1:
                y = torch.nn.functional.dropout(y, self.dropout, training=True)
            inp = y
        self._set_last_backend(mod.NAME)
        h_n, c_n = (hs[0], cs[0]) if len(hs) == 1 else (torch.cat(hs), torch.cat(cs))
        if is_packed:
            out = pack_padded_sequence(inp, lengths, enforce_sorted=True).data
            return PackedSequence(out, batch_sizes, sorted_indices, unsorted_indices), \
                self.permute_hidden((h_n, c_n), unsorted_indices)
        out = inp
        if not is_batched:
            out = out.squeeze(0 if self.batch_first else 1)
            h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
        return out, (h_n, c_n)


_NP_DTYPE = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64)}


def _config(m: torch.nn.LSTM) -> dict:
    return dict(input_size=m.input_size, hidden_size=m.hidden_size, num_layers=m.num_layers, bias=m.bias,
                batch_first=m.batch_first, dropout=m.dropout, bidirectional=m.bidirectional,
                proj_size=m.proj_size)
