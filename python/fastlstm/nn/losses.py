"""Losses with their gradients, masked over padded steps.

    loss, dpred = MSELoss()(pred, target, lengths=None)

pred per sequence (B, ...) or per step (B, T, ...). With lengths and per-step predictions, steps
t >= lengths[b] are left out of the mean and get zero gradient, so nothing downstream sees
padding. The reduction is the mean over the real elements (torch's reduction="mean").
"""

from __future__ import annotations

import numpy as np

from .. import _validate


def _step_mask(pred, lengths):
    """(B, T) bool mask of real steps, or None when every element counts."""
    if lengths is None:
        return None
    if pred.ndim < 3:
        return None  # one prediction per sequence: lengths do not apply
    B, T = pred.shape[:2]
    lengths = _validate.as_lengths(lengths, T, B)
    return np.arange(T)[None, :] < lengths[:, None]


def _as_target(name, target, pred):
    target = np.asarray(target)
    if target.shape != pred.shape:
        if target.size == pred.size:
            target = target.reshape(pred.shape)
        else:
            raise ValueError(f"{name}: target shape {target.shape} does not match the prediction's {pred.shape}")
    return target.astype(pred.dtype, copy=False)


class Loss:
    """Base: __call__(pred, target, lengths=None) -> (loss: float, dpred like pred)."""

    name = "loss"

    def __call__(self, pred, target, lengths=None):
        raise NotImplementedError

    def get_config(self):
        return {}


class _Elementwise(Loss):
    def _value_grad(self, diff):
        raise NotImplementedError

    def __call__(self, pred, target, lengths=None):
        target = _as_target(type(self).__name__, target, pred)
        diff = pred - target
        value, grad = self._value_grad(diff)
        mask = _step_mask(pred, lengths)
        if mask is None:
            n = diff.size
        else:
            m = mask.reshape(mask.shape + (1,) * (pred.ndim - 2)).astype(pred.dtype)
            value, grad = value * m, grad * m
            n = mask.sum() * int(np.prod(pred.shape[2:]))
        n = max(int(n), 1)
        return float(value.sum(dtype=np.float64) / n), (grad / n).astype(pred.dtype, copy=False)


class MSELoss(_Elementwise):
    """mean (pred - target)²"""

    name = "mse"

    def _value_grad(self, d):
        return d * d, 2 * d


class L1Loss(_Elementwise):
    """mean |pred - target| (MAE)"""

    name = "mae"

    def _value_grad(self, d):
        return np.abs(d), np.sign(d)


class HuberLoss(_Elementwise):
    """mean of ½d² for |d| <= delta, delta·(|d| - ½delta) beyond (torch's HuberLoss)."""

    name = "huber"

    def __init__(self, delta=1.0):
        self.delta = float(delta)

    def get_config(self):
        return dict(delta=self.delta)

    def _value_grad(self, d):
        a = np.abs(d)
        small = a <= self.delta
        value = np.where(small, 0.5 * d * d, self.delta * (a - 0.5 * self.delta))
        return value, np.where(small, d, self.delta * np.sign(d))


class QuantileLoss(Loss):
    """Pinball loss for quantile forecasts: pred (..., Q) against target (...) for quantiles q:
    mean over elements and quantiles of max(q·e, (q-1)·e), e = target - pred."""

    name = "quantile"

    def __init__(self, quantiles=(0.1, 0.5, 0.9)):
        self.quantiles = tuple(float(q) for q in quantiles)
        if not all(0 < q < 1 for q in self.quantiles):
            raise ValueError(f"quantiles must lie in (0, 1), got {self.quantiles}")

    def get_config(self):
        return dict(quantiles=list(self.quantiles))

    def __call__(self, pred, target, lengths=None):
        Q = len(self.quantiles)
        if pred.shape[-1] != Q:
            raise ValueError(f"QuantileLoss: pred needs a last axis of {Q} quantiles, got shape {pred.shape}")
        target = np.asarray(target, pred.dtype)
        if target.shape == pred.shape[:-1]:
            target = target[..., None]
        elif target.shape != pred.shape[:-1] + (1,):
            raise ValueError(f"QuantileLoss: target shape {target.shape} does not match pred {pred.shape[:-1]}")
        q = np.asarray(self.quantiles, pred.dtype)
        e = target - pred
        value = np.maximum(q * e, (q - 1) * e)
        grad = np.where(e > 0, -q, 1 - q).astype(pred.dtype)  # d/dpred
        mask = _step_mask(pred, lengths)
        if mask is not None:
            m = mask.reshape(mask.shape + (1,) * (pred.ndim - 2)).astype(pred.dtype)
            value, grad = value * m, grad * m
            n = mask.sum() * int(np.prod(pred.shape[2:]))
        else:
            n = value.size
        n = max(int(n), 1)
        return float(value.sum(dtype=np.float64) / n), grad / n


class GaussianNLLLoss(Loss):
    """Gaussian negative log-likelihood: pred (..., 2) = (mean, raw scale), σ = softplus(raw) + 1e-6;
    mean of log σ + (target - mean)² / (2σ²) (the constant ½log 2π left out)."""

    name = "gaussian_nll"

    def __call__(self, pred, target, lengths=None):
        if pred.shape[-1] != 2:
            raise ValueError(f"GaussianNLLLoss: pred needs a last axis (mean, scale), got shape {pred.shape}")
        target = np.asarray(target, pred.dtype).reshape(pred.shape[:-1])
        mu, raw = pred[..., 0], pred[..., 1]
        sp = np.logaddexp(0, raw)
        sigma = sp + 1e-6
        z = (target - mu) / sigma
        value = np.log(sigma) + 0.5 * z * z
        dmu = -z / sigma
        dsigma = 1 / sigma - z * z / sigma
        draw = dsigma * 0.5 * (1 + np.tanh(0.5 * raw))  # softplus' = sigmoid
        grad = np.stack([dmu, draw], axis=-1)
        mask = _step_mask(pred, lengths)
        if mask is not None:
            m = mask.reshape(mask.shape + (1,) * (value.ndim - 2)).astype(pred.dtype)
            value, grad = value * m, grad * m[..., None]
            n = mask.sum() * int(np.prod(value.shape[2:]))
        else:
            n = value.size
        n = max(int(n), 1)
        return float(value.sum(dtype=np.float64) / n), (grad / n).astype(pred.dtype)


def log_softmax(z, axis=-1):
    z = z - z.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


class CrossEntropyLoss(Loss):
    """Softmax cross-entropy on logits with integer targets, like torch.nn.CrossEntropyLoss:
    logits (B, C) with targets (B,), or per step (B, T, C) with targets (B, T) and lengths.
    Targets equal to ignore_index count for nothing; label_smoothing mixes in a uniform target."""

    name = "cross_entropy"

    def __init__(self, ignore_index=-100, label_smoothing=0.0):
        self.ignore_index, self.label_smoothing = int(ignore_index), float(label_smoothing)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")

    def get_config(self):
        return dict(ignore_index=self.ignore_index, label_smoothing=self.label_smoothing)

    def __call__(self, logits, target, lengths=None):
        C = logits.shape[-1]
        target = np.asarray(target)
        if target.dtype.kind not in "iu":
            if target.dtype.kind == "f" and np.all(target == np.round(target)):
                target = target.astype(np.int64)
            else:
                raise TypeError(f"CrossEntropyLoss: targets must be integer class ids, got dtype {target.dtype}")
        if target.shape != logits.shape[:-1]:
            raise ValueError(f"CrossEntropyLoss: targets of shape {logits.shape[:-1]} expected for logits "
                             f"{logits.shape}, got {target.shape}")
        valid = target != self.ignore_index
        mask = _step_mask(logits, lengths)  # per step (B, T, C): padded steps count for nothing
        if mask is not None:
            valid &= mask
        t = np.where(valid, target, 0)
        if valid.any() and (t[valid].min() < 0 or t[valid].max() >= C):
            bad = t[valid][(t[valid] < 0) | (t[valid] >= C)][0]
            raise ValueError(f"CrossEntropyLoss: target {bad} is out of range for {C} classes")
        logp = log_softmax(logits)  # in the logits' dtype, as torch does (float64 cost 3 ms a char-LM step)
        nll = -np.take_along_axis(logp, t[..., None], axis=-1)[..., 0]
        eps = self.label_smoothing
        if eps:
            nll = (1 - eps) * nll - eps * logp.mean(axis=-1)
        n = max(int(valid.sum()), 1)
        loss = float((nll * valid).sum() / n)
        # d/dlogits = softmax - (1-eps)·onehot - eps/C
        grad = np.exp(logp)
        np.put_along_axis(grad, t[..., None], np.take_along_axis(grad, t[..., None], -1) - (1 - eps), axis=-1)
        if eps:
            grad -= eps / C
        grad *= (valid / n)[..., None]
        return loss, grad.astype(logits.dtype, copy=False)


class BCEWithLogitsLoss(Loss):
    """Binary cross-entropy on logits (stable): mean of max(z,0) - z·y + log(1 + e^-|z|)."""

    name = "bce"

    def __call__(self, logits, target, lengths=None):
        target = _as_target("BCEWithLogitsLoss", target, logits)
        z = logits
        value = np.maximum(z, 0) - z * target + np.log1p(np.exp(-np.abs(z)))
        grad = 0.5 * (1 + np.tanh(0.5 * z)) - target  # sigmoid(z) without overflow
        mask = _step_mask(logits, lengths)
        if mask is not None:
            m = mask.reshape(mask.shape + (1,) * (logits.ndim - 2)).astype(logits.dtype)
            value, grad = value * m, grad * m
            n = mask.sum() * int(np.prod(logits.shape[2:]))
        else:
            n = value.size
        n = max(int(n), 1)
        return float(value.sum(dtype=np.float64) / n), (grad / n).astype(logits.dtype, copy=False)


LOSSES = {"mse": MSELoss, "mae": L1Loss, "l1": L1Loss, "huber": HuberLoss, "cross_entropy": CrossEntropyLoss,
          "bce": BCEWithLogitsLoss, "quantile": QuantileLoss, "gaussian_nll": GaussianNLLLoss}


def get_loss(loss) -> Loss:
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str) and loss.lower() in LOSSES:
        return LOSSES[loss.lower()]()
    if callable(loss):
        return loss
    raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)} or pass a Loss")
