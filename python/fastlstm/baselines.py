"""Baselines shown beside every LSTM result: an LSTM is not always the right tool.

Forecasting (same fit / predict / backtest / plot interface as fastlstm.models.Forecaster):
- Persistence: the next value is the last one seen (the random-walk forecast).
- SeasonalNaive: the value one season ago (period from the index frequency or the
  autocorrelation, like the Forecaster), persistence when there is no season.
- WindowMLPForecaster: an MLP on the same sliding windows the Forecaster sees, with the same
  differencing, scaling, horizon handling and training budget — only the network differs, so
  the comparison isolates what the recurrence buys ("the approach to try before an LSTM").

Classification (same fit / predict / predict_proba / score interface as SequenceClassifier):
- MLPClassifier: every series resampled (linear interpolation) to one length, standardised per
  channel, flattened, then an MLP.

All of them follow scikit-learn's estimator conventions (get_params / set_params / clone).
"""

from __future__ import annotations

import math

import numpy as np

from .models._base import check_positive_float, check_positive_int, check_random_state
from .models.classifier import ClassifierBase
from .models.forecaster import ForecasterBase, WindowForecaster


# -- forecasting ---------------------------------------------------------------------------------

class Persistence(ForecasterBase):
    """y[t+k] = y[t] for every k >= 1 (no intervals)."""

    name = "persistence"

    def __init__(self, target=None, fill_gaps=True):
        self.target = target
        self.fill_gaps = fill_gaps

    def _find_period(self, series):
        return None

    def _fit(self, series):
        self.model_ = True

    def _forecast(self, hists, h, future_exog=None):
        return np.stack([np.full(h, s.y[-1]) for s in hists]), None, None


class SeasonalNaive(ForecasterBase):
    """y[t+k] = y[t+k-m·ceil(k/m)]: the last observed value at the same phase of the season."""

    name = "seasonal naive"

    def __init__(self, seasonal_period="auto", target=None, fill_gaps=True):
        self.seasonal_period = seasonal_period
        self.target = target
        self.fill_gaps = fill_gaps

    def _fit(self, series):
        self.model_ = True

    def _forecast(self, hists, h, future_exog=None):
        m = self.period_ or 1
        out = []
        for s in hists:
            if len(s) < m:
                raise ValueError(f"a history of {len(s)} values is shorter than the season ({m})")
            last = s.y[-m:]
            out.append(np.array([last[k % m] for k in range(h)]))
        return np.stack(out), None, None


class WindowMLPForecaster(WindowForecaster):
    """MLP on sliding windows: Flatten -> Linear(hidden, relu) -> Linear(horizon); everything
    else (windows, differencing, scaling, budget, intervals) is the Forecaster's."""

    name = "window MLP"

    def __init__(self, horizon=1, window="auto", hidden_size=64, difference=1, seasonal_period="auto",
                 epochs="auto", batch_size=32, lr=5e-3, n_models=1, interval=0.9, target=None,
                 fill_gaps=True, random_state=0, verbose=0):
        self.horizon = horizon
        self.window = window
        self.hidden_size = hidden_size
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

    def _net(self, window, n_features, n_out, seed):
        from . import nn

        H = check_positive_int("hidden_size", self.hidden_size)
        check_positive_int("n_models", self.n_models)
        return nn.Sequential(nn.Flatten(), nn.Linear(window * n_features, H, activation="relu", seed=seed),
                             nn.Linear(H, n_out, seed=seed + 1))


# -- classification ------------------------------------------------------------------------------

def resample(case: np.ndarray, length: int) -> np.ndarray:
    """(T, C) -> (length, C) by linear interpolation over the series' own time axis."""
    T = case.shape[0]
    if T == length:
        return case
    if T == 1:
        return np.repeat(case, length, axis=0)
    src = np.linspace(0.0, 1.0, T)
    dst = np.linspace(0.0, 1.0, length)
    return np.stack([np.interp(dst, src, case[:, c]) for c in range(case.shape[1])], axis=1)


class MLPClassifier(ClassifierBase):
    """Series resampled to `length` points ("auto": the median training length, at most 512),
    standardised per channel over the training set, flattened, then
    Linear(hidden, relu) -> Dropout -> Linear(n_classes); Adam with a cosine decay over about
    1000 updates, like the SequenceClassifier."""

    def __init__(self, length="auto", hidden_size=128, dropout=0.2, epochs="auto", batch_size=32, lr=1e-3,
                 random_state=0, verbose=0):
        self.length = length
        self.hidden_size = hidden_size
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.random_state = random_state
        self.verbose = verbose

    def _prepare(self, cases):
        x = np.stack([resample(c, self.length_) for c in cases])  # (N, L, C)
        x = (x - self.mean_) / self.std_
        return np.ascontiguousarray(x.reshape(len(x), -1), dtype=np.float32)

    def _fit(self, cases, ids):
        from . import nn, optim, train

        H = check_positive_int("hidden_size", self.hidden_size)
        check_positive_float("lr", self.lr)
        if not 0 <= float(self.dropout) < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        self.length_ = (min(512, int(np.median([len(c) for c in cases]))) if self.length == "auto"
                        else check_positive_int("length", self.length, 2))
        cat = np.concatenate(cases)
        self.mean_ = cat.mean(axis=0)
        sd = cat.std(axis=0)
        self.std_ = np.where(sd > 1e-12, sd, 1.0)
        x = self._prepare(cases)
        seed = check_random_state(self.random_state)
        net = nn.Sequential(nn.Linear(x.shape[1], H, activation="relu", seed=seed),
                            nn.Dropout(float(self.dropout), seed=seed + 2),
                            nn.Linear(H, len(self.classes_), seed=seed + 1))
        bs = min(check_positive_int("batch_size", self.batch_size), len(x))
        nb = math.ceil(len(x) / bs)
        epochs = (int(np.clip(math.ceil(1000 / nb), 20, 500)) if self.epochs == "auto"
                  else check_positive_int("epochs", self.epochs))
        opt = optim.Adam(net, lr=float(self.lr))
        sched = train.LearningRateSchedule(lambda o: optim.CosineWarmup(o, total_steps=epochs * nb))
        hist = train.fit(net, x, ids, loss="cross_entropy", optimizer=opt, epochs=epochs, batch_size=bs,
                         seed=seed, callbacks=[sched], verbose=self.verbose)
        self.history_ = hist.history
        self.model_ = net
        return self

    def _logits(self, cases):
        from . import train

        return train.predict(self.model_, self._prepare(cases), batch_size=1024).astype(np.float64)


def forecasting_baselines(seasonal_period="auto", horizon=1, random_state=0):
    """The forecasting baselines with matching settings, in the order the reports show them."""
    return [Persistence(), SeasonalNaive(seasonal_period=seasonal_period),
            WindowMLPForecaster(horizon=horizon, seasonal_period=seasonal_period, random_state=random_state)]


__all__ = ["Persistence", "SeasonalNaive", "WindowMLPForecaster", "MLPClassifier", "resample",
           "forecasting_baselines"]
