"""Loaders for the demo data sets, through the libraries that ship them (the `examples` extra).

Nothing is downloaded: aeon bundles GunPoint, JapaneseVowels, Airline and a handful of other
UCR/UEA problems inside its wheel, statsmodels bundles the yearly sunspot numbers. When the library
is missing, a MissingExtraError (an ImportError) names the extra to install.

Classification loaders return (X, y) with aeon's layout: X is (n_cases, n_channels, n_timepoints)
float64, or a list of (n_channels, n_timepoints_i) arrays for unequal lengths; y holds the labels as
the data set spells them (strings). Forecasting loaders return a pandas Series with a PeriodIndex,
so the Forecaster can read the seasonal period from its frequency.
"""

from __future__ import annotations

import warnings

import numpy as np

EXTRA_HINT = "pip install 'fastlstm[examples]'"

# aeon's bundled classification problems (loaded from files inside the aeon wheel, never fetched)
CLASSIFICATION_DATASETS = ("GunPoint", "JapaneseVowels", "ArrowHead", "BasicMotions",
                           "ItalyPowerDemand", "OSULeaf", "ACSF1", "PickupGestureWiimoteZ")
FORECASTING_DATASETS = ("Airline", "Sunspots", "Lynx", "PBS")


class MissingExtraError(ImportError):
    """An optional library that a loader needs is not installed."""


def _require(module: str, what: str):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # aeon warns about its own optional deps at import
            return __import__(module, fromlist=["_"])
    except ImportError as e:
        raise MissingExtraError(f"{what} needs the '{module.split('.')[0]}' package, part of the "
                                f"'examples' extra: {EXTRA_HINT}") from e


def _split_arg(split):
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return split


def load_classification(name: str, split: str = "train"):
    """(X, y) of one of aeon's bundled problems (CLASSIFICATION_DATASETS), the official split."""
    _split_arg(split)
    canon = {n.lower(): n for n in CLASSIFICATION_DATASETS}
    if not isinstance(name, str) or name.lower() not in canon:
        raise ValueError(f"name must be one of {', '.join(CLASSIFICATION_DATASETS)} (bundled with "
                         f"aeon, no download), got {name!r}")
    name = canon[name.lower()]
    D = _require("aeon.datasets", f"load_classification({name!r})")
    fn = {"GunPoint": "load_gunpoint", "JapaneseVowels": "load_japanese_vowels",
          "ArrowHead": "load_arrow_head", "BasicMotions": "load_basic_motions",
          "ItalyPowerDemand": "load_italy_power_demand", "OSULeaf": "load_osuleaf",
          "ACSF1": "load_acsf1", "PickupGestureWiimoteZ": "load_pickup_gesture_wiimoteZ"}[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        X, y = getattr(D, fn)(split=split)
    if isinstance(X, np.ndarray):
        X = np.asarray(X, dtype=np.float64)
    else:
        X = [np.asarray(x, dtype=np.float64) for x in X]
    return X, np.asarray(y)


def load_gunpoint(split: str = "train"):
    """GunPoint: 2 classes, univariate, 150 steps; 50 train / 150 test cases."""
    return load_classification("GunPoint", split)


def load_japanese_vowels(split: str = "train"):
    """JapaneseVowels: 9 speakers, 12 channels, lengths 7..29; 270 train / 370 test (a list)."""
    return load_classification("JapaneseVowels", split)


def load_airline():
    """Monthly airline passengers 1949-01..1960-12 (144 values), PeriodIndex freq 'M'."""
    D = _require("aeon.datasets", "load_airline()")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = D.load_airline(return_array=False)
    return s.astype(np.float64).rename("passengers")


def load_lynx():
    """Yearly Canadian lynx trappings 1821..1934 (114 values), PeriodIndex freq 'Y'."""
    D = _require("aeon.datasets", "load_lynx()")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = D.load_lynx(return_array=False)
    return s.astype(np.float64).rename("lynx")


def load_pbs():
    """Monthly Australian PBS scripts 1991-07..2008-06 (204 values), PeriodIndex freq 'M'."""
    D = _require("aeon.datasets", "load_pbs()")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = D.load_PBS_dataset(return_array=False)
    return s.astype(np.float64).rename("scripts")


def load_sunspots():
    """Yearly mean sunspot numbers 1700..2008 (309 values, statsmodels), PeriodIndex freq 'Y'."""
    sm = _require("statsmodels.datasets.sunspots", "load_sunspots()")
    pd = _require("pandas", "load_sunspots()")
    df = sm.load_pandas().data
    idx = pd.PeriodIndex([pd.Period(str(int(y)), freq="Y") for y in df["YEAR"]], name="year")
    return pd.Series(df["SUNACTIVITY"].to_numpy(np.float64), index=idx, name="sunspots")


def load_forecasting(name: str):
    """One of FORECASTING_DATASETS as a pandas Series."""
    fns = {"airline": load_airline, "sunspots": load_sunspots, "lynx": load_lynx, "pbs": load_pbs}
    if not isinstance(name, str) or name.lower() not in fns:
        raise ValueError(f"name must be one of {', '.join(FORECASTING_DATASETS)}, got {name!r}")
    return fns[name.lower()]()


__all__ = ["MissingExtraError", "CLASSIFICATION_DATASETS", "FORECASTING_DATASETS",
           "load_classification", "load_gunpoint", "load_japanese_vowels", "load_airline",
           "load_sunspots", "load_lynx", "load_pbs", "load_forecasting"]
