"""Build small Keras 3 models with random weights, save them and Keras' own predictions.

    KERAS_BACKEND=torch python tests/data/make_keras_model.py OUTDIR [SEED]

Writes OUTDIR/seq.keras, seq.weights.h5 (Masking -> Bidirectional(LSTM(5, return_sequences))
-> LSTM(6) -> Dense(4, tanh) -> Dense(3), fed zero-padded variable-length rows) and
OUTDIR/step.keras, step.weights.h5 (LSTM(7, return_sequences) -> Dense(2) per step), plus
OUTDIR/expected.npz with the inputs, lengths and keras.Model.predict outputs. test_interop.py
runs it in a subprocess (Keras on torch needs no TensorFlow); the files stored next to this
script (keras_small_*) were made by it with SEED 0 and are read with h5py alone.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402


def randomize(model, rng):
    # non-trivial weights everywhere, biases included (Keras initialises biases to 0 / 1)
    model.set_weights([(rng.standard_normal(w.shape) * 0.5).astype(np.float32) for w in model.get_weights()])


def main(out: str, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    T, I, B = 9, 3, 5
    seq = keras.Sequential([
        keras.Input((T, I)),
        keras.layers.Masking(0.0),
        keras.layers.Bidirectional(keras.layers.LSTM(5, return_sequences=True)),
        keras.layers.LSTM(6),
        keras.layers.Dense(4, activation="tanh"),
        keras.layers.Dense(3),
    ])
    step = keras.Sequential([keras.Input((T, I)), keras.layers.LSTM(7, return_sequences=True), keras.layers.Dense(2)])
    randomize(seq, rng)
    randomize(step, rng)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    lengths = np.array([T, 4, 1, 7, T])
    x_pad = x.copy()
    for b, n in enumerate(lengths):
        x_pad[b, n:] = 0.0          # the Masking value marks the padding
    os.makedirs(out, exist_ok=True)
    for name, m in (("seq", seq), ("step", step)):
        m.save(os.path.join(out, f"{name}.keras"))
        m.save_weights(os.path.join(out, f"{name}.weights.h5"))
    np.savez(os.path.join(out, "expected.npz"), x=x, x_pad=x_pad, lengths=lengths,
             seq=np.asarray(seq.predict(x_pad, verbose=0)), step=np.asarray(step.predict(x, verbose=0)),
             keras_version=np.array(keras.__version__))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0)
