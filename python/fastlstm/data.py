"""Data preparation for sequence models: from raw series and label lists to the arrays and
lengths the layers take. NumPy only (pandas objects are accepted through np.asarray).

N = sequences/samples/windows, T = time steps, F = features, C = classes.

Padding and lengths      pad_sequences, unpad
Batching                 batches (plain), bucket_batches (by length), padding_fraction
Series framing           sliding_windows (read-only strided views, no copies)
Splits                   time_split (last part is validation), random_split
Scaling                  StandardScaler, MinMaxScaler (fit on training data only)
Encoding                 LabelEncoder (any hashable labels), one_hot

The one contract with the layers below: a padded batch is (N, T, F) batch-first with real steps
0..lengths[n]-1 ("post" padding) and lengths int64 (N,). The kernels and losses read lengths and
never look at padded values, so nothing has to guess a mask from the data.

NaN policy: NaN is data, never a marker. pad_sequences and sliding_windows carry NaN through
unchanged (a window holding a NaN makes its loss NaN: drop or impute first); the scalers ignore
NaN when fitting (nanmean/nanstd/nanmin/nanmax) and propagate it when transforming; LabelEncoder
rejects NaN labels. Inf is rejected when fitting a scaler.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "pad_sequences", "unpad", "batches", "bucket_batches", "padding_fraction", "sliding_windows",
    "time_split", "random_split", "StandardScaler", "MinMaxScaler", "LabelEncoder", "one_hot",
    "NotFittedError",
]

_NUMERIC_KINDS = "biuf"


class NotFittedError(ValueError, AttributeError):
    """A scaler or encoder was used before fit() (or from_state())."""


# ---------------------------------------------------------------- argument checks

def _as_int(name: str, v, minimum: int | None = None) -> int:
    """A Python int from an int / np.integer (bool rejected), with a lower bound."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(v).__name__} {v!r}")
    v = int(v)
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def _as_fraction(name: str, v, allow_zero: bool = True) -> float:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number in [0, 1), got {type(v).__name__} {v!r}")
    v = float(v)
    if not (0.0 <= v < 1.0) or (v == 0.0 and not allow_zero):
        raise ValueError(f"{name} must be in {'[0' if allow_zero else '(0'}, 1), got {v}")
    return v


def _as_lengths(name: str, lengths, T: int | None = None) -> np.ndarray:
    """int64 (N,) with 0 <= lengths (<= T when T is given)."""
    arr = np.asarray(lengths)
    if arr.size == 0 and arr.ndim == 1:
        return arr.astype(np.int64)  # [] is float64 to NumPy
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integers, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (N,), got shape {arr.shape}")
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} out of range: {name}[{int(np.argmin(arr))}] = {int(arr.min())} < 0")
    if T is not None and arr.size and arr.max() > T:
        i = int(np.argmax(arr))
        raise ValueError(f"{name} out of range: {name}[{i}] = {int(arr[i])} > T = {T}")
    return arr


def _check_padding(name: str, v) -> str:
    if v not in ("post", "pre"):
        raise ValueError(f"{name} must be 'post' or 'pre', got {v!r}")
    return v


# ---------------------------------------------------------------- padding

def pad_sequences(seqs, maxlen=None, dtype=None, padding="post", truncating="post", value=0):
    """Pad a list of variable-length sequences into one batch-first array plus their lengths.

    seqs: a list (or any iterable, e.g. a pandas Series) of N arrays, all (T_n,) (token ids or a
          univariate series) or all (T_n, F) (features). Zero-length sequences are allowed; an
          empty (0,) array also counts as (0, F) among 2-D sequences.
    maxlen: pad/truncate to T = maxlen steps; None: T = the longest sequence.
    dtype: None gives float32 for float input and int64 for integer/bool input. A given dtype is
           a cast by NumPy's same_kind rule (float64 -> float32 fine; float -> int is a TypeError,
           round the values yourself).
    padding: "post" (the default and what fastlstm's kernels and losses expect: real steps at
             0..lengths[n]-1) or "pre" (real steps at T-lengths[n]..T-1, Keras's default, for
             models run WITHOUT lengths). With "pre" the returned lengths still count real steps,
             but they do not describe where those steps are, so never pass them as `lengths` to
             an LSTM or loss; use unpad(x, lengths, padding="pre") to invert.
    truncating: "post" keeps the first maxlen steps of a longer sequence, "pre" the last ones.
    value: the fill value (NaN allowed for float dtypes); it must be representable in dtype.

    Returns x (N, T) or (N, T, F), C-contiguous, and lengths int64 (N,) = min(T_n, T).
    NaN inside sequences is copied as is.
    """
    if seqs is None or isinstance(seqs, (str, bytes, dict)):
        raise TypeError(f"seqs must be a list of arrays, got {type(seqs).__name__}")
    try:
        items = list(seqs)
    except TypeError:
        raise TypeError(f"seqs must be a list of arrays, got {type(seqs).__name__}") from None
    if not items:
        raise ValueError("seqs is empty: need at least one sequence")
    padding = _check_padding("padding", padding)
    truncating = _check_padding("truncating", truncating)
    if maxlen is not None:
        maxlen = _as_int("maxlen", maxlen, minimum=0)

    arrs = []
    for i, s in enumerate(items):
        try:
            a = np.asarray(s)
        except ValueError as e:  # a ragged nested list inside one sequence
            raise ValueError(f"seqs[{i}] is not a rectangular (T,) or (T, F) array: {e}") from None
        if a.dtype.kind not in _NUMERIC_KINDS:
            raise TypeError(f"seqs[{i}] must be numeric (bool, int or float), got dtype {a.dtype}")
        if a.ndim not in (1, 2):
            raise ValueError(f"seqs[{i}] must be 1-D (T,) or 2-D (T, F), got shape {a.shape}")
        arrs.append(a)

    # the feature shape: every non-empty sequence agrees on rank and F
    feat = None  # () for 1-D, (F,) for 2-D
    for i, a in enumerate(arrs):
        if a.ndim == 1 and a.shape[0] == 0:
            continue  # [] fits either rank
        if feat is None:
            feat, first = a.shape[1:], i
        elif a.shape[1:] != feat:
            raise ValueError(f"seqs has ragged feature dims: seqs[{first}] has shape {arrs[first].shape} but "
                             f"seqs[{i}] has shape {a.shape}; all sequences must be (T,) or all (T, F), one F")
    if feat is None:
        feat = ()  # only empty 1-D sequences

    if dtype is None:
        kinds = {a.dtype.kind for a in arrs if a.size}
        out_dtype = np.dtype(np.float32) if (not kinds or "f" in kinds) else np.dtype(np.int64)
    else:
        out_dtype = np.dtype(dtype)
        if out_dtype.kind not in _NUMERIC_KINDS:
            raise TypeError(f"dtype must be a numeric dtype, got {out_dtype}")
        for i, a in enumerate(arrs):
            if a.size and not np.can_cast(a.dtype, out_dtype, casting="same_kind"):
                raise TypeError(f"seqs[{i}] has dtype {a.dtype}, which cannot be cast to dtype={out_dtype} "
                                f"without losing information (same_kind rule); convert it yourself")
    _check_fill_value(value, out_dtype)

    lengths = np.array([a.shape[0] for a in arrs], dtype=np.int64)
    T = int(lengths.max()) if maxlen is None else maxlen
    lengths = np.minimum(lengths, T)
    x = np.full((len(arrs), T) + feat, value, dtype=out_dtype)
    for n, a in enumerate(arrs):
        L = int(lengths[n])
        if L == 0:
            continue
        part = a[:L] if truncating == "post" else a[a.shape[0] - L:]
        if padding == "post":
            x[n, :L] = part
        else:
            x[n, T - L:] = part
    return x, lengths


def _check_fill_value(value, dtype: np.dtype) -> None:
    """The padding value must survive the cast to dtype (no NaN or 0.5 in an int batch)."""
    if not isinstance(value, (bool, int, float, np.bool_, np.integer, np.floating)):
        raise TypeError(f"value must be a real scalar, got {type(value).__name__} {value!r}")
    if dtype.kind == "f":
        return
    if isinstance(value, (float, np.floating)) and not (math.isfinite(value) and float(value).is_integer()):
        raise ValueError(f"value={value!r} cannot be stored in the integer dtype {dtype}")
    lo, hi = (0, 1) if dtype.kind == "b" else (np.iinfo(dtype).min, np.iinfo(dtype).max)
    if not lo <= int(value) <= hi:
        raise ValueError(f"value={value!r} is out of range for dtype {dtype}")


def unpad(x, lengths, padding="post"):
    """The inverse of pad_sequences: a list of N arrays x[n, :lengths[n]] (copies).

    x: (N, T, ...) padded batch; lengths: ints (N,) with 0 <= lengths[n] <= T.
    padding: "pre" takes the last lengths[n] steps instead.
    """
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"x must be a padded batch (N, T) or (N, T, F), got shape {x.shape}")
    lengths = _as_lengths("lengths", lengths, T=x.shape[1])
    if lengths.shape[0] != x.shape[0]:
        raise ValueError(f"lengths must have shape (N,) = ({x.shape[0]},), got {lengths.shape}")
    padding = _check_padding("padding", padding)
    T = x.shape[1]
    if padding == "post":
        return [x[n, :L].copy() for n, L in enumerate(lengths)]
    return [x[n, T - L:].copy() for n, L in enumerate(lengths)]


# ---------------------------------------------------------------- batching

def batches(n, batch_size, shuffle=True, seed=None) -> Iterator[np.ndarray]:
    """Index batches over n samples: int64 arrays of batch_size (the last one may be shorter).

    shuffle: a new random order from np.random.default_rng(seed); pass one np.random.Generator
             as seed to get a different order every epoch. shuffle=False: 0..n-1 in order.
    Arguments are checked now, not at the first next().
    """
    n = _as_int("n", n, minimum=0)
    batch_size = _as_int("batch_size", batch_size, minimum=1)
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n, dtype=np.int64)

    def gen():
        for start in range(0, n, batch_size):
            yield order[start:start + batch_size]
    return gen()


def bucket_batches(lengths, batch_size, shuffle=True, seed=None, bucket_size_multiplier=100):
    """Index batches of similar length, so a padded batch carries little padding.

    The standard bucketing iterator: shuffle all indices, cut them into chunks of
    batch_size * bucket_size_multiplier, sort each chunk by length (stable), cut it into batches,
    then shuffle the order of all batches. Every index appears exactly once; batches are
    batch_size long except the last of each chunk. A larger multiplier sorts more globally (less
    padding, less randomness); 1 degenerates to plain shuffled batches.
    shuffle=False: chunks of 0..n-1 in order, each sorted by length, batches in order (with a
    multiplier covering the whole set this is a global sort, the best order for predict).
    seed: int, None or an np.random.Generator (pass one Generator for a new order each epoch).

    lengths: ints (N,) >= 0. Returns a list of int64 index arrays.
    """
    lengths = _as_lengths("lengths", lengths)
    batch_size = _as_int("batch_size", batch_size, minimum=1)
    mult = _as_int("bucket_size_multiplier", bucket_size_multiplier, minimum=1)
    rng = np.random.default_rng(seed)
    n = lengths.shape[0]
    order = rng.permutation(n) if shuffle else np.arange(n, dtype=np.int64)
    chunk = batch_size * mult
    out = []
    for start in range(0, n, chunk):
        idx = order[start:start + chunk]
        idx = idx[np.argsort(lengths[idx], kind="stable")]
        out.extend(idx[b:b + batch_size] for b in range(0, idx.shape[0], batch_size))
    if shuffle:
        out = [out[i] for i in rng.permutation(len(out))]
    return out


def padding_fraction(lengths, batches=None) -> float:
    """Fraction of padded cells when each batch is padded to its own longest sequence.

    padded cells / all cells = 1 - sum(lengths) / sum_b(len(b) * max(lengths[b])).
    batches: a list of index arrays (bucket_batches' output); None: the whole set as one batch.
    0.0 when there are no cells at all.
    """
    lengths = _as_lengths("lengths", lengths)
    n = lengths.shape[0]
    if batches is None:
        batches = [np.arange(n)]
    real = cells = 0
    for i, b in enumerate(batches):
        b = np.asarray(b)
        if b.size == 0:
            continue
        if b.dtype.kind not in "iu" or b.ndim != 1:
            raise TypeError(f"batches[{i}] must be a 1-D integer index array, got {b.dtype} {b.shape}")
        if b.min() < -n or b.max() >= n:
            raise ValueError(f"batches[{i}] holds an index out of range for {n} lengths")
        Lb = lengths[b]
        real += int(Lb.sum())
        cells += b.shape[0] * int(Lb.max())
    return 0.0 if cells == 0 else 1.0 - real / cells


# ---------------------------------------------------------------- series framing

def _target_columns(target_cols, F: int):
    """target_cols -> an index for the last axis. Evenly spaced columns become a slice (a view);
    irregular lists stay a fancy index (a copy)."""
    if target_cols is None:
        return slice(None)
    if isinstance(target_cols, slice):
        cols = list(range(F)[target_cols])
    elif isinstance(target_cols, (int, np.integer)) and not isinstance(target_cols, (bool, np.bool_)):
        cols = [int(target_cols)]
    else:
        arr = np.asarray(target_cols)
        if arr.dtype.kind not in "iu" or arr.ndim != 1:
            raise TypeError(f"target_cols must be an int, a slice or a list of column indices, got {target_cols!r}")
        cols = [int(c) for c in arr]
    if not cols:
        raise ValueError(f"target_cols selects no column (F = {F}): {target_cols!r}")
    for c in cols:
        if not -F <= c < F:
            raise ValueError(f"target_cols holds column {c}, out of range for F = {F} features")
    cols = [c % F for c in cols]
    if len(set(cols)) != len(cols):
        raise ValueError(f"target_cols has duplicate columns: {target_cols!r}")
    if len(cols) == 1:
        return slice(cols[0], cols[0] + 1)
    steps = {b - a for a, b in zip(cols, cols[1:])}
    if len(steps) == 1:
        d = steps.pop()
        stop = cols[-1] + d
        return slice(cols[0], stop if stop >= 0 else None, d)
    return np.array(cols)


def sliding_windows(series, n_in, n_out=1, stride=1, target_cols=None, gap=0, dtype=None):
    """Frame a series into (input window, target window) pairs for supervised learning.

    series: (N,) or (N, F), time along axis 0 (a 1-D series is one feature, F = 1).
    Window m starts at s = m * stride:
        X[m] = series[s : s + n_in]                                   (n_in, F)
        Y[m] = series[s + n_in + gap : s + n_in + gap + n_out, target_cols]   (n_out, F_t)
    M = (N - n_in - gap - n_out) // stride + 1 windows; gap skips steps between input and target
    (e.g. a forecast made one step ahead of the data it uses). n_out = 0 gives empty targets and
    the last window ending at the last step (the one to predict the future from).

    Returns X (M, n_in, F) and Y (M, n_out, F_t). Y is always 3-D so shapes stay regular; for
    one target column Y[..., 0] (or Y.squeeze(-1)) is (M, n_out), and Y[:, 0, 0] is (M,).
    Both are READ-ONLY strided views that share memory with the series (np.shares_memory): no
    window is copied, so framing a long series costs nothing; np.ascontiguousarray(X) when a
    writable copy is wanted. target_cols: None (all), an int, a slice, or a list of indices;
    an evenly spaced list (e.g. [0, 2, 4]) is a view too, an irregular one (e.g. [0, 3, 4]) views
    a once-made copy of those columns (N x F_t). dtype: cast the series once first (e.g.
    float64 -> float32; the windows then view that cast copy). NaN is carried into the windows.
    """
    try:
        s = np.asarray(series)
    except ValueError as e:
        raise ValueError(f"series is not a rectangular (N,) or (N, F) array: {e}") from None
    if s.dtype.kind not in _NUMERIC_KINDS:
        raise TypeError(f"series must be numeric, got dtype {s.dtype}")
    if dtype is not None:
        dtype = np.dtype(dtype)
        if dtype.kind not in _NUMERIC_KINDS:
            raise TypeError(f"dtype must be a numeric dtype, got {dtype}")
        s = s.astype(dtype, copy=False)
    if s.ndim not in (1, 2):
        raise ValueError(f"series must be 1-D (N,) or 2-D (N, F), got shape {s.shape}")
    n_in = _as_int("n_in", n_in, minimum=1)
    n_out = _as_int("n_out", n_out, minimum=0)
    stride = _as_int("stride", stride, minimum=1)
    gap = _as_int("gap", gap, minimum=0)
    s2 = s[:, None] if s.ndim == 1 else s  # (N, F), a view
    N, F = s2.shape
    if F == 0:
        raise ValueError("series has no features (shape (N, 0))")
    cols = _target_columns(target_cols, F)
    need = n_in + gap + n_out
    if N < need:
        raise ValueError(f"series of length {N} is too short for n_in={n_in}, gap={gap}, n_out={n_out}: "
                         f"one window needs n_in + gap + n_out = {need} steps")
    M = (N - need) // stride + 1

    # sliding_window_view puts the window axis last: (N - n_in + 1, F, n_in) -> (M, n_in, F)
    X = sliding_window_view(s2, n_in, axis=0)[::stride][:M].swapaxes(1, 2)
    tail = s2[n_in + gap:, cols]  # a view, or for irregular cols one (N', F_t) copy
    Y = sliding_window_view(tail, n_out, axis=0)[::stride][:M].swapaxes(1, 2)
    return X, Y


# ---------------------------------------------------------------- splits

def _split_sizes(n: int, fraction: float, what: str) -> tuple[int, int]:
    n_val = int(math.floor(n * fraction + 0.5))  # round half up
    if fraction > 0 and (n_val == 0 or n_val == n):
        raise ValueError(f"fraction={fraction} of n={n} leaves an empty "
                         f"{'validation' if n_val == 0 else 'training'} set ({what})")
    return n - n_val, n_val


def time_split(n, fraction, gap=0):
    """Split n time-ordered samples: the LAST round(n * fraction) are validation.

    Returns (train, val) as slices: train = slice(0, n_train), val = slice(n_train + gap, n).
    fraction = 0 gives an empty validation slice. gap drops that many samples between the two,
    for windows whose targets overlap: windows from sliding_windows(n_out=k, stride=s) share
    target steps with neighbours up to ceil(k / s) - 1 windows away, so gap = ceil(k / s) - 1
    keeps every validation target out of training.
    """
    n = _as_int("n", n, minimum=1)
    fraction = _as_fraction("fraction", fraction)
    gap = _as_int("gap", gap, minimum=0)
    n_train, _ = _split_sizes(n, fraction, "time_split")
    if fraction > 0 and n_train + gap >= n:
        raise ValueError(f"gap={gap} swallows the whole validation set of n={n}, fraction={fraction}")
    return slice(0, n_train), slice(min(n_train + gap, n), n)


def random_split(n, fraction, seed=None):
    """Split n samples at random: (train_idx, val_idx), int64 arrays, each sorted ascending,
    together a partition of 0..n-1; len(val_idx) = round(n * fraction)."""
    n = _as_int("n", n, minimum=1)
    fraction = _as_fraction("fraction", fraction)
    n_train, _ = _split_sizes(n, fraction, "random_split")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[:n_train]), np.sort(perm[n_train:])


# ---------------------------------------------------------------- scalers

def _float_out_dtype(X: np.ndarray, dtype) -> np.dtype:
    if dtype is None:
        return X.dtype if X.dtype.kind == "f" else np.dtype(np.float64)
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"dtype must be a float dtype, got {dtype}")
    return dtype


def _as_numeric(name: str, X) -> np.ndarray:
    if X is None:
        raise TypeError(f"{name} must be an array, got None")
    arr = np.asarray(X)
    if arr.dtype.kind not in _NUMERIC_KINDS:
        raise TypeError(f"{name} must be numeric (bool, int or float), got dtype {arr.dtype}")
    if arr.ndim == 0:
        raise ValueError(f"{name} must have at least one axis (..., F), got a scalar")
    return arr


class _Scaler:
    """Shared plumbing: per feature = last axis (a 1-D array is one feature), statistics over
    all other axes, state as a dict of arrays/scalars (npz-friendly)."""

    _state_keys: tuple = ()

    def _check_fitted(self):
        if not hasattr(self, "n_features_in_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit(X) on the training data first")

    def _n_features(self, X: np.ndarray) -> int:
        return 1 if X.ndim == 1 else X.shape[-1]

    def _fit_data(self, X) -> np.ndarray:
        """float64 (samples, F) view/copy of X, checked: samples, no Inf, no all-NaN feature."""
        X = _as_numeric("X", X)
        F = self._n_features(X)
        if F == 0:
            raise ValueError(f"X has no features (last axis of size 0), shape {X.shape}")
        X2 = X.reshape(-1, F).astype(np.float64, copy=False)
        if X2.shape[0] == 0:
            raise ValueError(f"X has no samples, shape {X.shape}")
        if np.isinf(X2).any():
            raise ValueError("X contains Inf; scalers ignore NaN when fitting but not Inf")
        all_nan = np.isnan(X2).all(axis=0)
        if all_nan.any():
            raise ValueError(f"X feature {int(np.argmax(all_nan))} has no non-NaN value to fit on")
        return X2

    def _prepare(self, X, dtype):
        self._check_fitted()
        X = _as_numeric("X", X)
        F = self._n_features(X)
        if F != self.n_features_in_:
            raise ValueError(f"X has {F} features (last axis of shape {X.shape}), but "
                             f"{type(self).__name__} was fitted with {self.n_features_in_}")
        out = _float_out_dtype(X, dtype)
        return X.astype(out, copy=False), out

    def fit_transform(self, X, dtype=None):
        return self.fit(X).transform(X, dtype=dtype)

    def get_state(self) -> dict:
        """Hyperparameters and fitted statistics: {"kind": class name, ...} of arrays/scalars,
        safe for np.savez. from_state(get_state()) rebuilds an equal scaler."""
        self._check_fitted()
        state = {"kind": type(self).__name__}
        for k in self._state_keys:
            v = getattr(self, k)
            state[k] = v.copy() if isinstance(v, np.ndarray) else v
        return state

    @classmethod
    def from_state(cls, state):
        if not hasattr(state, "keys"):
            raise TypeError(f"state must be a dict (from get_state()), got {type(state).__name__}")
        kind = str(np.asarray(state.get("kind", "")))
        if kind != cls.__name__:
            raise ValueError(f"state is for {kind!r}, not {cls.__name__}")
        missing = [k for k in cls._state_keys if k not in state]
        if missing:
            raise ValueError(f"state lacks key(s) {missing} for {cls.__name__}")
        obj = cls._from_state(state)
        F = obj.n_features_in_
        for k in cls._state_keys:
            v = getattr(obj, k)
            if isinstance(v, np.ndarray) and v.shape != (F,):
                raise ValueError(f"state[{k!r}] has shape {v.shape}, expected (n_features_in_,) = ({F},)")
        return obj


class StandardScaler(_Scaler):
    """z = (x - mean) / std per feature (last axis), statistics over all other axes.

    Fit on training data only, then transform train, validation and test with the same
    statistics; inverse_transform maps predictions back to data units. NaN is ignored when
    fitting (nanmean, nanvar with ddof=0) and propagates through transform. A constant feature
    gets scale 1 (so it becomes 0, never a division by zero). Statistics are float64; the output
    keeps X's float dtype (float64 for int input) unless dtype= is given.

    Fitted: mean_ (F,), var_ (F,), scale_ (F,), n_features_in_.
    """

    _state_keys = ("with_mean", "with_std", "n_features_in_", "mean_", "var_", "scale_")

    def __init__(self, with_mean=True, with_std=True):
        self.with_mean = with_mean
        self.with_std = with_std

    def fit(self, X):
        """X (..., F) or (N,) -> self."""
        X2 = self._fit_data(X)
        self.mean_ = np.nanmean(X2, axis=0)
        self.var_ = np.nanvar(X2, axis=0)
        std = np.sqrt(self.var_)
        self.scale_ = np.where(std > 0, std, 1.0) if self.with_std else np.ones_like(std)
        self.n_features_in_ = X2.shape[1]
        return self

    def transform(self, X, dtype=None):
        """(x - mean_) / scale_, the shape of X."""
        X, dt = self._prepare(X, dtype)
        Z = X - self.mean_.astype(dt) if self.with_mean else X.copy()
        if self.with_std:
            Z /= self.scale_.astype(dt)
        return Z

    def inverse_transform(self, Z, dtype=None):
        """z * scale_ + mean_ (undoes transform)."""
        Z, dt = self._prepare(Z, dtype)
        X = Z * self.scale_.astype(dt) if self.with_std else Z.copy()
        if self.with_mean:
            X += self.mean_.astype(dt)
        return X

    @classmethod
    def _from_state(cls, st):
        obj = cls(with_mean=bool(np.asarray(st["with_mean"])), with_std=bool(np.asarray(st["with_std"])))
        obj.n_features_in_ = int(np.asarray(st["n_features_in_"]))
        for k in ("mean_", "var_", "scale_"):
            setattr(obj, k, np.array(st[k], dtype=np.float64))
        if np.any(obj.scale_ <= 0):
            raise ValueError("state['scale_'] must be > 0")
        return obj


class MinMaxScaler(_Scaler):
    """x' = lo + (x - data_min) * (hi - lo) / (data_max - data_min) per feature (last axis).

    feature_range = (lo, hi) with lo < hi. Fit on training data only: test values outside the
    training range map outside (lo, hi) (no clipping). NaN is ignored when fitting (nanmin,
    nanmax) and propagates through transform. A constant feature gets range 1 (maps to lo).

    Fitted: data_min_ (F,), data_max_ (F,), scale_ (F,) = (hi - lo) / range, n_features_in_.
    """

    _state_keys = ("feature_range", "n_features_in_", "data_min_", "data_max_", "scale_")

    def __init__(self, feature_range=(0, 1)):
        self.feature_range = feature_range

    def _range(self):
        fr = self.feature_range
        try:
            lo, hi = (float(v) for v in fr)
        except (TypeError, ValueError):
            raise TypeError(f"feature_range must be two numbers (lo, hi), got {fr!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"feature_range must be finite with lo < hi, got {fr!r}")
        return lo, hi

    def fit(self, X):
        """X (..., F) or (N,) -> self."""
        lo, hi = self._range()
        X2 = self._fit_data(X)
        self.data_min_ = np.nanmin(X2, axis=0)
        self.data_max_ = np.nanmax(X2, axis=0)
        rng = self.data_max_ - self.data_min_
        self.scale_ = (hi - lo) / np.where(rng > 0, rng, 1.0)
        self.n_features_in_ = X2.shape[1]
        return self

    def transform(self, X, dtype=None):
        """lo + (x - data_min_) * scale_, the shape of X."""
        lo, _ = self._range()
        X, dt = self._prepare(X, dtype)
        Z = X - self.data_min_.astype(dt)
        Z *= self.scale_.astype(dt)
        Z += dt.type(lo)
        return Z

    def inverse_transform(self, Z, dtype=None):
        """(z - lo) / scale_ + data_min_ (undoes transform)."""
        lo, _ = self._range()
        Z, dt = self._prepare(Z, dtype)
        X = Z - dt.type(lo)
        X /= self.scale_.astype(dt)
        X += self.data_min_.astype(dt)
        return X

    def get_state(self) -> dict:
        state = super().get_state()
        state["feature_range"] = np.array(self._range(), dtype=np.float64)
        return state

    @classmethod
    def _from_state(cls, st):
        obj = cls(feature_range=tuple(float(v) for v in np.asarray(st["feature_range"]).ravel()))
        obj._range()
        obj.n_features_in_ = int(np.asarray(st["n_features_in_"]))
        for k in ("data_min_", "data_max_", "scale_"):
            setattr(obj, k, np.array(st[k], dtype=np.float64))
        return obj


# ---------------------------------------------------------------- encoders

def _kind_group(dt: np.dtype) -> str:
    """Arrays that compare element-wise with NumPy: numbers with numbers, str with str."""
    return {"U": "str", "S": "bytes"}.get(dt.kind, "number" if dt.kind in _NUMERIC_KINDS else "object")


def _is_nan(v) -> bool:
    return isinstance(v, (float, np.floating)) and v != v


def _label_input(labels):
    """An ndarray keeps its shape (its elements are the labels); any other iterable is a flat
    list of labels (so a list of tuples stays a list of tuple labels)."""
    if labels is None or isinstance(labels, (str, bytes)):
        raise TypeError(f"labels must be a sequence of labels (wrap a single label in a list), "
                        f"got {type(labels).__name__}")
    if isinstance(labels, np.ndarray) or (hasattr(labels, "__array__") and not isinstance(labels, (list, tuple))):
        arr = np.asarray(labels)
        if arr.ndim == 0:
            raise TypeError(f"labels must be a sequence of labels (wrap a single label in a list), got {arr!r}")
        return arr
    try:
        return list(labels)
    except TypeError:
        raise TypeError(f"labels must be a sequence of labels, got {type(labels).__name__}") from None


def _classes_array(classes: list) -> np.ndarray:
    """A typed array when the labels are all str / all int / all float / all bool, else object."""
    if all(isinstance(c, (bool, np.bool_)) for c in classes):
        return np.array(classes, dtype=bool)
    if all(isinstance(c, (int, np.integer)) and not isinstance(c, (bool, np.bool_)) for c in classes):
        try:
            return np.array(classes, dtype=np.int64)
        except OverflowError:
            pass
    elif all(isinstance(c, (float, np.floating)) for c in classes):
        return np.array(classes, dtype=np.float64)
    elif all(isinstance(c, str) for c in classes):
        return np.array(classes, dtype=str)
    out = np.empty(len(classes), dtype=object)
    for i, c in enumerate(classes):  # elementwise, so tuples stay tuples
        out[i] = c
    return out


class LabelEncoder:
    """Labels <-> integer codes 0..C-1, for any hashable labels (str, int, tuple, mixed).

    classes_: sorted when the labels are mutually comparable, else in first-seen order. Labels
    equal under Python's == are one class (1, 1.0 and True). NaN labels are rejected (fill or
    drop missing values first). A list is a flat sequence of labels (a list of tuples is a list
    of tuple labels); an ndarray keeps its shape and transform returns codes of that shape.
    """

    def fit(self, labels):
        labels = _label_input(labels)
        if len(labels) == 0 or (isinstance(labels, np.ndarray) and labels.size == 0):
            raise ValueError("labels is empty: nothing to fit")
        if isinstance(labels, np.ndarray) and labels.dtype.kind in "biufUS":
            if labels.dtype.kind == "f" and np.isnan(labels).any():
                raise ValueError("labels contains NaN; fill or drop missing labels before encoding")
            self.classes_ = np.unique(labels)  # sorted
        else:
            flat = labels.ravel().tolist() if isinstance(labels, np.ndarray) else labels
            seen: dict = {}
            for i, v in enumerate(flat):
                try:
                    hash(v)
                except TypeError:
                    raise TypeError(f"labels[{i}] = {v!r} is not hashable") from None
                if _is_nan(v):
                    raise ValueError(f"labels[{i}] is NaN; fill or drop missing labels before encoding")
                seen.setdefault(v, None)
            classes = list(seen)
            try:
                classes = sorted(classes)
            except TypeError:
                pass  # not mutually comparable: first-seen order
            self.classes_ = _classes_array(classes)
        self._build_index()
        return self

    def _build_index(self):
        self._index = {c: i for i, c in enumerate(self.classes_.tolist())}
        if len(self._index) != len(self.classes_):
            raise ValueError("classes_ holds duplicate labels")

    def _check_fitted(self):
        if not hasattr(self, "classes_"):
            raise NotFittedError("LabelEncoder is not fitted yet; call fit(labels) first")

    def transform(self, labels):
        """labels -> int64 codes (same shape for an ndarray, (N,) for a list).
        An unknown label is a ValueError naming it."""
        self._check_fitted()
        labels = _label_input(labels)
        cls = self.classes_
        if isinstance(labels, np.ndarray) and _kind_group(labels.dtype) == _kind_group(cls.dtype) != "object":
            # vectorised: classes_ is sorted here
            codes = np.minimum(np.searchsorted(cls, labels), len(cls) - 1)
            bad = cls[codes] != labels
            if bad.any():
                self._unknown(labels[bad].tolist())
            return codes.astype(np.int64)
        shape = labels.shape if isinstance(labels, np.ndarray) else (len(labels),)
        flat = labels.ravel().tolist() if isinstance(labels, np.ndarray) else labels
        codes = np.empty(len(flat), dtype=np.int64)
        unknown = []
        for i, v in enumerate(flat):
            try:
                codes[i] = self._index[v]
            except (KeyError, TypeError):
                unknown.append(v)
        if unknown:
            self._unknown(unknown)
        return codes.reshape(shape)

    def _unknown(self, unknown):
        preview = ", ".join(repr(c) for c in self.classes_[:10].tolist())
        more = ", ..." if len(self.classes_) > 10 else ""
        raise ValueError(f"labels contains {len(unknown)} unknown label(s), first {unknown[0]!r}; "
                         f"known classes: [{preview}{more}]")

    def fit_transform(self, labels):
        return self.fit(labels).transform(labels)

    def inverse_transform(self, codes):
        """int codes (any shape) -> labels, classes_[codes]."""
        self._check_fitted()
        codes = np.asarray(codes)
        if codes.dtype.kind not in "iu":
            raise TypeError(f"codes must be integers, got dtype {codes.dtype}")
        C = len(self.classes_)
        if codes.size and (codes.min() < 0 or codes.max() >= C):
            bad = codes[(codes < 0) | (codes >= C)].ravel()[0]
            raise ValueError(f"codes holds {int(bad)}, out of range for {C} classes (0..{C - 1})")
        return self.classes_[codes]

    def get_state(self) -> dict:
        """{"kind": "LabelEncoder", "classes_": array}. npz-safe for str/int/float/bool classes;
        tuple or mixed classes are an object array (np.savez then needs allow_pickle)."""
        self._check_fitted()
        return {"kind": "LabelEncoder", "classes_": self.classes_.copy()}

    @classmethod
    def from_state(cls, state):
        if not hasattr(state, "keys"):
            raise TypeError(f"state must be a dict (from get_state()), got {type(state).__name__}")
        kind = str(np.asarray(state.get("kind", "")))
        if kind != cls.__name__:
            raise ValueError(f"state is for {kind!r}, not {cls.__name__}")
        if "classes_" not in state:
            raise ValueError("state lacks key 'classes_' for LabelEncoder")
        classes = np.asarray(state["classes_"])
        if classes.ndim != 1 or classes.size == 0:
            raise ValueError(f"state['classes_'] must be a non-empty 1-D array, got shape {classes.shape}")
        obj = cls()
        obj.classes_ = classes.copy()
        if classes.dtype != object and classes.size > 1 and not np.all(classes[1:] > classes[:-1]):
            raise ValueError("state['classes_'] must be sorted and unique for typed labels")
        obj._build_index()
        return obj


def one_hot(y, num_classes=None, dtype=np.float32):
    """Integer class ids of any shape (...) -> one-hot (..., num_classes).

    num_classes: None infers max(y) + 1. Ids must lie in 0..num_classes-1 (ValueError otherwise;
    a padded target such as -100 must be masked out before, not encoded).
    """
    y = np.asarray(y)
    if y.dtype.kind not in "iu":
        raise TypeError(f"y must be integer class ids, got dtype {y.dtype}")
    if num_classes is None:
        if y.size == 0:
            raise ValueError("y is empty: pass num_classes to one-hot encode it")
        num_classes = int(y.max()) + 1
    num_classes = _as_int("num_classes", num_classes, minimum=1)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        bad = int(y.min()) if y.min() < 0 else int(y.max())
        raise ValueError(f"y holds class {bad}, out of range for num_classes={num_classes} (0..{num_classes - 1})")
    out = np.zeros(y.shape + (num_classes,), dtype=dtype)
    np.put_along_axis(out, y[..., None].astype(np.intp), 1, axis=-1)
    return out
