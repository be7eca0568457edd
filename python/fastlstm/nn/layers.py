"""Layers other than the LSTM: dense heads, embeddings, dropout, pooling over time, LayerNorm,
activations and Sequential. Each forward keeps what its backward needs (in training mode) and
backward sits right below it, quoting the line it undoes.

B = batch, T = time steps, F/H = features, C = classes/outputs, V = vocabulary, E = embedding.
Sequences are batch-first (B, T, F) at this level; lengths (B,) mark the real steps of each row.
"""

from __future__ import annotations

import inspect

import numpy as np

from .. import _validate
from .module import Module, register

ACTIVATIONS = (None, "relu", "tanh", "sigmoid")


# Dense products on the kernels' own GEMM and thread team when those run on more than one thread:
# NumPy's BLAS then runs on one thread (fit's serial_blas: its spinning workers took the core the
# LSTM's team needs next), and a dense layer's products on one thread were most of what kept the
# 2-thread char-LM step (its Linear(256 -> 96) head over 6400 rows: 9 of 46 ms) behind torch's.
# Small products stay in NumPy: the kernels' GEMM packs B on every call.
_GEMM_MIN_FLOPS = 4e6
_core_gemm = None          # fastlstm._core.gemm; False: no native module


def _matmul(a, b, trans_a=False):
    """a·b, or aᵀ·b with trans_a (a as stored, (K, M))."""
    global _core_gemm
    from .. import backends

    M, K = (a.shape[1], a.shape[0]) if trans_a else a.shape
    if (backends.get_num_threads() > 1 and a.dtype == b.dtype == np.float32
            and 2.0 * M * K * b.shape[1] >= _GEMM_MIN_FLOPS):
        if _core_gemm is None:
            try:
                from .._core import gemm as _core_gemm
            except ImportError:
                _core_gemm = False
        if _core_gemm:
            return _core_gemm(np.ascontiguousarray(a), np.ascontiguousarray(b), trans_a)
    return a.T @ b if trans_a else a @ b


def _act_forward(kind, z):
    if kind is None:
        return z
    if kind == "relu":
        return np.maximum(z, 0)
    if kind == "tanh":
        return np.tanh(z)
    return 0.5 * (1 + np.tanh(0.5 * z))  # sigmoid without overflow warnings


def _act_backward(kind, y, dy):
    """dz from dy and the activation's OUTPUT y."""
    if kind is None:
        return dy
    if kind == "relu":
        return dy * (y > 0)
    if kind == "tanh":
        return dy * (1 - y * y)
    return dy * y * (1 - y)


def _check_lengths(lengths, B, T):
    if lengths is None:
        return None
    return _validate.as_lengths(lengths, T, B)


@register
class Linear(Module):
    """y = act(x · Wᵀ + b) on the last axis: a dense layer on (B, F) and a per-step head on (B, T, F).

    weight (out, in), bias (out,) — torch's layout and init U(-1/√in, 1/√in).
    """

    def __init__(self, in_features, out_features, bias=True, activation=None, dtype=np.float32, seed=None):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        if int(in_features) < 1 or int(out_features) < 1:
            raise ValueError(f"in_features and out_features must be >= 1, got {in_features}, {out_features}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.activation, self.use_bias, self.dtype = activation, bool(bias), np.dtype(dtype)
        rng = np.random.default_rng(seed)
        k = 1.0 / np.sqrt(self.in_features)
        self.add_param("weight", rng.uniform(-k, k, (self.out_features, self.in_features)).astype(self.dtype))
        if bias:
            self.add_param("bias", rng.uniform(-k, k, self.out_features).astype(self.dtype))
        self._x = self._y = None

    def get_config(self):
        return dict(in_features=self.in_features, out_features=self.out_features, bias=self.use_bias,
                    activation=self.activation, dtype=self.dtype.name)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}" + (f", {self.activation}" if self.activation else "")

    def forward(self, x, lengths=None):
        if x.shape[-1] != self.in_features:
            raise ValueError(f"Linear expects {self.in_features} input features on the last axis, "
                             f"got shape {x.shape}")
        x2 = x.reshape(-1, self.in_features)
        z = _matmul(x2, self.params["weight"].T)
        if self.use_bias:
            z += self.params["bias"]
        y = _act_forward(self.activation, z).reshape(*x.shape[:-1], self.out_features)
        if self.training:
            self._x, self._y = x2, y  # backward needs the input and the activation's output
        return y

    def backward(self, dy):
        if self._x is None:
            raise RuntimeError("Linear.backward needs a preceding forward in training mode")
        # y = act(z), z = x·Wᵀ + b
        dz = _act_backward(self.activation, self._y, dy).reshape(-1, self.out_features)
        self.grads["weight"] += _matmul(dz, self._x, trans_a=True)
        if self.use_bias:
            self.grads["bias"] += dz.sum(axis=0)
        dx = _matmul(dz, self.params["weight"]).reshape(*dy.shape[:-1], self.in_features)
        self._x = self._y = None
        return dx


Dense = Linear


@register
class Embedding(Module):
    """ids (B, T) or (B,) ints in [0, V) -> vectors (..., E). weight (V, E), init N(0, 1) like torch.

    backward adds into the used rows only (sparse rows of the gradient); padding_idx gets none.
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, dtype=np.float32, seed=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        if self.num_embeddings < 1 or self.embedding_dim < 1:
            raise ValueError(f"num_embeddings and embedding_dim must be >= 1, got {num_embeddings}, {embedding_dim}")
        self.padding_idx, self.dtype = padding_idx, np.dtype(dtype)
        w = np.random.default_rng(seed).standard_normal((self.num_embeddings, self.embedding_dim)).astype(self.dtype)
        if padding_idx is not None:
            w[padding_idx] = 0
        self.add_param("weight", w)
        self._ids = None

    def get_config(self):
        return dict(num_embeddings=self.num_embeddings, embedding_dim=self.embedding_dim,
                    padding_idx=self.padding_idx, dtype=self.dtype.name)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"

    def forward(self, ids, lengths=None):
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"Embedding expects integer token ids, got dtype {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_embeddings):
            bad = ids[(ids < 0) | (ids >= self.num_embeddings)].flat[0]
            raise ValueError(f"token id {bad} is outside the vocabulary [0, {self.num_embeddings})")
        if self.training:
            self._ids = ids
        return self.params["weight"][ids]

    def backward(self, dy):
        if self._ids is None:
            raise RuntimeError("Embedding.backward needs a preceding forward in training mode")
        # y = W[ids]
        ids = self._ids.reshape(-1)
        dy = dy.reshape(-1, self.embedding_dim)
        if self.padding_idx is not None:
            keep = ids != self.padding_idx
            ids, dy = ids[keep], dy[keep]
        # sum the rows of each id (sort, then one reduceat) and add once per used row: touches only
        # the used rows, and is several times faster than np.add.at's unbuffered scatter
        if ids.size:
            order = np.argsort(ids, kind="stable")
            used, starts = np.unique(ids[order], return_index=True)
            self.grads["weight"][used] += np.add.reduceat(dy[order], starts, axis=0)
        self._ids = None
        return None  # no gradient for integer ids


@register
class Dropout(Module):
    """Inverted dropout: in training, zero each element with probability p and scale the rest
    by 1/(1-p); identity in inference."""

    def __init__(self, p=0.5, seed=None):
        super().__init__()
        if not 0.0 <= float(p) < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)
        self.rng = np.random.default_rng(seed)
        self._mask = None

    def get_config(self):
        return dict(p=self.p)

    def extra_repr(self):
        return f"p={self.p}"

    def forward(self, x, lengths=None):
        if not self.training or self.p == 0.0:
            self._mask = None
            return x
        self._mask = (self.rng.random(x.shape, dtype=np.float32) >= self.p).astype(x.dtype) / (1 - self.p)
        return x * self._mask

    def backward(self, dy):
        # y = x · mask
        return dy if self._mask is None else dy * self._mask


class _Pool(Module):
    def get_config(self):
        return {}


@register
class LastStep(_Pool):
    """(B, T, D·H) -> (B, D·H): each row's output at its last real step, lengths[b] - 1.

    directions=2 (after a bidirectional LSTM): the forward half at the last real step and the
    reverse half at t = 0, where the reverse direction has read the whole row. A row of length 0
    gives zeros (no step was read).
    """

    def __init__(self, directions=1):
        super().__init__()
        if directions not in (1, 2):
            raise ValueError(f"directions must be 1 or 2, got {directions}")
        self.directions = directions
        self._cache = None

    def get_config(self):
        return dict(directions=self.directions)

    def _index(self, B, T, lengths):
        last = np.full(B, T - 1) if lengths is None else lengths - 1
        return np.arange(B), np.maximum(last, 0), (None if lengths is None else lengths > 0)

    def forward(self, x, lengths=None):
        B, T, F = x.shape
        lengths = _check_lengths(lengths, B, T)
        rows, last, valid = self._index(B, T, lengths)
        if self.directions == 1:
            y = x[rows, last]
        else:
            h = F // 2
            y = np.concatenate([x[rows, last, :h], x[:, 0, h:]], axis=1)
        if valid is not None:  # an empty row read nothing: zeros, whatever its padding holds
            y = np.where(valid[:, None], y, 0).astype(x.dtype, copy=False)
        if self.training:
            self._cache = (x.shape, x.dtype, rows, last, valid)
        return y

    def backward(self, dy):
        shape, dt, rows, last, valid = self._cache
        if valid is not None:
            dy = dy * valid[:, None]
        dx = np.zeros(shape, dt)
        if self.directions == 1:
            dx[rows, last] = dy
        else:
            h = shape[2] // 2
            dx[rows, last, :h] = dy[:, :h]
            dx[:, 0, h:] += dy[:, h:]
        return dx


@register
class MeanPool(_Pool):
    """(B, T, F) -> (B, F): the mean over each row's real steps (zeros for an empty row)."""

    def forward(self, x, lengths=None):
        B, T, _ = x.shape
        lengths = _check_lengths(lengths, B, T)
        if lengths is None:
            w = np.full((B, T), 1.0 / T, x.dtype)
        else:
            real = np.arange(T)[None, :] < lengths[:, None]
            w = (real / np.maximum(lengths, 1)[:, None]).astype(x.dtype)
            x = np.where(real[:, :, None], x, 0)  # padding may hold anything, NaN included
        if self.training:
            self._w = w
        return np.einsum("bt,btf->bf", w, x)

    def backward(self, dy):
        # y[b] = Σ_t w[b, t] x[b, t]
        return self._w[:, :, None] * dy[:, None, :]


@register
class MaxPool(_Pool):
    """(B, T, F) -> (B, F): the maximum over each row's real steps (zeros for an empty row)."""

    def forward(self, x, lengths=None):
        B, T, F = x.shape
        lengths = _check_lengths(lengths, B, T)
        xm = x if lengths is None else np.where((np.arange(T)[None, :] < lengths[:, None])[:, :, None], x, -np.inf)
        arg = xm.argmax(axis=1)                                   # (B, F)
        y = np.take_along_axis(x, arg[:, None, :], axis=1)[:, 0]
        if lengths is not None:
            y = np.where((lengths > 0)[:, None], y, 0).astype(x.dtype)
        if self.training:
            self._cache = (x.shape, x.dtype, arg, lengths)
        return y

    def backward(self, dy):
        shape, dt, arg, lengths = self._cache
        # y[b, f] = x[b, arg[b, f], f]
        if lengths is not None:
            dy = dy * (lengths > 0)[:, None]
        dx = np.zeros(shape, dt)
        np.put_along_axis(dx, arg[:, None, :], dy[:, None, :].astype(dt), axis=1)
        return dx


@register
class LayerNorm(Module):
    """y = (x - mean) / sqrt(var + eps) · weight + bias over the last axis."""

    def __init__(self, normalized_shape, eps=1e-5, dtype=np.float32):
        super().__init__()
        self.normalized_shape, self.eps, self.dtype = int(normalized_shape), float(eps), np.dtype(dtype)
        self.add_param("weight", np.ones(self.normalized_shape, self.dtype))
        self.add_param("bias", np.zeros(self.normalized_shape, self.dtype))
        self._cache = None

    def get_config(self):
        return dict(normalized_shape=self.normalized_shape, eps=self.eps, dtype=self.dtype.name)

    def forward(self, x, lengths=None):
        mu = x.mean(axis=-1, keepdims=True)
        xc = x - mu
        rstd = 1.0 / np.sqrt((xc * xc).mean(axis=-1, keepdims=True) + self.eps)
        xhat = xc * rstd
        if self.training:
            self._cache = (xhat, rstd)  # backward needs the normalised input and 1/std
        return xhat * self.params["weight"] + self.params["bias"]

    def backward(self, dy):
        xhat, rstd = self._cache
        # y = xhat·w + b,  xhat = (x - mean)·rstd
        lead = tuple(range(dy.ndim - 1))
        self.grads["weight"] += (dy * xhat).sum(axis=lead)
        self.grads["bias"] += dy.sum(axis=lead)
        dxhat = dy * self.params["weight"]
        return rstd * (dxhat - dxhat.mean(axis=-1, keepdims=True)
                       - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))


class _Activation(Module):
    kind: str = ""

    def get_config(self):
        return {}

    def forward(self, x, lengths=None):
        y = _act_forward(self.kind, x)
        if self.training:
            self._y = y
        return y

    def backward(self, dy):
        return _act_backward(self.kind, self._y, dy)


@register
class ReLU(_Activation):
    kind = "relu"


@register
class Tanh(_Activation):
    kind = "tanh"


@register
class Sigmoid(_Activation):
    kind = "sigmoid"


@register
class Flatten(Module):
    """(B, ...) -> (B, prod(...))."""

    def get_config(self):
        return {}

    def forward(self, x, lengths=None):
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        return dy.reshape(self._shape)


def _takes_lengths(layer) -> bool:
    try:
        return "lengths" in inspect.signature(layer.forward).parameters
    except (TypeError, ValueError):
        return False


@register
class Sequential(Module):
    """Layers applied in order; lengths reach every layer that takes them.

    A layer returning a tuple (the LSTM's (y, (h_n, c_n))) passes on its first item; its
    backward gets only dy, and a tuple it returns passes on its first item too.

    >>> model = Sequential(LSTM(1, 50, batch_first=True), LastStep(), Linear(50, 1))
    """

    def __init__(self, *layers):
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential layer {i} must be a fastlstm.nn.Module, got {type(layer).__name__}")
        self.layers = list(layers)
        self._with_lengths = [_takes_lengths(layer) for layer in self.layers]

    def _children(self):
        for i, layer in enumerate(self.layers):
            yield str(i), layer

    def __getitem__(self, i):
        return self.layers[i]

    def __len__(self):
        return len(self.layers)

    def get_config(self):
        from ..io import module_spec

        return dict(layers=[module_spec(layer) for layer in self.layers])

    @classmethod
    def from_config(cls, config):
        from ..io import module_from_spec

        return cls(*[module_from_spec(s) for s in config["layers"]])

    def forward(self, x, lengths=None):
        for layer, with_len in zip(self.layers, self._with_lengths):
            x = layer(x, lengths=lengths) if with_len else layer(x)
            if isinstance(x, tuple):
                x = x[0]
        return x

    def backward(self, dy):
        from ..layers import LSTM  # late: fastlstm.layers imports this package

        for layer in reversed(self.layers):
            # an LSTM here gets no hx from Sequential and its dh0 is dropped: not computed
            dy = layer.backward(dy, need_dh0=False) if isinstance(layer, LSTM) else layer.backward(dy)
            if isinstance(dy, tuple):
                dy = dy[0]
        return dy

    def _inference_cache(self, on):
        for layer in self.layers:
            layer._inference_cache(on)
