"""Series plumbing shared by the Forecaster and the forecasting baselines.

What this file does: turn what a user passes (NumPy arrays, pandas Series / DataFrames, aeon's
(n_cases, n_channels, n_timepoints) arrays, lists of those for a global model) into a list of
_Series (target float64 (n,), exogenous (n, k) or None, the pandas index when there was one);
fill NaN gaps; find the seasonal period from the index frequency or the autocorrelation; build
the index of future steps. No model code here.
"""

from __future__ import annotations

import numpy as np

# calendar frequencies with a natural season (pandas offset alias prefix -> period)
_FREQ_PERIOD = {"M": 12, "MS": 12, "ME": 12, "Q": 4, "QS": 4, "QE": 4, "W": 52, "D": 7, "B": 5,
                "H": 24, "h": 24, "BM": 12, "BMS": 12, "BQ": 4}


class _Series:
    __slots__ = ("y", "exog", "index", "name", "columns", "sid")

    def __init__(self, y, exog=None, index=None, name=None, columns=None):
        self.y, self.exog, self.index, self.name, self.columns = y, exog, index, name, columns
        self.sid = None  # which training series' scaling applies (None: a new series)

    def __len__(self):
        return len(self.y)

    def head(self, n):
        return _Series(self.y[:n], None if self.exog is None else self.exog[:n],
                       None if self.index is None else self.index[:n], self.name, self.columns)


def _is_pandas(obj, kind):
    return type(obj).__name__ == kind and type(obj).__module__.startswith("pandas")


def _fill_gaps(a: np.ndarray, what: str, fill_gaps: bool) -> np.ndarray:
    """Interior NaN runs linearly interpolated (fill_gaps) or an error; leading/trailing NaN
    are an error either way (nothing to interpolate from)."""
    a = np.array(a, dtype=np.float64)
    if np.isinf(a).any():
        raise ValueError(f"{what} holds inf at position {int(np.flatnonzero(np.isinf(a))[0])}")
    bad = np.isnan(a)
    if not bad.any():
        return a
    if bad.all():
        raise ValueError(f"{what} is all NaN")
    if bad[0] or bad[-1]:
        raise ValueError(f"{what} starts or ends with NaN; trim the series (interior NaN gaps are "
                         f"interpolated when fill_gaps=True)")
    if not fill_gaps:
        raise ValueError(f"{what} has {int(bad.sum())} NaN value(s) (first at position "
                         f"{int(np.flatnonzero(bad)[0])}); impute them or pass fill_gaps=True")
    idx = np.arange(len(a))
    a[bad] = np.interp(idx[bad], idx[~bad], a[~bad])
    return a


def _one(y, X, target, fill_gaps, what) -> _Series:
    index, name, columns = None, None, None
    if _is_pandas(y, "DataFrame"):
        if y.shape[1] == 0:
            raise ValueError(f"{what} is a DataFrame without columns")
        col = y.columns[0] if target is None else target
        if col not in y.columns:
            raise ValueError(f"target {col!r} is not a column of {what} (columns: {list(y.columns)})")
        index, name = y.index, col
        rest = y.drop(columns=[col])
        if X is not None and rest.shape[1]:
            raise ValueError(f"{what} has extra columns {list(rest.columns)} and X is given too: "
                             f"pass the extra series one way")
        if rest.shape[1]:
            X, columns = rest.to_numpy(np.float64), list(rest.columns)
        y = y[col].to_numpy(np.float64)
    elif _is_pandas(y, "Series"):
        index, name = y.index, y.name
        y = y.to_numpy(np.float64)
    else:
        try:
            arr = np.asarray(y, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"{what} must be numeric (array, pandas Series or DataFrame), "
                            f"got {type(y).__name__}") from None
        if arr.ndim == 2:  # (n_timepoints, n_columns), like a DataFrame's values
            t = 0 if target is None else target
            if not isinstance(t, (int, np.integer)) or not -arr.shape[1] <= t < arr.shape[1]:
                raise ValueError(f"target must be a column index of the 2-D {what} "
                                 f"(n_timepoints, n_columns={arr.shape[1]}), got {target!r}")
            rest = np.delete(arr, t, axis=1)
            if rest.shape[1]:
                if X is not None:
                    raise ValueError(f"{what} has extra columns and X is given too: pass the "
                                     f"extra series one way")
                X = rest
            arr = arr[:, t]
        elif arr.ndim != 1:
            raise ValueError(f"{what} must be 1-D (n_timepoints,) or 2-D (n_timepoints, "
                             f"n_columns), got shape {arr.shape}")
        y = arr
    if len(y) == 0:
        raise ValueError(f"{what} is empty")
    y = _fill_gaps(y, what, fill_gaps)
    exog = None
    if X is not None:
        if _is_pandas(X, "DataFrame") or _is_pandas(X, "Series"):
            columns = list(X.columns) if _is_pandas(X, "DataFrame") else [X.name]
            X = X.to_numpy(np.float64)
        try:
            exog = np.asarray(X, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"X for {what} must be numeric, got {type(X).__name__}") from None
        if exog.ndim == 1:
            exog = exog[:, None]
        if exog.ndim != 2 or exog.shape[0] != len(y):
            raise ValueError(f"X for {what} must be (n_timepoints={len(y)}, n_extra), got shape "
                             f"{exog.shape}")
        exog = np.stack([_fill_gaps(exog[:, j], f"X column {j} of {what}", fill_gaps)
                         for j in range(exog.shape[1])], axis=1)
    return _Series(y, exog, index, name, columns)


def as_series_list(y, X=None, target=None, fill_gaps=True):
    """(list of _Series, was_list). A list / tuple or a 3-D aeon array is many series."""
    if isinstance(y, np.ndarray) and y.ndim == 3:  # aeon: (n_cases, n_channels, n_timepoints)
        t = 0 if target is None else target
        if not isinstance(t, (int, np.integer)) or not -y.shape[1] <= t < y.shape[1]:
            raise ValueError(f"target must be a channel index for a 3-D y (n_cases, n_channels="
                             f"{y.shape[1]}, n_timepoints), got {target!r}")
        y = [np.moveaxis(c, 0, 1) for c in y]  # each (n_timepoints, n_channels)
        target = int(t) % y[0].shape[1]
        many = True
    else:
        many = isinstance(y, (list, tuple))
    if not many:
        return [_one(y, X, target, fill_gaps, "y")], False
    if len(y) == 0:
        raise ValueError("y is an empty list of series")
    Xs = [None] * len(y) if X is None else list(X)
    if len(Xs) != len(y):
        raise ValueError(f"X must be a list with one entry per series ({len(y)}), got {len(Xs)}")
    out = [_one(s, x, target, fill_gaps, f"y[{i}]") for i, (s, x) in enumerate(zip(y, Xs))]
    k = {None if s.exog is None else s.exog.shape[1] for s in out}
    if len(k) > 1:
        raise ValueError(f"every series must have the same number of extra input series, got {sorted(k, key=str)}")
    return out, True


def period_from_index(index):
    """The seasonal period a calendar frequency implies (monthly 12, quarterly 4, ...) or None."""
    freq = getattr(index, "freqstr", None)
    if not freq:
        return None
    base = "".join(ch for ch in freq.split("-")[0] if ch.isalpha())
    return _FREQ_PERIOD.get(base) or _FREQ_PERIOD.get(base.upper())


def detect_period(y: np.ndarray, max_period: int | None = None, min_acf: float = 0.2):
    """The lag of the highest local maximum of the autocorrelation of the linearly detrended
    series (lags 2 .. n/3), when it exceeds min_acf; else None (no clear season)."""
    y = np.asarray(y, dtype=np.float64)
    n = len(y)
    hi = min(n // 3, max_period or n)
    if hi < 3:
        return None
    t = np.arange(n)
    resid = y - np.polyval(np.polyfit(t, y, 1), t)
    resid = resid - resid.mean()
    den = float(resid @ resid)
    if den <= 1e-12 * max(1.0, float(y @ y)):
        return None  # constant (or exactly linear) series: no season
    acf = np.array([resid[:n - k] @ resid[k:] / den for k in range(hi + 2)])
    peaks = [k for k in range(2, hi + 1) if acf[k] > acf[k - 1] and acf[k] >= acf[k + 1]]
    if not peaks:
        return None
    best = max(peaks, key=lambda k: acf[k])
    return int(best) if acf[best] >= min_acf else None


def future_index(index, n_train: int, horizon: int):
    """The pandas index of the `horizon` steps after a series with this index (None: none)."""
    if index is None:
        return None
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - an index came from pandas
        return None
    if isinstance(index, pd.PeriodIndex) or (isinstance(index, pd.DatetimeIndex) and index.freq is not None):
        return pd.Index([index[-1] + (k + 1) * index.freq for k in range(horizon)], name=index.name)
    if isinstance(index, pd.RangeIndex) or (len(index) and np.issubdtype(np.asarray(index).dtype, np.integer)):
        step = int(index[-1] - index[-2]) if len(index) > 1 else 1
        return pd.RangeIndex(int(index[-1]) + step, int(index[-1]) + step * (horizon + 1), step, name=index.name)
    return pd.RangeIndex(n_train, n_train + horizon)
