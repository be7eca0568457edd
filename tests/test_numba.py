"""Numba-specific checks; the shared suite (test_kernels.py) covers the kernel contract.

Here: FASTLSTM_BACKEND=numba really runs Numba-compiled code (not a silent fallback and not
Python), float64 through Numba equals the reference to ~1e-12, Inf/NaN follow the reference,
thread count changes nothing but speed, and a missing numba makes the backend unavailable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import random_lengths, random_problem, require, require_backend

import fastlstm
from fastlstm.backends import reference as ref

NAMES = ("dx", "dW_ih", "dW_hh", "db", "dh0", "dc0")


@pytest.fixture
def nbk():
    require("numba")
    return require_backend("numba")


def _run_python(code: str, **env) -> subprocess.CompletedProcess:
    pkg_root = str(Path(fastlstm.__file__).resolve().parents[1])
    path = os.pathsep.join([pkg_root, os.environ.get("PYTHONPATH", "")])
    full_env = {**os.environ, "PYTHONPATH": path, **env}
    full_env.pop("NUMBA_DISABLE_JIT", None)
    return subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True,
                          timeout=600)


def test_forced_numba_backend_runs_compiled_code(nbk):
    code = """
import json
import numpy as np
import numba
import fastlstm
mod = fastlstm.backends.active()
before = dict(mod._KERNELS)
x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
W_ih = np.full((8, 3), 0.1, np.float32); W_hh = np.full((8, 2), 0.1, np.float32); b = np.zeros(8, np.float32)
y, hT, cT, tape = fastlstm.lstm_forward(x, W_ih, W_hh, b, training=True)
fastlstm.lstm_backward(np.ones_like(y), None, None, tape)
k = mod._KERNELS[("forward_rows_serial", np.dtype(np.float32))]
kb = mod._KERNELS[("backward_rows_serial", np.dtype(np.float32))]
print(json.dumps({
    "name": mod.NAME, "tape": tape.backend_name, "before": len(before),
    "dispatcher": all(isinstance(d, numba.core.dispatcher.Dispatcher) for d in (k, kb)),
    "py_func": k.py_func is mod._forward_loop_rows,
    "signatures": [str(s) for s in k.signatures], "bwd_signatures": len(kb.signatures),
    "overloads": len(k.overloads), "finite": bool(np.isfinite(y).all()),
}))
"""
    r = _run_python(code, FASTLSTM_BACKEND="numba")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["name"] == "numba" and out["tape"] == "numba"
    assert out["before"] == 0                     # nothing compiled before the first call ...
    assert out["dispatcher"] and out["py_func"]
    assert out["signatures"] and out["bwd_signatures"] and out["overloads"]  # ... and jitted code after it
    assert "float32" in out["signatures"][0]
    assert out["finite"]


def test_missing_numba_makes_the_backend_unavailable():
    code = """
import sys
sys.modules["numba"] = None   # as if numba were not installed
import fastlstm
from fastlstm.backends import BackendUnavailable
try:
    fastlstm.backends.load("numba")
except BackendUnavailable as e:
    print("unavailable:", e)
else:
    print("loaded")
"""
    r = _run_python(code, FASTLSTM_BACKEND="reference")
    assert r.returncode == 0, r.stderr
    assert "unavailable:" in r.stdout and "numba" in r.stdout
    r = _run_python('import sys; sys.modules["numba"] = None; import fastlstm', FASTLSTM_BACKEND="numba")
    assert r.returncode != 0 and "numba" in r.stderr      # forced: fails loudly, no fallback


def _grad_inputs(rng, T, B, H, dtype):
    return (rng.standard_normal((T, B, H)).astype(dtype), rng.standard_normal((B, H)).astype(dtype),
            rng.standard_normal((B, H)).astype(dtype))


def _both(mod_fwd, mod_bwd, args, lengths, reverse, grads_in):
    y, hT, cT, ws = mod_fwd(*args, lengths, reverse, True)
    g = mod_bwd(*grads_in, ws, args[0], args[1], args[2], args[4], args[5], lengths, reverse)
    return (y, hT, cT) + tuple(g)


# Which loops and GEMMs run depends on the shape and thread count; force each one in turn.
PATHS = {
    "default": {},
    "rows-parallel": {"_ROWS_MAX_H": 1 << 30, "_PARALLEL_MIN": 0},   # batch split, no per-step sync
    "tiles": {"_ROWS_MAX_H": 0, "_ROWS_MAX_WORK": 0, "_PARALLEL_MIN": 0},  # hidden-unit split
}


@pytest.fixture(params=list(PATHS))
def path(request, nbk, monkeypatch):
    for name, value in PATHS[request.param].items():
        monkeypatch.setattr(nbk, name, value)
    if request.param != "default":
        monkeypatch.setattr(nbk, "_threads", min(2, nbk.nb.config.NUMBA_NUM_THREADS))
    return request.param


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (4, 5, 3, 7), (6, 7, 9, 37), (3, 6, 5, 70), (2, 9, 130, 17),
                                   (3, 13, 20, 33)])
@pytest.mark.parametrize("lens,reverse", [(False, False), (False, True), (True, False), (True, True)])
def test_float64_matches_reference_to_1e12(nbk, path, rng, shape, lens, reverse):
    T, B, I, H = shape
    args = random_problem(rng, T, B, I, H, dtype=np.float64, scale=0.6)
    lengths = random_lengths(rng, T, B) if lens else None
    gin = _grad_inputs(rng, T, B, H, np.float64)
    got = _both(nbk.lstm_forward, nbk.lstm_backward, args, lengths, reverse, gin)
    want = _both(ref.lstm_forward, ref.lstm_backward, args, lengths, reverse, gin)
    for name, a, b in zip(("y", "hT", "cT") + NAMES, got, want):
        assert a.dtype == np.float64 and a.shape == b.shape, name
        err = np.abs(a - b).max()
        assert err <= 1e-12 * max(1.0, np.abs(b).max()), f"{name}: {err:.3g}"


def test_inf_and_nan_follow_the_reference(nbk, rng):
    """FASTMATH has no nnan/ninf: Inf saturates the gates and NaN spreads exactly as in the spec."""
    T, B, I, H = 4, 5, 3, 6
    args = list(random_problem(rng, T, B, I, H, dtype=np.float64))
    args[0][1, 0, 0] = np.inf      # saturates gates of row 0
    args[0][2, 1, 1] = -np.inf
    args[0][0, 2, 2] = np.nan      # row 2 turns NaN
    args[4][3, 0] = 1e300          # huge h0 -> huge z
    lengths = np.array([4, 4, 3, 2, 0])
    gin = _grad_inputs(rng, T, B, H, np.float64)
    got = _both(nbk.lstm_forward, nbk.lstm_backward, args, lengths, False, gin)
    want = _both(ref.lstm_forward, ref.lstm_backward, args, lengths, False, gin)
    for name, a, b in zip(("y", "hT", "cT") + NAMES, got, want):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=name)
        np.testing.assert_array_equal(np.isposinf(a), np.isposinf(b), err_msg=name)
        np.testing.assert_array_equal(np.isneginf(a), np.isneginf(b), err_msg=name)
        fin = np.isfinite(b)
        np.testing.assert_allclose(a[fin], b[fin], rtol=1e-10, atol=1e-10, err_msg=name)


def test_nan_padding_never_reaches_any_gradient(nbk, rng):
    T, B, I, H = 6, 5, 4, 9
    x, W_ih, W_hh, b, h0, c0 = random_problem(rng, T, B, I, H, dtype=np.float32)
    lengths = np.array([6, 2, 0, 5, 3])
    pad = np.arange(T)[:, None] >= lengths[None, :]
    x[pad] = np.nan
    for reverse in (False, True):
        y, hT, cT, tape = fastlstm.lstm_forward(x, W_ih, W_hh, b, h0, c0, lengths, reverse=reverse,
                                                training=True, backend="numba")
        grads = fastlstm.lstm_backward(np.ones_like(y), np.ones_like(hT), np.ones_like(cT), tape)
        assert np.isfinite(y).all() and np.isfinite(hT).all() and np.isfinite(cT).all()
        for name, g in zip(NAMES, grads):
            assert np.isfinite(g).all(), name
        assert (y[pad] == 0).all() and (grads[0][pad] == 0).all()
        np.testing.assert_array_equal(hT[2], h0[2])           # length 0: state passes through
        np.testing.assert_array_equal(grads[4][2], 1.0)       # ... and so does its gradient
        np.testing.assert_array_equal(grads[5][2], 1.0)


@pytest.mark.parametrize("shape", [(5, 6, 7, 70), (4, 11, 21, 300)])
def test_set_num_threads_changes_only_speed(nbk, rng, monkeypatch, shape):
    """Serial and parallel compiles split the work into the same blocks: bitwise equal results."""
    monkeypatch.setattr(nbk, "_PARALLEL_MIN", 0)   # parallel kernels even for small shapes
    T, B, I, H = shape
    args = random_problem(rng, T, B, I, H, dtype=np.float32)
    lengths = random_lengths(rng, T, B)
    gin = _grad_inputs(rng, T, B, H, np.float32)
    old = fastlstm.get_num_threads()
    try:
        fastlstm.set_num_threads(1)
        assert nbk.get_num_threads() == 1 and nbk.info()["threads"] == 1
        one = _both(nbk.lstm_forward, nbk.lstm_backward, args, lengths, True, gin)
        fastlstm.set_num_threads(2)
        assert nbk.get_num_threads() == min(2, nbk.nb.config.NUMBA_NUM_THREADS)
        two = _both(nbk.lstm_forward, nbk.lstm_backward, args, lengths, True, gin)
        if nbk.get_num_threads() > 1:
            kind = "rows_parallel" if nbk._rows(B, H) else "tiles"
            assert ("forward_" + kind, np.dtype(np.float32)) in nbk._KERNELS
            assert ("backward_" + kind, np.dtype(np.float32)) in nbk._KERNELS
        for name, a, b in zip(("y", "hT", "cT") + NAMES, one, two):
            np.testing.assert_array_equal(a, b, err_msg=name)
        with pytest.raises(ValueError, match="n >= 1"):
            nbk.set_num_threads(0)
    finally:
        fastlstm.set_num_threads(old)


def test_info_reports_the_runtime(nbk):
    info = nbk.info()
    assert info["name"] == "numba" and info["numba"] == nbk.nb.__version__
    for key in ("dtypes", "threading_layer", "threads", "cache_dir", "fastmath"):
        assert key in info
    assert info["cache_dir"] != "unknown"
    assert "nnan" not in nbk.FASTMATH and "ninf" not in nbk.FASTMATH
    assert set(nbk.DTYPES) == {np.dtype(np.float32), np.dtype(np.float64)}


def test_parallel_kernels_leave_torchs_thread_count_alone():
    """Numba's OpenMP layer shares libgomp with torch and set its thread count on the first
    parallel launch (torch.set_num_threads(1) then ran torch on every core): the backend prefers
    another layer unless the user chose one."""
    require("numba")
    require("torch")
    code = (
        "import torch; torch.set_num_threads(1)\n"
        "import numpy as np, numba, fastlstm\n"
        "fastlstm.set_num_threads(2)\n"
        "rng = np.random.default_rng(0)\n"
        "x = rng.standard_normal((10, 64, 32), dtype=np.float32)\n"
        "W = rng.standard_normal((512, 32), dtype=np.float32) * .1\n"
        "R = rng.standard_normal((512, 128), dtype=np.float32) * .1\n"
        "y, h, c, tape = fastlstm.core.lstm_forward(x, W, R, np.zeros(512, np.float32), training=True, backend='numba')\n"
        "fastlstm.core.lstm_backward(y, None, None, tape)\n"
        "print(numba.threading_layer(), torch.get_num_threads())\n")
    r = _run_python(code, FASTLSTM_BACKEND="numba")
    assert r.returncode == 0, r.stderr
    layer, torch_threads = r.stdout.split()
    assert layer != "omp"            # a parallel kernel ran (threading_layer raises before one)
    assert torch_threads == "1"
