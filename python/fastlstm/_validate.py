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
  Always copied: what was checked is what the kernels read, even if the caller's array
  changes (another thread, or between forward and backward).
- flags (reverse, training): bool or NumPy bool only; "no" or 0 is a TypeError.
- NaN/Inf: propagate like IEEE arithmetic (NaN in -> NaN out) and are never checked by
  default, because scanning costs as much as a small forward. Pass check_finite=True (or set
  FASTLSTM_CHECK_FINITE=1) to get a ValueError naming the array instead. Values at padded
  positions (t >= lengths[b]) are never read, so NaN padding is harmless either way.

kernel_forward_args / kernel_backward_args are the strict form for the raw backend functions
(fastlstm.backends.<name>.lstm_forward): no conversion at all, only checks.
"""

from __future__ import annotations

import os

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


# os.environ.get of an unset name raises and catches KeyError twice (os._Environ has no get):
# ~1 µs in a tight loop, 25 µs per drop-in call in a training loop whose kernels evicted the
# caches. CPython's os.environ keeps its current contents in _data (keys through encodekey), so
# a dict lookup reads the same value without the exceptions; other Pythons take the plain get.
_ENV_DATA = getattr(os.environ, "_data", None)
try:
    _ENV_KEY = os.environ.encodekey("FASTLSTM_CHECK_FINITE")
    _ENV_DECODE = os.environ.decodevalue
except AttributeError:
    _ENV_DATA = None


def _env_check_finite() -> bool:
    if _ENV_DATA is not None:
        raw = _ENV_DATA.get(_ENV_KEY)
        raw = "" if raw is None else _ENV_DECODE(raw)
    else:
        raw = os.environ.get("FASTLSTM_CHECK_FINITE", "")
    v = raw.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError(f"FASTLSTM_CHECK_FINITE={raw!r}: expected 1/0, true/false, yes/no or on/off")


def flag(name: str, v) -> bool:
    """A bool argument: True/False or a NumPy bool, nothing merely truthy."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    raise TypeError(f"{name} must be a bool, got {type(v).__name__}")


def swap_tb(a):
    """A (T, B, n) array as (B, T, n) or back, C-contiguous (a copy); anything else unchanged
    (the kernel's own checks then name the problem). For backends whose loops are time-major
    only: they serve batch_first through these copies."""
    if isinstance(a, np.ndarray) and a.ndim == 3:
        return np.ascontiguousarray(np.swapaxes(a, 0, 1))
    return a


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


def check_shape(name: str, arr: np.ndarray, expected: tuple, legend: str, where: str = "") -> None:
    """where: which arguments set the sizes, so a wrong x is not blamed on W_ih alone."""
    if arr.shape != expected:
        raise ValueError(f"{name} must have shape {legend} = {expected}{' ' + where if where else ''}, "
                         f"got {arr.shape}")


def check_finite(name: str, arr: np.ndarray, mask=None) -> None:
    a = arr if mask is None else arr[mask]
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or Inf (check_finite=True)")


def as_lengths(lengths, T: int, B: int):
    """None, or a private int64 (B,) copy with 0 <= lengths <= T."""
    if lengths is None:
        return None
    arr = np.asarray(lengths)
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and arr.size and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            pass  # whole numbers in a float array; the range check below comes before the cast
        else:
            raise TypeError(f"lengths must be integers, got dtype {arr.dtype}")
    if arr.shape != (B,):
        raise ValueError(f"lengths must have shape (B,) = ({B},), got {arr.shape}")
    arr = np.array(arr, copy=True)  # the private copy is what is checked and what is used
    if arr.min() < 0 or arr.max() > T:  # before the cast: 2**63 must not wrap to < 0
        bad = int(np.flatnonzero((arr < 0) | (arr > T))[0])
        raise ValueError(f"lengths must lie in [0, T] = [0, {T}], got lengths[{bad}] = {arr[bad]}")
    return arr.astype(np.int64, copy=False)


def weights(W_ih, W_hh, b, dtype=None, I=None):
    """One layer's (W_ih (4H, I), W_hh (4H, H), b (4H,)), all of one dtype (x's when given)."""
    W_hh = as_float_array("W_hh", W_hh, dtype)
    if W_hh.ndim != 2 or W_hh.shape[0] != 4 * W_hh.shape[1] or W_hh.shape[1] == 0:
        raise ValueError(f"W_hh must have shape (4H, H) with H >= 1, got {W_hh.shape}")
    H = W_hh.shape[1]
    W_ih = as_float_array("W_ih", W_ih, W_hh.dtype)
    if I is not None:
        check_shape("W_ih", W_ih, (4 * H, I), "(4H, I)", "(H from W_hh, I from x)")
    elif W_ih.ndim != 2 or W_ih.shape[0] != 4 * H or W_ih.shape[1] == 0:
        raise ValueError(f"W_ih must have shape (4H, I) = ({4 * H}, I), got {W_ih.shape}")
    b = as_float_array("b", b, W_hh.dtype)
    check_shape("b", b, (4 * H,), "(4H,)", "(H from W_hh)")
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
    check_shape("h0", h0, (B, H), "(B, H)", "(B from x, H from W_hh)")
    c0 = np.zeros((B, H), dt) if c0 is None else as_float_array("c0", c0, dt)
    check_shape("c0", c0, (B, H), "(B, H)", "(B from x, H from W_hh)")
    lengths = as_lengths(lengths, T, B)
    check_finite_inputs(check_finite_, x, lengths, W_ih=W_ih, W_hh=W_hh, b=b, h0=h0, c0=c0)
    return x, W_ih, W_hh, b, h0, c0, lengths


def backward_args(dy, dhT, dcT, T, B, H, dt):
    """Validate output gradients; None means zeros."""
    dy = np.zeros((T, B, H), dt) if dy is None else as_float_array("dy", dy, dt)
    check_shape("dy", dy, (T, B, H), "(T, B, H)", "(as y)")
    dhT = np.zeros((B, H), dt) if dhT is None else as_float_array("dhT", dhT, dt)
    check_shape("dhT", dhT, (B, H), "(B, H)")
    dcT = np.zeros((B, H), dt) if dcT is None else as_float_array("dcT", dcT, dt)
    check_shape("dcT", dcT, (B, H), "(B, H)")
    return dy, dhT, dcT


# ---- the raw kernel contract (DESIGN.md §2): checks only, for the backend functions themselves

def kernel_array(name: str, a, dtypes, shape: tuple, legend: str, dtype=None, where: str = "") -> None:
    """a is an ndarray of one of `dtypes` (native byte order; x's dtype when given),
    C-contiguous, of exactly `shape`. Read-only arrays are fine."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(a).__name__}")
    if a.dtype not in dtypes or not a.dtype.isnative:
        raise TypeError(f"{name} must have dtype {' or '.join(str(d) for d in dtypes)} in native byte order, "
                        f"got {a.dtype.str}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"{name} has dtype {a.dtype} but x has dtype {dtype}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    check_shape(name, a, shape, legend, where)


def _kernel_sizes(x, W_hh, dtypes):
    kernel_array("x", x, dtypes, x.shape if isinstance(x, np.ndarray) else (), "(T, B, I)")
    if x.ndim != 3 or 0 in x.shape:
        raise ValueError(f"x must have shape (T, B, I) with T, B, I >= 1, got {x.shape}")
    kernel_array("W_hh", W_hh, dtypes, W_hh.shape if isinstance(W_hh, np.ndarray) else (), "(4H, H)", x.dtype)
    if W_hh.ndim != 2 or W_hh.shape[1] == 0 or W_hh.shape[0] != 4 * W_hh.shape[1]:
        raise ValueError(f"W_hh must have shape (4H, H) with H >= 1, got {W_hh.shape}")
    return (*x.shape, W_hh.shape[1])


def kernel_forward_args(x, W_ih, W_hh, b, h0, c0, lengths, reverse, training, dtypes):
    """Check a raw lstm_forward call; returns (a private copy of lengths or None, reverse, training)."""
    T, B, I, H = _kernel_sizes(x, W_hh, dtypes)
    dt = x.dtype
    kernel_array("W_ih", W_ih, dtypes, (4 * H, I), "(4H, I)", dt, "(H from W_hh, I from x)")
    kernel_array("b", b, dtypes, (4 * H,), "(4H,)", dt, "(H from W_hh)")
    kernel_array("h0", h0, dtypes, (B, H), "(B, H)", dt, "(B from x, H from W_hh)")
    kernel_array("c0", c0, dtypes, (B, H), "(B, H)", dt, "(B from x, H from W_hh)")
    return as_lengths(lengths, T, B), flag("reverse", reverse), flag("training", training)


def kernel_backward_args(dy, dhT, dcT, x, W_ih, W_hh, reverse, dtypes) -> bool:
    """Check a raw lstm_backward call's arrays (not the workspace: that is the backend's); returns reverse."""
    T, B, I, H = _kernel_sizes(x, W_hh, dtypes)
    dt = x.dtype
    kernel_array("W_ih", W_ih, dtypes, (4 * H, I), "(4H, I)", dt, "(H from W_hh, I from x)")
    kernel_array("dy", dy, dtypes, (T, B, H), "(T, B, H)", dt, "(T, B from x, H from W_hh)")
    kernel_array("dhT", dhT, dtypes, (B, H), "(B, H)", dt, "(B from x, H from W_hh)")
    kernel_array("dcT", dcT, dtypes, (B, H), "(B, H)", dt, "(B from x, H from W_hh)")
    return flag("reverse", reverse)
