"""Metrics on predictions, masked over padded steps like the losses: accuracy, RMSE, MAE."""

from __future__ import annotations

import numpy as np

from .losses import _step_mask


def accuracy(pred, target, lengths=None) -> float:
    """Fraction of correct labels. pred: logits/probabilities (..., C) or labels (...)."""
    pred, target = np.asarray(pred), np.asarray(target)
    labels = pred.argmax(axis=-1) if pred.ndim == target.ndim + 1 else pred
    if labels.shape != target.shape:
        raise ValueError(f"accuracy: predictions of shape {labels.shape} do not match targets {target.shape}")
    correct = labels == target
    mask = _step_mask(labels[..., None], lengths) if labels.ndim == 2 else None  # per-step labels (B, T)
    if mask is not None:
        return float(correct[mask].mean()) if mask.any() else float("nan")
    return float(correct.mean())


def _err(pred, target, lengths):
    pred = np.asarray(pred, np.float64)
    target = np.asarray(target, np.float64).reshape(pred.shape)
    e = pred - target
    mask = _step_mask(pred, lengths)
    if mask is not None:
        return e[mask]
    return e


def rmse(pred, target, lengths=None) -> float:
    e = _err(pred, target, lengths)
    return float(np.sqrt(np.mean(e * e)))


def mae(pred, target, lengths=None) -> float:
    return float(np.mean(np.abs(_err(pred, target, lengths))))


METRICS = {"accuracy": accuracy, "acc": accuracy, "rmse": rmse, "mae": mae}


def get_metric(m):
    if callable(m):
        return getattr(m, "__name__", "metric"), m
    if isinstance(m, str) and m.lower() in METRICS:
        return m.lower() if m.lower() != "acc" else "accuracy", METRICS[m.lower()]
    raise ValueError(f"unknown metric {m!r}; choose one of {', '.join(METRICS)} or pass a function")
