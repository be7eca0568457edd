"""Weights in and out of fastlstm: PyTorch state_dicts, Keras (layouts and real .keras /
.weights.h5 files), ONNX tensors, and ONNX export checked in ONNX Runtime."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ALLOW_MISSING, require

import fastlstm
from fastlstm.interop import weights as W

DATA = Path(__file__).parent / "data"


def _lstm(seed, I=3, H=5, L=2, bi=True, bf=True, bias=True):
    m = fastlstm.LSTM(I, H, L, bias=bias, batch_first=bf, bidirectional=bi, seed=seed)
    rng = np.random.default_rng(seed)
    m.load_state_dict({k: (rng.standard_normal(v.shape) * 0.5).astype(np.float32) for k, v in m.params.items()})
    return m


def _same_params(a, b):
    assert a.params.keys() == b.params.keys()
    for k in a.params:
        assert a.params[k].dtype == b.params[k].dtype and np.array_equal(a.params[k], b.params[k]), k


# --- PyTorch -------------------------------------------------------------------------------

def test_torch_state_dict_both_ways():
    torch = require("torch")
    m = _lstm(0, L=2, bi=True, bf=False)
    ref = torch.nn.LSTM(3, 5, 2, bidirectional=True)
    ref.load_state_dict(W.to_torch_state_dict(m))
    x = np.random.default_rng(1).standard_normal((6, 4, 3)).astype(np.float32)
    y, (h, c) = m(x)
    with torch.no_grad():
        y_t, (h_t, c_t) = ref(torch.from_numpy(x))
    np.testing.assert_allclose(y, y_t.numpy(), atol=2e-6)
    np.testing.assert_allclose(c, c_t.numpy(), atol=2e-6)
    # from a bigger model's state_dict: configuration read from names and shapes
    state = {"enc." + k: v for k, v in ref.state_dict().items()} | {"head.weight": torch.zeros(2, 10)}
    back = W.from_torch_state_dict(state, prefix="enc.", batch_first=False)
    assert (back.num_layers, back.bidirectional, back.hidden_size, back.input_size) == (2, True, 5, 3)
    _same_params(back, m)
    with pytest.raises(ValueError, match="no torch LSTM parameters"):
        W.from_torch_state_dict(state, prefix="dec.")
    with pytest.raises(ValueError, match="proj_size"):
        W.from_torch_state_dict(torch.nn.LSTM(3, 5, proj_size=2).state_dict())


# --- Keras ---------------------------------------------------------------------------------

@pytest.mark.parametrize("bi,bias", [(False, True), (True, True), (True, False)])
def test_keras_layout_round_trips(bi, bias):
    m = _lstm(2, L=2, bi=bi, bias=bias)
    kw = W.to_keras_weights(m)
    D = 2 if bi else 1
    assert len(kw) == 2 and len(kw[0]) == D * (3 if bias else 2)
    assert kw[0][0].shape == (3, 20) and kw[0][1].shape == (5, 20) and kw[1][0].shape == (5 * D, 20)
    back = W.from_keras_weights(kw)
    # Keras -> fastlstm -> Keras: exact, array for array
    for a, b in zip(sum(kw, []), sum(W.to_keras_weights(back), [])):
        assert np.array_equal(a, b)
    # fastlstm -> Keras -> fastlstm: one bias (b_ih + b_hh), the same function
    x = np.random.default_rng(3).standard_normal((4, 7, 3)).astype(np.float32)
    lengths = np.array([7, 2, 5, 1])
    for a, b in zip(m(x, lengths=lengths)[0:1] + m(x, lengths=lengths)[1], back(x, lengths=lengths)[0:1] + back(x, lengths=lengths)[1]):
        np.testing.assert_allclose(a, b, atol=1e-6)
    if bias:
        np.testing.assert_array_equal(back.params["bias_hh_l0"], 0)


def test_keras_layout_bad_shapes():
    with pytest.raises(ValueError, match="kernel"):
        W.torch_from_keras_layout(np.zeros((3, 20)), np.zeros((5, 16)))
    with pytest.raises(ValueError, match="bias"):
        W.torch_from_keras_layout(np.zeros((3, 20)), np.zeros((5, 20)), np.zeros(16))
    with pytest.raises(ValueError, match="3 arrays"):
        W.from_keras_weights([[np.zeros((3, 20))] * 5])
    w, b = W.dense_from_keras(np.arange(6.0).reshape(2, 3), np.ones(3))
    assert w.shape == (3, 2) and np.array_equal(W.dense_to_keras(w, b)[0], np.arange(6.0).reshape(2, 3))


def _check_keras_files(folder: Path, expected, names):
    from fastlstm.interop.keras import load_keras, read_keras

    for fname in names:
        model = load_keras(folder / fname)
        if fname.startswith("keras_small_seq") or fname.startswith("seq"):
            kinds = [l[0] for l in model.layers]
            assert kinds == ["lstm", "lstm", "dense", "dense"]
            assert model.layers[0][1].bidirectional and not model.layers[1][1].bidirectional
            if fname.endswith(".weights.h5"):        # a bare weights file holds no activations
                assert model.layers[1][2] is None and model.layers[2][1][2] is None
                model.layers[1][2] = False
                model.layers[2][1] = model.layers[2][1][:2] + ("tanh",)
            got = model.predict(expected["x"], lengths=expected["lengths"])
            want = expected["seq"]
        else:
            if fname.endswith(".weights.h5"):
                model.layers[0][2] = True
            got = model.predict(expected["x"])
            want = expected["step"]
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-4, err_msg=fname)
        assert all(isinstance(k.weights, list) for k in read_keras(folder / fname))


def test_stored_keras_files_predict_what_keras_predicted():
    """Files written by Keras 3 (tests/data/make_keras_model.py, seed 0); read with h5py only."""
    require("h5py")
    expected = np.load(DATA / "keras_small_expected.npz")
    _check_keras_files(DATA, expected, ["keras_small_seq.keras", "keras_small_step.weights.h5"])


def test_real_keras_model_predictions(tmp_path):
    """Keras 3 on its torch backend builds, saves and predicts fresh models in a subprocess (its
    own process: Keras' import-time state stays out of this one); fastlstm must predict the same
    from the .keras and the bare .weights.h5 files, variable lengths (Masking) included."""
    require("h5py")
    if importlib.util.find_spec("keras") is None:
        if "keras" in ALLOW_MISSING:
            pytest.skip("keras not installed (allowed by FASTLSTM_ALLOW_MISSING)")
        pytest.fail("required test tier 'keras' is missing: install the test extra, or set "
                    "FASTLSTM_ALLOW_MISSING=keras to skip it deliberately.")
    env = dict(os.environ, KERAS_BACKEND="torch")
    env.pop("PYTHONWARNINGS", None)
    proc = subprocess.run([sys.executable, str(DATA / "make_keras_model.py"), str(tmp_path), "7"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = np.load(tmp_path / "expected.npz")
    _check_keras_files(tmp_path, expected, ["seq.keras", "seq.weights.h5", "step.keras", "step.weights.h5"])


def test_keras_unsupported_activation_is_rejected():
    from fastlstm.interop.keras import KerasLayer

    w = W.to_keras_weights(_lstm(1, L=1, bi=False))[0]
    layer = KerasLayer("lstm", "LSTM", {"activation": "relu", "recurrent_activation": "sigmoid"}, w)
    with pytest.raises(ValueError, match="activation='relu'"):
        layer.to_fastlstm()
    layer = KerasLayer("lstm", "LSTM", {"go_backwards": True}, w)
    with pytest.raises(ValueError, match="go_backwards"):
        layer.to_fastlstm()


# --- ONNX ----------------------------------------------------------------------------------

@pytest.mark.parametrize("bi,bias", [(False, True), (True, True), (True, False)])
def test_onnx_weights_round_trip_exact(bi, bias):
    m = _lstm(4, L=3, bi=bi, bias=bias)
    ow = W.to_onnx_weights(m)
    D, H = (2 if bi else 1), 5
    assert ow[0][0].shape == (D, 4 * H, 3) and ow[1][1].shape == (D, 4 * H, H)
    assert (ow[0][2] is None) == (not bias) and (not bias or ow[0][2].shape == (D, 8 * H))
    # gate order i,o,f,c: ONNX block 1 (o) is our block 3
    np.testing.assert_array_equal(ow[0][0][0, H:2 * H], m.params["weight_ih_l0"][3 * H:])
    _same_params(W.from_onnx_weights(ow), m)


def _ort(model_or_path):
    ort = require("onnxruntime")
    require("onnx")
    src = model_or_path if isinstance(model_or_path, str) else model_or_path.SerializeToString()
    return ort.InferenceSession(src, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("L,bi,bf", [(1, False, True), (2, True, True), (3, True, False), (2, False, False)])
def test_onnx_export_lstm_matches_fastlstm(L, bi, bf, tmp_path):
    from fastlstm.interop import export_onnx

    m = _lstm(L * 10 + bi, I=4, H=7, L=L, bi=bi, bf=bf)
    path = export_onnx(m, tmp_path / "lstm.onnx")
    assert os.listdir(tmp_path) == ["lstm.onnx"]          # atomic: no temp file left behind
    sess = _ort(path)
    rng = np.random.default_rng(L)
    for B, T in ((5, 9), (1, 1), (3, 4)):
        x = rng.standard_normal((B, T, 4) if bf else (T, B, 4)).astype(np.float32)
        lengths = rng.integers(1, T + 1, B)
        lengths[-1] = T
        y, (h, c) = m(x, lengths=lengths)
        oy, oh, oc = sess.run(None, {"x": x, "sequence_lens": lengths.astype(np.int32)})
        for name, a, b in (("y", oy, y), ("h_n", oh, h), ("c_n", oc, c)):
            assert a.shape == b.shape, name
            np.testing.assert_allclose(a, b, atol=3e-6, rtol=1e-5, err_msg=name)


class _LinearLike:
    def __init__(self, W, b, activation=None):
        self.params = {"weight": W, "bias": b}
        self.activation = activation


@pytest.mark.parametrize("head_on", ["last_step", "final_state", "per_step"])
@pytest.mark.parametrize("bi", [False, True])
def test_onnx_export_with_head_variable_lengths(head_on, bi):
    from fastlstm.interop.onnx import to_onnx_model

    m = _lstm(7, I=2, H=6, L=2, bi=bi, bf=True)
    F = 6 * (2 if bi else 1)
    rng = np.random.default_rng(9)
    Wh, bh = rng.standard_normal((3, F)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    x = rng.standard_normal((6, 8, 2)).astype(np.float32)
    lengths = np.array([8, 3, 1, 8, 5, 2])
    y, (h, _) = m(x, lengths=lengths)
    feats = {"last_step": y[np.arange(6), lengths - 1],
             "final_state": np.concatenate(list(h[-(2 if bi else 1):]), axis=-1),
             "per_step": y}[head_on]
    for head, act in (((Wh, bh), None), (_LinearLike(Wh, bh, "tanh"), "tanh")):
        want = feats @ Wh.T + bh
        if act:
            want = np.tanh(want)
        (got,) = _ort(to_onnx_model(m, head=head, head_on=head_on)).run(
            None, {"x": x, "sequence_lens": lengths.astype(np.int32)})
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=3e-6, rtol=1e-5)
    if bi and head_on == "last_step":
        # the two readings differ for a bidirectional model (the reverse half of the last step
        # has seen one step): the choice is real
        assert not np.allclose(feats, np.concatenate(list(h[-2:]), axis=-1))


def test_onnx_export_without_lengths_and_bad_arguments():
    from fastlstm.interop.onnx import to_onnx_model

    m = _lstm(3, I=2, H=4, L=1, bi=False, bf=True)
    x = np.random.default_rng(0).standard_normal((3, 5, 2)).astype(np.float32)
    sess = _ort(to_onnx_model(m, head=(np.ones((1, 4), np.float32), np.zeros(1, np.float32)), lengths=False))
    assert [i.name for i in sess.get_inputs()] == ["x"]
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], m(x)[0][:, -1].sum(-1, keepdims=True), atol=3e-6)
    with pytest.raises(ValueError, match="head_on"):
        to_onnx_model(m, head=(np.ones((1, 4)),), head_on="mean")
    with pytest.raises(ValueError, match="expects 5 input features"):
        to_onnx_model(m, head=(np.ones((1, 5)), np.zeros(1)))
    with pytest.raises(ValueError, match="bias"):
        to_onnx_model(m, head=(np.ones((1, 4)), np.zeros(2)))
    with pytest.raises(TypeError, match="fastlstm LSTM"):
        to_onnx_model(object())


# --- fastlstm.nn models ----------------------------------------------------------------------

def _nn_models():
    from fastlstm import nn

    return {
        "bi-laststep-tanh": nn.Sequential(nn.LSTM(3, 5, 2, batch_first=True, bidirectional=True, seed=1),
                                          nn.LastStep(2), nn.Linear(10, 4, activation="tanh", seed=2)),
        "laststep": nn.Sequential(nn.LSTM(3, 5, batch_first=True, seed=1), nn.LastStep(), nn.Linear(5, 2, seed=2)),
        "embedding-per-step": nn.Sequential(nn.Embedding(11, 4, seed=0), nn.LSTM(4, 6, batch_first=True, seed=1),
                                            nn.Dropout(0.3), nn.Linear(6, 11, seed=2)),
        "meanpool-mlp": nn.Sequential(nn.LSTM(3, 5, batch_first=True, bidirectional=True, seed=1), nn.MeanPool(),
                                      nn.Linear(10, 3, seed=2), nn.ReLU(), nn.Linear(3, 1, seed=3)),
        "head-then-laststep": nn.Sequential(nn.LSTM(3, 5, batch_first=True, seed=1), nn.Linear(5, 3, seed=2),
                                            nn.LastStep()),
    }


@pytest.mark.parametrize("name", list(_nn_models()))
@pytest.mark.parametrize("lengths", [True, False])
def test_onnx_export_sequential(name, lengths):
    from fastlstm.interop.onnx import to_onnx_model

    model = _nn_models()[name].eval()
    rng = np.random.default_rng(len(name))
    x = rng.integers(0, 11, (5, 6)) if name.startswith("embedding") else rng.standard_normal((5, 6, 3)).astype(np.float32)
    lens = np.array([6, 2, 0, 5, 1]) if lengths else None       # a row of length 0 in the middle
    want = model(x, lengths=lens)
    feeds = {"x": x} | ({"sequence_lens": lens.astype(np.int32)} if lengths else {})
    (got,) = _ort(to_onnx_model(model, lengths=lengths)).run(None, feeds)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=3e-6, rtol=1e-5)


def test_trained_model_exports_and_serves_the_same(tmp_path):
    """fit() a small classifier on variable-length sequences, export it, serve it in ONNX Runtime."""
    from fastlstm import nn
    from fastlstm.interop import export_onnx
    from fastlstm.train import fit

    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 12, 2)).astype(np.float32)
    lengths = rng.integers(3, 13, 64)
    y = (X[np.arange(64), lengths - 1, 0] > 0).astype(np.int64)
    model = nn.Sequential(nn.LSTM(2, 8, batch_first=True, bidirectional=True, seed=0), nn.LastStep(2),
                          nn.Linear(16, 2, seed=1))
    before = model.state_dict()
    fit(model, X, y, loss="cross_entropy", lengths=lengths, epochs=2, batch_size=16, verbose=0)
    assert any(not np.array_equal(before[k], v) for k, v in model.state_dict().items())
    model.eval()
    path = export_onnx(model, tmp_path / "clf.onnx")
    (got,) = _ort(str(path)).run(None, {"x": X, "sequence_lens": lengths.astype(np.int32)})
    np.testing.assert_allclose(got, model(X, lengths=lengths), atol=3e-6, rtol=1e-5)


def test_onnx_export_sequential_rejects_what_it_cannot_export():
    from fastlstm import nn
    from fastlstm.interop.onnx import to_onnx_model

    with pytest.raises(ValueError, match="MaxPool"):
        to_onnx_model(nn.Sequential(nn.LSTM(2, 3, batch_first=True), nn.MaxPool(), nn.Linear(3, 1)))
    with pytest.raises(ValueError, match="batch_first"):
        to_onnx_model(nn.Sequential(nn.LSTM(2, 3), nn.LastStep(), nn.Linear(3, 1)))
    with pytest.raises(ValueError, match="own head"):
        to_onnx_model(nn.Sequential(nn.LSTM(2, 3, batch_first=True)), head=(np.ones((1, 3)),))


def test_keras_file_to_sequential_to_onnx():
    """Stored Keras file -> fastlstm.nn.Sequential -> ONNX: each predicts what Keras predicted."""
    require("h5py")
    from fastlstm.interop.keras import load_keras
    from fastlstm.interop.onnx import to_onnx_model

    expected = np.load(DATA / "keras_small_expected.npz")
    seq = load_keras(DATA / "keras_small_seq.keras").to_sequential()
    assert [type(m).__name__ for m in seq.layers] == ["LSTM", "LSTM", "LastStep", "Linear", "Linear"]
    x, lengths = expected["x"], expected["lengths"]
    np.testing.assert_allclose(seq(x, lengths=lengths), expected["seq"], atol=2e-5, rtol=1e-4)
    (got,) = _ort(to_onnx_model(seq)).run(None, {"x": x, "sequence_lens": lengths.astype(np.int32)})
    np.testing.assert_allclose(got, expected["seq"], atol=2e-5, rtol=1e-4)
    step = load_keras(DATA / "keras_small_step.weights.h5")
    with pytest.raises(ValueError, match="return_sequences"):
        step.to_sequential()
    step.layers[0][2] = True
    np.testing.assert_allclose(step.to_sequential()(x), expected["step"], atol=2e-5, rtol=1e-4)
