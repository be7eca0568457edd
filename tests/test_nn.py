"""The module protocol, every layer's and loss's backward against float64 finite differences
(reference backend), and the LSTM layer's new options (dropout between layers, stateful)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from conftest import require, require_backend
from gradcheck import assert_grad_close, numeric_grad

import fastlstm
from fastlstm import nn

F64 = np.float64


def _layer_gradcheck(layer, x, rng, lengths=None, int_input=False, max_entries=20):
    """loss = Σ w·layer(x); compare backward's dx and every parameter grad with central differences."""
    layer.train()
    y = layer(x, lengths=lengths)
    w = rng.standard_normal(y.shape)

    def loss():
        layer.eval()
        out = float((w * layer(x, lengths=lengths)).sum())
        layer.train()
        return out

    layer.zero_grad()
    layer(x, lengths=lengths)
    dx = layer.backward(w)
    if not int_input:
        idx, num = numeric_grad(loss, x, rng, max_entries)
        assert_grad_close("dx", dx, idx, num)
    for name, v, g in layer.named_parameters():
        idx, num = numeric_grad(loss, v, rng, max_entries)
        assert_grad_close(name, g, idx, num)


@pytest.mark.parametrize("activation", [None, "relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("shape", [(5, 3), (4, 6, 3)])  # dense and per-step head
def test_linear_gradients(activation, shape, rng):
    lin = nn.Linear(3, 4, activation=activation, dtype=F64, seed=1)
    _layer_gradcheck(lin, rng.standard_normal(shape), rng)


@pytest.mark.parametrize("threads,expect_native", [(2, True), (1, False)])
def test_linear_products_on_the_kernels_gemm_with_threads(threads, expect_native, rng, monkeypatch):
    """With the kernels on more than one thread, a float32 Linear's three products (forward, dW,
    dx) run on the native GEMM and its thread team (fit keeps NumPy's BLAS on one thread then);
    on one thread, and for small products, NumPy's. Same results either way."""
    require_backend("native")
    from fastlstm import _core
    from fastlstm.nn import layers

    calls = []
    monkeypatch.setattr(layers, "_core_gemm", lambda a, b, t=False: (calls.append(t), _core.gemm(a, b, t))[1])
    old = fastlstm.get_num_threads()
    fastlstm.set_num_threads(threads)
    try:
        for shape, big in (((4, 300, 67), True), ((5, 3, 67), False)):
            lin = nn.Linear(67, 41, activation="tanh", seed=3).train()
            x = rng.standard_normal(shape).astype(np.float32)
            dy = rng.standard_normal(shape[:-1] + (41,)).astype(np.float32)
            calls.clear()
            y = lin(x)
            dx = lin.backward(dy)
            assert calls == ([False, True, False] if big and expect_native else [])
            W, b = (lin.params[k].astype(F64) for k in ("weight", "bias"))
            x64 = x.astype(F64).reshape(-1, 67)
            y64 = np.tanh(x64 @ W.T + b)
            dz = dy.astype(F64).reshape(-1, 41) * (1 - y64 ** 2)
            np.testing.assert_allclose(y.reshape(-1, 41), y64, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(lin.grads["weight"], dz.T @ x64, rtol=1e-4, atol=1e-3)
            np.testing.assert_allclose(dx.reshape(-1, 67), dz @ W, rtol=1e-4, atol=1e-4)
    finally:
        fastlstm.set_num_threads(old)


def test_embedding_gradient_touches_used_rows_only(rng):
    emb = nn.Embedding(7, 3, padding_idx=0, dtype=F64, seed=2)
    ids = np.array([[1, 2, 2, 0], [5, 1, 0, 0]])
    emb.train()
    y = emb(ids)
    assert y.shape == (2, 4, 3)
    w = rng.standard_normal(y.shape)
    assert emb.backward(w) is None
    g = emb.grads["weight"]
    expect = np.zeros_like(g)
    for (b, t), i in np.ndenumerate(ids):
        if i != 0:
            expect[i] += w[b, t]
    np.testing.assert_allclose(g, expect)
    assert not g[[0, 3, 4, 6]].any()
    with pytest.raises(ValueError, match="token id 7 is outside the vocabulary"):
        emb(np.array([[7]]))
    with pytest.raises(TypeError, match="integer token ids"):
        emb(np.zeros((1, 2)))


@pytest.mark.parametrize("pool,directions", [(nn.LastStep, 1), (nn.LastStep, 2), (nn.MeanPool, None),
                                             (nn.MaxPool, None)])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_pooling_gradients_respect_lengths(pool, directions, with_lengths, rng):
    layer = pool(directions) if directions else pool()
    x = rng.standard_normal((4, 5, 6))
    lengths = np.array([5, 2, 0, 1]) if with_lengths else None
    _layer_gradcheck(layer, x, rng, lengths=lengths, max_entries=30)
    if with_lengths:  # padded steps never matter: NaN there changes nothing
        x2 = x.copy()
        x2[1, 2:] = np.nan
        x2[2] = np.nan
        layer.eval()
        np.testing.assert_array_equal(layer(x2, lengths=lengths), layer(x, lengths=lengths))
        assert not layer(x2, lengths=lengths)[2].any()  # an empty row pools to zeros


def test_last_step_picks_the_right_steps():
    x = np.arange(2 * 3 * 4, dtype=F64).reshape(2, 3, 4)
    y = nn.LastStep()(x, lengths=[3, 1])
    np.testing.assert_array_equal(y, [x[0, 2], x[1, 0]])
    y2 = nn.LastStep(directions=2)(x, lengths=[3, 1])
    np.testing.assert_array_equal(y2, [np.r_[x[0, 2, :2], x[0, 0, 2:]], np.r_[x[1, 0, :2], x[1, 0, 2:]]])


def test_layernorm_activations_flatten_gradients(rng):
    _layer_gradcheck(nn.LayerNorm(5, dtype=F64), rng.standard_normal((3, 4, 5)), rng)
    for act in (nn.ReLU(), nn.Tanh(), nn.Sigmoid(), nn.Flatten()):
        _layer_gradcheck(act, rng.standard_normal((3, 4, 5)), rng)


def test_dropout_train_and_eval(rng):
    d = nn.Dropout(0.3, seed=0)
    x = np.ones((200, 50), np.float32)
    assert d(x) is x  # inference: identity
    d.train()
    y = d(x)
    kept = y != 0
    assert 0.65 < kept.mean() < 0.75
    np.testing.assert_allclose(y[kept], 1 / 0.7, rtol=1e-6)
    np.testing.assert_array_equal(d.backward(np.ones_like(x)), y)
    with pytest.raises(ValueError, match="dropout probability"):
        nn.Dropout(1.0)


def test_sequential_lstm_stack_gradients(rng):
    model = nn.Sequential(nn.LSTM(2, 3, num_layers=2, bidirectional=True, batch_first=True, dtype=F64, seed=3,
                                  backend="reference"),
                          nn.MeanPool(), nn.Linear(6, 2, dtype=F64, seed=4))
    x = rng.standard_normal((3, 4, 2))
    _layer_gradcheck(model, x, rng, lengths=np.array([4, 1, 3]), max_entries=8)
    names = [n for n, _, _ in model.named_parameters()]
    assert names[0] == "0.weight_ih_l0" and "0.bias_hh_l1_reverse" in names and names[-1] == "2.bias"


def test_lstm_dropout_between_layers_gradients(rng):
    lstm = nn.LSTM(2, 3, num_layers=3, dropout=0.4, dtype=F64, seed=5, backend="reference", batch_first=True)
    x = rng.standard_normal((2, 5, 2))
    lstm.train()
    lstm._reseed([7])
    y1, _ = lstm(x)
    lstm._reseed([7])
    y2, _ = lstm(x)
    np.testing.assert_array_equal(y1, y2)  # the same generator state draws the same masks
    lstm.eval()
    y_eval, _ = lstm(x)
    assert not np.allclose(y1, y_eval)  # training mode really dropped something
    # gradient with the masks fixed: finite differences through the same masks
    w = rng.standard_normal(y1.shape)

    def loss():
        lstm._reseed([7])
        lstm.train()
        out = float((w * lstm(x)[0]).sum())
        lstm._tape = None
        return out

    lstm._reseed([7])
    lstm.zero_grad()
    lstm(x, training=True)
    dx, _ = lstm.backward(w)
    for name, arr, g in [("x", x, dx)] + [(n, v, g) for n, v, g in lstm.named_parameters()][:4]:
        idx, num = numeric_grad(loss, arr, rng, 10)
        assert_grad_close(name, g, idx, num)


@pytest.mark.parametrize("dropout", [0.0, 0.4])
def test_lstm_backward_without_dh0(dropout, rng, monkeypatch):
    """need_dh0=False: dh0 is None and every other gradient as with it, stacked, bidirectional,
    with and without dropout between layers; Sequential asks for it (its LSTMs get no hx)."""
    lstm = nn.LSTM(2, 3, num_layers=2, bidirectional=True, dropout=dropout, dtype=F64, seed=5, batch_first=True)
    x = rng.standard_normal((3, 5, 2))
    hx = tuple(rng.standard_normal((4, 3, 3)) for _ in range(2))
    dy = rng.standard_normal((3, 5, 6))
    got = []
    for need in (True, False):
        lstm._reseed([7])
        lstm.zero_grad()
        lstm(x, hx, lengths=np.array([5, 2, 4]), training=True)
        dx, (dh0, dc0) = lstm.backward(dy, need_dh0=need)
        got.append((dx, dh0, dc0, {n: g.copy() for n, _, g in lstm.named_parameters()}))
    (dx1, dh1, dc1, g1), (dx2, dh2, dc2, g2) = got
    assert dh1.shape == (4, 3, 3) and dh2 is None
    np.testing.assert_allclose(dx2, dx1, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dc2, dc1, rtol=1e-12, atol=1e-14)
    for n in g1:
        np.testing.assert_allclose(g2[n], g1[n], rtol=1e-12, atol=1e-14, err_msg=n)

    from fastlstm import core
    seen = []
    real = core.lstm_backward
    monkeypatch.setattr(core, "lstm_backward", lambda *a, **k: (seen.append(k.get("need_dh0", True)), real(*a, **k))[1])
    model = nn.Sequential(nn.LSTM(2, 3, batch_first=True, dtype=F64, seed=3), nn.LastStep(), nn.Linear(3, 1, dtype=F64))
    model.train()
    model(x)
    model.backward(np.ones((3, 1)))
    assert seen == [False]


def test_forget_bias_option():
    m = nn.LSTM(2, 4, forget_bias=1.0, seed=0)
    b = m.params["bias_ih_l0"] + m.params["bias_hh_l0"]
    np.testing.assert_array_equal(b[4:8], 1.0)
    assert np.abs(b[:4]).max() <= 2 * 0.5


def test_stateful_lstm_equals_one_call(rng):
    x = rng.standard_normal((3, 8, 2)).astype(np.float32)
    full = nn.LSTM(2, 5, batch_first=True, seed=0)
    y, (h, c) = full(x)
    st = nn.LSTM(2, 5, batch_first=True, seed=0, stateful=True)
    ys = [st(x[:, s:s + 3])[0] for s in range(0, 8, 3)]
    np.testing.assert_allclose(np.concatenate(ys, axis=1), y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(st.state[0], h, rtol=1e-5, atol=1e-6)
    st.reset_states()
    assert st.state is None


def test_module_protocol_state_dict_and_modes(rng):
    model = nn.Sequential(nn.LSTM(2, 4, batch_first=True, seed=0), nn.LastStep(), nn.Dropout(0.2),
                          nn.Linear(4, 3, seed=1))
    assert not model.training and not model[0].training
    model.train()
    assert all(m.training for _, m in model.named_modules())
    model.eval()
    sd = model.state_dict()
    other = nn.Sequential(nn.LSTM(2, 4, batch_first=True, seed=9), nn.LastStep(), nn.Dropout(0.2),
                          nn.Linear(4, 3, seed=9))
    other.load_state_dict(sd)
    x = rng.standard_normal((2, 5, 2)).astype(np.float32)
    np.testing.assert_array_equal(model(x), other(x))
    with pytest.raises(KeyError, match="missing"):
        other.load_state_dict({k: v for k, v in sd.items() if k != "3.bias"})
    bad = dict(sd)
    bad["3.bias"] = np.zeros(4)
    before = other.state_dict()
    with pytest.raises(ValueError, match=r"3.bias: expected shape \(3,\)"):
        other.load_state_dict(bad)
    for k in before:  # nothing half-loaded
        np.testing.assert_array_equal(other.state_dict()[k], before[k])
    text = model.summary()
    assert "LSTM(2, 4)" in text and f"total parameters: {model.num_parameters():,}" in text
    assert model.num_parameters() == 4 * 4 * (2 + 4) + 2 * 16 + 4 * 3 + 3
    m2 = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(m2(x), model(x))


def test_backward_without_training_forward_is_a_clear_error(rng):
    lin = nn.Linear(2, 2)
    lin(np.zeros((1, 2), np.float32))
    with pytest.raises(RuntimeError, match="training mode"):
        lin.backward(np.zeros((1, 2), np.float32))
    lstm = nn.LSTM(2, 2)
    with pytest.raises(RuntimeError, match="training mode"):
        lstm.backward(np.zeros((1, 1, 2), np.float32))


# ---- losses ----

def _loss_gradcheck(loss_fn, pred, target, lengths, rng):
    _, d = loss_fn(pred, target, lengths)
    idx, num = numeric_grad(lambda: loss_fn(pred, target, lengths)[0], pred, rng, 40)
    assert_grad_close(type(loss_fn).__name__, d, idx, num)


@pytest.mark.parametrize("loss_fn", [nn.MSELoss(), nn.L1Loss(), nn.HuberLoss(0.7), nn.BCEWithLogitsLoss()])
@pytest.mark.parametrize("per_step", [False, True])
def test_regression_losses(loss_fn, per_step, rng):
    shape = (4, 5, 2) if per_step else (4, 2)
    pred = rng.standard_normal(shape)
    target = rng.random(shape) if isinstance(loss_fn, nn.BCEWithLogitsLoss) else rng.standard_normal(shape)
    lengths = np.array([5, 0, 2, 3]) if per_step else None
    _loss_gradcheck(loss_fn, pred, target, lengths, rng)
    if per_step:
        _, d = loss_fn(pred, target, lengths)
        assert not d[1].any() and not d[2, 2:].any()  # padded steps get no gradient
        p2 = pred.copy()
        p2[1] = 1e6
        p2[2, 2:] = -1e6
        assert loss_fn(p2, target, lengths)[0] == pytest.approx(loss_fn(pred, target, lengths)[0])


def test_mse_matches_the_formula(rng):
    pred, target = rng.standard_normal((3, 4, 1)), rng.standard_normal((3, 4, 1))
    lengths = np.array([4, 2, 1])
    mask = np.arange(4)[None, :] < lengths[:, None]
    expect = ((pred - target)[mask] ** 2).mean()
    assert nn.MSELoss()(pred, target, lengths)[0] == pytest.approx(expect)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_gradients_and_torch_parity(smoothing, rng):
    torch = require("torch")
    logits = rng.standard_normal((4, 6, 5))
    target = rng.integers(0, 5, (4, 6))
    target[0, 1] = -100
    lengths = np.array([6, 3, 1, 4])
    ce = nn.CrossEntropyLoss(label_smoothing=smoothing)
    _loss_gradcheck(ce, logits, target, lengths, rng)
    mask = np.arange(6)[None, :] < lengths[:, None]
    t = np.where(mask, target, -100)
    ref = torch.nn.functional.cross_entropy(torch.tensor(logits).reshape(-1, 5), torch.tensor(t).reshape(-1),
                                            ignore_index=-100, label_smoothing=smoothing)
    assert ce(logits, target, lengths)[0] == pytest.approx(float(ref), rel=1e-10)
    # per sequence
    l2, y2 = rng.standard_normal((7, 3)), rng.integers(0, 3, 7)
    _loss_gradcheck(nn.CrossEntropyLoss(), l2, y2, None, rng)
    with pytest.raises(ValueError, match="target 3 is out of range for 3 classes"):
        nn.CrossEntropyLoss()(l2, np.full(7, 3))


def test_quantile_and_gaussian_losses(rng):
    q = nn.QuantileLoss((0.1, 0.5, 0.9))
    _loss_gradcheck(q, rng.standard_normal((6, 3)) + 0.01, rng.standard_normal(6), None, rng)
    g = nn.GaussianNLLLoss()
    _loss_gradcheck(g, rng.standard_normal((6, 2)), rng.standard_normal(6), None, rng)


def test_metrics():
    logits = np.array([[[2, 1], [0, 3], [5, 0]], [[0, 1], [1, 0], [9, 9]]], float)
    y = np.array([[0, 1, 1], [1, 1, 0]])
    assert nn.accuracy(logits, y) == pytest.approx(4 / 6)
    assert nn.accuracy(logits, y, lengths=[2, 1]) == pytest.approx(3 / 3)
    assert nn.rmse(np.array([1.0, 3.0]), np.array([0.0, 0.0])) == pytest.approx(np.sqrt(5))
    assert nn.mae(np.array([[1.0], [3.0]]), np.array([0.0, 0.0])) == pytest.approx(2)


def test_training_step_runs_on_the_active_backend(rng):
    """The layers call the kernels of the active backend (native in the full suite)."""
    lstm = nn.LSTM(2, 3, batch_first=True)
    lstm.train()
    lstm(rng.standard_normal((2, 4, 2)).astype(np.float32))
    assert lstm._tape.backend_name == fastlstm.backends.active().NAME
