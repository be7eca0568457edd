"""Forecaster: an LSTM that predicts the next value(s) of a series, ready with its defaults.

    f = Forecaster(horizon=12).fit(series)           # NumPy array or pandas Series / DataFrame
    mean, lower, upper = f.predict(12, return_interval=True)
    result = Forecaster().backtest(series, test_size=0.2)   # rolling one-step-ahead RMSE
    f.plot("forecast.png", truth=future)

What happens inside, and why (each is a constructor argument):
- difference=1: the model sees first differences, so a trend or a level it never saw in training
  cannot push it out of its input range; forecasts are summed back onto the last true value.
- the differenced target is standardised per series (mean/std of its training part), extra input
  series too; every prediction is mapped back before it is returned.
- window="auto": two seasonal periods of history per input (the period comes from the index's
  frequency — monthly 12, quarterly 4, ... — or the autocorrelation's highest peak), 12 when no
  season is found, shortened for short series.
- horizon=H > 1: direct multi-output (one head of H outputs, no error feedback); predicting past
  H recurses block by block on the model's own outputs.
- training: Adam, lr 5e-3 decayed to 0 by a cosine schedule over about 800 updates of 32
  windows, gradient norm clipped at 1 — a fixed budget rather than early stopping: the short
  series this is for (114..309 points checked) cannot spare a validation split.
- n_models=3: three differently seeded LSTMs averaged — on a series of 100..300 points one
  network's RMSE swings with its seed (Airline 24.8..31.0 alone, 24.9..25.7 as a trio).
- intervals: empirical quantiles of the errors of a calibration model (trained on the first 80%
  of the windows, scored on the last 20%, in time order) at each horizon step — summed errors
  when differencing — scaled per series; widened like a random walk past the direct horizon. With
  fewer than 10 calibration windows the in-sample errors stand in (optimistic). Backtests gave
  59..98% coverage for the nominal 90% (Airline's growing seasonal swings: the low end, 59..76%).
- many series (a list, or an aeon (n_cases, n_channels, n_timepoints) array): one global model
  over the windows of all of them, each series scaled on its own.
- extra input series (X, or the other columns of a DataFrame): fed as inputs at past steps only,
  so no future values are needed; past the direct horizon they are held at their last value
  unless predict(X=...) gives them.
- NaN gaps inside a series are interpolated linearly (fill_gaps=True) or an error
  (fill_gaps=False); leading/trailing NaN are an error. A constant series forecasts its constant.
"""

from __future__ import annotations

import math

import numpy as np

from .. import nn
from ._base import (BaseEstimator, NotFittedError, check_positive_float, check_positive_int,
                    check_random_state)
from ._series import as_series_list, detect_period, future_index, period_from_index

UPDATES = 800  # optimizer steps of the default training budget (see the module docstring)


class BacktestResult:
    """Rolling-origin forecasts over a hold-out: forecast/truth (n_origins, horizon) per series."""

    def __init__(self, name, series, cut, forecast, truth, lower, upper, origins, horizon):
        self.name, self.series, self.cut = name, series, cut
        self.forecast, self.truth, self.lower, self.upper = forecast, truth, lower, upper
        self.origins, self.horizon = origins, horizon

    @property
    def errors(self):
        return np.concatenate([(f - t).ravel() for f, t in zip(self.forecast, self.truth)])

    @property
    def rmse(self) -> float:
        return float(np.sqrt(np.mean(self.errors ** 2)))

    @property
    def mae(self) -> float:
        return float(np.mean(np.abs(self.errors)))

    @property
    def coverage(self):
        """Fraction of hold-out values inside the intervals (None without intervals)."""
        if self.lower is None:
            return None
        inside = [((t >= lo) & (t <= hi)).ravel() for t, lo, hi in zip(self.truth, self.lower, self.upper)]
        return float(np.mean(np.concatenate(inside)))

    def __repr__(self):
        return f"BacktestResult({self.name}, origins={sum(len(o) for o in self.origins)}, " \
               f"horizon={self.horizon}, rmse={self.rmse:.4g})"


class ForecasterBase(BaseEstimator):
    """fit / predict / backtest / plot over a list of series; subclasses give _fit and _forecast.

    _forecast(hists, h) receives histories (list of _Series with .sid: the training series whose
    scaling applies, or None for a new series) and returns (mean, lower, upper), each (m, h)
    (lower/upper None without intervals), on the original scale.
    """

    _estimator_type = "regressor"
    name = "forecaster"

    # -- fitting -------------------------------------------------------------------------------
    def fit(self, y, X=None):
        series, many = as_series_list(y, X, getattr(self, "target", None), getattr(self, "fill_gaps", True))
        return self._fit_parsed(series, many)

    def _check_period_arg(self):
        p = getattr(self, "seasonal_period", "auto")
        if p not in ("auto", None):
            check_positive_int("seasonal_period", p, 2)

    def _find_period(self, series):
        p = getattr(self, "seasonal_period", "auto")
        if p not in ("auto", None):
            return int(p)
        if p is None:
            return None
        longest = max(series, key=len)
        return period_from_index(longest.index) or detect_period(longest.y)

    def _fit(self, series):
        raise NotImplementedError

    def _forecast(self, hists, h):
        raise NotImplementedError

    # -- prediction ------------------------------------------------------------------------------
    def _histories(self, y, X):
        if y is None:
            if X is not None:
                raise ValueError("X without y: pass the history y whose extra series X are")
            hists = list(self.series_)
            for i, s in enumerate(hists):
                s.sid = i
            return hists, self.many_
        hists, many = as_series_list(y, X, getattr(self, "target", None), getattr(self, "fill_gaps", True))
        k = 0 if hists[0].exog is None else hists[0].exog.shape[1]
        if k != self.n_exog_:
            raise ValueError(f"the model was fitted with {self.n_exog_} extra input series, this "
                             f"history has {k}")
        same = len(hists) == self.n_series_
        for i, s in enumerate(hists):
            s.sid = i if same else None
        return hists, many

    def predict(self, horizon=None, y=None, X=None, return_interval=False):
        """Forecast `horizon` steps after the training series (or after the history y).

        Returns an array (pandas Series when the input had a pandas index), one per series in a
        list for a global model; with return_interval=True a (mean, lower, upper) tuple of those.
        X: future values of the extra input series (used when recursing past the direct horizon).
        """
        self._check_fitted()
        h = getattr(self, "horizon", 1) if horizon is None else horizon
        h = check_positive_int("horizon", h)
        hists, many = self._histories(y, None if X is None or y is None else X)
        future = self._future_exog(X if y is None else None, hists, h)
        mean, lower, upper = self._forecast(hists, h, future_exog=future)
        outs = []
        for i, s in enumerate(hists):
            parts = [mean[i]] + ([lower[i] if lower is not None else None,
                                  upper[i] if upper is not None else None] if return_interval else [])
            idx = future_index(s.index, len(s), h)
            parts = [self._wrap(p, idx, s.name) for p in parts]
            outs.append(tuple(parts) if return_interval else parts[0])
        return outs if many else outs[0]

    def _future_exog(self, X, hists, h):
        if X is None or self.n_exog_ == 0:
            return None
        Xs = X if isinstance(X, (list, tuple)) else [X]
        out = []
        for x in Xs:
            a = np.asarray(x.to_numpy() if hasattr(x, "to_numpy") else x, dtype=np.float64)
            a = a[:, None] if a.ndim == 1 else a
            if a.shape != (h, self.n_exog_) and not (a.ndim == 2 and a.shape[0] >= h and a.shape[1] == self.n_exog_):
                raise ValueError(f"X (future extra series) must be ({h}, {self.n_exog_}), got {a.shape}")
            out.append(a[:h])
        if len(out) != len(hists):
            raise ValueError(f"X must give future extra series for each of the {len(hists)} series")
        return out

    @staticmethod
    def _wrap(values, index, name):
        if values is None or index is None:
            return values
        import pandas as pd

        return pd.Series(values, index=index, name=name)

    def score(self, y, X=None):
        """Negative RMSE of predict(len(y)) against the values y that followed the training
        series (higher is better, like sklearn's neg_root_mean_squared_error)."""
        self._check_fitted()
        truth, many = as_series_list(y, X, getattr(self, "target", None), False)
        preds = self.predict(len(truth[0]))
        preds = preds if many else [preds]
        err = np.concatenate([np.asarray(p, dtype=np.float64) - t.y for p, t in zip(preds, truth)])
        return -float(np.sqrt(np.mean(err ** 2)))

    # -- evaluation ------------------------------------------------------------------------------
    def backtest(self, y, X=None, test_size=0.2, horizon=1, refit=True):
        """Rolling forecasts over the last test_size of each series, true history as input.

        Fits a clone on the part before the hold-out (refit=True; False: use this fitted
        model as it is), then forecasts `horizon` steps from every origin in the hold-out,
        each time from the true values up to the origin. Returns a BacktestResult (.rmse).
        """
        series, many = as_series_list(y, X, getattr(self, "target", None), getattr(self, "fill_gaps", True))
        h = check_positive_int("horizon", horizon)
        if not (isinstance(test_size, (int, np.integer)) and test_size >= 1) and not 0 < float(test_size) < 1:
            raise ValueError(f"test_size must be a fraction in (0, 1) or a count >= 1, got {test_size!r}")
        cuts = []
        for s in series:
            n_test = int(test_size) if isinstance(test_size, (int, np.integer)) else int(round(len(s) * float(test_size)))
            if n_test < h or n_test >= len(s) - 2:
                raise ValueError(f"test_size={test_size} leaves {n_test} hold-out and {len(s) - n_test} "
                                 f"training values of a series of {len(s)}; need >= horizon={h} "
                                 f"hold-out values and a training part")
            cuts.append(len(s) - n_test)
        if refit:
            model = self.__class__(**self.get_params(deep=False))
            heads = [s.head(c) for s, c in zip(series, cuts)]
            model._fit_parsed(heads, many)
        else:
            self._check_fitted()
            model = self
        hists, owners, origins = [], [], []
        for i, (s, c) in enumerate(zip(series, cuts)):
            ts = list(range(c, len(s) - h + 1))
            origins.append(np.array(ts))
            for t in ts:
                hist = s.head(t)
                hist.sid = i if len(series) == model.n_series_ else None
                hists.append(hist)
                owners.append(i)
        mean, lower, upper = model._forecast(hists, h, future_exog=None)
        owners = np.array(owners)
        fc, tr, lo, up = [], [], [], []
        for i, (s, o) in enumerate(zip(series, origins)):
            sel = owners == i
            fc.append(mean[sel])
            tr.append(np.stack([s.y[t:t + h] for t in o]))
            lo.append(None if lower is None else lower[sel])
            up.append(None if upper is None else upper[sel])
        return BacktestResult(self.name, series, cuts, fc, tr, None if lower is None else lo,
                              None if upper is None else up, origins, h)

    def _fit_parsed(self, series, many):
        """fit() on already parsed series (backtest's heads keep the pandas index)."""
        self._check_period_arg()
        self.many_ = many
        self.n_series_ = len(series)
        self.n_exog_ = 0 if series[0].exog is None else series[0].exog.shape[1]
        self.period_ = self._find_period(series)
        self.series_ = series
        self._fit(series)
        self.model_ = getattr(self, "model_", True)
        return self

    # -- plot ------------------------------------------------------------------------------------
    def plot(self, path, horizon=None, truth=None, series=0, backtest=None, title=None):
        """Write a PNG: the history, the hold-out truth, the forecast and its interval.

        Without backtest: the training series `series`, predict(horizon) with its interval, and
        `truth` (the values that followed, optional). With backtest (a BacktestResult of this
        estimator): the rolling forecasts over the hold-out with their intervals.
        """
        from ._plot import forecast_figure

        if backtest is not None:
            s, cut = backtest.series[series], backtest.cut[series]
            x = np.arange(len(s)) if s.index is None else s.index.to_timestamp() \
                if hasattr(s.index, "to_timestamp") else s.index
            o = backtest.origins[series]
            k = backtest.horizon - 1  # plot the last step of each forecast path at its own time
            fx = x[o + k]
            fc = dict(label=f"{self.name} ({backtest.horizon}-step rolling)", x=fx,
                      y=backtest.forecast[series][:, k],
                      lower=None if backtest.lower is None else backtest.lower[series][:, k],
                      upper=None if backtest.upper is None else backtest.upper[series][:, k])
            return forecast_figure(path, x[:cut], s.y[:cut], [fc], x[cut:], s.y[cut:],
                                   title=title or f"backtest: RMSE {backtest.rmse:.4g}", ylabel=s.name)
        self._check_fitted()
        h = getattr(self, "horizon", 1) if horizon is None else horizon
        s = self.series_[series]
        out = self.predict(h, return_interval=True)
        mean, lower, upper = out[series] if self.many_ else out
        n = len(s)
        if s.index is not None:
            idx = s.index
            hx = idx.to_timestamp() if hasattr(idx, "to_timestamp") else idx
            fidx = future_index(idx, n, h)
            fx = fidx.to_timestamp() if hasattr(fidx, "to_timestamp") else fidx
        else:
            hx, fx = np.arange(n), np.arange(n, n + h)
        vals = lambda a: None if a is None else np.asarray(a, dtype=np.float64)  # noqa: E731
        fc = dict(label=f"{self.name} forecast", x=fx, y=vals(mean), lower=vals(lower), upper=vals(upper))
        tx = ty = None
        if truth is not None:
            ty = np.asarray(truth, dtype=np.float64)[:h]
            tx = fx[:len(ty)]
        return forecast_figure(path, hx, s.y, [fc], tx, ty, title=title, ylabel=s.name)


# ------------------------------------------------------------------------------------------
# the windowed neural forecaster (the LSTM; the window MLP baseline reuses all but the network)

class _Scaler:
    """Per-series transform: difference `d` times, then standardise (target and extra series)."""

    def __init__(self, s, d):
        z = np.diff(s.y, d) if d else s.y
        self.mu, self.sd = float(z.mean()), float(z.std())
        if not self.sd > 1e-12 * max(1.0, abs(self.mu)):
            self.sd = 1.0  # constant (differenced) target: nothing to scale
        if s.exog is not None:
            self.xmu = s.exog.mean(axis=0)
            xsd = s.exog.std(axis=0)
            self.xsd = np.where(xsd > 1e-12, xsd, 1.0)


class WindowForecaster(ForecasterBase):
    """Shared machinery of the windowed network forecasters (Forecaster, WindowMLPForecaster)."""

    name = "windowed network"

    def _net(self, window, n_features, n_out, seed):
        raise NotImplementedError

    # feature rows: (target diff scaled, extra series scaled) at times d .. n-1
    def _features(self, s, sc):
        d = self.d_
        z = ((np.diff(s.y, d) if d else s.y) - sc.mu) / sc.sd
        cols = [z[:, None]]
        if s.exog is not None:
            cols.append(((s.exog - sc.xmu) / sc.xsd)[d:])
        return np.concatenate(cols, axis=1)

    def _check_params(self):
        check_positive_int("horizon", self.horizon)
        if self.difference not in (0, 1, 2) or isinstance(self.difference, bool):
            raise ValueError(f"difference must be 0, 1 or 2, got {self.difference!r}")
        if self.window != "auto":
            check_positive_int("window", self.window)
        if self.epochs != "auto":
            check_positive_int("epochs", self.epochs)
        check_positive_int("batch_size", self.batch_size)
        check_positive_float("lr", self.lr)
        if not 0 < float(self.interval) < 1:
            raise ValueError(f"interval must be a coverage in (0, 1), got {self.interval!r}")

    def _choose_window(self, series):
        d, H = self.difference, self.horizon
        n_min = min(len(s) for s in series)
        room = n_min - d - H  # rows available for one window + its targets
        if self.window != "auto":
            w = int(self.window)
        else:
            w = 2 * self.period_ if self.period_ else 12
            w = max(2, min(w, room // 2))  # at least half the series yields training windows
        if room - w + 1 < 2:
            raise ValueError(f"a series of {n_min} values is too short for window={w}, "
                             f"horizon={H} and difference={d}: need at least {w + H + d + 1} values "
                             f"(two training windows); pass a smaller window")
        return w

    def _fit(self, series):
        self._check_params()
        self.d_ = int(self.difference)
        self.window_ = self._choose_window(series)
        self.scalers_ = [_Scaler(s, self.d_) for s in series]
        w, H = self.window_, self.horizon
        # every (differenced) target constant: nothing to learn — the forecast continues it
        # exactly (a constant series stays constant, a straight line stays straight)
        self.degenerate_ = all(np.ptp(np.diff(s.y, self.d_) if self.d_ else s.y) == 0 for s in series)
        if self.degenerate_:
            self.models_, self.model_, self.history_ = [], None, {}
            self.n_features_in_ = 1 + self.n_exog_
            self.error_quantiles_ = np.zeros((2, H))
            self.interval_source_ = "exact (constant differenced target)"
            return self
        Xs, Ys = [], []
        for s, sc in zip(series, self.scalers_):
            f = self._features(s, sc)
            n_win = len(f) - w - H + 1
            if n_win < 1:
                continue  # a short series in a global model: too short to train on, still forecastable
            win = np.lib.stride_tricks.sliding_window_view(f, w, axis=0)[:n_win]  # (n_win, F, w)
            Xs.append(np.moveaxis(win, 1, 2))
            tgt = np.lib.stride_tricks.sliding_window_view(f[w:, 0], H)[:n_win]
            Ys.append(tgt)
        X = np.ascontiguousarray(np.concatenate(Xs), dtype=np.float32)
        Y = np.ascontiguousarray(np.concatenate(Ys), dtype=np.float32)
        self.n_features_in_ = X.shape[2]
        seed = check_random_state(self.random_state)
        self.models_, hist = self._train(X, Y, int(self.n_models), seed)
        self.history_ = hist
        self.model_ = self.models_[0]
        # intervals: errors on windows the model did not train on. A calibration model learns the
        # first 80% of each series' windows and is scored on the last 20% (time order); with fewer
        # than 10 such windows the in-sample errors of the final model stand in (optimistic).
        cal_tr = [np.arange(len(x)) < len(x) - max(1, len(x) // 5) for x in Xs]
        n_cal = sum(int((~m).sum()) for m in cal_tr)
        if n_cal >= 10 and all(m.sum() >= 2 for m in cal_tr):
            Xa = np.concatenate([x[m] for x, m in zip(Xs, cal_tr)]).astype(np.float32)
            Ya = np.concatenate([y[m] for y, m in zip(Ys, cal_tr)]).astype(np.float32)
            Xc = np.concatenate([x[~m] for x, m in zip(Xs, cal_tr)]).astype(np.float32)
            Yc = np.concatenate([y[~m] for y, m in zip(Ys, cal_tr)]).astype(np.float32)
            cal, _ = self._train(Xa, Ya, 1, seed + 104729)
            err = Yc - self._predict_scaled(Xc, cal)
            self.interval_source_ = "held-out"
        else:
            err = Y - self._predict_scaled(X)
            self.interval_source_ = "in-sample"
        if self.d_ == 1:  # level errors are sums of difference errors
            err = np.cumsum(err, axis=1)
        elif self.d_ == 2:
            err = np.cumsum(np.cumsum(err, axis=1), axis=1)
        a = (1 - float(self.interval)) / 2
        self.error_quantiles_ = np.quantile(err, [a, 1 - a], axis=0)  # (2, H) scaled units
        return self

    def _train(self, X, Y, n_models, seed):
        """n_models networks trained on (X, Y) with the default budget; (models, last history)."""
        from .. import optim, train

        bs = min(int(self.batch_size), len(X))
        nb = math.ceil(len(X) / bs)
        epochs = math.ceil(UPDATES / nb) if self.epochs == "auto" else int(self.epochs)
        models, hist = [], None
        for m in range(n_models):
            net = self._net(self.window_, X.shape[2], Y.shape[1], seed + 7919 * m)
            opt = optim.Adam(net, lr=float(self.lr))
            sched = train.LearningRateSchedule(lambda o: optim.CosineWarmup(o, total_steps=epochs * nb))
            hist = train.fit(net, X, Y, loss="mse", optimizer=opt, epochs=epochs, batch_size=bs,
                             seed=seed + m, clip_norm=1.0, callbacks=[sched], verbose=self.verbose)
            models.append(net)
        return models, hist.history

    def _predict_scaled(self, X, models=None):
        from .. import train

        out = np.mean([train.predict(m, X, batch_size=1024) for m in (models or self.models_)], axis=0)
        return out.astype(np.float64)

    def _forecast(self, hists, h, future_exog=None):
        d, w, H = self.d_, self.window_, self.horizon
        feats, scs = [], []
        for s in hists:
            sc = self.scalers_[s.sid] if s.sid is not None else _Scaler(s, d)
            f = self._features(s, sc)
            if len(f) < w:
                raise ValueError(f"a history of {len(s)} values is too short for this model: it needs "
                                 f"window={w} + difference={d} = {w + d} values")
            feats.append(f[-w:])
            scs.append(sc)
        cur = np.stack(feats)  # (m, w, F) the running input windows
        if self.degenerate_:
            cur = np.zeros((len(hists), 0, 1))
        steps = []
        done = 0
        while done < h:
            if self.degenerate_:  # the scaled target is 0 everywhere: keep it there
                steps.append(np.zeros((len(hists), h)))
                break
            p = self._predict_scaled(np.ascontiguousarray(cur, dtype=np.float32))  # (m, H)
            take = min(H, h - done)
            steps.append(p[:, :take])
            # append the block to the windows: predicted target, extra series given or held
            rows = np.repeat(cur[:, -1:, :], take, axis=1).copy()
            rows[:, :, 0] = p[:, :take]
            if future_exog is not None and cur.shape[2] > 1:
                for i, (fx, sc) in enumerate(zip(future_exog, scs)):
                    rows[i, :, 1:] = (fx[done:done + take] - sc.xmu) / sc.xsd
            cur = np.concatenate([cur, rows], axis=1)[:, -w:]
            done += take
        z = np.concatenate(steps, axis=1)  # (m, h) scaled differenced target
        mu = np.array([sc.mu for sc in scs])[:, None]
        sd = np.array([sc.sd for sc in scs])[:, None]
        dz = z * sd + mu
        level = self._undiff(dz, hists)
        q = self.error_quantiles_
        if h > H:  # past the direct horizon: widen the last step's spread like a random walk
            grow = np.sqrt(np.arange(H + 1, h + 1) / H)
            q = np.concatenate([q, q[:, -1:] * grow[None, :]], axis=1)
        lower = level + q[0, :h][None, :] * sd
        upper = level + q[1, :h][None, :] * sd
        return level, lower, upper

    def _undiff(self, dz, hists):
        d = self.d_
        if d == 0:
            return dz
        last = np.array([s.y[-1] for s in hists])[:, None]
        if d == 1:
            return last + np.cumsum(dz, axis=1)
        slope = np.array([s.y[-1] - s.y[-2] for s in hists])[:, None]
        return last + np.cumsum(slope + np.cumsum(dz, axis=1), axis=1)


@nn.register
class LSTMForecastNet(nn.Module):
    """x (B, w, F) -> LSTM -> last step -> Linear -> (B, H), plus (highway=True) a linear
    autoregressive path from the target's w past values straight to the H outputs (LSTNet's
    "highway"): the linear part of the dynamics needs no recurrence, the LSTM adds the rest."""

    def __init__(self, n_features, hidden, window, n_out, layers=1, highway=True, seed=None):
        super().__init__()
        self.cfg = dict(n_features=n_features, hidden=hidden, window=window, n_out=n_out, layers=layers,
                        highway=highway, seed=seed)
        s = None if seed is None else int(seed)
        # forget_bias=None (torch's init): measured here, 1.0 did worse on the demo series
        # (sunspots one-step RMSE 18.8 vs 17.1 at seed 0)
        self.lstm = nn.LSTM(n_features, hidden, num_layers=layers, batch_first=True, seed=s, forget_bias=None)
        self.last = nn.LastStep()
        self.head = nn.Linear(hidden, n_out, seed=None if s is None else s + 1)
        self.ar = nn.Linear(window, n_out, seed=None if s is None else s + 2) if highway else None

    def get_config(self):
        return dict(self.cfg)

    def forward(self, x, lengths=None):
        out = self.head(self.last(self.lstm(x)[0]))         # (B, H) from the LSTM
        if self.ar is not None:
            out = out + self.ar(np.ascontiguousarray(x[:, :, 0]))  # + the linear path on the target
        return out

    def backward(self, dout):
        # out = head(last(lstm(x))) + ar(x[:, :, 0])
        dx, _ = self.lstm.backward(self.last.backward(self.head.backward(dout)), need_dh0=False)
        if self.ar is not None:
            dx = np.array(dx, copy=True)
            dx[:, :, 0] += self.ar.backward(dout)
        return dx


class Forecaster(WindowForecaster):
    """LSTM forecaster (see the module docstring for the defaults and the reason for each).

    horizon: outputs of the direct head (1: one-step; predict(h) recurses past it).
    window: input steps ("auto": two seasonal periods, or 12). hidden_size / num_layers: LSTM.
    difference: 0, 1 or 2. seasonal_period: "auto" (index frequency or autocorrelation), an int,
    or None (no season). epochs: "auto" (about 800 updates) or a number. n_models: an ensemble of
    that many differently seeded LSTMs, averaged. interval: coverage of the prediction intervals.
    target: the target column of a DataFrame / 2-D array (default the first); the rest are extra
    input series.
    """

    name = "LSTM"

    def __init__(self, horizon=1, window="auto", hidden_size=32, num_layers=1, difference=1,
                 seasonal_period="auto", epochs="auto", batch_size=32, lr=5e-3, n_models=3,
                 interval=0.9, highway=False, target=None, fill_gaps=True, random_state=0, verbose=0):
        self.horizon = horizon
        self.window = window
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.highway = highway
        self.difference = difference
        self.seasonal_period = seasonal_period
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.n_models = n_models
        self.interval = interval
        self.target = target
        self.fill_gaps = fill_gaps
        self.random_state = random_state
        self.verbose = verbose

    def _check_params(self):
        super()._check_params()
        check_positive_int("hidden_size", self.hidden_size)
        check_positive_int("num_layers", self.num_layers)
        check_positive_int("n_models", self.n_models)

    def _net(self, window, n_features, n_out, seed):
        return LSTMForecastNet(n_features, int(self.hidden_size), window, n_out, int(self.num_layers),
                               bool(self.highway), seed)


__all__ = ["Forecaster", "ForecasterBase", "WindowForecaster", "BacktestResult", "NotFittedError"]
