"""Read a Keras 3 `.keras` or `.weights.h5` file's LSTM, Bidirectional(LSTM), Dense and Embedding
weights into fastlstm (needs h5py; Keras itself is not needed).

    layers = read_keras("model.keras")          # [KerasLayer(name, class_name, config, weights)]
    lstm = layers[1].to_fastlstm()              # a batch_first fastlstm.LSTM
    model = load_keras("model.keras")           # the whole stack as one fastlstm model

File layout (Keras 3 saving_lib): a `.keras` file is a zip holding config.json (the architecture)
and model.weights.h5; in the h5, a model's layers sit under layers/<key> where key is the layer
class in snake_case, numbered in model order (lstm, lstm_1, ...): LSTM weights in
<key>/cell/vars/{0,1,2} = kernel (I, 4H), recurrent_kernel (H, 4H), bias (4H,), gates i,f,c,o;
Bidirectional in <key>/forward_layer/... and <key>/backward_layer/...; Dense in <key>/vars/{0,1} =
kernel (in, out), bias. A bare `.weights.h5` has no architecture: its layers are taken as the
recurrent/embedding layers first and the Dense layers after (each kind in its numbered order),
checked by chaining their shapes; pass `order=[keys]` for anything else.

Keras semantics kept: activation tanh and recurrent_activation sigmoid (other activations raise),
go_backwards only inside Bidirectional, merge_mode "concat". return_sequences=False returns each
row's final state — for Bidirectional [h_fwd(last real step), h_bwd(first step)], which is
fastlstm's h_n of the last layer, not y at the last step (see load_keras).
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from dataclasses import dataclass, field

import numpy as np

from .weights import dense_from_keras, from_keras_weights

_RECURRENT = ("LSTM", "Bidirectional", "Embedding")
_SUPPORTED = _RECURRENT + ("Dense", "Masking", "Dropout", "InputLayer", "Activation")


@dataclass
class KerasLayer:
    """One layer of a Keras file: its h5 key, class, config (empty from a bare .weights.h5) and
    its weight arrays in Keras' get_weights() order."""

    key: str
    class_name: str
    config: dict = field(default_factory=dict)
    weights: list = field(default_factory=list)

    def to_fastlstm(self, lstm_cls=None):
        """LSTM / Bidirectional -> a batch_first fastlstm LSTM; Dense -> (weight (out, in), bias,
        activation); Embedding -> its (vocab, dim) table."""
        if self.class_name in ("LSTM", "Bidirectional"):
            _check_lstm_config(self)
            return from_keras_weights([self.weights], batch_first=True, lstm_cls=lstm_cls)
        if self.class_name == "Dense":
            W, b = dense_from_keras(*self.weights)
            act = self.config.get("activation", "linear")
            return W, b, None if act in (None, "linear") else act
        if self.class_name == "Embedding":
            return np.asarray(self.weights[0])
        raise ValueError(f"layer {self.key!r} ({self.class_name}) has no weights to convert")

    @property
    def return_sequences(self) -> bool:
        cfg = self.config.get("layer", {}).get("config", {}) if self.class_name == "Bidirectional" else self.config
        return bool(cfg.get("return_sequences", False))


def _check_lstm_config(layer: KerasLayer) -> None:
    if layer.class_name == "Bidirectional":
        if layer.config.get("merge_mode", "concat") != "concat":
            raise ValueError(f"{layer.key}: Bidirectional merge_mode {layer.config['merge_mode']!r}; only 'concat'")
        cfgs = [layer.config.get("layer", {}).get("config", {})]
    else:
        cfgs = [layer.config]
        if layer.config.get("go_backwards"):
            raise ValueError(f"{layer.key}: go_backwards=True outside Bidirectional is not supported")
    for cfg in cfgs:
        for k, want in (("activation", "tanh"), ("recurrent_activation", "sigmoid")):
            if cfg.get(k, want) != want:
                raise ValueError(f"{layer.key}: {k}={cfg[k]!r}; fastlstm's LSTM computes {k}={want!r}")


def _snake(name: str) -> str:
    # keras.src.utils.naming.to_snake_case
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    name = re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()
    return name


def _canonical(a: np.ndarray) -> np.ndarray:
    # h5py hands out equivalent but non-builtin dtype objects; the native extension compares
    # dtypes by identity, so rebuild the array with NumPy's own float32/float64 dtype
    return np.asarray(a, dtype=np.dtype(a.dtype.name))


def _vars(group) -> list:
    v = group.get("vars")
    return [] if v is None else [_canonical(np.array(v[str(k)])) for k in range(len(v))]


def _layer_weights(group, class_name: str) -> list:
    if class_name == "LSTM":
        return _vars(group["cell"])
    if class_name == "Bidirectional":
        return _vars(group["forward_layer"]["cell"]) + _vars(group["backward_layer"]["cell"])
    return _vars(group)


def _infer_class(group) -> str:
    if "forward_layer" in group and "backward_layer" in group:
        return "Bidirectional"
    if "cell" in group:
        return "LSTM"
    w = _vars(group)
    if len(w) in (1, 2) and w[0].ndim == 2 and (len(w) == 1 or w[1].shape == (w[0].shape[1],)):
        return "Dense"
    return "Unknown"


def _config_layers(config: dict) -> list:
    """(class_name, config) of every layer of a Sequential/Functional config, model order, no InputLayer."""
    cfg = config.get("config", {})
    if "layers" not in cfg:
        raise ValueError(f"unsupported Keras model class {config.get('class_name')!r}: no layer list")
    return [(lc["class_name"], lc.get("config", {})) for lc in cfg["layers"] if lc["class_name"] != "InputLayer"]


def read_keras(path, order=None) -> list:
    """The layers of a Keras 3 `.keras` or `.weights.h5` file, in model order (see the module doc)."""
    import h5py

    path = os.fspath(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            config = json.loads(z.read("config.json"))
            h5bytes = z.read("model.weights.h5")
        f = h5py.File(io.BytesIO(h5bytes), "r")
    else:
        config = None
        f = h5py.File(path, "r")
    with f:
        if "layers" not in f:
            raise ValueError(f"{path}: no 'layers' group; not a Keras 3 weights file")
        groups = f["layers"]
        if config is not None:
            used: dict = {}
            layers = []
            for class_name, cfg in _config_layers(config):
                base = _snake(class_name)
                n = used.get(base, 0)
                used[base] = n + 1
                key = base if n == 0 else f"{base}_{n}"
                if key not in groups:
                    raise ValueError(f"{path}: layer {cfg.get('name')!r} expected at layers/{key}, not found")
                layers.append(KerasLayer(key, class_name, cfg, _layer_weights(groups[key], class_name)))
            return layers
        keys = list(order) if order is not None else _default_order(groups)
        layers = []
        for key in keys:
            if key not in groups:
                raise ValueError(f"{path}: no layer layers/{key}; the file holds {sorted(groups)}")
            cls = _infer_class(groups[key])
            if key.startswith("embedding"):
                cls = "Embedding"
            layers.append(KerasLayer(key, cls, {}, _layer_weights(groups[key], cls) if cls != "Unknown" else []))
        return layers


def _io_dims(group, cls):
    """(input features, output features) of a recurrent or Dense layer group."""
    w = _layer_weights(group, cls)
    if cls == "LSTM":
        return w[0].shape[0], w[1].shape[0]
    if cls == "Bidirectional":
        return w[0].shape[0], 2 * w[1].shape[0]
    return w[0].shape[0], w[0].shape[1]


def _interleavings(a: list, b: list):
    if not a or not b:
        yield a + b
        return
    for rest in _interleavings(a[1:], b):
        yield [a[0]] + rest
    for rest in _interleavings(a, b[1:]):
        yield [b[0]] + rest


def _default_order(groups) -> list:
    """Embedding, then the recurrent layers, then Dense: each class in its numbered order; LSTM and
    Bidirectional interleaved in the one way whose shapes chain (else an error)."""
    def rank(key):
        m = re.match(r"^(.*?)(?:_(\d+))?$", key)
        return m.group(1), int(m.group(2) or 0)

    keys = [k for k in groups if _vars_any(groups[k])]
    by = {c: sorted((k for k in keys if rank(k)[0] == c), key=lambda k: rank(k)[1])
          for c in ("embedding", "lstm", "bidirectional", "dense")}
    other = [k for k in keys if rank(k)[0] not in by]
    if other:
        raise ValueError(f"layers {other} have no known place in a bare .weights.h5; pass order=[...] "
                         "or use the .keras file")
    cls = {k: _infer_class(groups[k]) for k in by["lstm"] + by["bidirectional"] + by["dense"]}
    dims = {k: _io_dims(groups[k], cls[k]) for k in cls}
    fits = []
    for rec in _interleavings(by["lstm"], by["bidirectional"]):
        chain = rec + by["dense"]
        if all(dims[a][1] == dims[b][0] for a, b in zip(chain, chain[1:])):
            fits.append(rec)
    if len(fits) != 1:
        raise ValueError(f"the layer order of a bare .weights.h5 cannot be recovered ({len(fits)} orders fit "
                         "the shapes); pass order=[...] or use the .keras file")
    return by["embedding"] + fits[0] + by["dense"]


def _vars_any(group) -> bool:
    found = []
    group.visit(lambda name: found.append(name) if name.endswith("vars/0") else None)
    return bool(found)


_DENSE_ACT = {
    "relu": lambda z: np.maximum(z, 0),
    "tanh": np.tanh,
    "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
    "softmax": lambda z: (lambda e: e / e.sum(axis=-1, keepdims=True))(np.exp(z - z.max(axis=-1, keepdims=True))),
}


class KerasModel:
    """A Keras file's weight-bearing layers converted to fastlstm, runnable with Keras' semantics.

    layers: [("embedding", table), ("lstm", fastlstm LSTM (batch_first), return_sequences),
             ("dense", (weight (out, in), bias, activation))] in model order.
    """

    def __init__(self, layers: list):
        self.layers = layers

    def predict(self, x, lengths=None):
        """x (B, T, I) float (or (B, T) int ids before an Embedding); lengths (B,) or None stands
        for Keras' Masking (padded steps skipped, the state carried). Returns what Keras predicts."""
        h = np.asarray(x)
        for kind, obj, *rest in self.layers:
            if kind == "embedding":
                h = obj[h]
            elif kind == "lstm":
                if rest[0] is None:
                    raise ValueError("return_sequences of the last LSTM is unknown (a bare .weights.h5): "
                                     "set model.layers[k][2] to True or False")
                y, (h_n, _) = obj(np.ascontiguousarray(h, obj.dtype), lengths=lengths)
                if rest[0] is False:     # return_sequences=False: the final state(s) of the last layer
                    D = 2 if obj.bidirectional else 1
                    h = np.concatenate(list(h_n[-D:]), axis=-1)
                else:
                    h = y
            else:
                W, b, act = obj
                h = h @ W.T + (0 if b is None else b)
                if act is not None:
                    if act not in _DENSE_ACT:
                        raise ValueError(f"Dense activation {act!r} is not supported")
                    h = _DENSE_ACT[act](h)
        return h

    def to_sequential(self):
        """The same stack as a fastlstm.nn.Sequential (batch-first; pass lengths for Keras' Masking):
        Embedding -> nn.Embedding, LSTM -> nn.LSTM (+ nn.LastStep(directions) where Keras returns
        the final state: for Bidirectional that is forward at the last real step and backward at
        t = 0, exactly LastStep(2)), Dense -> nn.Linear with its activation (linear, relu, tanh,
        sigmoid; softmax has no fastlstm layer and raises)."""
        from .. import nn

        mods = []
        for kind, obj, *rest in self.layers:
            if kind == "embedding":
                m = nn.Embedding(*obj.shape, dtype=obj.dtype)
                m.load_state_dict({"weight": obj})
                mods.append(m)
            elif kind == "lstm":
                if rest[0] is None:
                    raise ValueError("return_sequences of an LSTM is unknown (a bare .weights.h5): set "
                                     "model.layers[k][2] to True or False first")
                m = nn.LSTM(obj.input_size, obj.hidden_size, obj.num_layers, bias=obj.bias, batch_first=True,
                            bidirectional=obj.bidirectional, dtype=obj.dtype)
                m.load_state_dict(obj.state_dict())
                mods.append(m)
                if rest[0] is False:
                    mods.append(nn.LastStep(2 if obj.bidirectional else 1))
            else:
                W, b, act = obj
                if act not in (None, "relu", "tanh", "sigmoid"):
                    raise ValueError(f"Dense activation {act!r} has no fastlstm.nn.Linear equivalent")
                m = nn.Linear(W.shape[1], W.shape[0], bias=b is not None, activation=act, dtype=W.dtype)
                m.load_state_dict({"weight": W, **({"bias": b} if b is not None else {})})
                mods.append(m)
        return nn.Sequential(*mods)


def load_keras(path, order=None, lstm_cls=None) -> KerasModel:
    """The weight-bearing layers of a Keras file converted to fastlstm, in model order, as a
    KerasModel (its .layers: ("lstm", fastlstm LSTM, return_sequences or None from a bare
    .weights.h5), ("dense", (W, b, activation)), ("embedding", table)). Masking / Dropout /
    InputLayer are inference no-ops and left out. A bare .weights.h5 has no activations and no
    return_sequences: Dense layers come without activation and the last recurrent layer's
    return_sequences is None (set it before predict)."""
    out = []
    for layer in read_keras(path, order):
        if layer.class_name in ("LSTM", "Bidirectional"):
            rs = layer.return_sequences if layer.config else None   # unknown without config.json
            out.append(["lstm", layer.to_fastlstm(lstm_cls), rs])
        elif layer.class_name == "Dense":
            out.append(["dense", layer.to_fastlstm()])
        elif layer.class_name == "Embedding":
            out.append(["embedding", layer.to_fastlstm()])
        elif layer.class_name in ("Masking", "Dropout", "InputLayer"):
            continue
        else:
            raise ValueError(f"layer {layer.key!r} ({layer.class_name}) is not supported; "
                             f"supported: {', '.join(_SUPPORTED)}")
    if order is None and not zipfile.is_zipfile(os.fspath(path)):
        rec = [l for l in out if l[0] == "lstm"]
        for l in rec[:-1]:
            l[2] = True                  # only the last recurrent layer can drop the sequence
    return KerasModel(out)
