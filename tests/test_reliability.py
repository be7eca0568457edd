"""Regression tests for issue #14 ("Reliability"): one test (or a few) per numbered item, each
failing on the code before the fix. Items 1-4 crashed the process (memory safety), 5-9 gave
silently wrong results, 10-13 gave misleading errors. Plus the bindings side of issue #11.

The random fuzz of the same entry points is tests/test_fuzz.py.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from backends_under_test import ALL_BACKENDS
from conftest import random_problem, require_backend

import fastlstm
from fastlstm.backends import reference as ref


@pytest.fixture
def core():
    require_backend("native")
    from fastlstm import _core

    return _core


def _problem(rng, T, B, I, H, dtype=np.float32):
    return random_problem(rng, T, B, I, H, dtype=dtype, scale=0.6, state=True)


def _reference(args, lengths=None, reverse=False):
    a64 = [a.astype(np.float64) for a in args]
    return ref.lstm_forward(*a64, None if lengths is None else np.asarray(lengths, np.int64), reverse, False)[:3]


def _close(got, want):
    for g, w in zip(got, want):
        assert g.shape == w.shape
        assert np.all(np.abs(g - w) <= 2e-5 + 1e-5 * np.abs(w))


# ---- 1. lengths as a list/tuple in the extension: a temporary freed before the kernel read it

@pytest.mark.parametrize("kind", [list, tuple])
def test_item1_lengths_as_a_list_in_the_extension(kind, core, rng):
    T, B, I, H = 5, 200, 4, 8  # B >= 128: the freed temporary's memory was reused
    x, W_ih, W_hh, b, h0, c0 = _problem(rng, T, B, I, H)
    lengths = [T - (k % 3) for k in range(B)]
    want = _reference((x, W_ih, W_hh, b, h0, c0), lengths)
    cell = core.Cell(W_ih, W_hh, b)
    for _ in range(20):
        _close(core.lstm_forward(x, W_ih, W_hh, b, h0, c0, kind(lengths), False, False)[:3], want)
        _close(cell.forward(x, h0, c0, kind(lengths), False), want)


# ---- 2. lengths rewritten by another thread during a call: validated != read

@pytest.mark.parametrize("entry", ["public:native", "public:numba", "public:reference", "core", "core.Cell"])
def test_item2_lengths_rewritten_by_another_thread(entry, rng):
    """A thread toggles lengths[0] between T (valid) and T + 64 while calls run: every call
    either rejects the bad value or computes with the good one, and nothing crashes."""
    kind, _, backend = entry.partition(":")
    require_backend(backend or "native")
    from fastlstm import _core

    T, B, I, H = 32, 64, 8, 32  # a race: the old code crashed most runs (public: 3 of 3 standalone)
    args = _problem(rng, T, B, I, H)
    L = np.full(B, T, np.int64)
    want = _reference(args, L)
    cell = _core.Cell(*args[1:4]) if kind == "core.Cell" else None

    def call():
        if kind == "public":
            return fastlstm.lstm_forward(*args, L, backend=backend)[:3]
        if kind == "core":
            return _core.lstm_forward(*args, L, False, False)[:3]
        return cell.forward(args[0], args[4], args[5], L, False)

    first = call()  # before the race; the kernels are deterministic, so every good call equals it
    _close(first, want)
    stop = threading.Event()

    def toggle():
        while not stop.is_set():
            L[0] = T + 64
            L[0] = T

    t = threading.Thread(target=toggle)
    t.start()
    accepted, wrong = 0, 0
    try:  # a tight loop (a slow check per call makes the race rare on the old code)
        # while the toggler holds the GIL a call waits up to the 5 ms switch interval: few calls
        for _ in range({"native": 400, "numba": 200, "reference": 3, "": 500}[backend]):
            try:
                got = call()
            except ValueError as e:
                assert "lengths" in str(e)
                continue
            accepted += 1
            wrong += not np.array_equal(got[1], first[1])
    finally:
        stop.set()
        t.join()
    assert accepted > 0 and wrong == 0


# ---- 3. an uninitialised _core.Cell (and Workspace) segfaulted

def test_item3_uninitialised_extension_objects_raise(core, rng):
    x, W_ih, W_hh, b, h0, c0 = _problem(rng, 2, 3, 4, 5)
    cell = core.Cell.__new__(core.Cell)
    for use in (lambda: cell.isa, lambda: cell.input_size, lambda: cell.hidden_size,
                lambda: cell.forward(x, h0, c0, None, False), lambda: cell.step(x[0], h0, c0)):
        with pytest.raises(TypeError, match="Cell was not constructed"):
            use()
    ws = core.Workspace.__new__(core.Workspace)
    for use in (lambda: ws.isa, lambda: ws.nbytes,
                lambda: core.lstm_backward(np.zeros((2, 3, 5), np.float32), h0, c0, ws, x, W_ih, W_hh, h0, c0,
                                           None, False)):
        with pytest.raises(TypeError, match="workspace is not one made by lstm_forward"):
            use()
    with pytest.raises(TypeError, match="workspace must be the Workspace"):
        core.lstm_backward(np.zeros((2, 3, 5), np.float32), h0, c0, "ws", x, W_ih, W_hh, h0, c0, None, False)


# ---- 4. the raw Numba backend functions did no checks

def test_item4_raw_numba_functions_check_their_arguments(rng):
    nbk = require_backend("numba")
    x, W_ih, W_hh, b, h0, c0 = _problem(rng, 4, 3, 2, 5)
    with pytest.raises(ValueError, match=r"lengths\[1\] = 1000000000"):
        nbk.lstm_forward(x, W_ih, W_hh, b, h0, c0, [4, 10**9, 2], True, False)
    with pytest.raises(ValueError, match=r"lengths\[1\] = 6"):
        nbk.lstm_forward(x, W_ih, W_hh, b, h0, c0, [4, 6, 2], False, True)
    with pytest.raises(ValueError, match=r"b must have shape \(4H,\) = \(20,\)"):
        nbk.lstm_forward(x, W_ih, W_hh, b[:5], h0, c0, None, False, False)
    with pytest.raises(ValueError, match="x must be C-contiguous"):
        nbk.lstm_forward(np.asfortranarray(x), W_ih, W_hh, b, h0, c0, None, False, False)
    with pytest.raises(TypeError, match="W_ih has dtype float64 but x has dtype float32"):
        nbk.lstm_forward(x, W_ih.astype(np.float64), W_hh, b, h0, c0, None, False, False)
    y, hT, cT, ws = nbk.lstm_forward(x, W_ih, W_hh, b, h0, c0, [4, 2, 1], True, True)
    with pytest.raises(ValueError, match="lengths and reverse must be those of the forward call"):
        nbk.lstm_backward(y, hT, cT, ws, x, W_ih, W_hh, h0, c0, [4, 4, 4], True)
    with pytest.raises(ValueError, match="lengths and reverse must be those of the forward call"):
        nbk.lstm_backward(y, hT, cT, ws, x, W_ih, W_hh, h0, c0, [4, 2, 1], False)
    x2, W_ih2, W_hh2, _, h2, c2 = _problem(rng, 6, 3, 2, 5)  # a workspace of another shape
    with pytest.raises(ValueError, match="workspace does not belong to a forward call of this shape"):
        nbk.lstm_backward(np.zeros((6, 3, 5), np.float32), h2, c2, ws, x2, W_ih2, W_hh2, h2, c2, None, True)
    with pytest.raises(TypeError, match="workspace must be the Workspace of this backend"):
        nbk.lstm_backward(y, hT, cT, (1, 2), x, W_ih, W_hh, h0, c0, [4, 2, 1], True)
    dx = nbk.lstm_backward(y, hT, cT, ws, x, W_ih, W_hh, h0, c0, [4, 2, 1], True)[0]  # the right call works
    assert dx.shape == x.shape and np.isfinite(dx).all()


# ---- 5. one ±inf in x or h0 made the native outputs NaN (inf × the zero-padded lanes; the
#         kernels now keep padded units exactly 0 — every ISA is covered in test_native.py)


@pytest.mark.parametrize("backend", ["reference", "numba", "native"])
@pytest.mark.parametrize("H", [1, 3])
def test_item5_inf_input_gives_the_reference_result(backend, H):
    require_backend(backend)
    T, B, I = 2, 1, 1
    cases = []
    for where in ("x", "h0"):
        for sign in (1, -1):
            x = np.zeros((T, B, I), np.float32)
            x[1] = 0.25
            h0 = np.zeros((B, H), np.float32)
            (x[0, 0] if where == "x" else h0[0])[0] = sign * np.inf
            cases.append((where, sign, x, h0))
    W_ih, W_hh, b = (np.full(s, 0.5, np.float32) for s in ((4 * H, I), (4 * H, H), 4 * H))
    for where, sign, x, h0 in cases:
        c0 = np.zeros((B, H), np.float32)
        want = _reference((x, W_ih, W_hh, b, h0, c0))
        assert all(np.isfinite(w).all() for w in want)  # IEEE: inf saturates the gates, no NaN
        got = fastlstm.lstm_forward(x, W_ih, W_hh, b, h0, c0, backend=backend)[:3]
        assert all(np.isfinite(g).all() for g in got), (where, sign, got)
        _close(got, want)


# ---- 6. step with x the same array as c was accepted (and wrong) on native

@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_item6_step_rejects_x_sharing_memory_with_the_state(backend, rng):
    require_backend(backend)
    B, H = 3, 4
    _, W_ih, W_hh, b, h, c = _problem(rng, 1, B, H, H)  # I = H, so x can be c
    cell = fastlstm.stepper(W_ih, W_hh, b, backend=backend)
    h0, c0 = h.copy(), c.copy()
    other = np.ones((B, H), np.float32)
    for x, st, names in ((c, (h, c), "x and c"), (h, (h, c), "x and h"), (other, (h, h), "h and c")):
        with pytest.raises(ValueError, match=f"{names} must not overlap"):
            cell.step(x, *st)
        np.testing.assert_array_equal(h, h0)
        np.testing.assert_array_equal(c, c0)


# ---- 7. a step with a read-only c raised after h was overwritten

@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("readonly", ["h", "c"])
def test_item7_failed_step_leaves_the_state_alone(backend, readonly, rng):
    require_backend(backend)
    x, W_ih, W_hh, b, h, c = _problem(rng, 1, 2, 3, 4)
    cell = fastlstm.stepper(W_ih, W_hh, b, backend=backend)
    h0, c0 = h.copy(), c.copy()
    (h if readonly == "h" else c).flags.writeable = False
    with pytest.raises(ValueError, match=f"{readonly} must be writeable"):
        cell.step(x[0], h, c)
    np.testing.assert_array_equal(h, h0)
    np.testing.assert_array_equal(c, c0)


# ---- 8. the tape held the caller's arrays: in-place changes after forward changed the gradients

@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("changed", ["x", "W_ih", "W_hh", "lengths"])
def test_item8_tape_is_not_changed_by_the_callers_arrays(backend, changed, rng):
    require_backend(backend)
    T, B, I, H = 5, 3, 4, 6
    args = list(_problem(rng, T, B, I, H))
    lengths = np.array([5, 2, 4], np.int64)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    kw = dict(reverse=True, training=True, backend=backend)
    _, _, _, tape = fastlstm.lstm_forward(*[a.copy() for a in args], lengths.copy(), **kw)
    want = fastlstm.lstm_backward(dy, None, None, tape)
    _, _, _, tape = fastlstm.lstm_forward(*args, lengths, **kw)
    if changed == "lengths":
        lengths[:] = [1, 5, 5]
    else:
        args[["x", "W_ih", "W_hh"].index(changed)] *= -3  # in place, after forward
    got = fastlstm.lstm_backward(dy, None, None, tape)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_item8_layer_backward_after_an_optimizer_like_update(rng):
    """The LSTM layer's tape too: updating the parameters in place before backward (a bug in a
    training loop, but a silent one) does not change what backward computes."""
    m = fastlstm.LSTM(3, 5, num_layers=2)
    x = rng.standard_normal((4, 2, 3)).astype(np.float32)
    y, _ = m(x, training=True)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx_want, _ = m.backward(dy)
    g_want = {k: v.copy() for k, v in m.grads.items()}
    m.zero_grad()
    m(x, training=True)
    for p in m.params.values():
        p *= 0.5
    dx, _ = m.backward(dy)
    np.testing.assert_array_equal(dx, dx_want)
    for k in g_want:
        np.testing.assert_array_equal(m.grads[k], g_want[k])


# ---- 9. reverse="no" and training="no" counted as True

@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_item9_flags_must_be_bools(backend, rng):
    mod = require_backend(backend)
    args = _problem(rng, 3, 2, 2, 4)
    for name in ("reverse", "training"):
        for bad in ("no", 0, 1, None):
            with pytest.raises(TypeError, match=f"{name} must be a bool"):
                fastlstm.lstm_forward(*args, backend=backend, **{name: bad})
    with pytest.raises(TypeError, match="reverse must be a bool"):
        fastlstm.prepack(*args[1:4], backend=backend).forward(args[0], reverse="no")
    if backend != "reference":  # the raw functions too (the reference is plain NumPy)
        for pos, name in ((7, "reverse"), (8, "training")):
            raw = list(args) + [None, False, False]
            raw[pos] = "no"
            with pytest.raises(TypeError, match=f"{name} must be a bool"):
                mod.lstm_forward(*raw)
    y = fastlstm.lstm_forward(*args, reverse=np.bool_(True), backend=backend)[0]  # NumPy bools are fine
    _close((y,), _reference(args, reverse=True)[:1])


# ---- 10. dtype compared by identity: unpickled / metadata / big-endian float32 was rejected

def _float32_variants(a):
    yield "unpickled", pickle.loads(pickle.dumps(a))
    yield "metadata", a.astype(np.dtype(np.float32, metadata={"unit": "m"}))
    yield "big-endian", a.astype(">f4")


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_item10_equal_dtypes_are_accepted(backend, rng):
    require_backend(backend)
    args = _problem(rng, 3, 2, 4, 5)
    want = _reference(args)
    for name, x in _float32_variants(args[0]):
        W_ih = dict(_float32_variants(args[1]))[name]
        _close(fastlstm.lstm_forward(x, W_ih, *args[2:], backend=backend)[:3], want)
        _close(fastlstm.prepack(W_ih, *args[2:4], backend=backend).forward(x, *args[4:]), want)


def test_item10_extension_compares_dtypes_by_equality(core, rng):
    args = _problem(rng, 3, 2, 4, 5)
    want = _reference(args)
    x = pickle.loads(pickle.dumps(args[0]))
    assert x.dtype is not np.dtype(np.float32)  # the case that failed
    _close(core.lstm_forward(x, *args[1:], None, False, False)[:3], want)
    with pytest.raises(TypeError, match="x must be a float32 array in native byte order, got dtype >f4"):
        core.lstm_forward(args[0].astype(">f4"), *args[1:], None, False, False)


def test_item10_models_survive_pickle(rng):
    x = rng.standard_normal((4, 3, 8)).astype(np.float32)
    m = fastlstm.LSTM(8, 16, num_layers=2, bidirectional=True, seed=1)
    y = m(x)[0]
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(m))(x)[0], y)
    p = m.prepack()
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(p))(x)[0], p(x)[0])
    state = pickle.loads(pickle.dumps(m.state_dict()))  # a checkpoint
    m2 = fastlstm.LSTM(8, 16, num_layers=2, bidirectional=True, seed=2)
    m2.load_state_dict(state)
    np.testing.assert_array_equal(m2(x)[0], y)


def test_item10_prepacked_native_cell_refuses_pickling_clearly(core, rng):
    _, W_ih, W_hh, b, _, _ = _problem(rng, 1, 1, 2, 3)
    with pytest.raises(TypeError, match=r"_core.Cell cannot be pickled.*pickle fastlstm.prepack"):
        pickle.dumps(core.Cell(W_ih, W_hh, b))
    cell = fastlstm.prepack(W_ih, W_hh, b, backend="native")  # the Python object pickles and repacks
    x = np.ones((2, 1, 2), np.float32)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(cell)).forward(x)[0], cell.forward(x)[0])


def _run_in_worker(model, x):
    return model(x)[0]


def test_item10_models_travel_to_a_multiprocessing_worker(rng):
    x = rng.standard_normal((3, 2, 4)).astype(np.float32)
    m = fastlstm.LSTM(4, 6, seed=0)
    with multiprocessing.get_context("spawn").Pool(1) as pool:  # spawn: no fork after threads ran
        got = pool.starmap(_run_in_worker, [(m, x), (m.prepack(), x)])
    np.testing.assert_array_equal(got[0], m(x)[0])
    np.testing.assert_array_equal(got[1], m(x)[0])


# ---- 11. Numba rejected read-only (and memory-mapped) inputs

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_item11_read_only_and_memory_mapped_inputs(dtype, rng, tmp_path):
    require_backend("numba")
    args = [a.copy() for a in _problem(rng, 4, 3, 2, 5, dtype=dtype)]
    lengths = np.array([4, 1, 3])
    want = _reference(args, lengths, True)
    path = tmp_path / "x.bin"
    args[0].tofile(path)
    for a in args:
        a.flags.writeable = False
    lengths.flags.writeable = False
    mm = np.memmap(path, dtype=dtype, mode="r", shape=args[0].shape)
    for x in (args[0], mm):
        _close(fastlstm.lstm_forward(x, *args[1:], lengths, reverse=True, backend="numba")[:3], want)
        y, _, _, tape = fastlstm.lstm_forward(x, *args[1:], lengths, reverse=True, training=True, backend="numba")
        dy = np.ones_like(y)
        dy.flags.writeable = False
        assert np.isfinite(fastlstm.lstm_backward(dy, None, None, tape)[0]).all()
    if dtype == np.float64:  # the default backend routes float64 to Numba
        _close(fastlstm.lstm_forward(*args, lengths, reverse=True)[:3], want)
    nbk = require_backend("numba")  # the raw function takes them as they are
    _close(nbk.lstm_forward(*args, lengths, True, False)[:3], want)


# ---- 12. thread and check_finite settings

@pytest.mark.parametrize("raw", ["-3", "0", "abc", "2.5", "1e3", "99999999999"])
def test_item12_bad_thread_variable_names_itself(raw, monkeypatch):
    monkeypatch.setenv("FASTLSTM_NUM_THREADS", raw)
    with pytest.raises(RuntimeError, match=f"FASTLSTM_NUM_THREADS={raw!r}: expected an integer in"):
        fastlstm.backends._threads_from_env()


def test_item12_bad_thread_variable_fails_at_import_on_every_backend():
    for backend in ("native", "reference"):
        env = {**os.environ, "FASTLSTM_NUM_THREADS": "-3", "FASTLSTM_BACKEND": backend}
        r = subprocess.run([sys.executable, "-c", "import fastlstm"], env=env, capture_output=True, text=True)
        assert r.returncode != 0 and "FASTLSTM_NUM_THREADS='-3'" in r.stderr, r.stderr
    env = {**os.environ, "FASTLSTM_NUM_THREADS": " 3 ", "FASTLSTM_BACKEND": "reference"}
    r = subprocess.run([sys.executable, "-c", "import fastlstm; print(fastlstm.get_num_threads())"], env=env,
                       capture_output=True, text=True)
    assert r.stdout.strip() == "3", r.stderr


def test_item12_bad_set_num_threads_changes_nothing():
    old = fastlstm.get_num_threads()
    from fastlstm import _core

    for bad, exc in ((2**31, ValueError), (0, ValueError), (-3, ValueError), (2.5, TypeError), ("3", TypeError),
                     (True, TypeError)):
        with pytest.raises(exc, match="set_num_threads's n must be"):
            fastlstm.set_num_threads(bad)
        assert fastlstm.get_num_threads() == old
        assert _core.get_num_threads() == old
        nbk = require_backend("numba")
        assert nbk.get_num_threads() == min(old, nbk.nb.config.NUMBA_NUM_THREADS)
    with pytest.raises(ValueError, match=r"number of threads must be in \[1, 1024\], got 2147483648"):
        _core.set_num_threads(2**31)
    assert _core.get_num_threads() == old


@pytest.mark.parametrize("value,checks", [("no", False), ("off", False), ("FALSE", False), ("0", False), ("", False),
                                          ("1", True), ("yes", True), ("On", True), ("TRUE", True)])
def test_item12_check_finite_variable(value, checks, monkeypatch, rng):
    args = list(_problem(rng, 3, 2, 2, 4))
    args[0][1, 1, 1] = np.nan
    monkeypatch.setenv("FASTLSTM_CHECK_FINITE", value)
    if checks:
        with pytest.raises(ValueError, match="x contains NaN or Inf"):
            fastlstm.lstm_forward(*args)
    else:
        assert np.isnan(fastlstm.lstm_forward(*args)[0][1:, 1]).all()


def test_item12_unknown_check_finite_value_is_an_error(monkeypatch, rng):
    monkeypatch.setenv("FASTLSTM_CHECK_FINITE", "maybe")
    with pytest.raises(ValueError, match="FASTLSTM_CHECK_FINITE='maybe'"):
        fastlstm.lstm_forward(*_problem(rng, 3, 2, 2, 4))


# ---- 13. an inference forward between a training forward and backward() discarded the tape

def test_item13_inference_call_keeps_the_training_tape(rng):
    m = fastlstm.LSTM(3, 4, num_layers=2, bidirectional=True, seed=0)
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    y, _ = m(x, training=True)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx_want, _ = m.backward(dy)
    g_want = {k: v.copy() for k, v in m.grads.items()}
    m.zero_grad()
    m(x, training=True)
    m(rng.standard_normal((7, 1, 3)).astype(np.float32))  # e.g. a validation batch
    dx, _ = m.backward(dy)
    np.testing.assert_array_equal(dx, dx_want)
    for k in g_want:
        np.testing.assert_array_equal(m.grads[k], g_want[k])
    with pytest.raises(RuntimeError, match="needs a preceding forward"):
        m.backward(dy)  # the tape is used once


# ---- issue #11, the bindings side: backward reads no h0, c0, lengths

def test_native_backward_does_not_read_unused_arguments(core, rng):
    args = _problem(rng, 4, 3, 2, 5)
    lengths = np.array([4, 0, 2])
    y, hT, cT, ws = core.lstm_forward(*args, lengths, True, True)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    want = core.lstm_backward(dy, hT * 0, cT * 0, ws, args[0], args[1], args[2], args[4], args[5], lengths, True)
    got = core.lstm_backward(dy, hT * 0, cT * 0, ws, args[0], args[1], args[2], None, "unused", None, True)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


# ---- the thread pool: a worker descheduled between reading a job and taking a seat used to sit
# down at the next job and run the first job's function, destroyed by then (a segfault in a long
# seq2seq training run under load). Busy processes make that descheduling likely.

def _spin(stop, parent):
    while not stop.is_set() and os.getppid() == parent:  # also ends if the test process dies
        pass


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_pool_worker_never_runs_another_jobs_function(core, dynamic):
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    hogs = [ctx.Process(target=_spin, args=(stop, os.getpid()), daemon=True) for _ in range(2)]
    for h in hogs:
        h.start()
    wrong = ran = jobs = 0
    try:
        t0 = time.perf_counter()
        while jobs < 60_000 and time.perf_counter() - t0 < 4.0:  # bounded: a loaded machine is slow here
            w, n = core._pool_selftest(2_000, 2, dynamic)
            wrong, ran, jobs = wrong + w, ran + n, jobs + 2_000
    finally:
        stop.set()
        for h in hogs:
            h.join()
    assert wrong == 0
    assert ran >= jobs  # every job ran, on at least its caller
    with pytest.raises(ValueError, match="threads"):
        core._pool_selftest(1, 0)
