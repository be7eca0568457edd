"""Ready models for the four sequence problems, with scikit-learn's conventions where they apply:
Forecaster (sequence prediction), SequenceClassifier (sequence classification), SequenceGenerator
(sequence generation) and Seq2Seq (sequence-to-sequence). Baselines to compare with: fastlstm.baselines.
Importing this package registers every model class with fastlstm.load."""

from ._base import NotFittedError
from .classifier import SequenceClassifier
from .forecaster import BacktestResult, Forecaster
from .generator import SequenceGenerator
from .seq2seq import Seq2Seq

__all__ = ["Forecaster", "SequenceClassifier", "BacktestResult", "NotFittedError", "SequenceGenerator", "Seq2Seq"]
