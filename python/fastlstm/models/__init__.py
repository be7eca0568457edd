"""Ready estimators with scikit-learn's conventions: Forecaster (sequence prediction) and
SequenceClassifier (sequence classification). Baselines to compare with: fastlstm.baselines."""

from ._base import NotFittedError
from .classifier import SequenceClassifier
from .forecaster import BacktestResult, Forecaster

__all__ = ["Forecaster", "SequenceClassifier", "BacktestResult", "NotFittedError"]
