"""Argument checks shared by every backend: bad input becomes a Python exception here,
before any kernel (NumPy, Numba or C++) sees it.

Policy
- dtype: float32 or float64, the same for every array of one call (TypeError otherwise).
  Integer/bool/complex/object arrays are rejected rather than silently cast.
- shape: exact ranks and sizes; the message names the argument and the expected shape.
- empty: T = 0 or B = 0 is a ValueError (there is no meaningful final state); I = 0 and
  H = 0 likewise.
- layout: non-contiguous or non-native-byte-order arrays are accepted and copied once.
- lengths: integers with 0 <= lengths[b] <= T; any order (unsorted is fine), zeros allowed.
- NaN/Inf: propagate like IEEE arithmetic (NaN in -> NaN out) and are never checked by
  default, because scanning costs as much as a small forward. Pass check_finite=True (or set
  FASTLSTM_CHECK_FINITE=1) to get a ValueError naming the array instead. Values at padded
  positions (t >= lengths[b]) are never read, so NaN padding is harmless either way.
"""

from __future__ import annotations

import os

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _env_check_finite() -> bool:
    return os.environ.get("FASTLSTM_CHECK_FINITE", "0") not in ("", "0", "false", "False")


def as_float_array(name: str, a, dtype=None) -> np.ndarray:
    """Array of float32/float64, C-contiguous, native byte order. No casting between kinds."""
    if a is None:
        raise TypeError(f"{name} must be an array, got None")
    arr = np.asarray(a)
    if arr.dtype not in FLOAT_DTYPES and arr.dtype.kind == "f" and arr.dtype.newbyteorder("=") in FLOAT_DTYPES:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {arr.dtype}")
    if dtype is not None and arr.dtype != dtype:
        raise TypeError(f"{name} has dtype {arr.dtype} but x has dtype {dtype}; "
                        f"all arrays of one call must share one dtype")
    return np.ascontiguousarray(arr)


def check_shape(name: str, arr: np.ndarray, expected: tuple, legend: str) -> None:
    if arr.shape != expected:
        raise ValueError(f"{name} must have shape {legend} = {expected}, got {arr.shape}")


def check_finite(name: str, arr: np.ndarray, mask=None) -> None:
    a = arr if mask is None else arr[mask]
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or Inf (check_finite=True)")


def as_lengths(lengths, T: int, B: int):
    """None, or int64 (B,) with 0 <= lengths <= T."""
    if lengths is None:
        return None
    arr = np.asarray(lengths)
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and arr.size and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise TypeError(f"lengths must be integers, got dtype {arr.dtype}")
    if arr.shape != (B,):
        raise ValueError(f"lengths must have shape (B,) = ({B},), got {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    if B and (arr.min() < 0 or arr.max() > T):
        bad = int(np.flatnonzero((arr < 0) | (arr > T))[0])
        raise ValueError(f"lengths must lie in [0, T] = [0, {T}], got lengths[{bad}] = {arr[bad]}")
    return arr


def weights(W_ih, W_hh, b, dtype=None, I=None):
    """One layer's (W_ih (4H, I), W_hh (4H, H), b (4H,)), all of one dtype (x's when given)."""
    W_hh = as_float_array("W_hh", W_hh, dtype)
    if W_hh.ndim != 2 or W_hh.shape[0] != 4 * W_hh.shape[1] or W_hh.shape[1] == 0:
        raise ValueError(f"W_hh must have shape (4H, H) with H >= 1, got {W_hh.shape}")
    H = W_hh.shape[1]
    W_ih = as_float_array("W_ih", W_ih, W_hh.dtype)
    if I is not None:
        check_shape("W_ih", W_ih, (4 * H, I), "(4H, I)")
    elif W_ih.ndim != 2 or W_ih.shape[0] != 4 * H or W_ih.shape[1] == 0:
        raise ValueError(f"W_ih must have shape (4H, I) = ({4 * H}, I), got {W_ih.shape}")
    b = as_float_array("b", b, W_hh.dtype)
    check_shape("b", b, (4 * H,), "(4H,)")
    return W_ih, W_hh, b


def check_finite_inputs(check, x, lengths, **arrays) -> None:
    """With check (None: FASTLSTM_CHECK_FINITE), raise on NaN/Inf in x's real steps and in the
    other arrays given (None entries are skipped)."""
    if check is None:
        check = _env_check_finite()
    if not check:
        return
    T = x.shape[0]
    mask = None if lengths is None else np.arange(T)[:, None] < lengths[None, :]
    check_finite("x", x, mask)
    for name, a in arrays.items():
        if a is not None:
            check_finite(name, a)


def forward_args(x, W_ih, W_hh, b, h0, c0, lengths, check_finite_: bool | None = None):
    """Validate and normalise the kernel contract's forward arguments.

    h0/c0 may be None (zeros). Returns (x, W_ih, W_hh, b, h0, c0, lengths).
    """
    x = as_float_array("x", x)
    if x.ndim != 3:
        raise ValueError(f"x must have shape (T, B, I), got {x.ndim}-d array of shape {x.shape}")
    T, B, I = x.shape
    if T == 0:
        raise ValueError(f"x has T = 0 time steps (shape {x.shape}); need T >= 1")
    if B == 0:
        raise ValueError(f"x has an empty batch, B = 0 (shape {x.shape}); need B >= 1")
    if I == 0:
        raise ValueError(f"x has I = 0 input features (shape {x.shape}); need I >= 1")
    dt = x.dtype
    W_ih, W_hh, b = weights(W_ih, W_hh, b, dt, I)
    H = W_hh.shape[1]
    h0 = np.zeros((B, H), dt) if h0 is None else as_float_array("h0", h0, dt)
    check_shape("h0", h0, (B, H), "(B, H)")
    c0 = np.zeros((B, H), dt) if c0 is None else as_float_array("c0", c0, dt)
    check_shape("c0", c0, (B, H), "(B, H)")
    lengths = as_lengths(lengths, T, B)
    check_finite_inputs(check_finite_, x, lengths, W_ih=W_ih, W_hh=W_hh, b=b, h0=h0, c0=c0)
    return x, W_ih, W_hh, b, h0, c0, lengths


def backward_args(dy, dhT, dcT, T, B, H, dt):
    """Validate output gradients; None means zeros."""
    dy = np.zeros((T, B, H), dt) if dy is None else as_float_array("dy", dy, dt)
    check_shape("dy", dy, (T, B, H), "(T, B, H)")
    dhT = np.zeros((B, H), dt) if dhT is None else as_float_array("dhT", dhT, dt)
    check_shape("dhT", dhT, (B, H), "(B, H)")
    dcT = np.zeros((B, H), dt) if dcT is None else as_float_array("dcT", dcT, dt)
    check_shape("dcT", dcT, (B, H), "(B, H)")
    return dy, dhT, dcT
