"""Central finite differences in float64 for the kernel contract and the stacked LSTM."""

from __future__ import annotations

import numpy as np

import fastlstm


def numeric_grad(f, arr, rng, max_entries=40, eps=1e-6):
    """d f / d arr by central differences at up to max_entries random positions.

    Returns (flat indices, numeric gradient at those indices). arr is perturbed in place
    and restored.
    """
    flat = arr.reshape(-1)
    idx = np.arange(flat.size) if flat.size <= max_entries else rng.choice(flat.size, max_entries, replace=False)
    g = np.empty(len(idx))
    for n, k in enumerate(idx):
        old = flat[k]
        flat[k] = old + eps
        fp = f()
        flat[k] = old - eps
        fm = f()
        flat[k] = old
        g[n] = (fp - fm) / (2 * eps)
    return idx, g


def assert_grad_close(name, analytic, idx, numeric, rtol=1e-6, atol=1e-8):
    a = analytic.reshape(-1)[idx]
    err = np.abs(a - numeric)
    tol = atol + rtol * np.maximum(np.abs(numeric), np.abs(numeric).max())
    bad = err > tol
    assert not bad.any(), (f"{name}: analytic vs finite-difference gradient mismatch at "
                           f"{int(bad.sum())}/{len(idx)} entries, max err {err.max():.3g} "
                           f"(analytic {a[bad][:3]}, numeric {numeric[bad][:3]})")


def check_kernel_gradients(rng, x, W_ih, W_hh, b, h0, c0, lengths, reverse, backward=None,
                           max_entries=40):
    """Finite-difference check of every gradient the kernel contract returns.

    loss = Σ dy·y + Σ dhT·hT + Σ dcT·cT with random dy, dhT, dcT. `backward` replaces the
    reference's backward (used to prove the check catches a broken one).
    """
    ref = fastlstm.backends.load("reference")
    T, B, _ = x.shape
    H = W_hh.shape[1]
    dy = rng.standard_normal((T, B, H))
    dhT = rng.standard_normal((B, H))
    dcT = rng.standard_normal((B, H))

    def loss():
        y, hT, cT, _ = ref.lstm_forward(x, W_ih, W_hh, b, h0, c0, lengths, reverse, False)
        return float((dy * y).sum() + (dhT * hT).sum() + (dcT * cT).sum())

    _, _, _, ws = ref.lstm_forward(x, W_ih, W_hh, b, h0, c0, lengths, reverse, True)
    bwd = backward or ref.lstm_backward
    grads = bwd(dy, dhT, dcT, ws, x, W_ih, W_hh, h0, c0, lengths, reverse)
    for name, arr, g in zip(("dx", "dW_ih", "dW_hh", "db", "dh0", "dc0"),
                            (x, W_ih, W_hh, b, h0, c0), grads):
        assert g.shape == arr.shape, f"{name} has shape {g.shape}, expected {arr.shape}"
        idx, num = numeric_grad(loss, arr, rng, max_entries)
        assert_grad_close(name, g, idx, num)
