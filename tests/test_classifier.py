"""SequenceClassifier: learns synthetic problems (long univariate, short multivariate with
variable lengths) to a stated accuracy, accepts aeon's layouts, labels of any hashable type,
bad input, and follows scikit-learn's estimator conventions. Small budgets keep it fast."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from conftest import require

from fastlstm import train
from fastlstm.models import NotFittedError, SequenceClassifier
from fastlstm.models.classifier import as_cases, encode_labels

FAST = dict(hidden_size=16, epochs=40, n_models=1)


def bump_problem(n, T=120, seed=0):
    """Univariate, long: class 0 has a bump in the first third, class 1 in the last third,
    at a jittered position, under noise — only the bump's place tells the classes apart."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    t = np.arange(T)
    X = 0.3 * rng.standard_normal((n, 1, T))
    for i in range(n):
        centre = rng.uniform(0.1, 0.3) * T if y[i] == 0 else rng.uniform(0.7, 0.9) * T
        X[i, 0] += 2.0 * np.exp(-0.5 * ((t - centre) / 4.0) ** 2)
    return X, y


def varlen_problem(n, seed=0):
    """3 channels, lengths 8..30: the class is which channel carries a positive drift."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = []
    for i in range(n):
        T = int(rng.integers(8, 31))
        x = rng.standard_normal((3, T))
        x[y[i]] += np.linspace(0, 2.0, T)
        X.append(x)
    return X, y


def test_learns_a_long_univariate_problem():
    X, y = bump_problem(120)
    Xt, yt = bump_problem(100, seed=1)
    clf = SequenceClassifier(**FAST).fit(X, y)
    assert clf.frame_ == 5  # 120 steps framed into 24 steps of round(sqrt(120) / 2) = 5 values
    assert clf.score(Xt, yt) >= 0.9


def test_learns_a_variable_length_multivariate_problem_and_lengths_agree():
    X, y = varlen_problem(150)
    Xt, yt = varlen_problem(90, seed=1)
    clf = SequenceClassifier(**FAST).fit(X, y)
    assert clf.frame_ == 2 and clf.n_channels_ == 3  # median length ~19: steps of 2 timepoints
    assert clf.score(Xt, yt) >= 0.9
    # padded + lengths and trailing-NaN padding give the same probabilities as the list
    lens = np.array([x.shape[1] for x in Xt])
    pad = np.zeros((len(Xt), 3, lens.max()))
    nanpad = np.full((len(Xt), 3, lens.max()), np.nan)
    for i, x in enumerate(Xt):
        pad[i, :, :lens[i]] = x
        nanpad[i, :, :lens[i]] = x
    p = clf.predict_proba(Xt)
    np.testing.assert_allclose(clf.predict_proba(pad, lengths=lens), p, atol=1e-6)
    np.testing.assert_allclose(clf.predict_proba(nanpad), p, atol=1e-6)
    assert p.shape == (90, 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-9)


def test_test_series_longer_or_shorter_than_training_ones():
    X, y = bump_problem(60, T=120)
    clf = SequenceClassifier(**FAST).fit(X, y)
    longer = np.concatenate([X[:5], X[:5]], axis=2)  # 240 steps: framed into 48 steps of 5
    shorter = X[:5, :, :33]                          # 33 steps: 7 steps, the last one padded
    assert clf.predict(longer).shape == (5,)
    assert clf.predict(shorter).shape == (5,)
    assert clf.predict([X[0, 0, :7], X[1, 0]]).shape == (2,)  # 1-D series in a list


@pytest.mark.parametrize("kw", [dict(bidirectional=False), dict(pooling="last"), dict(pooling="mean"),
                                dict(normalize="series", frame=10), dict(num_layers=2, dropout=0.2)])
def test_options_run_and_learn_something(kw):
    X, y = bump_problem(80)
    clf = SequenceClassifier(**{**FAST, **kw}).fit(X, y)
    assert clf.score(X, y) >= 0.7  # above chance on the training set, even with tiny budgets


def test_early_stopping_on_a_validation_split():
    X, _ = bump_problem(80)
    y = np.random.default_rng(5).integers(0, 2, 80)  # random labels: validation loss rises at once
    clf = SequenceClassifier(hidden_size=16, epochs=200, validation_fraction=0.25, patience=5,
                             n_models=1).fit(X, y)
    assert "val_loss" in clf.history_
    assert clf.n_epochs_ < 200


def test_labels_of_any_hashable_type():
    X, y = varlen_problem(60)
    for labels in (np.array(["cat", "dog", "eel"]), [("a", 1), ("b", 2), ("c", 3)], [1.5, "two", None]):
        ys = [labels[i] for i in y]
        clf = SequenceClassifier(hidden_size=8, epochs=3, n_models=1).fit(X, ys)
        pred = clf.predict(X[:4])
        assert all(p in list(labels) for p in pred)
        assert len(clf.classes_) == 3
    classes, ids = encode_labels(["b", "a", "b"])
    assert list(classes) == ["a", "b"] and list(ids) == [1, 0, 1]


def test_bad_input_is_a_clear_error():
    X, y = bump_problem(20)
    with pytest.raises(ValueError, match="single class"):
        SequenceClassifier().fit(X, np.zeros(20))
    with pytest.raises(ValueError, match="20 cases but y has 19"):
        SequenceClassifier().fit(X, y[:19])
    bad = X.copy()
    bad[3, 0, 10] = np.nan
    with pytest.raises(ValueError, match=r"X\[3\] has NaN inside"):
        SequenceClassifier().fit(bad, y)
    with pytest.raises(ValueError, match="channels"):
        SequenceClassifier().fit([np.zeros((2, 5)), np.zeros((3, 5))], [0, 1])
    with pytest.raises(ValueError, match="n_cases, n_channels, n_timepoints"):
        SequenceClassifier().fit(np.zeros((2, 2, 2, 2)), [0, 1])
    with pytest.raises(ValueError, match="lengths"):
        SequenceClassifier().fit(X, y, lengths=np.full(20, 500))
    with pytest.raises(TypeError, match="hashable"):
        SequenceClassifier().fit(X[:2], [[1], [2]])
    with pytest.raises(ValueError, match="pooling"):
        SequenceClassifier(pooling="median").fit(X, y)
    clf = SequenceClassifier(hidden_size=8, epochs=1, n_models=2).fit(X, y)
    # the ensemble's probabilities are the mean of its members'
    x, lens = clf._prepare(as_cases(X))
    members = [train.predict(m, x, lengths=lens).astype(np.float64) for m in clf.models_]
    members = [np.exp(z - z.max(1, keepdims=True)) / np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)
               for z in members]
    np.testing.assert_allclose(clf.predict_proba(X), np.mean(members, axis=0), atol=1e-9)
    with pytest.raises(ValueError, match="channels"):
        clf.predict(np.zeros((2, 3, 50)))
    with pytest.raises(ValueError, match="empty"):
        as_cases([np.zeros((1, 0))])


def test_sklearn_conventions_clone_pipeline_and_not_fitted():
    base = require("sklearn", "sklearn.base")
    pipe_mod = require("sklearn", "sklearn.pipeline")
    prep = require("sklearn", "sklearn.preprocessing")
    clf = SequenceClassifier(hidden_size=8, epochs=30, n_models=1)
    with pytest.raises(NotFittedError, match="not fitted"):
        clf.predict(np.zeros((2, 1, 10)))
    c = base.clone(clf)
    assert c.get_params() == clf.get_params() and c is not clf
    assert clf.set_params(lr=1e-2).lr == 1e-2
    assert base.is_classifier(clf)
    X, y = bump_problem(60, T=60)
    # a Pipeline of a 2-D (n_cases, n_timepoints) transformer and the classifier
    pipe = pipe_mod.Pipeline([("scale", prep.FunctionTransformer(lambda a: a[:, 0, :] * 2.0)), ("lstm", clf)])
    pipe.fit(X, y)
    assert pipe.score(X, y) >= 0.8
    g = pickle.loads(pickle.dumps(pipe.named_steps["lstm"]))
    np.testing.assert_allclose(g.predict_proba(X[:, 0] * 2.0), pipe.predict_proba(X), atol=1e-7)
