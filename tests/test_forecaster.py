"""Forecaster: learns synthetic series to a stated accuracy, handles the input layouts (NumPy,
pandas, aeon 3-D, lists = global model, extra input series), bad input, and follows scikit-learn's
estimator conventions. Small budgets (epochs=...) keep each test to a second or two."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from conftest import require

from fastlstm.baselines import Persistence, SeasonalNaive
from fastlstm.models import Forecaster, NotFittedError
from fastlstm.models._series import detect_period

FAST = dict(epochs=60, n_models=1, hidden_size=16)


def noisy_sine(n=240, period=16, noise=0.05, trend=0.0, seed=0, amp=1.0, phase=0.0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return amp * np.sin(2 * np.pi * t / period + phase) + trend * t + noise * rng.standard_normal(n) + 5.0


def test_learns_a_noisy_sine_one_step_far_better_than_persistence():
    y = noisy_sine()
    lstm = Forecaster(**FAST).backtest(y, test_size=0.2)
    pers = Persistence().backtest(y, test_size=0.2)
    assert lstm.forecast[0].shape == (48, 1) and lstm.truth[0].shape == (48, 1)
    # persistence is off by the sine's step (~0.39 RMSE); the LSTM must get near the noise (0.05)
    assert lstm.rmse < 0.35 * pers.rmse, (lstm.rmse, pers.rmse)
    assert lstm.rmse < 0.15


def test_direct_multi_step_beats_seasonal_naive_on_a_trending_sine():
    y = noisy_sine(n=200, trend=0.02)
    head, truth = y[:180], y[180:196]
    f = Forecaster(horizon=16, **FAST).fit(head)
    assert f.period_ == 16 and f.window_ == 32  # period from the autocorrelation, window = 2 periods
    pred = f.predict(16)
    sn = SeasonalNaive().fit(head).predict(16)  # misses the trend by 16 * 0.02 = 0.32
    rmse = lambda p: float(np.sqrt(np.mean((p - truth) ** 2)))  # noqa: E731
    assert rmse(pred) < 0.6 * rmse(sn), (rmse(pred), rmse(sn))


def test_recursive_past_the_direct_horizon_and_intervals_bracket_the_mean():
    y = noisy_sine(n=160)
    f = Forecaster(horizon=4, interval=0.8, **FAST).fit(y)
    mean, lower, upper = f.predict(10, return_interval=True)
    assert mean.shape == lower.shape == upper.shape == (10,)
    assert np.all(lower <= mean) and np.all(mean <= upper)
    width = upper - lower
    assert width[-1] > width[0]  # uncertainty grows with the horizon
    assert f.interval_source_ == "held-out"
    truth = noisy_sine(n=170)[160:]  # same noise stream continues the series
    assert np.sqrt(np.mean((mean - truth) ** 2)) < 0.3


def test_backtest_intervals_cover_roughly_their_level():
    y = noisy_sine(n=300, noise=0.1, seed=3)
    r = Forecaster(interval=0.9, **FAST).backtest(y)
    assert 0.6 <= r.coverage <= 1.0, r.coverage


def test_global_model_over_a_list_of_series():
    ys = [noisy_sine(n=150, amp=a, phase=p, seed=i) for i, (a, p) in enumerate([(1, 0), (3, 1), (0.5, 2)])]
    f = Forecaster(**FAST).fit(ys)
    assert f.n_series_ == 3
    preds = f.predict(3)
    assert isinstance(preds, list) and len(preds) == 3 and all(p.shape == (3,) for p in preds)
    r = f.backtest(ys)
    assert len(r.forecast) == 3
    # each series scaled on its own: the error is small relative to each amplitude
    for amp, fc, tr in zip([1, 3, 0.5], r.forecast, r.truth):
        assert np.sqrt(np.mean((fc - tr) ** 2)) < 0.3 * amp
    # a series the model never saw is forecast from its own history and scaling
    new = f.predict(2, y=noisy_sine(n=80, amp=2, seed=9))
    assert new.shape == (2,)


def test_aeon_3d_layout_is_many_series_with_channel_0_the_target():
    ys = np.stack([np.stack([noisy_sine(n=120, seed=i), noisy_sine(n=120, seed=10 + i)]) for i in range(3)])
    f = Forecaster(**FAST).fit(ys)  # (n_cases=3, n_channels=2, n_timepoints=120)
    assert f.n_series_ == 3 and f.n_exog_ == 1 and f.n_features_in_ == 2
    assert len(f.predict(2)) == 3


def test_extra_input_series_are_used():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(400)
    y = np.concatenate([[0.0], 2.0 * x[:-1]]) + 0.05 * rng.standard_normal(400)  # y[t] = 2 x[t-1]
    with_x = Forecaster(difference=0, window=4, **FAST).backtest(y, X=x)
    without = Forecaster(difference=0, window=4, **FAST).backtest(y)
    assert with_x.rmse < 0.25 * without.rmse, (with_x.rmse, without.rmse)
    f = Forecaster(difference=0, window=4, **FAST).fit(y, X=x)
    assert f.n_exog_ == 1
    with pytest.raises(ValueError, match="extra input series"):
        f.predict(2, y=y)  # the history lacks X


def test_pandas_series_and_dataframe():
    pd = require("pandas")
    idx = pd.period_range("2000-01", periods=96, freq="M")
    s = pd.Series(noisy_sine(n=96, period=12), index=idx, name="sales")
    f = Forecaster(horizon=3, **FAST).fit(s)
    assert f.period_ == 12  # from the monthly frequency
    p = f.predict(3)
    assert isinstance(p, pd.Series) and p.name == "sales"
    assert list(p.index) == list(pd.period_range("2008-01", periods=3, freq="M"))
    df = pd.DataFrame({"sales": s, "price": np.linspace(0, 1, 96)}, index=idx)
    f2 = Forecaster(target="sales", **FAST).fit(df)
    assert f2.n_exog_ == 1
    with pytest.raises(ValueError, match="not a column"):
        Forecaster(target="nope").fit(df)


def test_bad_input_is_a_clear_error_or_documented():
    with pytest.raises(ValueError, match="too short"):
        Forecaster(window=20).fit(np.arange(15.0))
    with pytest.raises(ValueError, match="too short"):
        Forecaster().fit(np.arange(3.0))
    gap = noisy_sine(n=100)
    gap[40:43] = np.nan
    f = Forecaster(**FAST).fit(gap)  # interior gap: interpolated (documented)
    assert np.isfinite(f.series_[0].y).all()
    with pytest.raises(ValueError, match="NaN"):
        Forecaster(fill_gaps=False).fit(gap)
    lead = noisy_sine(n=100)
    lead[0] = np.nan
    with pytest.raises(ValueError, match="starts or ends with NaN"):
        Forecaster().fit(lead)
    with pytest.raises(ValueError, match="inf"):
        Forecaster().fit(np.r_[np.ones(50), np.inf])
    with pytest.raises(TypeError, match="numeric"):
        Forecaster().fit(["a", "b", "c"])
    with pytest.raises(ValueError, match="1-D"):
        Forecaster().fit(np.zeros((2, 3, 4, 5)))
    with pytest.raises(ValueError, match="horizon"):
        Forecaster(horizon=0).fit(noisy_sine())
    with pytest.raises(ValueError, match="difference"):
        Forecaster(difference=3).fit(noisy_sine())
    with pytest.raises(ValueError, match="horizon"):
        Forecaster(**FAST).fit(noisy_sine()).predict(-1)


def test_constant_and_linear_series_are_continued_exactly():
    f = Forecaster().fit(np.full(40, 7.0))
    mean, lo, hi = f.predict(4, return_interval=True)
    np.testing.assert_array_equal(mean, 7.0)
    np.testing.assert_array_equal(lo, 7.0)
    np.testing.assert_array_equal(Forecaster().fit(np.arange(40.0)).predict(3), [40.0, 41.0, 42.0])


def test_sklearn_conventions():
    base = require("sklearn", "sklearn.base")
    f = Forecaster(horizon=2, hidden_size=8)
    assert f.get_params()["horizon"] == 2 and "random_state" in f.get_params()
    assert f.set_params(window=6) is f and f.window == 6
    with pytest.raises(ValueError, match="invalid parameter"):
        f.set_params(bogus=1)
    c = base.clone(f)
    assert c is not f and c.get_params() == f.get_params()
    with pytest.raises(NotFittedError, match="not fitted"):
        f.predict(1)
    assert isinstance(NotFittedError("x"), (ValueError, AttributeError))
    assert repr(f) == "Forecaster(hidden_size=8, horizon=2, window=6)"
    y = noisy_sine(n=120)
    f = Forecaster(**FAST).fit(y)
    assert not hasattr(Forecaster(), "window_")  # __init__ learns nothing
    assert f.score(noisy_sine(n=125)[120:]) < 0  # negative RMSE
    g = pickle.loads(pickle.dumps(f))
    np.testing.assert_array_equal(g.predict(5), f.predict(5))
    # as a Pipeline's final step: fit(series), predict(horizon)
    pipe = require("sklearn", "sklearn.pipeline").Pipeline([("lstm", Forecaster(**FAST))]).fit(y)
    np.testing.assert_array_equal(pipe.predict(5), f.predict(5))


def test_plot_writes_a_png(tmp_path):
    require("matplotlib")
    y = noisy_sine(n=120)
    f = Forecaster(horizon=6, **FAST).fit(y[:100])
    p = f.plot(tmp_path / "f.png", truth=y[100:106])
    with open(p, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    r = Forecaster(**FAST).backtest(y)
    p = Forecaster().plot(tmp_path / "b.png", backtest=r)
    with open(p, "rb") as fh:
        assert fh.read(4) == b"\x89PNG"


def test_detect_period():
    assert detect_period(noisy_sine(n=200, period=10)) == 10
    assert detect_period(np.random.default_rng(0).standard_normal(200)) is None
    assert detect_period(np.ones(50)) is None
    assert detect_period(np.arange(5.0)) is None
