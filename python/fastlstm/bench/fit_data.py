"""Data of the fit benchmark's four problems: synthetic, deterministic from a seed, at the sizes of
the training issue. Shared by every contender (fastlstm, the PyTorch loop, Keras), batch-first.

    forecast  X (2000, 24, 1) float32 windows of a noisy two-tone sine, y (2000, 1) the next value
    classify  X (500, 150, 1) float32 series, y (500,) int64: which of two frequencies, with noise
    charlm    X (512, 100) int64 ids from a sparse Markov chain over 96 tokens, y = X shifted by one
    seq2seq   src (5000, 7, 12) float32 one-hot "535+61 ", tgt_in (5000, 4, 12) one-hot of the
              answer shifted right behind a start symbol, tgt_out (5000, 4) int64 "596 "
"""

from __future__ import annotations

import numpy as np

PROBLEMS = {
    "forecast": dict(n=2000, T=24, batch=32, hidden=50),
    "classify": dict(n=500, T=150, batch=32, hidden=64, classes=2),
    "char-LM": dict(n=512, T=100, batch=64, hidden=256, embed=64, vocab=96),
    "seq2seq": dict(n=5000, T_in=7, T_out=4, batch=128, hidden=128, vocab=12, embed=16),
}

ADD_CHARS = "0123456789+ "  # the seq2seq vocabulary; ' ' pads and starts the decoder


def _one_hot(ids, V):
    return np.eye(V, dtype=np.float32)[ids]


def make_problem_data(name: str, seed: int = 0) -> dict:
    rng = np.random.default_rng([seed, list(PROBLEMS).index(name)])
    p = PROBLEMS[name]
    if name == "forecast":
        t = np.arange(p["n"] + p["T"]) * 0.15
        s = np.sin(t) + 0.5 * np.sin(0.31 * t) + 0.1 * rng.standard_normal(t.size)
        X = np.lib.stride_tricks.sliding_window_view(s[:-1], p["T"])[:p["n"], :, None]
        return {"X": np.ascontiguousarray(X, np.float32), "y": s[p["T"]:p["T"] + p["n"], None].astype(np.float32)}
    if name == "classify":
        y = rng.integers(0, p["classes"], p["n"])
        freq = np.where(y == 0, 0.05, 0.08)[:, None]
        t = np.arange(p["T"])[None, :]
        X = np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi, (p["n"], 1))) + 0.5 * rng.standard_normal((p["n"], p["T"]))
        return {"X": X[:, :, None].astype(np.float32), "y": y.astype(np.int64)}
    if name == "char-LM":
        V = p["vocab"]
        nxt = rng.integers(0, V, (V, 4))  # each token is followed by one of 4 tokens
        ids = np.empty((p["n"], p["T"] + 1), np.int64)
        ids[:, 0] = rng.integers(0, V, p["n"])
        for t in range(p["T"]):
            ids[:, t + 1] = nxt[ids[:, t], rng.integers(0, 4, p["n"])]
        return {"X": ids[:, :-1].copy(), "y": ids[:, 1:].copy()}
    if name == "seq2seq":
        a, b = rng.integers(0, 1000, p["n"]), rng.integers(0, 1000, p["n"])
        enc = {c: i for i, c in enumerate(ADD_CHARS)}
        src = np.array([[enc[c] for c in f"{x}+{y}".ljust(p["T_in"])] for x, y in zip(a, b)])
        tgt = np.array([[enc[c] for c in str(x + y).ljust(p["T_out"])] for x, y in zip(a, b)])
        start = np.full((p["n"], 1), enc[" "])
        tgt_in = np.concatenate([start, tgt[:, :-1]], axis=1)
        return {"X": src.astype(np.int64), "y_in": tgt_in.astype(np.int64), "y": tgt.astype(np.int64)}
    raise ValueError(f"unknown fit problem {name!r}; choose from {', '.join(PROBLEMS)}")
