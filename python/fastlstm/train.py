"""The training loop, Keras-style: fit / evaluate / predict, callbacks and a History.

    history = fit(model, X, y, loss="mse", epochs=20, batch_size=32, validation_split=0.2,
                  callbacks=[EarlyStopping(patience=5)])
    yhat = predict(model, X_test)

The loop itself is short; early stopping, checkpoints, LR schedules and the progress bar are
callbacks. One optimizer step is: zero_grad → forward → loss (masked by lengths) → backward →
clip → step. Inputs are checked once, before the first step, so a bad argument never leaves a
half-trained model. Batch-first data: X (N, T, F) float, (N, T) int token ids, (N, F), a list of
variable-length arrays (padded here, lengths computed), or a tuple of such arrays for models with
several inputs (the model's forward receives the tuple).

NaN policy: NaN/Inf in X at real steps, or in y, is a ValueError naming the array (impute or drop
first); padded positions beyond lengths may hold anything — they are never read.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time

import numpy as np

from . import _blas, _validate, io, optim
from .backends import get_num_threads
from .nn.losses import get_loss
from .nn.metrics import get_metric
from .nn.module import Module


# -- inputs ----------------------------------------------------------------------------------

def _model_dtype(model):
    for _, v, _ in model.named_parameters():
        return v.dtype
    return np.dtype(np.float32)


def _as_array(name, a, dtype):
    """float data cast to the model's dtype (float64 NumPy default included); ints kept."""
    if isinstance(a, (list, tuple)) and a and isinstance(a[0], np.ndarray) and len({np.shape(s) for s in a}) > 1:
        raise TypeError(f"{name} is a list of arrays of different shapes; pass it as X (padded there)")
    arr = np.asarray(a)
    if arr.dtype.kind == "f":
        return np.ascontiguousarray(arr, dtype=dtype)
    if arr.dtype.kind in "iub":
        return np.ascontiguousarray(arr, dtype=np.int64) if arr.dtype.kind != "b" else arr.astype(dtype)
    if arr.dtype.kind == "O":
        raise TypeError(f"{name} must be a numeric array, got dtype object (ragged lists go through "
                        f"fastlstm.data.pad_sequences)")
    raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")


def _is_ragged(X):
    return isinstance(X, list) and len(X) > 0 and all(hasattr(s, "__len__") for s in X) and \
        len({np.shape(s)[:1] for s in X}) > 1


def prepare_inputs(model, X, lengths=None, name="X"):
    """(X, lengths) validated: arrays in the model's dtype, a ragged list padded, lengths checked."""
    dtype = _model_dtype(model)
    if isinstance(X, tuple):
        if lengths is not None and not isinstance(lengths, tuple):
            raise TypeError(f"with a tuple {name}, lengths must be a tuple (one entry per input, or None)")
        lens = lengths or (None,) * len(X)
        pairs = [prepare_inputs(model, x, l_, f"{name}[{i}]") for i, (x, l_) in enumerate(zip(X, lens))]
        return tuple(p[0] for p in pairs), (tuple(p[1] for p in pairs) if lengths is not None else None)
    if _is_ragged(X):
        from .data import pad_sequences

        if lengths is not None:
            raise ValueError(f"{name} is a list of variable-length sequences: its lengths are taken from it; "
                             f"do not pass lengths too")
        X, lengths = pad_sequences(X)
    X = _as_array(name, X, dtype)
    if X.ndim == 0 or X.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {X.shape}); need at least one sample")
    if lengths is not None:
        if X.ndim < 2:
            raise ValueError(f"lengths apply to sequences ({name} of shape (N, T, ...)), got {name} of shape {X.shape}")
        try:
            lengths = _validate.as_lengths(lengths, X.shape[1], X.shape[0])
        except (TypeError, ValueError) as e:
            raise type(e)(f"lengths for {name}: {e}") from None
    if X.dtype.kind == "f":
        real = X if lengths is None else X[np.arange(X.shape[1])[None, :] < lengths[:, None]]
        if not np.isfinite(real).all():
            raise ValueError(f"{name} contains NaN or Inf at real steps; impute or drop them first "
                             f"(values at padded steps beyond lengths are never read)")
    return X, lengths


def prepare_targets(model, y, name="y"):
    if isinstance(y, tuple):
        return tuple(prepare_targets(model, t, f"{name}[{i}]") for i, t in enumerate(y))
    y = _as_array(name, y, _model_dtype(model))
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise ValueError(f"{name} contains NaN or Inf; drop or impute those targets first")
    return y


def _n(X):
    return len(X[0]) if isinstance(X, tuple) else len(X)


def _take(a, idx):
    if a is None:
        return None
    if isinstance(a, tuple):
        return tuple(_take(x, idx) for x in a)
    return a[idx]


def _loss_lengths(lengths, y_lengths):
    if y_lengths is not None:
        return y_lengths
    return None if isinstance(lengths, tuple) else lengths


# -- callbacks -------------------------------------------------------------------------------

class History:
    """history.history[name] -> list per epoch ("loss", "val_loss", metrics, "lr")."""

    def __init__(self):
        self.history: dict[str, list] = {}
        self.epoch: list[int] = []

    def append(self, epoch, logs):
        self.epoch.append(epoch)
        for k, v in logs.items():
            self.history.setdefault(k, []).append(v)

    def __repr__(self):
        last = {k: v[-1] for k, v in self.history.items()}
        return f"History(epochs={len(self.epoch)}, last={last})"


class Callback:
    """Hooks the loop calls: on_train_begin(logs), on_epoch_begin(epoch, logs),
    on_batch_end(batch, logs), on_epoch_end(epoch, logs), on_train_end(logs).
    self.model, self.optimizer and self.loop are set before on_train_begin; loop.stop_training =
    True stops the loop after the current batch (the epoch's logs cover the batches run)."""

    model = optimizer = loop = None

    def on_train_begin(self, logs=None): ...
    def on_epoch_begin(self, epoch, logs=None): ...
    def on_batch_end(self, batch, logs=None): ...
    def on_epoch_end(self, epoch, logs=None): ...
    def on_train_end(self, logs=None): ...


class LambdaCallback(Callback):
    def __init__(self, on_epoch_end=None, on_batch_end=None, on_train_end=None):
        self._e, self._b, self._t = on_epoch_end, on_batch_end, on_train_end

    def on_epoch_end(self, epoch, logs=None):
        if self._e:
            self._e(epoch, logs)

    def on_batch_end(self, batch, logs=None):
        if self._b:
            self._b(batch, logs)

    def on_train_end(self, logs=None):
        if self._t:
            self._t(logs)


def _better(mode, a, b, min_delta):
    return a < b - min_delta if mode == "min" else a > b + min_delta


def _mode_for(monitor, mode):
    if mode != "auto":
        return mode
    return "max" if any(s in monitor for s in ("acc", "r2")) else "min"


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by min_delta for `patience` epochs; with
    restore_best_weights the model ends with the weights of its best epoch."""

    def __init__(self, monitor="val_loss", patience=10, min_delta=0.0, restore_best_weights=True, mode="auto"):
        self.monitor, self.patience, self.min_delta = monitor, int(patience), float(min_delta)
        self.restore, self.mode = bool(restore_best_weights), _mode_for(monitor, mode)

    def on_train_begin(self, logs=None):
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch, self.wait, self.best_state, self.stopped_epoch = None, 0, None, None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise KeyError(f"EarlyStopping monitors {self.monitor!r}, which the loop does not log "
                           f"(logged: {sorted(logs or {})}); give validation data for val_* metrics")
        if _better(self.mode, value, self.best, self.min_delta):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore:
                self.best_state = self.model.state_dict()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.loop.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore and self.best_state is not None:
            self.model.load_state_dict(self.best_state)


class ModelCheckpoint(Callback):
    """Save model + optimizer + epoch + history (fastlstm.save, atomic) every `every` epochs, or
    only when `monitor` improves (save_best_only). fit(..., resume_from=path) continues from it."""

    def __init__(self, path, every=1, save_best_only=False, monitor="val_loss", mode="auto"):
        self.path, self.every, self.best_only = path, int(every), bool(save_best_only)
        self.monitor, self.mode = monitor, _mode_for(monitor, mode)
        self.best = None

    def on_epoch_end(self, epoch, logs=None):
        if self.best_only:
            value = (logs or {}).get(self.monitor)
            if value is None or (self.best is not None and not _better(self.mode, value, self.best, 0.0)):
                return
            self.best = value
        elif (epoch + 1) % self.every:
            return
        io.save(self.path, self.model, self.optimizer,
                extra={"epoch": epoch + 1, "history": self.loop.history.history, "fit_seed": self.loop.seed})


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by `factor` when `monitor` stalls for `patience` epochs."""

    def __init__(self, monitor="val_loss", factor=0.5, patience=5, min_lr=0.0, min_delta=0.0, mode="auto"):
        self.monitor, self.kw = monitor, dict(factor=factor, patience=patience, min_lr=min_lr,
                                              min_delta=min_delta, mode=_mode_for(monitor, mode))

    def on_train_begin(self, logs=None):
        self.sched = optim.ReduceLROnPlateau(self.optimizer, **self.kw)

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor in (logs or {}):
            self.sched.step(logs[self.monitor])


class LearningRateSchedule(Callback):
    """Drive an optim schedule (StepLR / CosineWarmup) from the loop: per batch when the schedule
    says per_batch, else per epoch. Built lazily from the optimizer: LearningRateSchedule(
    lambda opt: optim.CosineWarmup(opt, total_steps=1000, warmup_steps=50))."""

    def __init__(self, factory):
        self.factory = factory

    def on_train_begin(self, logs=None):
        self.sched = self.factory(self.optimizer)
        self.per_batch = getattr(self.sched, "per_batch", False)

    def on_batch_end(self, batch, logs=None):
        if self.per_batch:
            self.sched.step()

    def on_epoch_end(self, epoch, logs=None):
        if not self.per_batch:
            self.sched.step()


class _Progress(Callback):
    """tqdm bar per epoch (verbose=1) or one line per epoch (verbose=2 or no tqdm)."""

    def __init__(self, verbose, epochs, steps):
        self.verbose, self.epochs, self.steps = verbose, epochs, steps
        try:
            from tqdm.auto import tqdm
        except ImportError:
            tqdm = None
        self.tqdm = tqdm if verbose == 1 else None
        self.bar = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.tqdm is not None:
            self.bar = self.tqdm(total=self.steps, desc=f"epoch {epoch + 1}/{self.epochs}", leave=False,
                                 file=sys.stderr, dynamic_ncols=True)

    def on_batch_end(self, batch, logs=None):
        if self.bar is not None:
            self.bar.update(1)
            if batch % 10 == 0:
                self.bar.set_postfix(loss=f"{logs['loss']:.4g}", refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        text = "  ".join(f"{k} {v:.4g}" for k, v in logs.items() if isinstance(v, float))
        print(f"epoch {epoch + 1}/{self.epochs}  {text}", file=sys.stderr)


# -- the loop --------------------------------------------------------------------------------

class _Loop:
    def __init__(self, seed):
        self.stop_training = False
        self.history = History()
        self.seed = seed


def _check_model_io(model, loss_fn, Xb, lb, yb, ylb):
    """One forward in inference mode on the first samples: a shape or label error surfaces
    here, before any step."""
    was = model.training
    model.eval()
    try:
        out = model.forward(Xb, lengths=lb)
        loss_fn(out, yb, _loss_lengths(lb, ylb))
    except (TypeError, ValueError, KeyError, IndexError) as e:
        raise type(e)(f"the model does not fit X and y (checked on their first samples): {e}") from None
    finally:
        model.train(was)
    return out


def _validate_labels(loss_fn, out, y):
    C = out.shape[-1]
    if type(loss_fn).__name__ == "CrossEntropyLoss":
        if y.dtype.kind not in "iu":
            raise TypeError(f"y must hold integer class ids for cross-entropy, got dtype {y.dtype}")
        ign = loss_fn.ignore_index
        real = y[y != ign]
        if real.size and (real.min() < 0 or real.max() >= C):
            bad = real[(real < 0) | (real >= C)][0]
            raise ValueError(f"y holds label {bad}, outside the model's {C} classes [0, {C})")


def _reset_states(model):
    for _, m in model.named_modules():
        if hasattr(m, "reset_states"):
            m.reset_states()


def _set_stateful(model, on):
    old = {}
    for _, m in model.named_modules():
        if hasattr(m, "stateful"):
            old[id(m)] = (m, m.stateful)
            m.stateful = on
    return old


def _chunk_time(a, s, e):
    if a is None:
        return None
    if isinstance(a, tuple):
        return tuple(_chunk_time(x, s, e) for x in a)
    return a[:, s:e] if a.ndim >= 2 else a


def _train_step(model, opt, loss_fn, xb, lb, yb, ylb, clip_norm):
    model.zero_grad()
    out = model.forward(xb, lengths=lb)
    loss, dout = loss_fn(out, yb, _loss_lengths(lb, ylb))
    model.backward(dout)
    if clip_norm:
        optim.clip_grad_norm(opt, clip_norm)
    opt.step()
    return loss, out


def fit(model: Module, X, y, *, loss="mse", optimizer="adam", lr=None, epochs=10, batch_size=32,
        lengths=None, y_lengths=None, shuffle=True, seed=0, validation_data=None, validation_split=0.0,
        time_ordered=False, clip_norm=None, metrics=(), callbacks=(), verbose=1, bucket=False,
        tbptt=None, initial_epoch=0, resume_from=None) -> History:
    """Train model on (X, y). Returns a History (history.history["loss"], "val_loss", ...).

    loss: a name ("mse", "mae", "huber", "cross_entropy", "bce", "quantile") or a Loss.
    optimizer: a name ("adam", "adamw", "sgd", "rmsprop") or an Optimizer built on model;
        the fit's optimizer is available as history.optimizer afterwards.
    lengths: (N,) real steps of each sequence in X (a ragged list X brings its own);
        y_lengths: the same for per-step targets whose length differs from the input's.
    validation_data: (Xv, yv) or (Xv, yv, lengths_v); validation_split takes the last (with
        time_ordered=True) or a random fraction of X.
    seed: shuffling and dropout draw from generators derived from (seed, epoch), so a run
        resumed at an epoch (resume_from=checkpoint, or initial_epoch + a restored optimizer)
        continues exactly as the uninterrupted run.
    bucket: batches of similar lengths (less padding); tbptt=K: truncated BPTT, each batch split
        into chunks of K steps with the LSTM state carried between chunks, one step per chunk.
    """
    if epochs < 0 or int(batch_size) < 1:
        raise ValueError(f"epochs must be >= 0 and batch_size >= 1, got {epochs}, {batch_size}")
    if not 0.0 <= validation_split < 1.0:
        raise ValueError(f"validation_split must be in [0, 1), got {validation_split}")
    if tbptt is not None and int(tbptt) < 1:
        raise ValueError(f"tbptt must be a positive number of steps, got {tbptt}")
    loss_fn = get_loss(loss)
    X, lengths = prepare_inputs(model, X, lengths)
    y = prepare_targets(model, y)
    N = _n(X)
    if _n(y) != N:
        raise ValueError(f"X has {N} samples but y has {_n(y)}")
    if y_lengths is not None:
        y_lengths = _validate.as_lengths(y_lengths, np.shape(y if not isinstance(y, tuple) else y[0])[1], N)

    if validation_data is None and validation_split > 0:
        n_val = int(round(N * validation_split))
        if n_val < 1 or n_val >= N:
            raise ValueError(f"validation_split={validation_split} leaves {n_val} of {N} samples for validation")
        if time_ordered:  # the last samples validate, as a forecast would be judged
            tr, va = np.arange(N - n_val), np.arange(N - n_val, N)
        else:
            order = np.random.default_rng([seed, 999_999]).permutation(N)
            tr, va = np.sort(order[:N - n_val]), np.sort(order[N - n_val:])
        validation_data = (_take(X, va), _take(y, va), _take(lengths, va), _take(y_lengths, va))
        X, y, lengths, y_lengths = _take(X, tr), _take(y, tr), _take(lengths, tr), _take(y_lengths, tr)
        N = _n(X)
    elif validation_data is not None:
        vd = tuple(validation_data)
        if len(vd) not in (2, 3, 4):
            raise ValueError("validation_data must be (X, y), (X, y, lengths) or (X, y, lengths, y_lengths)")
        Xv, lv = prepare_inputs(model, vd[0], vd[2] if len(vd) > 2 else None, "validation X")
        validation_data = (Xv, prepare_targets(model, vd[1], "validation y"), lv, vd[3] if len(vd) > 3 else None)

    probe = np.arange(min(N, 2))
    out = _check_model_io(model, loss_fn, _take(X, probe), _take(lengths, probe), _take(y, probe),
                          _take(y_lengths, probe))
    if not isinstance(y, tuple):
        _validate_labels(loss_fn, out, y)
    metric_fns = [get_metric(m) for m in metrics]

    opt = optim.get_optimizer(optimizer, model, lr)
    loop = _Loop(seed)
    if resume_from is not None:
        _, saved_opt, extra = io.load(resume_from, model)
        if saved_opt is not None:
            opt.load_state_dict(saved_opt.state_dict())
        initial_epoch = int(extra.get("epoch", 0))
        for k, v in (extra.get("history") or {}).items():
            loop.history.history[k] = list(v)
        loop.history.epoch = list(range(initial_epoch))
    steps = math.ceil(N / batch_size)
    cbs = list(callbacks)
    if verbose:
        cbs.append(_Progress(verbose, epochs, steps))
    for cb in cbs:
        cb.model, cb.optimizer, cb.loop = model, opt, loop
    stateful = _set_stateful(model, True) if tbptt else {}
    model.train()
    for cb in cbs:
        cb.on_train_begin({})
    # NumPy's BLAS on one thread while the kernels use more (its spinning workers take their cores)
    blas = contextlib.ExitStack()
    blas.enter_context(_blas.serial_blas(get_num_threads() > 1))
    try:
        for epoch in range(initial_epoch, epochs):
            model._reseed([seed, epoch])
            rng = np.random.default_rng([seed, epoch])
            batches = _batches(N, batch_size, shuffle, rng, lengths if bucket else None)
            for cb in cbs:
                cb.on_epoch_begin(epoch, {})
            t0, total, seen = time.perf_counter(), 0.0, 0
            msum = {name: 0.0 for name, _ in metric_fns}
            for bi, idx in enumerate(batches):
                xb, lb, yb, ylb = _take(X, idx), _take(lengths, idx), _take(y, idx), _take(y_lengths, idx)
                if tbptt:
                    loss_b, out = _tbptt_batch(model, opt, loss_fn, xb, lb, yb, ylb, clip_norm, int(tbptt))
                else:
                    loss_b, out = _train_step(model, opt, loss_fn, xb, lb, yb, ylb, clip_norm)
                n = len(idx)
                total += loss_b * n
                seen += n
                if not tbptt:  # (with tbptt the validation metrics judge whole sequences)
                    for name, fn in metric_fns:
                        msum[name] += fn(out, yb, _loss_lengths(lb, ylb)) * n
                for cb in cbs:
                    cb.on_batch_end(bi, {"loss": loss_b, "size": n})
                if loop.stop_training:  # a callback may stop mid-epoch (e.g. a time budget)
                    break
            logs = {"loss": total / seen}
            if not tbptt:
                logs.update({k: v / seen for k, v in msum.items()})
            if validation_data is not None:
                Xv, yv, lv, ylv = validation_data
                res = evaluate(model, Xv, yv, loss=loss_fn, lengths=lv, y_lengths=ylv,
                               metrics=metrics, batch_size=max(256, batch_size))
                logs.update({f"val_{k}": v for k, v in res.items()})
            logs["lr"] = opt.lr
            logs["time"] = time.perf_counter() - t0
            loop.history.append(epoch, logs)
            for cb in cbs:
                cb.on_epoch_end(epoch, logs)
            if loop.stop_training:
                break
    finally:
        blas.close()
        model.eval()
        for m, old in stateful.values():
            m.stateful = old
            if hasattr(m, "reset_states"):
                m.reset_states()
    for cb in cbs:
        cb.on_train_end({})
    loop.history.optimizer = opt
    return loop.history


def _batches(N, batch_size, shuffle, rng, lengths):
    if lengths is not None:
        from .data import bucket_batches

        return bucket_batches(lengths, batch_size, shuffle=shuffle, seed=int(rng.integers(1 << 31)))
    order = rng.permutation(N) if shuffle else np.arange(N)
    return [order[i:i + batch_size] for i in range(0, N, batch_size)]


def _tbptt_batch(model, opt, loss_fn, xb, lb, yb, ylb, clip_norm, K):
    """Truncated BPTT: chunks of K steps, state carried (not differentiated) between them, one
    optimizer step per chunk. Returns the step-weighted mean loss and the last chunk's output."""
    _reset_states(model)
    T = (xb[0] if isinstance(xb, tuple) else xb).shape[1]
    total, weight, out = 0.0, 0, None
    for s in range(0, T, K):
        e = min(T, s + K)
        lc = None if lb is None else np.clip(lb - s, 0, e - s)
        if lc is not None and not lc.any():
            break  # every row has ended
        loss_c, out = _train_step(model, opt, loss_fn, _chunk_time(xb, s, e), lc, _chunk_time(yb, s, e),
                                  None if ylb is None else np.clip(ylb - s, 0, e - s), clip_norm)
        w = (e - s) if lc is None else int(lc.sum())
        total += loss_c * w
        weight += w
    return total / max(weight, 1), out


class _inference:
    """Eval mode with LSTM weights packed once for the whole call; the mode is restored after."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.was = [(m, m.training, getattr(m, "stateful", None)) for _, m in self.model.named_modules()]
        self.model.eval()
        for m, _, st in self.was:
            if st:  # whole sequences here: no state carried between batches
                m.stateful = False
        for _, m in self.model.named_modules():
            m._inference_cache(True)
        return self.model

    def __exit__(self, *exc):
        for _, m in self.model.named_modules():
            m._inference_cache(False)
        for m, t, st in self.was:
            m.training = t
            if st:
                m.stateful = st


def predict(model: Module, X, lengths=None, batch_size=256):
    """Model outputs for X in inference mode, batched; LSTM weights packed once per call."""
    X, lengths = prepare_inputs(model, X, lengths)
    N = _n(X)
    outs = []
    with _inference(model):
        for i in range(0, N, batch_size):
            idx = slice(i, i + batch_size)
            outs.append(model.forward(_take(X, idx), lengths=_take(lengths, idx)))
    return np.concatenate(outs)


def evaluate(model: Module, X, y, *, loss="mse", lengths=None, y_lengths=None, metrics=(), batch_size=256) -> dict:
    """{"loss": ..., metric: ...} over (X, y), sample-weighted means over batches."""
    loss_fn = get_loss(loss)
    X, lengths = prepare_inputs(model, X, lengths)
    y = prepare_targets(model, y)
    metric_fns = [get_metric(m) for m in metrics]
    N = _n(X)
    sums = {"loss": 0.0, **{name: 0.0 for name, _ in metric_fns}}
    with _inference(model):
        for i in range(0, N, batch_size):
            idx = slice(i, i + batch_size)
            lb, ylb = _take(lengths, idx), _take(y_lengths, idx)
            out = model.forward(_take(X, idx), lengths=lb)
            yb = _take(y, idx)
            n = _n(yb)
            sums["loss"] += loss_fn(out, yb, _loss_lengths(lb, ylb))[0] * n
            for name, fn in metric_fns:
                sums[name] += fn(out, yb, _loss_lengths(lb, ylb)) * n
    return {k: v / N for k, v in sums.items()}
