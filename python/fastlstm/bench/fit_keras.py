"""Keras 3 side of the fit benchmark, run in a subprocess per thread count (TensorFlow fixes its
thread pools when it starts): the same four models as bench/fit.py, trained with `model.fit`.

    python -m fastlstm.bench.fit_keras --problem forecast --threads 1 --epochs 4
prints one JSON line: {"problem", "threads", "times": [seconds per epoch], "keras", "backend"}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def build(name, keras):
    from .fit_data import PROBLEMS

    p = PROBLEMS[name]
    L = keras.layers
    if name in ("forecast", "classify"):
        out = 1 if name == "forecast" else p["classes"]
        return keras.Sequential([keras.Input((p["T"], 1)), L.LSTM(p["hidden"]), L.Dense(out)])
    if name == "char-LM":
        return keras.Sequential([keras.Input((p["T"],), dtype="int32"), L.Embedding(p["vocab"], p["embed"]),
                                 L.LSTM(p["hidden"], return_sequences=True), L.Dense(p["vocab"])])
    src, tgt = keras.Input((p["T_in"],), dtype="int32"), keras.Input((p["T_out"],), dtype="int32")
    _, h, c = L.LSTM(p["hidden"], return_state=True)(L.Embedding(p["vocab"], p["embed"])(src))
    y = L.LSTM(p["hidden"], return_sequences=True)(L.Embedding(p["vocab"], p["embed"])(tgt), initial_state=[h, c])
    return keras.Model([src, tgt], L.Dense(p["vocab"])(y))


def run(name, threads, epochs, seed=0) -> dict:
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from .fit_data import PROBLEMS, make_problem_data

    keras.utils.set_random_seed(seed)
    data = make_problem_data(name, seed)
    model = build(name, keras)
    loss = "mse" if name == "forecast" else keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    X = [data["X"], data["y_in"]] if name == "seq2seq" else data["X"]
    times = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t)

    model.fit(X, data["y"], batch_size=PROBLEMS[name]["batch"], epochs=epochs, shuffle=True, verbose=0,
              callbacks=[Timer()])
    return {"problem": name, "threads": threads, "times": times, "keras": keras.__version__,
            "backend": keras.backend.backend()}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--problem", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--epochs", type=int, default=4)
    args = ap.parse_args(argv)
    print(json.dumps(run(args.problem, args.threads, args.epochs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
