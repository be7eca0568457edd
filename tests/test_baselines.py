"""Baselines (persistence, seasonal naive, window MLP, MLP classifier), the data loaders and the
demo / forecast command line: exact values where a baseline has them, learning where it trains,
and the examples extra's error when a library is missing."""

from __future__ import annotations

import builtins
import os

import numpy as np
import pytest
from conftest import require

from fastlstm import baselines, datasets
from fastlstm.baselines import MLPClassifier, Persistence, SeasonalNaive, WindowMLPForecaster, resample


def test_persistence_and_seasonal_naive_exact_values():
    y = np.arange(1.0, 13.0)  # 1..12
    np.testing.assert_array_equal(Persistence().fit(y).predict(3), [12, 12, 12])
    sn = SeasonalNaive(seasonal_period=4).fit(y)
    np.testing.assert_array_equal(sn.predict(6), [9, 10, 11, 12, 9, 10])
    r = Persistence().backtest(y, test_size=3)
    np.testing.assert_array_equal(r.forecast[0][:, 0], [9, 10, 11])
    assert r.rmse == pytest.approx(1.0)
    r = SeasonalNaive(seasonal_period=4).backtest(y, test_size=4, horizon=2)
    np.testing.assert_array_equal(r.forecast[0], [[5, 6], [6, 7], [7, 8]])  # origins 8, 9, 10
    assert SeasonalNaive(seasonal_period=None).fit(y).predict(2).tolist() == [12, 12]  # no season


def test_seasonal_naive_period_from_the_index_frequency():
    pd = require("pandas")
    s = pd.Series(np.random.default_rng(0).standard_normal(48),
                  index=pd.period_range("2001-01", periods=48, freq="Q"))
    assert SeasonalNaive().fit(s).period_ == 4
    with pytest.raises(ValueError, match="seasonal_period"):
        SeasonalNaive(seasonal_period=1).fit(s)


def test_window_mlp_learns_a_sine():
    t = np.arange(200)
    y = np.sin(2 * np.pi * t / 12) + 0.05 * np.random.default_rng(0).standard_normal(200)
    r = WindowMLPForecaster(epochs=40).backtest(y)
    assert r.rmse < 0.3 * Persistence().backtest(y).rmse
    assert WindowMLPForecaster().fit(y).window_ == 24


def test_mlp_classifier_learns_and_resample_is_linear():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 120)
    X = [np.sin(np.linspace(0, 6, int(rng.integers(40, 80)))) * (1 if c else -1)
         + 0.3 * rng.standard_normal(1) for c in y]  # variable lengths: resampled to the median
    clf = MLPClassifier(epochs=30).fit(X, y)
    assert clf.score(X, y) >= 0.95
    assert clf.predict_proba(X[:3]).shape == (3, 2)
    case = np.array([[0.0], [2.0], [4.0]])
    np.testing.assert_allclose(resample(case, 5)[:, 0], [0, 1, 2, 3, 4])
    assert baselines.forecasting_baselines()[0].name == "persistence"


def test_missing_extra_names_the_extra(monkeypatch):
    real = builtins.__import__

    def no_aeon(name, *a, **k):
        if name.startswith("aeon") or name.startswith("statsmodels"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_aeon)
    with pytest.raises(datasets.MissingExtraError, match=r"fastlstm\[examples\]"):
        datasets.load_gunpoint()
    with pytest.raises(ImportError, match="examples"):
        datasets.load_sunspots()
    with pytest.raises(ValueError, match="split"):
        datasets.load_classification("GunPoint", "valid")
    with pytest.raises(ValueError, match="bundled"):
        datasets.load_classification("NotADataset")


def test_loaders_return_the_documented_layouts():
    require("examples", "aeon")
    require("examples", "statsmodels")
    X, y = datasets.load_gunpoint("train")
    assert X.shape == (50, 1, 150) and len(y) == 50
    X, y = datasets.load_japanese_vowels("test")
    assert isinstance(X, list) and len(X) == 370 and X[0].shape[0] == 12
    air = datasets.load_airline()
    assert len(air) == 144 and air.index.freqstr.startswith("M")
    sun = datasets.load_sunspots()
    assert len(sun) == 309 and sun.index[0].year == 1700


def test_cli_forecast_csv_and_demo_smoke(tmp_path, capsys):
    pd = require("pandas")
    require("matplotlib")
    from fastlstm.__main__ import main

    t = np.arange(60)
    df = pd.DataFrame({"day": pd.date_range("2024-01-01", periods=60, freq="D").strftime("%Y-%m-%d"),
                       "visits": 100 + 10 * np.sin(2 * np.pi * t / 7)})
    path = tmp_path / "visits.csv"
    df.to_csv(path, index=False)
    out = tmp_path / "fc"
    assert main(["forecast", str(path), "--column", "visits", "--horizon", "5", "--out", str(out),
                 "--smoke", "--no-progress"]) == 0
    lines = (out / "forecast.csv").read_text().splitlines()
    assert lines[0] == "time,forecast,lower,upper" and len(lines) == 6
    assert lines[1].startswith("2024-03-01")  # the day after the last one: the index was parsed
    assert (out / "forecast.png").stat().st_size > 1000
    mask = os.umask(0)
    os.umask(mask)
    for f in ("forecast.csv", "forecast.png", "report.md"):  # ordinary files, not mkstemp's 0600
        assert (out / f).stat().st_mode & 0o777 == 0o666 & ~mask
    assert "seasonal period 7" in (out / "report.md").read_text()
    assert main(["forecast", str(path), "--column", "nope", "--out", str(out)]) == 1
    assert "not a column" in capsys.readouterr().err
    require("examples", "aeon")
    rep = tmp_path / "demo"
    assert main(["demo", "classify", "--smoke", "--no-progress", "--out", str(rep)]) == 0
    text = (rep / "report.md").read_text()
    assert "| GunPoint |" in text and os.path.exists(rep / "accuracy.png")
