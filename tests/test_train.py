"""Optimizers and the fit loop: step-for-step parity with PyTorch, learning on teaching problems,
checkpoints (bit-identical reload, exact resume), truncated BPTT, and bad input."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import require

import fastlstm
from fastlstm import nn, optim


def _torch_twin(model, torch, dtype):
    """torch.nn.LSTM + last step + Linear with the same weights as the fastlstm Sequential."""
    lstm_t = torch.nn.LSTM(model[0].input_size, model[0].hidden_size, batch_first=True).to(dtype)
    lin_t = torch.nn.Linear(model[2].in_features, model[2].out_features).to(dtype)
    sd = model.state_dict()
    lstm_t.load_state_dict({k[2:]: torch.tensor(v) for k, v in sd.items() if k.startswith("0.")})
    lin_t.load_state_dict({k[2:]: torch.tensor(v) for k, v in sd.items() if k.startswith("2.")})
    return lstm_t, lin_t


@pytest.mark.parametrize("opt_name", ["sgd", "nesterov", "adam", "adamw", "rmsprop"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fit_matches_a_pytorch_loop_step_for_step(opt_name, dtype, rng):
    torch = require("torch")
    dt = np.dtype(dtype)
    tdt = torch.float64 if dt == np.float64 else torch.float32
    backend = "reference" if dt == np.float64 else None
    model = nn.Sequential(nn.LSTM(3, 5, batch_first=True, dtype=dt, seed=1, backend=backend), nn.LastStep(),
                          nn.Linear(5, 2, dtype=dt, seed=2))
    lstm_t, lin_t = _torch_twin(model, torch, tdt)
    params_t = list(lstm_t.parameters()) + list(lin_t.parameters())
    make = {
        "sgd": (lambda m: optim.SGD(m, lr=0.1, momentum=0.9, weight_decay=1e-3),
                lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3)),
        "nesterov": (lambda m: optim.SGD(m, lr=0.05, momentum=0.8, nesterov=True),
                     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True)),
        "adam": (lambda m: optim.Adam(m, lr=0.01, weight_decay=1e-4),
                 lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=1e-4)),
        "adamw": (lambda m: optim.AdamW(m, lr=0.01), lambda p: torch.optim.AdamW(p, lr=0.01)),
        "rmsprop": (lambda m: optim.RMSprop(m, lr=0.005), lambda p: torch.optim.RMSprop(p, lr=0.005)),
    }[opt_name]
    opt, opt_t = make[0](model), make[1](params_t)
    X = rng.standard_normal((40, 6, 3))
    y = rng.standard_normal((40, 2))
    hist = fastlstm.fit(model, X.astype(dt), y.astype(dt), loss="mse", optimizer=opt, epochs=4, batch_size=8,
                        shuffle=False, verbose=0)
    losses_t = []
    for _ in range(4):  # 5 batches x 4 epochs = 20 steps
        tot = 0.0
        for i in range(0, 40, 8):
            opt_t.zero_grad()
            out = lin_t(lstm_t(torch.tensor(X[i:i + 8], dtype=tdt))[0][:, -1])
            loss = torch.nn.functional.mse_loss(out, torch.tensor(y[i:i + 8], dtype=tdt))
            loss.backward()
            opt_t.step()
            tot += loss.item() * 8
        losses_t.append(tot / 40)
    rtol = 1e-5 if dt == np.float64 else 1e-4
    np.testing.assert_allclose(hist.history["loss"], losses_t, rtol=rtol)
    ours = model.state_dict()
    theirs = {**{"0." + k: v.detach().numpy() for k, v in lstm_t.state_dict().items()},
              **{"2." + k: v.detach().numpy() for k, v in lin_t.state_dict().items()}}
    for k in theirs:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=rtol, atol=rtol * 1e-2, err_msg=k)
    assert opt.steps == 20


def test_optimizer_views_and_state_roundtrip(rng):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    opt = optim.Adam(model, lr=0.01)
    for (name, v, g), (m, k, o, n) in zip(model.named_parameters(), opt.flat.slots):
        assert np.shares_memory(v, opt.params) and np.shares_memory(g, opt.grads)
    x, y = rng.standard_normal((8, 3)).astype(np.float32), rng.standard_normal((8, 1)).astype(np.float32)
    model.train()
    for _ in range(3):
        model.zero_grad()
        _, d = nn.MSELoss()(model(x), y)
        model.backward(d)
        opt.step()
    sd = opt.state_dict()
    model2 = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    model2.load_state_dict(model.state_dict())
    opt2 = optim.Adam(model2, lr=0.5)
    opt2.load_state_dict(sd)
    assert opt2.lr == 0.01 and opt2.steps == 3
    for o in (opt, opt2):
        o.model.zero_grad()
        o.model.train()
        _, d = nn.MSELoss()(o.model(x), y)
        o.model.backward(d)
        o.step()
    np.testing.assert_array_equal(opt.params, opt2.params)
    with pytest.raises(ValueError, match="optimizer state is for Adam, not SGD"):
        optim.SGD(model2).load_state_dict(sd)


def test_clip_grad_norm_and_schedules():
    model = nn.Linear(2, 2)
    opt = optim.SGD(model, lr=1.0)
    opt.grads[...] = 3.0
    norm = optim.clip_grad_norm(opt, 1.0)
    assert norm == pytest.approx(3.0 * np.sqrt(opt.grads.size))
    assert np.sqrt((opt.grads ** 2).sum()) == pytest.approx(1.0, rel=1e-5)
    cos = optim.CosineWarmup(opt, total_steps=10, warmup_steps=2, min_lr=0.1)
    lrs = [opt.lr]
    for _ in range(10):
        cos.step()
        lrs.append(opt.lr)
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0) and lrs[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:]))
    opt.lr = 1.0
    plateau = optim.ReduceLROnPlateau(opt, factor=0.5, patience=1)
    for v in (1.0, 0.9, 0.95, 0.95, 0.95):
        plateau.step(v)
    assert opt.lr == 0.5
    step = optim.StepLR(opt, step_size=2, gamma=0.1)
    for _ in range(4):
        step.step()
    assert opt.lr == pytest.approx(0.005)


# ---- learning on teaching problems (small data, few epochs) ----

def test_learns_damped_sine_forecasting():
    t = np.arange(1200) * 0.2
    s = np.sin(t) * np.exp(-t / 150) + 0.3 * np.sin(0.37 * t)
    T = 20
    X = np.lib.stride_tricks.sliding_window_view(s[:-1], T)[:, :, None]
    y = s[T:, None]
    model = nn.Sequential(nn.LSTM(1, 32, batch_first=True, seed=0), nn.LastStep(), nn.Linear(32, 1, seed=0))
    hist = fastlstm.fit(model, X, y, epochs=8, batch_size=32, lr=3e-3, validation_split=0.2, time_ordered=True,
                        verbose=0, metrics=["rmse"])
    assert hist.history["val_rmse"][-1] < 0.05, hist.history["val_rmse"]  # series std ≈ 0.55


def test_learns_echo_sequence_classification():
    """Echo: the label is the token seen at step 2 of a 15-step random sequence (memory)."""
    rng = np.random.default_rng(0)
    X = rng.integers(0, 4, (1200, 15))
    y = X[:, 2]
    model = nn.Sequential(nn.Embedding(4, 8, seed=0), nn.LSTM(8, 32, batch_first=True, seed=0, forget_bias=1.0),
                          nn.LastStep(), nn.Linear(32, 4, seed=0))
    hist = fastlstm.fit(model, X[:1000], y[:1000], loss="cross_entropy", epochs=12, batch_size=32, lr=1e-2,
                        validation_data=(X[1000:], y[1000:]), metrics=["accuracy"], verbose=0)
    assert hist.history["val_accuracy"][-1] >= 0.95, hist.history["val_accuracy"]


def test_learns_cumulative_sum_per_step_with_lengths():
    """Per-step regression on variable-length sequences: y_t = Σ_{s<=t} x_s."""
    rng = np.random.default_rng(1)
    seqs = [rng.uniform(-1, 1, (int(n), 1)) for n in rng.integers(3, 13, 800)]
    lengths = np.array([len(s) for s in seqs])
    X = np.zeros((800, 12, 1))
    for i, s in enumerate(seqs):
        X[i, :len(s)] = s
    Y = np.cumsum(X, axis=1)
    model = nn.Sequential(nn.LSTM(1, 32, batch_first=True, seed=0), nn.Linear(32, 1, seed=0))
    hist = fastlstm.fit(model, X[:700], Y[:700], lengths=lengths[:700], epochs=15, batch_size=32, lr=1e-2,
                        validation_data=(X[700:], Y[700:], lengths[700:]), verbose=0, metrics=["rmse"])
    assert hist.history["val_rmse"][-1] < 0.1, hist.history["val_rmse"]  # target std ≈ 1.2


# ---- checkpoints ----

def _small_model(seed=0, dropout=0.0):
    return nn.Sequential(nn.LSTM(2, 6, num_layers=2, batch_first=True, seed=seed, dropout=dropout), nn.LastStep(),
                         nn.Dropout(0.1, seed=seed), nn.Linear(6, 3, seed=seed))


def test_save_load_predict_bit_identical(tmp_path, rng):
    model = _small_model()
    X = rng.standard_normal((30, 7, 2)).astype(np.float32)
    y = rng.integers(0, 3, 30)
    hist = fastlstm.fit(model, X, y, loss="cross_entropy", epochs=2, verbose=0)
    path = tmp_path / "m.fastlstm"
    fastlstm.save(path, model, hist.optimizer, extra={"note": "hi", "classes": np.array([3, 1, 2])})
    m2, opt2, extra = fastlstm.load(path)
    assert type(m2) is nn.Sequential and isinstance(opt2, optim.Adam) and opt2.steps == hist.optimizer.steps
    assert extra["note"] == "hi" and extra["classes"].tolist() == [3, 1, 2]
    np.testing.assert_array_equal(fastlstm.predict(m2, X), fastlstm.predict(model, X))
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]  # no temp file left


def test_corrupted_or_foreign_checkpoints_are_clear_errors(tmp_path):
    model = _small_model()
    path = tmp_path / "m.fastlstm"
    fastlstm.save(path, model)
    data = bytearray(path.read_bytes())
    i = data.find(b"p:0.weight_hh_l0")
    data[i + 400] ^= 0xFF  # flip a byte inside the weights
    bad = tmp_path / "bad.fastlstm"
    bad.write_bytes(bytes(data))
    with pytest.raises(fastlstm.CheckpointError, match="checksum mismatch|not a readable"):
        fastlstm.load(bad)
    trunc = tmp_path / "trunc.fastlstm"
    trunc.write_bytes(path.read_bytes()[:200])
    with pytest.raises(fastlstm.CheckpointError, match="not a readable"):
        fastlstm.load(trunc)
    np.savez(tmp_path / "other.npz", a=np.zeros(2))
    with pytest.raises(fastlstm.CheckpointError, match="not a fastlstm checkpoint"):
        fastlstm.load(tmp_path / "other.npz")
    import json

    from fastlstm import io as fio
    meta, arrays = fio.read(path)
    meta["version"] = 99
    mb = json.dumps(meta, sort_keys=True).encode()
    arrays["__meta__"] = np.frombuffer(mb, np.uint8)
    arrays["__checksum__"] = np.frombuffer(fio._digest(mb, {k: v for k, v in arrays.items() if k != "__meta__"})
                                           .encode(), np.uint8)
    np.savez(tmp_path / "v99.npz", **arrays)
    with pytest.raises(fastlstm.CheckpointError, match="format version 99 is not supported"):
        fastlstm.load(tmp_path / "v99.npz")


def test_a_failed_save_leaves_the_previous_file(tmp_path, monkeypatch):
    model = _small_model()
    path = tmp_path / "m.fastlstm"
    fastlstm.save(path, model)
    before = path.read_bytes()
    import fastlstm.io as fio

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(fio.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        fastlstm.save(path, _small_model(seed=5))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.fastlstm"]


def test_killed_and_resumed_training_equals_uninterrupted(tmp_path, rng):
    X = rng.standard_normal((50, 6, 2)).astype(np.float32)
    y = rng.integers(0, 3, 50)
    kw = dict(loss="cross_entropy", batch_size=16, verbose=0, seed=3, validation_split=0.2)
    full = _small_model(dropout=0.2)
    h_full = fastlstm.fit(full, X, y, epochs=4, **kw)
    ck = tmp_path / "ck.fastlstm"
    part = _small_model(dropout=0.2)
    fastlstm.fit(part, X, y, epochs=2, callbacks=[fastlstm.train.ModelCheckpoint(ck)], **kw)
    resumed = _small_model(seed=11, dropout=0.2)  # other init: everything must come from the file
    h_res = fastlstm.fit(resumed, X, y, epochs=4, resume_from=ck, **kw)
    assert h_res.history["loss"] == h_full.history["loss"]
    assert h_res.history["val_loss"] == h_full.history["val_loss"]
    for k, v in full.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[k], v, err_msg=k)


def test_early_stopping_restores_best_weights(rng):
    X = rng.standard_normal((40, 5, 2)).astype(np.float32)
    y = rng.standard_normal((40, 1)).astype(np.float32)  # noise: validation loss soon stops improving
    model = nn.Sequential(nn.LSTM(2, 16, batch_first=True, seed=0), nn.LastStep(), nn.Linear(16, 1, seed=0))
    es = fastlstm.train.EarlyStopping(patience=2)
    hist = fastlstm.fit(model, X, y, epochs=60, lr=0.05, validation_split=0.25, callbacks=[es], verbose=0)
    assert es.stopped_epoch is not None and len(hist.epoch) < 60
    best = int(np.argmin(hist.history["val_loss"]))
    assert es.best_epoch == best
    val_now = fastlstm.train.evaluate(model, *_val_split(X, y, 0.25, 0))["loss"]
    assert val_now == pytest.approx(hist.history["val_loss"][best], rel=1e-5)


def _val_split(X, y, frac, seed):
    n_val = int(round(len(X) * frac))
    order = np.random.default_rng([seed, 999_999]).permutation(len(X))
    va = np.sort(order[len(X) - n_val:])
    return X[va], y[va]


# ---- truncated BPTT ----

def test_tbptt_equals_the_same_computation_by_hand(rng):
    X = rng.standard_normal((8, 10, 2)).astype(np.float32)
    Y = rng.standard_normal((8, 10, 1)).astype(np.float32)
    lengths = np.array([10, 10, 7, 3, 10, 5, 10, 1])
    make = lambda: nn.Sequential(nn.LSTM(2, 5, batch_first=True, seed=0), nn.Linear(5, 1, seed=0))  # noqa: E731
    auto = make()
    hist = fastlstm.fit(auto, X, Y, lengths=lengths, epochs=1, batch_size=8, shuffle=False, tbptt=4,
                        optimizer="sgd", lr=0.1, verbose=0)
    hand = make()
    opt = optim.SGD(hand, lr=0.1)
    hand.train()
    lstm = hand[0]
    state, losses = None, []
    for s in range(0, 10, 4):
        lc = np.clip(lengths - s, 0, 4)
        hand.zero_grad()
        y, state = lstm(X[:, s:s + 4], state, lc)
        state = (state[0].copy(), state[1].copy())
        out = hand[1](y)
        loss, d = nn.MSELoss()(out, Y[:, s:s + 4], lc)
        lstm.backward(hand[1].backward(d))
        opt.step()
        losses.append((loss, int(lc.sum())))
    expect = sum(l * w for l, w in losses) / sum(w for _, w in losses)
    assert hist.history["loss"][0] == pytest.approx(expect, rel=1e-6)
    for k, v in hand.state_dict().items():
        np.testing.assert_allclose(auto.state_dict()[k], v, rtol=1e-6, atol=1e-7, err_msg=k)
    assert not auto[0].stateful and auto[0].state is None  # fit restored the layer


# ---- bad input: clear errors before any step, nothing half-updated ----

@pytest.mark.parametrize("case,exc,match", [
    ("nan_x", ValueError, "X contains NaN or Inf at real steps"),
    ("nan_y", ValueError, "y contains NaN or Inf"),
    ("label_range", ValueError, r"y holds label 5, outside the model's 3 classes"),
    ("float_labels", TypeError, "integer class ids"),
    ("n_mismatch", ValueError, "X has 20 samples but y has 19"),
    ("bad_lengths", ValueError, r"lengths for X: lengths must lie in \[0, T\] = \[0, 6\]"),
    ("wrong_features", ValueError, r"the model does not fit X and y .*LSTM expects x of shape \(B, T, input_size=2\)"),
    ("empty", ValueError, "X is empty"),
    ("string", TypeError, "X must be a numeric array"),
    ("bad_split", ValueError, "validation_split must be in"),
])
def test_fit_bad_input(case, exc, match, rng):
    model = _small_model()
    before = model.state_dict()
    X = rng.standard_normal((20, 6, 2))
    y = rng.integers(0, 3, 20)
    kw = dict(loss="cross_entropy", epochs=1, verbose=0)
    if case == "nan_x":
        X[3, 2, 1] = np.nan
    elif case == "nan_y":
        kw["loss"], y = "mse", np.where(np.arange(20)[:, None] == 4, np.nan, 0.0) * np.ones((20, 3))
    elif case == "label_range":
        y[7] = 5
    elif case == "float_labels":
        y = y + 0.5
    elif case == "n_mismatch":
        y = y[:19]
    elif case == "bad_lengths":
        kw["lengths"] = np.full(20, 7)
    elif case == "wrong_features":
        X = rng.standard_normal((20, 6, 3))
    elif case == "empty":
        X, y = X[:0], y[:0]
    elif case == "string":
        X = np.array([["a"] * 6] * 20)
    elif case == "bad_split":
        kw["validation_split"] = 1.5
    with pytest.raises(exc, match=match):
        fastlstm.fit(model, X, y, **kw)
    for k, v in before.items():
        np.testing.assert_array_equal(model.state_dict()[k], v, err_msg=k)


def test_float64_data_is_cast_and_nan_padding_is_harmless(rng):
    model = nn.Sequential(nn.LSTM(2, 4, batch_first=True, seed=0), nn.LastStep(), nn.Linear(4, 1, seed=0))
    X = rng.standard_normal((10, 5, 2))  # float64
    lengths = np.array([5, 3, 5, 1, 2, 5, 4, 5, 5, 2])
    X[np.arange(5)[None, :] >= lengths[:, None]] = np.nan
    y = rng.standard_normal((10, 1))
    hist = fastlstm.fit(model, X, y, lengths=lengths, epochs=2, verbose=0)
    assert np.isfinite(hist.history["loss"]).all()
    p = fastlstm.predict(model, X, lengths=lengths)
    assert p.dtype == np.float32 and np.isfinite(p).all()


def test_fit_takes_a_ragged_list_and_buckets_by_length(rng):
    seqs = [rng.standard_normal((int(n), 2)) for n in rng.integers(1, 30, 120)]
    y = np.array([s[:, 0].sum() > 0 for s in seqs], np.int64)
    model = nn.Sequential(nn.LSTM(2, 8, batch_first=True, seed=0), nn.MeanPool(), nn.Linear(8, 2, seed=0))
    seen = []

    class Spy(fastlstm.train.Callback):
        def on_batch_end(self, batch, logs=None):
            seen.append(logs["size"])

    hist = fastlstm.fit(model, seqs, y, loss="cross_entropy", epochs=2, batch_size=16, bucket=True, verbose=0,
                        callbacks=[Spy()], metrics=["accuracy"])
    assert sum(seen) == 2 * 120 and np.isfinite(hist.history["loss"]).all()
    p = fastlstm.predict(model, seqs)
    assert p.shape == (120, 2)
    x, lengths = fastlstm.data.pad_sequences(seqs)
    np.testing.assert_array_equal(p, fastlstm.predict(model, x, lengths=lengths))
    with pytest.raises(ValueError, match="lengths are taken from it"):
        fastlstm.fit(model, seqs, y, lengths=lengths, loss="cross_entropy", verbose=0)


def test_custom_metric_function_on_train_and_validation(rng):
    def max_err(pred, target, lengths=None):
        return float(np.abs(pred - np.asarray(target).reshape(pred.shape)).max())

    X, y = rng.standard_normal((20, 4, 2)).astype(np.float32), rng.standard_normal((20, 1)).astype(np.float32)
    model = nn.Sequential(nn.LSTM(2, 4, batch_first=True, seed=0), nn.LastStep(), nn.Linear(4, 1, seed=0))
    hist = fastlstm.fit(model, X, y, epochs=1, metrics=[max_err, "mae"], validation_split=0.25, verbose=0)
    assert set(hist.history) >= {"max_err", "mae", "val_max_err", "val_mae"}
    assert hist.history["val_max_err"][0] >= hist.history["val_mae"][0] > 0


def test_fit_runs_numpys_blas_on_one_thread_while_the_kernels_use_more(rng):
    """OpenBLAS's spinning workers took the cores of fastlstm's thread team (char-LM at 2 threads:
    0.55 s an epoch against 0.40 s): fit runs it serially while fastlstm has more than one thread,
    and gives back the count it found."""
    from fastlstm._blas import OpenBLAS
    from fastlstm.train import LambdaCallback

    blas = OpenBLAS()
    assert blas.get() is not None, "NumPy's OpenBLAS not found in this process"
    old_blas, old_threads = blas.get(), fastlstm.get_num_threads()
    X = rng.standard_normal((16, 5, 2)).astype(np.float32)
    y = rng.standard_normal((16, 1)).astype(np.float32)
    seen = []
    try:
        blas.set(2)
        for n in (2, 1):
            fastlstm.set_num_threads(n)
            model = nn.Sequential(nn.LSTM(2, 4, batch_first=True), nn.LastStep(), nn.Linear(4, 1))
            fastlstm.fit(model, X, y, epochs=1, batch_size=8, verbose=0,
                         callbacks=[LambdaCallback(on_epoch_end=lambda e, logs: seen.append(blas.get()))])
            seen.append(blas.get())
    finally:
        blas.set(old_blas)
        fastlstm.set_num_threads(old_threads)
    assert seen == [1, 2, 2, 2]     # serial inside fit at 2 threads, restored after; untouched at 1
