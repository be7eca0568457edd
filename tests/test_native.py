"""Native-module specifics: ISA dispatch, SIMD math accuracy, GEMM, threads, concurrency,
streaming steps and the extension's own argument checks (never a crash)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from backends_under_test import NATIVE_ISAS
from conftest import random_lengths, random_problem, require_backend

import fastlstm
from fastlstm.backends import reference as ref


@pytest.fixture(scope="module")
def native():
    return require_backend("native")


@pytest.fixture
def core(native):
    from fastlstm import _core

    return _core


def test_dispatch_picks_best_supported_isa(core):
    compiled, supported = core.compiled_isas(), core.supported_isas()
    assert set(supported) <= set(compiled) and "generic" in supported
    order = [isa for isa in NATIVE_ISAS[::-1] if isa in compiled]  # best first
    assert compiled == order
    feats = core.cpu_features()
    assert ("avx2" in supported) == (feats["avx2"] and feats["fma"])
    assert ("avx512" in supported) == (feats["avx512f"] and feats["avx512bw"] and feats["avx512vl"])
    if "FASTLSTM_ISA" not in os.environ:
        assert core.get_isa() == supported[0]


@pytest.mark.parametrize("isa", NATIVE_ISAS)
def test_forcing_an_isa_by_environment(isa, core):
    if isa not in core.supported_isas():
        pytest.skip(f"this CPU cannot run the {isa} path")
    code = ("import numpy as np, fastlstm; from fastlstm import _core; "
            "fastlstm.lstm_forward(np.ones((2,1,3),np.float32), np.ones((8,3),np.float32), "
            "np.ones((8,2),np.float32), np.zeros(8,np.float32), backend='native'); "
            "print(_core.get_isa(), _core.last_isa())")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "FASTLSTM_ISA": isa},
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == [isa, isa]


@pytest.mark.parametrize("var,value,message", [("FASTLSTM_SPLIT", "columns", "'auto', 'measured', 'rows' or 'units'"),
                                               ("FASTLSTM_FUSE_ROWS", "lots", "an integer >= -1")])
def test_loop_variant_variables_are_checked(var, value, message):
    code = ("from fastlstm import _core; import fastlstm; print(_core._set_split('auto'), _core._set_fuse_rows(-1), "
            "_core._set_split_adaptive(False))")
    for split, want in (("units", ["units", "7", "False"]), ("measured", ["auto", "7", "True"]),
                        ("auto", ["auto", "7", "False"])):
        ok = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "FASTLSTM_SPLIT": split, "FASTLSTM_FUSE_ROWS": "7"})
        assert ok.returncode == 0 and ok.stdout.split() == want, ok.stderr
    bad = subprocess.run([sys.executable, "-c", "import fastlstm"], env={**os.environ, var: value},
                         capture_output=True, text=True)
    assert bad.returncode != 0 and f"{var}={value!r}" in bad.stderr and message in bad.stderr


def test_unknown_or_unsupported_isa_is_an_error(core):
    with pytest.raises(ValueError, match="unknown ISA 'sse9'"):
        core.set_isa("sse9")
    r = subprocess.run([sys.executable, "-c", "import fastlstm"], env={**os.environ, "FASTLSTM_ISA": "nope"},
                       capture_output=True, text=True)
    assert r.returncode != 0 and "unknown ISA 'nope'" in r.stderr


@pytest.mark.parametrize("isa", NATIVE_ISAS)
def test_simd_math_accuracy_and_nan(isa, native, core):
    """The documented bounds of cpp/simd.h, on every ISA path."""
    if isa not in core.supported_isas():
        pytest.skip(f"this CPU cannot run the {isa} path")
    x = np.concatenate([np.linspace(-30, 30, 300_001), [0.0, -0.0, 1e-30, -1e-30]]).astype(np.float32)
    x64 = x.astype(np.float64)
    with native.use_isa(isa):
        sig, th = core._eval("sigmoid", x), core._eval("tanh", x)
        ex = core._eval("exp", x[(x > -87) & (x < 88)])
        special = np.array([np.nan, np.inf, -np.inf], np.float32)
        s_sig, s_th = core._eval("sigmoid", special), core._eval("tanh", special)
    assert np.abs(sig - 1 / (1 + np.exp(-x64))).max() <= 1.2e-7
    assert np.abs(th - np.tanh(x64)).max() <= 5e-7
    e64 = np.exp(x64[(x > -87) & (x < 88)])
    assert (np.abs(ex - e64) / e64).max() <= 2.5e-7
    assert np.isnan(s_sig[0]) and s_sig[1] == 1 and s_sig[2] == 0
    assert np.isnan(s_th[0]) and s_th[1] == 1 and s_th[2] == -1
    assert (sig >= 0).all() and (sig <= 1).all() and (np.abs(th) <= 1).all()


@pytest.mark.parametrize("isa", NATIVE_ISAS)
@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (7, 3, 5), (37, 53, 71), (130, 300, 65), (5, 513, 33), (48, 1100, 40)])
def test_gemm(isa, M, K, N, native, core, rng):
    if isa not in core.supported_isas():
        pytest.skip(f"this CPU cannot run the {isa} path")
    A = rng.standard_normal((M, K)).astype(np.float32)
    B = rng.standard_normal((K, N)).astype(np.float32)
    with native.use_isa(isa):
        C = core.gemm(A, B)
        Ct = core.gemm(np.ascontiguousarray(A.T), B, trans_a=True)  # A given as (K, M)
        assert core.last_isa() == isa
    for got in (C, Ct):
        np.testing.assert_allclose(got, A.astype(np.float64) @ B, rtol=1e-4, atol=1e-4 * np.sqrt(K))
    with pytest.raises(ValueError, match="different K"):
        core.gemm(A, np.zeros((K + 1, N), np.float32))


@pytest.mark.parametrize("isa", NATIVE_ISAS)
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("split", ["rows", "units"])
@pytest.mark.parametrize("T,B,I,H,lens,rev,parallel", [
    (1, 1, 1, 1, False, False, False), (4, 13, 7, 50, True, False, True), (3, 20, 1, 45, True, True, True),
    (5, 14, 33, 17, False, True, False), (2, 7, 5, 257, False, False, True), (6, 16, 3, 47, True, False, True)])
def test_forward_paths_match_reference(isa, fused, split, T, B, I, H, lens, rev, parallel, native, core, rng):
    """Every loop variant is forced on every ISA, inference and training, threads 1 and 3: the
    input projection fused into the recurrent tile or one merged GEMM; threads splitting the
    batch rows (no barrier) or the hidden units. `parallel`: the step is big enough for threads."""
    if isa not in core.supported_isas():
        pytest.skip(f"this CPU cannot run the {isa} path")
    old_split = core._set_split(split)
    try:
        _check_forward_paths(isa, fused, split, T, B, I, H, lens, rev, parallel, native, core, rng)
    finally:
        core._set_split(old_split)


def _check_forward_paths(isa, fused, split, T, B, I, H, lens, rev, parallel, native, core, rng):
    args = random_problem(rng, T, B, I, H, dtype=np.float32, scale=0.6, state=True)
    lengths = random_lengths(rng, T, B) if lens else None
    a64 = [a.astype(np.float64) for a in args]
    yr, hr, cr, ws = ref.lstm_forward(*a64, lengths, rev, True)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    gr = ref.lstm_backward(dy.astype(np.float64), np.zeros_like(hr), np.zeros_like(cr), ws, a64[0], a64[1], a64[2], a64[4], a64[5], lengths, rev)
    old_rows, old_threads = core._set_fuse_rows(0 if fused else 1 << 30), fastlstm.get_num_threads()
    try:
        for threads in (1, 3):
            fastlstm.set_num_threads(threads)
            with native.use_isa(isa):
                for training in (False, True):
                    y, hT, cT, tape = fastlstm.lstm_forward(*args, lengths, reverse=rev, training=training,
                                                            backend="native")
                    assert core._last_fused() is fused and native.last_isa() == isa
                    assert core._last_split() == (split if parallel and threads > 1 else "serial")
                    for got, want in ((y, yr), (hT, hr), (cT, cr)):
                        assert np.all(np.abs(got - want) <= 2e-5 + 1e-5 * np.abs(want))
                grads = fastlstm.lstm_backward(dy, None, None, tape)
                assert core._last_split() == (split if parallel and threads > 1 else "serial")
            for g, w in zip(grads, gr):
                assert np.abs(g - w).max() <= 1e-4 * max(np.abs(w).max(), 1e-30)
    finally:
        core._set_fuse_rows(old_rows)
        fastlstm.set_num_threads(old_threads)


@pytest.mark.parametrize("isa", NATIVE_ISAS)
def test_default_rule_merges_the_input_projection_of_few_rows_and_many_inputs(isa, native, core, rng):
    """The default fuse rule (fuse_input): on AVX2 a step of <= 16 rows with I >= 64 and
    Hp >= 96 runs the merged input GEMM, in training too; more rows, fewer inputs or fewer units
    fuse, and so does an inference whose Zx scratch would pass 32 MB. Other ISAs keep fusing."""
    if isa not in core.supported_isas():
        pytest.skip(f"this CPU cannot run the {isa} path")
    avx2 = isa == "avx2"
    fills = isa != "avx512"  # 8 rows fill two register tiles (2·MR4 rows), not AVX-512's of 5 rows
    # (T, B, I, H): fused at inference, fused when training
    cases = {(5, 8, 100, 100): (fills and not avx2,) * 2, (5, 16, 64, 120): (not avx2,) * 2,
             (5, 17, 100, 100): (True, True), (5, 8, 63, 100): (fills,) * 2, (5, 8, 100, 80): (fills,) * 2}
    if avx2:  # 2500·8 rows · 4·104 gates · 4 bytes = 33 MB of Zx
        cases[(2500, 8, 100, 100)] = (True, False)
    old_rows, old_threads = core._set_fuse_rows(-1), fastlstm.get_num_threads()
    try:
        fastlstm.set_num_threads(1)
        for (T, B, I, H), fused in cases.items():
            args = random_problem(rng, T, B, I, H, dtype=np.float32, scale=0.6, state=True)
            yr = ref.lstm_forward(*[a.astype(np.float64) for a in args], None, False, False)[0] if T < 100 else None
            with native.use_isa(isa):
                for training in (False, True):
                    y = fastlstm.lstm_forward(*args, training=training, backend="native")[0]
                    assert native.last_isa() == isa and core._last_fused() is fused[training], (T, B, I, H, training)
                    core._set_fuse_rows(1 << 30 if fused[training] else 0)  # the other path
                    other = fastlstm.lstm_forward(*args, training=training, backend="native")[0]
                    core._set_fuse_rows(-1)
                    assert np.abs(y - other).max() <= 1e-4  # float32 rounding (b added first or last)
                    if yr is not None:
                        assert np.all(np.abs(y - yr) <= 2e-5 + 1e-5 * np.abs(yr))
    finally:
        core._set_fuse_rows(old_rows)
        fastlstm.set_num_threads(old_threads)


@pytest.mark.parametrize("isa", NATIVE_ISAS)
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("T,B,I,H,lens,rev,bf", [
    (5, 7, 3, 21, True, False, False),    # ragged, a length 0; a tail panel on AVX2/AVX-512
    (1, 1, 2, 5, False, False, False),    # T = 1, B = 1: step 0 is the whole sequence
    (4, 6, 9, 40, True, True, True)])     # reversed, batch-first
def test_zero_initial_state_skips_the_first_recurrent_product(isa, fused, T, B, I, H, lens, rev, bf, native, core,
                                                              rng):
    """h0 all zeros (+0 or -0): step 0 skips h0·W_hhᵀ; one nonzero in h0, or an Inf/NaN in W_hh
    (0·Inf is NaN), keeps it. Each against the float64 reference, per call and prepacked, with
    c0 nonzero."""
    if isa not in core.supported_isas():
        pytest.skip(f"this CPU cannot run the {isa} path")
    x, W_ih, W_hh, b, _, c0 = random_problem(rng, T, B, I, H, dtype=np.float32, scale=0.6)
    lengths = random_lengths(rng, T, B) if lens else None
    tm = (lambda a: np.ascontiguousarray(a.transpose(1, 0, 2))) if bf else (lambda a: a)
    one = np.zeros((B, H), np.float32)
    one[-1, -1] = 0.25
    bad = W_hh.copy()
    bad[3, H - 1] = np.inf
    cases = [(np.zeros((B, H), np.float32), W_hh, True), (np.full((B, H), -0.0, np.float32), W_hh, True),
             (one, W_hh, False), (np.zeros((B, H), np.float32), bad, False)]
    old_rows = core._set_fuse_rows(0 if fused else 1 << 30)
    try:
        for h0, Whh, skips in cases:
            a64 = [a.astype(np.float64) for a in (x, W_ih, Whh, b, h0, c0)]
            with np.errstate(invalid="ignore"):                            # 0·Inf
                yr, hr, cr, _ = ref.lstm_forward(*a64, lengths, rev, True)
            with native.use_isa(isa):
                y, hT, cT, _ = native.lstm_forward(tm(x), W_ih, Whh, b, h0, c0, lengths, rev, True, bf)
                assert core._last_h0_zero() is skips and core._last_fused() is fused
                pk = fastlstm.prepack(W_ih, Whh, b, backend="native")
                yp, hp, cp = pk.forward(x, h0, c0, lengths, reverse=rev)
                assert core._last_h0_zero() is skips and native.last_isa() == isa
            for got, want in ((tm(y), yr), (hT, hr), (cT, cr), (yp, yr), (hp, hr), (cp, cr)):
                both_nan = np.isnan(got) & np.isnan(want)
                assert np.array_equal(np.isnan(got), np.isnan(want))       # Inf in W_hh: NaN in, NaN out
                assert np.all(both_nan | (np.abs(got - want) <= 2e-5 + 1e-5 * np.abs(want)))
    finally:
        core._set_fuse_rows(old_rows)


@pytest.mark.parametrize("isa", NATIVE_ISAS)
@pytest.mark.parametrize("T,B,I,H,lens,rev,bf,chunk_rows", [
    (5, 7, 3, 21, True, False, False, None),   # ragged, a length 0: step 0 has the rows of length > 0
    (1, 1, 2, 5, False, False, False, None),   # T = 1, B = 1: step 0 is the whole sequence
    (4, 6, 9, 40, True, True, True, None),     # reversed, batch-first (x rows gathered)
    (6, 5, 4, 24, True, False, False, 3)])     # chunks of 3 rows: step 0 in the last of several
@pytest.mark.parametrize("threads", [1, 2])
def test_zero_initial_state_skips_the_first_steps_dw_hh(isa, T, B, I, H, lens, rev, bf, chunk_rows, threads, native,
                                                       core, rng):
    """From h0 all zeros, step 0's rows add nothing to dW_hh (h0ᵀ·dz), and the backward's dW
    product runs them without the h_{t-1} block (small results, gemm_tn). A nonzero h0, or an Inf
    in step 0's dz (0·Inf is NaN: the reference's dW_hh has NaNs there), keeps them. Every
    gradient against the float64 reference, on every ISA, 1 and 2 threads."""
    if isa not in core.supported_isas():
        pytest.skip(f"this CPU cannot run the {isa} path")
    x, W_ih, W_hh, b, _, c0 = random_problem(rng, T, B, I, H, dtype=np.float32, scale=0.6)
    lengths = random_lengths(rng, T, B) if lens else None
    step0_rows = B if lengths is None else int(np.count_nonzero(lengths))
    tm = (lambda a: np.ascontiguousarray(a.transpose(1, 0, 2))) if bf else (lambda a: a)
    dy, dhT, dcT = (rng.standard_normal(s).astype(np.float32) for s in ((T, B, H), (B, H), (B, H)))
    inf_dy = dy.copy()
    inf_dy[T - 1 if rev else 0, 0, 1] = np.inf     # batch row 0 (length T) at its step 0
    one = np.zeros((B, H), np.float32)
    one[-1, -1] = 0.25
    zeros = np.zeros((B, H), np.float32)
    cases = [(zeros, dy, step0_rows), (one, dy, 0), (zeros, inf_dy, 0)]
    old_chunk = core._set_backward_chunk(-1 if chunk_rows is None else chunk_rows * 4 * ((4 * H + 15) // 16 * 16 + 16))
    old_threads = fastlstm.get_num_threads()
    try:
        fastlstm.set_num_threads(threads)
        for h0, g_y, skipped in cases:
            a64 = [a.astype(np.float64) for a in (x, W_ih, W_hh, b, h0, c0)]
            *_, ws = ref.lstm_forward(*a64, lengths, rev, True)
            with np.errstate(invalid="ignore"):    # Inf · 0, Inf - Inf
                want = ref.lstm_backward(g_y.astype(np.float64), dhT.astype(np.float64), dcT.astype(np.float64),
                                         ws, a64[0], a64[1], a64[2], a64[4], a64[5], lengths, rev)
            with native.use_isa(isa):
                *_, tape = native.lstm_forward(tm(x), W_ih, W_hh, b, h0, c0, lengths, rev, True, bf)
                got = native.lstm_backward(tm(g_y), dhT, dcT, tape, tm(x), W_ih, W_hh, h0, c0, lengths, rev, True,
                                           bf)
                assert core._last_dw_h0_rows() == skipped and native.last_isa() == isa
            for g, w in zip(got, want):            # dx, dW_ih, dW_hh, db, dh0, dc0
                g = tm(g) if g.ndim == 3 else g
                ok = np.isfinite(w)                  # an Inf against a NaN is not a difference here
                assert np.array_equal(np.isfinite(g), ok)
                assert np.all(np.abs(g[ok] - w[ok]) <= 1e-4 * max(np.abs(w[ok]).max(initial=1.0), 1.0))
            assert np.isfinite(want[2]).all() == (g_y is dy)  # the Inf reaches dW_hh through h0ᵀ·dz
    finally:
        core._set_backward_chunk(old_chunk)
        fastlstm.set_num_threads(old_threads)


@pytest.mark.parametrize("isa", NATIVE_ISAS)
@pytest.mark.parametrize("fused", [True, False])
def test_tail_panel_matches_reference(isa, fused, native, core, rng):
    """A last panel of ny <= W/4 units computes its four gates as one vector (AVX2, AVX-512):
    H = k·W + ny for every ny up to W/4 + 1 (the first that does not) proves which H take the
    path, and forward (inference, training, prepacked, streaming steps) and backward match the
    reference at 1 thread and at 2 threads splitting the units (the tail panel in one part)."""
    if isa not in core.supported_isas():
        pytest.skip(f"this CPU cannot run the {isa} path")
    with native.use_isa(isa):
        W = core.vector_width()
    old_rows, old_split, old_threads = core._set_fuse_rows(0 if fused else 1 << 30), core._set_split("units"), \
        fastlstm.get_num_threads()
    try:
        k = max(1, 48 // W)  # steps big enough for the forced units split, 2 parts
        for H in sorted({k * W + ny for ny in range(1, W // 4 + 2)} | {2}):
            ny = H % W
            with native.use_isa(isa):
                assert core._tail_units(H) == (ny if W >= 8 and 0 < ny <= W // 4 else 0)
            T, B, I = 4, 16, 3
            args = random_problem(rng, T, B, I, H, dtype=np.float32, scale=0.6, state=True)
            lengths = random_lengths(rng, T, B)
            a64 = [a.astype(np.float64) for a in args]
            yr, hr, cr, ws = ref.lstm_forward(*a64, lengths, False, True)
            dy = rng.standard_normal((T, B, H)).astype(np.float32)
            gr = ref.lstm_backward(dy.astype(np.float64), np.zeros_like(hr), np.zeros_like(cr), ws, a64[0], a64[1],
                                   a64[2], a64[4], a64[5], lengths, False)
            for threads in (1, 2):
                fastlstm.set_num_threads(threads)
                with native.use_isa(isa):
                    y, hT, cT, tape = fastlstm.lstm_forward(*args, lengths, training=True, backend="native")
                    assert native.last_isa() == isa and core._last_fused() is fused
                    assert core._last_split() == ("units" if threads > 1 and H > 2 else "serial")
                    grads = fastlstm.lstm_backward(dy, None, None, tape)
                    pk = fastlstm.prepack(*args[1:4], backend="native")
                    yp, hp, cp = pk.forward(args[0], args[4], args[5], lengths)
                for got, want in ((y, yr), (hT, hr), (cT, cr), (yp, yr), (hp, hr), (cp, cr)):
                    assert np.all(np.abs(got - want) <= 2e-5 + 1e-5 * np.abs(want))
                for g, w in zip(grads, gr):
                    assert np.abs(g - w).max() <= 1e-4 * max(np.abs(w).max(), 1e-30)
            # streaming steps of the same weights, full-length rows
            h, c = args[4].copy(), args[5].copy()
            with native.use_isa(isa):
                for t in range(T):
                    pk.step(args[0][t], h, c)
            y2, h2, c2 = ref.lstm_forward(*a64, None, False, False)[:3]
            assert np.all(np.abs(h - h2) <= 2e-5 + 1e-5 * np.abs(h2)) and np.all(np.abs(c - c2) <= 2e-5 + 1e-5 * np.abs(c2))
    finally:
        core._set_fuse_rows(old_rows)
        core._set_split(old_split)
        fastlstm.set_num_threads(old_threads)


def test_measured_split_choice(native, core, rng):
    """Loops the automatic rule splits are timed split and on one thread; the faster runs, the
    other three times every 64 loops, and results match the reference either way. The rule
    alone (adaptive off) always splits."""
    T, B, I, H = 20, 1, 8, 256  # one row: the automatic rule splits the units at 2 threads
    args = random_problem(rng, T, B, I, H, dtype=np.float32, scale=0.1)
    a64 = [a.astype(np.float64) for a in args]
    yr = ref.lstm_forward(*a64, None, False, False)[0]
    old_split, old_threads = core._set_split("auto"), fastlstm.get_num_threads()
    old_adaptive = core._set_split_adaptive(True)
    try:
        fastlstm.set_num_threads(2)
        core._reset_split_timings()
        ran = []
        for _ in range(96):
            y = fastlstm.lstm_forward(*args, backend="native")[0]
            ran.append(core._last_split())
            assert np.all(np.abs(y - yr) <= 2e-5 + 1e-5 * np.abs(yr))
        assert ran[:6] == ["units"] * 3 + ["serial"] * 3  # each run three times first
        (e,) = [e for e in core._split_timings() if e["kind"] == "forward" and e["B"] == 1]
        assert e["split"] == "units" and e["threads"] == 2 and e["ns_serial"] > 0 and e["ns_split"] > 0
        assert e["runs_serial"] == ran.count("serial") and e["runs_split"] == ran.count("units")
        assert len(e["samples_serial"]) >= 2 and len(e["samples_split"]) >= 2  # the first after a change untimed
        # then the faster as timed, the other three times every 64 loops: at least 3 + 3 of each
        assert min(ran.count("serial"), ran.count("units")) >= 6
        core._set_split_adaptive(False)
        for _ in range(3):
            fastlstm.lstm_forward(*args, backend="native")
            assert core._last_split() == "units"
    finally:
        core._set_split(old_split)
        core._set_split_adaptive(old_adaptive)
        fastlstm.set_num_threads(old_threads)


@pytest.mark.parametrize("threads", [1, 2, 3, 5])
def test_thread_counts_agree(threads, native, rng):
    T, B, I, H = 9, 11, 13, 70  # H spans several per-thread slices
    args = random_problem(rng, T, B, I, H, dtype=np.float32)
    lengths = random_lengths(rng, T, B)
    old = fastlstm.get_num_threads()
    try:
        fastlstm.set_num_threads(threads)
        y, hT, cT, tape = fastlstm.lstm_forward(*args, lengths, training=True, backend="native")
        grads = fastlstm.lstm_backward(np.ones_like(y), None, None, tape)
    finally:
        fastlstm.set_num_threads(old)
    a64 = [a.astype(np.float64) for a in args]
    yr, hr, cr, ws = ref.lstm_forward(*a64, lengths, False, True)
    gr = ref.lstm_backward(np.ones_like(yr), np.zeros_like(hr), np.zeros_like(cr), ws, a64[0], a64[1], a64[2],
                           a64[4], a64[5], lengths)
    np.testing.assert_allclose(y, yr, atol=2e-5, rtol=1e-5)
    for g, w in zip(grads, gr):
        assert np.abs(g - w).max() <= 1e-4 * np.abs(w).max()


def test_set_num_threads_rejects_zero():
    with pytest.raises(ValueError, match=r"n must be in \[1, 1024\], got 0"):
        fastlstm.set_num_threads(0)


@pytest.mark.parametrize("split", ["rows", "units"])
def test_concurrent_calls_from_python_threads(split, native, core, rng):
    """Several Python threads at once (the GIL is released): the callers that find the thread
    team busy run serially, with the work split for one thread; every result is still right.
    Streaming steps, which split their panels over the team too, run among the whole calls."""
    problems = [random_problem(rng, 6, 16, 5, 64, dtype=np.float32) for _ in range(6)]
    a64 = [[a.astype(np.float64) for a in p] for p in problems]
    wants = []
    for p in a64:
        y, hT, cT, ws = ref.lstm_forward(*p, None, False, True)
        g = ref.lstm_backward(np.ones_like(y), np.zeros_like(hT), np.zeros_like(cT), ws, p[0], p[1], p[2], p[4], p[5])
        wants.append((y, g))
    errors = []

    def work(k):
        try:
            for _ in range(10):
                y, _, _, tape = fastlstm.lstm_forward(*problems[k], training=True, backend="native")
                grads = fastlstm.lstm_backward(np.ones_like(y), None, None, tape)
                np.testing.assert_allclose(y, wants[k][0], atol=2e-5, rtol=1e-5)
                for got, want in zip(grads, wants[k][1]):
                    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
                x, W_ih, W_hh, b, h0, c0 = problems[k]
                cell, h, c = core.Cell(W_ih, W_hh, b), h0.copy(), c0.copy()
                for t in range(len(x)):
                    cell.step(x[t], h, c)
                np.testing.assert_allclose(h, wants[k][0][-1], atol=2e-5, rtol=1e-5)
        except Exception as e:  # reported below; an exception in a thread is otherwise lost
            errors.append(e)

    old_split, old_threads = core._set_split(split), fastlstm.get_num_threads()
    try:
        fastlstm.set_num_threads(2)
        fastlstm.lstm_forward(*problems[0], backend="native")
        assert core._last_split() == split  # this size splits over threads when the team is free
        threads = [threading.Thread(target=work, args=(k,)) for k in range(len(problems))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        core._set_split(old_split)
        fastlstm.set_num_threads(old_threads)
    assert not errors, errors


def test_denormal_mode_is_restored(native, rng):
    """Kernels flush denormals internally but must leave the caller's FP mode as it was."""
    tiny = np.array([1e-39], np.float32)
    assert tiny[0] != 0 and (tiny * np.float32(1.0))[0] != 0
    args = random_problem(rng, 3, 2, 2, 5, dtype=np.float32)
    fastlstm.lstm_forward(*args, backend="native")
    assert (tiny * np.float32(1.0))[0] != 0


def test_big_outputs_are_recycled_through_the_buffer_pool(core, rng):
    """Output arrays of 128 KB or more come from the kernels' buffer pool and go back to it when
    freed (no fresh pages per call); one still held is never handed out again."""
    T, B, I, H = 20, 2, 300, 300                 # dW_ih, dW_hh: 1.4 MB each; y: 48 KB (numpy's)
    x, W_ih, W_hh, b, h0, c0 = random_problem(rng, T, B, I, H, dtype=np.float32)
    y, hT, cT, ws = core.lstm_forward(x, W_ih, W_hh, b, h0, c0, None, False, True, False)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    z = np.zeros((B, H), np.float32)

    def grads():
        return core.lstm_backward(dy, z, z, ws, x, W_ih, W_hh, None, None, None, False, True, False, True)

    core.release_scratch()                       # an empty pool: what comes back below is ours
    first = grads()
    kept = [a.copy() for a in first]
    for a in first[1:3]:                         # pooled: not numpy's own, writeable, C-contiguous
        assert not a.flags.owndata and a.flags.writeable and a.flags.c_contiguous
        assert a.ctypes.data % 64 == 0           # cache-line aligned, as every kernel buffer
    assert first[0].flags.owndata               # dx (48 KB) is below the pool's size
    again = grads()                              # `first` still held: different memory, same values
    for a, b_, k in zip(first, again, kept):
        assert not np.shares_memory(a, b_)
        np.testing.assert_array_equal(a, k)
        np.testing.assert_array_equal(b_, k)
    ptrs = {a.ctypes.data for a in first[1:3]}
    del first, a, k
    third = grads()                              # freed buffers come back
    assert {a.ctypes.data for a in third[1:3]} == ptrs
    for a, k in zip(third, kept):
        np.testing.assert_array_equal(a, k)
    big = core.gemm(np.ones((300, 200), np.float32), np.ones((200, 400), np.float32))
    assert not big.flags.owndata and big.shape == (300, 400) and np.all(big == 200)


def test_empty_cache_gives_the_pooled_buffers_back(core, rng):
    x, W_ih, W_hh, b, h0, c0 = random_problem(rng, 20, 2, 300, 300, dtype=np.float32)
    y, hT, cT, ws = core.lstm_forward(x, W_ih, W_hh, b, h0, c0, None, False, True, False)
    z = np.zeros((2, 300), np.float32)
    out = core.lstm_backward(np.ones_like(y), z, z, ws, x, W_ih, W_hh, None, None, None, False, True, False, True)
    del ws, out                                  # the workspace's and dW's buffers go idle
    buffers, nbytes = core._pool_bytes()
    assert buffers >= 2 and nbytes >= 2 * 4 * 300 * 300 * 4
    fastlstm.empty_cache()
    assert core._pool_bytes() == (0, 0)
    y2 = fastlstm.lstm_forward(x, W_ih, W_hh, b, h0, c0, backend="native")[0]   # still works after
    np.testing.assert_allclose(y2, y, rtol=1e-6, atol=1e-7)


def test_backward_uses_the_isa_of_forward(native, core, rng):
    supported = core.supported_isas()
    if len(supported) < 2:
        pytest.skip("only one ISA path runs on this CPU")
    args = random_problem(rng, 4, 3, 2, 21, dtype=np.float32)
    with native.use_isa(supported[-1]):
        y, _, _, tape = fastlstm.lstm_forward(*args, training=True, backend="native")
    assert tape.workspace.isa == supported[-1] and tape.workspace.nbytes > 0
    with native.use_isa(supported[0]):
        dx = fastlstm.lstm_backward(np.ones_like(y), None, None, tape)[0]
    assert native.last_isa() == supported[-1]
    a64 = [a.astype(np.float64) for a in args]
    yr, hr, cr, ws = ref.lstm_forward(*a64, None, False, True)
    dxr = ref.lstm_backward(np.ones_like(yr), hr * 0, cr * 0, ws, a64[0], a64[1], a64[2], a64[4], a64[5])[0]
    assert np.abs(dx - dxr).max() <= 1e-4 * np.abs(dxr).max()


# ---- the extension's own checks (bypassing the Python validation) ----

def test_core_rejects_bad_arrays(core, rng):
    x, W_ih, W_hh, b, h0, c0 = random_problem(rng, 4, 3, 2, 5, dtype=np.float32)
    with pytest.raises(TypeError, match="x must be a float32 array in native byte order, got dtype float64"):
        core.lstm_forward(x.astype(np.float64), W_ih, W_hh, b, h0, c0, None, False, False)
    with pytest.raises(ValueError, match="W_ih must be C-contiguous"):
        core.lstm_forward(x, np.asfortranarray(W_ih), W_hh, b, h0, c0, None, False, False)
    with pytest.raises(ValueError, match=r"h0 must have shape \(3, 5\) \(B from x, H from the weights\), got \(3, 4\)"):
        core.lstm_forward(x, W_ih, W_hh, b, h0[:, :4].copy(), c0, None, False, False)
    with pytest.raises(ValueError, match=r"lengths\[2\] = 9"):
        core.lstm_forward(x, W_ih, W_hh, b, h0, c0, np.array([1, 2, 9]), False, False)
    with pytest.raises(TypeError, match="int64"):
        core.lstm_forward(x, W_ih, W_hh, b, h0, c0, np.array([1, 2, 3], np.int32), False, False)
    with pytest.raises(ValueError, match=r"x's T must be in \[1, \d+\], got 0"):
        core.lstm_forward(x[:0], W_ih, W_hh, b, h0, c0, None, False, False)
    y, hT, cT, ws = core.lstm_forward(x, W_ih, W_hh, b, h0, c0, None, False, True)
    with pytest.raises(ValueError, match="reverse differs"):
        core.lstm_backward(y, hT, cT, ws, x, W_ih, W_hh, h0, c0, None, True)
    with pytest.raises(ValueError, match=r"dy must have shape \(4, 3, 5\)"):
        core.lstm_backward(y[:2], hT, cT, ws, x, W_ih, W_hh, h0, c0, None, False)
    with pytest.raises(TypeError):
        core.lstm_backward(y, hT, cT, None, x, W_ih, W_hh, h0, c0, None, False)


# ---- streaming ----

@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("B,I,H", [(1, 1, 32), (1, 3, 1), (3, 5, 37), (8, 16, 129)])
def test_stepper_matches_whole_sequence(backend, B, I, H, rng):
    require_backend(backend)
    T = 5
    x, W_ih, W_hh, b, h0, c0 = random_problem(rng, T, B, I, H, dtype=np.float32)
    cell = fastlstm.stepper(W_ih, W_hh, b, backend=backend)
    h, c = h0.copy(), c0.copy()
    ys = []
    for t in range(T):
        out = cell.step(x[t], h, c)
        assert out is h or np.shares_memory(out, h)
        ys.append(h.copy())
    a64 = [a.astype(np.float64) for a in (x, W_ih, W_hh, b, h0, c0)]
    yr, hr, cr, _ = ref.lstm_forward(*a64, None, False, False)
    np.testing.assert_allclose(np.stack(ys), yr, atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(c, cr, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("isa", NATIVE_ISAS)
@pytest.mark.parametrize("B,I,H,cold_split", [
    (1, 4, 32, None),      # too small to split at all
    (1, 96, 96, False),    # splits within a stream of steps, not after idle
    (1, 7, 130, False),    # the same with a tail panel (AVX2) and an odd I
    (3, 40, 257, True),    # splits from the first step after idle
    (2, 512, 512, True),
])
def test_streaming_step_splits_its_panels_bit_for_bit(isa, B, I, H, cold_split, native, core, rng):
    """On 2 threads a step with work enough hands its panels of units to the team, each panel whole
    to one thread, so h and c equal the 1-thread step's bit for bit. After idle only a big step
    splits (a worker's wake-up would cost a small one more than it saves); in a stream of steps
    the next ones find the team spinning and split from far less work."""
    if isa not in core.supported_isas():
        pytest.skip(f"this CPU cannot run the {isa} path")
    T = 12
    x, W_ih, W_hh, b, h0, c0 = random_problem(rng, T, B, I, H, dtype=np.float32, scale=1 / np.sqrt(H))
    old = fastlstm.get_num_threads()
    try:
        with native.use_isa(isa):
            cell = core.Cell(W_ih, W_hh, b)
            assert cell.isa == isa
            runs = {}
            for threads in (1, 2):
                fastlstm.set_num_threads(threads)
                time.sleep(0.02)        # idle: the workers asleep, no stream of steps
                h, c, ys, used = h0.copy(), c0.copy(), [], []
                for t in range(T):
                    cell.step(x[t], h, c)
                    used.append(core._last_step_threads())
                    ys.append(h.copy())
                runs[threads] = (np.stack(ys), c, used)
    finally:
        fastlstm.set_num_threads(old)
    np.testing.assert_array_equal(runs[2][0], runs[1][0])
    np.testing.assert_array_equal(runs[2][1], runs[1][1])
    assert runs[1][2] == [1] * T
    used = runs[2][2]
    if cold_split is None:
        assert used == [1] * T
    else:
        assert used[0] == (2 if cold_split else 1)
        assert 2 in used[1:]    # back to back (a descheduled test process may miss a few)
    np.testing.assert_allclose(runs[2][0][-1], ref.lstm_forward(*[a.astype(np.float64) for a in (
        x, W_ih, W_hh, b, h0, c0)], None, False, False)[1], atol=2e-5, rtol=1e-5)


def test_native_stepper_rejects_bad_state(native, rng):
    x, W_ih, W_hh, b, h0, c0 = random_problem(rng, 1, 2, 3, 4, dtype=np.float32)
    cell = fastlstm.stepper(W_ih, W_hh, b, backend="native")
    assert (cell.input_size, cell.hidden_size) == (3, 4)
    with pytest.raises(ValueError, match=r"h must have shape \(2, 4\)"):
        cell.step(x[0], h0[:1].copy(), c0)
    with pytest.raises(TypeError, match="c must be a float32 array"):
        cell.step(x[0], h0, c0.astype(np.float64))
    with pytest.raises(ValueError, match="must not overlap"):
        cell.step(x[0], h0, h0)
    with pytest.raises(ValueError, match=r"W_ih must have shape \(4H, I\)"):
        fastlstm.stepper(W_ih[:5], W_hh, b)


@pytest.mark.parametrize("isa", NATIVE_ISAS)
@pytest.mark.parametrize("where", ["x", "h0"])
@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize("fused", [True, False])
def test_infinite_inputs_follow_the_reference(isa, where, sign, fused, native, core, rng):
    """IEEE semantics: ±inf in x or h0 gives the reference's result (finite where it is finite).
    The padded hidden units' zero weights once turned inf into NaN (inf·0) that reached every
    unit through the next step's h_{t-1}; the issue's case first, then a random one."""
    if isa not in core.supported_isas():
        pytest.skip(f"this CPU cannot run the {isa} path")
    cases = []
    x = np.zeros((2, 1, 1), np.float32)
    W, b = np.full((4, 1), 0.5, np.float32), np.full(4, 0.5, np.float32)
    h0 = np.zeros((1, 1), np.float32)
    (x if where == "x" else h0)[0, 0] = sign * np.inf
    cases.append((x, W, W, b, h0, h0.copy()))
    T, B, I, H = 3, 13, 3, 19  # H odd: a partly padded vector and a wholly padded one
    args = list(random_problem(rng, T, B, I, H, dtype=np.float32))
    if where == "x":
        args[0][0, 4, 1] = sign * np.inf
    else:
        args[4][4, 7] = sign * np.inf
    cases.append(tuple(args))
    old = core._set_fuse_rows(0 if fused else 1 << 30)
    try:
        for x, W_ih, W_hh, b, h0, c0 in cases:
            T, B, H = x.shape[0], x.shape[1], W_hh.shape[1]
            a64 = [a.astype(np.float64) for a in (x, W_ih, W_hh, b, h0, c0)]
            with np.errstate(invalid="ignore"):
                *fr, ws_r = ref.lstm_forward(*a64, None, False, True)
                dy, z = np.ones((T, B, H)), np.zeros((B, H))
                gr = ref.lstm_backward(dy, z, z, ws_r, *a64[:3], *a64[4:], None, False)
            with native.use_isa(isa):
                *fn, ws_n = core.lstm_forward(x, W_ih, W_hh, b, h0, c0, None, False, True)
                assert core._last_fused() is fused and native.last_isa() == isa
                gn = core.lstm_backward(dy.astype(np.float32), z.astype(np.float32), z.astype(np.float32), ws_n,
                                        x, W_ih, W_hh, h0, c0, None, False)
            for name, got, want in zip(("y", "hT", "cT", "dx", "dW_ih", "dW_hh", "db", "dh0", "dc0"),
                                       fn + list(gn), fr + list(gr)):
                np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want), err_msg=name)
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, equal_nan=True, err_msg=name)
            if where == "x":  # the streaming step too
                cell = core.Cell(W_ih, W_hh, b)
                h, c = h0.copy(), c0.copy()
                with native.use_isa(isa):
                    for t in range(T):
                        cell.step(x[t], h, c)
                np.testing.assert_allclose(h, fr[1], rtol=1e-4, atol=1e-4, equal_nan=True)
    finally:
        core._set_fuse_rows(old)


@pytest.mark.parametrize("T,B,I,H,expect", [
    (3, 4, 2, 20, "serial"),      # tiny: a worker's wake-up would cost more than the work
    (50, 1, 4, 64, "serial"),     # a 33 kFLOP step: under kUnitsStepFlops
    (20, 1, 1, 100, "serial"),    # 0.1 MFLOP steps, but a 2 MFLOP loop: under kUnitsLoopFlops
    (24, 32, 1, 50, "rows"),      # 16 rows per thread, 10 MFLOP per thread, weights within L2
    (20, 8, 1, 256, "units"),     # 4 rows per thread, but 1 MB of W_hh per step: past L2
    (50, 6, 1, 100, "units"),     # 3 rows per thread: too few for rows
    (50, 1, 8, 256, "units"),     # one row, 0.5 MFLOP steps (a GEMV of W_hh per step)
    (2, 40, 8, 512, "rows"),      # 20 rows per thread, 85 MFLOP per thread, weights cached
    # forward: 8 rows per thread and 4 MB of weights per step, past L2: each thread streams its
    # share (units); the backward keeps rows (units_stream_less)
    (2, 16, 8, 512, ("units", "rows")),
    (4, 32, 200, 200, "rows"),    # 1.4 MB of weights, but 13 vectors split unevenly in 2W chunks
    (3, 1, 4, 768, "units"),      # one row: a 4.7 MFLOP step split over the units
    # forward: 4 rows per thread, fewer than two full register tiles, and the units split evenly
    # (units_fill_tiles); the backward keeps rows
    (20, 8, 1, 128, ("units", "rows")),
    (20, 8, 1, 100, "rows"),      # the same, but the units split unevenly: rows
])
def test_automatic_thread_split_rule(T, B, I, H, expect, native, core, rng):
    """plan_loop's rule with 2 threads and no forced policy, forward and backward (the path taken
    is what the kernels report), and the results still match the reference."""
    args = random_problem(rng, T, B, I, H, dtype=np.float32, scale=0.1)  # 0.5 is chaotic over 50 steps at H = 256
    expect_fwd, expect_bwd = (expect, expect) if isinstance(expect, str) else expect
    old_split, old_threads = core._set_split("auto"), fastlstm.get_num_threads()
    old_adaptive = core._set_split_adaptive(False)  # the rule alone (see test_measured_split_choice)
    try:
        fastlstm.set_num_threads(2)
        y, hT, cT, tape = fastlstm.lstm_forward(*args, training=True, backend="native")
        assert core._last_split() == expect_fwd
        grads = fastlstm.lstm_backward(np.ones_like(y), None, None, tape)
        assert core._last_split() == expect_bwd
    finally:
        core._set_split(old_split)
        core._set_split_adaptive(old_adaptive)
        fastlstm.set_num_threads(old_threads)
    a64 = [a.astype(np.float64) for a in args]
    yr, hr, cr, ws = ref.lstm_forward(*a64, None, False, True)
    np.testing.assert_allclose(y, yr, atol=2e-5, rtol=1e-5)
    z = np.zeros_like(hr)
    gr = ref.lstm_backward(np.ones_like(yr), z, z, ws, a64[0], a64[1], a64[2], a64[4], a64[5], None, False)
    for g, w in zip(grads, gr):
        assert np.abs(g - w).max() <= 1e-4 * max(np.abs(w).max(), 1e-30)


@pytest.mark.parametrize("threads,expect", [(2, "units"), (4, "rows")])
def test_units_for_weights_past_l2_measured_on_two_threads_only(threads, expect, native, core, rng):
    """units_stream_less: a forward of 16 rows per thread whose 4 MB of weights outgrow L2 splits
    the hidden units on 2 threads; with more threads (every one meeting the others each step,
    not measured) the rule keeps rows. The backward keeps rows either way."""
    args = random_problem(rng, 2, 32, 8, 512, dtype=np.float32, scale=0.1)
    old_split, old_threads = core._set_split("auto"), fastlstm.get_num_threads()
    old_adaptive = core._set_split_adaptive(False)
    try:
        fastlstm.set_num_threads(threads)
        y, hT, cT, tape = fastlstm.lstm_forward(*args, training=True, backend="native")
        assert core._last_split() == expect
        fastlstm.lstm_backward(np.ones_like(y), None, None, tape)
        assert core._last_split() == "rows"
    finally:
        core._set_split(old_split)
        core._set_split_adaptive(old_adaptive)
        fastlstm.set_num_threads(old_threads)
    yr = ref.lstm_forward(*[a.astype(np.float64) for a in args], None, False, False)[0]
    np.testing.assert_allclose(y, yr, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("isa", NATIVE_ISAS)
@pytest.mark.parametrize("split", ["rows", "units"])
@pytest.mark.parametrize("T,B,I,H,lens,rev", [
    (6, 1, 3, 257, False, False), (5, 3, 17, 150, True, True), (7, 5, 1, 130, True, False), (2, 1, 40, 300, False, True)])
def test_split_runs_a_late_threads_parts(isa, split, T, B, I, H, lens, rev, native, core, rng):
    """The loops' StepTeam: the last thread sleeps before step 1 (units split; sub-step 1 in
    backward) or before its block of rows (rows split), the caller runs its parts instead; the
    result is the reference's on every ISA. One row cannot be split by rows: units then."""
    if isa not in core.supported_isas():
        pytest.skip(f"this CPU cannot run the {isa} path")
    args = random_problem(rng, T, B, I, H, dtype=np.float32, scale=0.3)
    lengths = random_lengths(rng, T, B) if lens else None
    a64 = [a.astype(np.float64) for a in args]
    yr, hr, cr, ws = ref.lstm_forward(*a64, lengths, rev, True)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    gr = ref.lstm_backward(dy.astype(np.float64), np.zeros_like(hr), np.zeros_like(cr), ws, a64[0], a64[1], a64[2],
                           a64[4], a64[5], lengths, rev)
    expect = split if B >= 2 else "units"
    old_split, old_threads = core._set_split(split), fastlstm.get_num_threads()
    old_delay = core._set_steal_test_delay(3000)
    stolen = {"forward": 0, "backward": 0}
    try:
        fastlstm.set_num_threads(2)
        for _ in range(3):  # a stall of the caller itself could let the sleeper come back in time
            with native.use_isa(isa):
                y, hT, cT, tape = fastlstm.lstm_forward(*args, lengths, reverse=rev, training=True, backend="native")
                assert core._last_split() == expect
                stolen["forward"] += core._last_steals()
                grads = fastlstm.lstm_backward(dy, None, None, tape)
                assert core._last_split() == expect
                stolen["backward"] += core._last_steals()
            for got, want in ((y, yr), (hT, hr), (cT, cr)):
                assert np.all(np.abs(got - want) <= 2e-5 + 1e-5 * np.abs(want))
            for g, w in zip(grads, gr):
                assert np.abs(g - w).max() <= 1e-4 * max(np.abs(w).max(), 1e-30)
    finally:
        core._set_steal_test_delay(old_delay)
        core._set_split(old_split)
        fastlstm.set_num_threads(old_threads)
    assert stolen["forward"] > 0 and stolen["backward"] > 0, stolen


@pytest.mark.parametrize("isa", NATIVE_ISAS)
@pytest.mark.parametrize("lens,rev", [(False, False), (True, True)])
def test_split_lets_a_worker_that_comes_late_join(isa, lens, rev, native, core, rng):
    """A worker that arrives after the caller ran its part of the first steps (as one woken from
    sleep does) joins the units split at a later step instead of leaving the loop to the caller;
    a rows split is one step, so there it cannot join and the caller runs its rows. The results
    are the one-thread run's (400 steps: a float64 reference drifts apart in float32)."""
    if isa not in core.supported_isas():
        pytest.skip(f"this CPU cannot run the {isa} path")
    T, I, H = 400, 8, 257
    for split, B in (("units", 1), ("rows", 4)):
        args = random_problem(rng, T, B, I, H, dtype=np.float32, scale=0.3)
        lengths = random_lengths(rng, T, B) if lens and B > 1 else None
        dy = rng.standard_normal((T, B, H)).astype(np.float32)
        old_split, old_threads = core._set_split(split), fastlstm.get_num_threads()
        joins, steals = {"forward": 0, "backward": 0}, 0
        try:
            with native.use_isa(isa):
                fastlstm.set_num_threads(1)
                y1, h1, c1, tape = fastlstm.lstm_forward(*args, lengths, reverse=rev, training=True, backend="native")
                g1 = fastlstm.lstm_backward(dy, None, None, tape)
                fastlstm.set_num_threads(2)
                old_delay = core._set_late_join_test_delay(500)
                try:
                    for _ in range(3):  # a stall of the caller itself could let the sleeper come back in time
                        y, hT, cT, tape = fastlstm.lstm_forward(*args, lengths, reverse=rev, training=True,
                                                                backend="native")
                        assert core._last_split() == split
                        joins["forward"] += core._last_late_joins()
                        steals += core._last_steals()
                        grads = fastlstm.lstm_backward(dy, None, None, tape)
                        joins["backward"] += core._last_late_joins()
                        steals += core._last_steals()
                        for got, want in ((y, y1), (hT, h1), (cT, c1)):   # each unit's arithmetic is the same
                            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
                        for g, w in zip(grads, g1):                       # sums over parts: another order
                            assert np.abs(g - w).max() <= 1e-5 * max(np.abs(w).max(), 1e-30)
                finally:
                    core._set_late_join_test_delay(old_delay)
        finally:
            core._set_split(old_split)
            fastlstm.set_num_threads(old_threads)
        if split == "units":  # its part of step 0 was run for it, then it joined
            assert steals > 0 and joins["forward"] > 0 and joins["backward"] > 0, (steals, joins)
        else:                 # one step: it came in time for its rows or found them taken (ASan
            assert joins == {"forward": 0, "backward": 0}, joins     # builds are slow), never joins


@pytest.mark.skipif(not sys.platform.startswith("linux") or len(os.sched_getaffinity(0)) < 2,
                    reason="the workers are steered by CPU affinity on Linux, with 2+ CPUs allowed")
def test_workers_woken_off_the_callers_cpu_take_the_process_affinity_back(native, core, rng):
    """Sleeping workers are woken with the caller's CPU left out of their affinity (so that Linux
    does not queue them behind the caller); each takes the process's mask back once it runs."""
    import time

    args = random_problem(rng, 200, 1, 4, 257, dtype=np.float32, scale=0.3)
    old_split, old_threads = core._set_split("units"), fastlstm.get_num_threads()
    try:
        fastlstm.set_num_threads(2)
        for _ in range(3):
            time.sleep(0.05)                      # the workers go to sleep (they spin ~200 µs)
            fastlstm.lstm_forward(*args, backend="native")
            assert core._last_split() == "units"
        time.sleep(0.02)
    finally:
        core._set_split(old_split)
        fastlstm.set_num_threads(old_threads)
    def masks():  # every thread's affinity (other libraries' threads come and go meanwhile)
        out = {}
        for t in os.listdir("/proc/self/task"):
            try:
                out[int(t)] = os.sched_getaffinity(int(t))
            except ProcessLookupError:
                pass
        return out

    mask = os.sched_getaffinity(0)
    now = masks()
    assert len(now) >= 2 and now == {t: mask for t in now}
    # thread ids are system-wide: a forked child, without workers of its own, must not steer ours
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # fork with threads (Python 3.12+)
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fastlstm.set_num_threads(2)
            core._set_split("units")
            for _ in range(3):
                time.sleep(0.01)
                fastlstm.lstm_forward(*args, backend="native")
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    now = masks()
    assert now == {t: mask for t in now}


@pytest.mark.parametrize("isa", NATIVE_ISAS)
@pytest.mark.parametrize("I", [1, 8, 12, 16, 17])
def test_dx_dot_products_panels_and_gemm_meet_at_the_boundaries(isa, I, native, core, rng):
    """dX runs as dot products for I <= 16, as two-vector panels for 12 <= I <= 16 on AVX2, and as
    a GEMM above 16; each side of each boundary, with ragged lengths (dX rows scattered back) and H
    leaving a partly padded vector."""
    if isa not in core.supported_isas():
        pytest.skip(f"this CPU cannot run the {isa} path")
    T, B, H = 4, 9, 21
    args = random_problem(rng, T, B, I, H, dtype=np.float32)
    lengths = random_lengths(rng, T, B)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    with native.use_isa(isa):
        y, hT, cT, tape = fastlstm.lstm_forward(*args, lengths, training=True, backend="native")
        dx = fastlstm.lstm_backward(dy, None, None, tape)[0]
        assert native.last_isa() == isa
    want_path = "gemm" if I > 16 else "panels" if isa == "avx2" and I >= 12 else "dots"
    assert core._last_dx() == want_path
    a64 = [a.astype(np.float64) for a in args]
    *_, ws = ref.lstm_forward(*a64, lengths, False, True)
    z = np.zeros((B, H))
    dxr = ref.lstm_backward(dy.astype(np.float64), z, z, ws, a64[0], a64[1], a64[2], a64[4], a64[5], lengths, False)[0]
    assert np.abs(dx - dxr).max() <= 1e-4 * np.abs(dxr).max()
    assert np.all(dx[np.arange(T)[:, None] >= lengths[None, :]] == 0)   # padding gets no gradient


@pytest.mark.parametrize("isa", NATIVE_ISAS)
@pytest.mark.parametrize("chunk", ["step", "some steps"])
@pytest.mark.parametrize("T,B,I,H,lens,rev,bf,need_dx", [
    (7, 9, 3, 21, True, False, False, True),     # dX by dot products, dW by gemm_tn; ragged, a length 0
    (6, 5, 17, 45, True, True, True, True),      # dX by a GEMM, rows scattered; reversed, batch-first
    (5, 6, 16, 128, False, False, True, True),   # dW by gemm_tn, (I + H) % W == 0
    # dW by Gemm4 (4H·(I + H + 1) > 2^18 floats):
    (3, 5, 400, 128, False, False, True, True),  # straight into dW_ih, dW_hh; db as dZᵀ's row sums
    (4, 7, 380, 130, True, True, False, False),  # copied back (rows of 130); db from the ones column; no dX
    (3, 4, 2, 5, "zeros", False, False, True),   # every length 0: one empty chunk
    (2, 3, 400, 128, "zeros", False, False, True)])  # the same by Gemm4: zeros through its SplitOut
@pytest.mark.parametrize("threads", [1, 3])
def test_backward_in_chunks_matches_reference(isa, chunk, T, B, I, H, lens, rev, bf, need_dx, threads, native, core,
                                              rng):
    """The backward runs its steps in chunks, each chunk's products (dX rows, dW accumulated)
    right after it. Forced to a step per chunk and to a few steps per chunk, on every ISA and
    thread count, against the float64 reference and against one chunk."""
    if isa not in core.supported_isas():
        pytest.skip(f"this CPU cannot run the {isa} path")
    x, W_ih, W_hh, b, h0, c0 = random_problem(rng, T, B, I, H, dtype=np.float32, scale=0.6)
    lengths = np.zeros(B, np.int64) if lens == "zeros" else random_lengths(rng, T, B) if lens else None
    dy, dhT, dcT = (rng.standard_normal(s).astype(np.float32) for s in ((T, B, H), (B, H), (B, H)))
    a64 = [a.astype(np.float64) for a in (x, W_ih, W_hh, b, h0, c0)]
    *_, ws = ref.lstm_forward(*a64, lengths, rev, True)
    want = ref.lstm_backward(dy.astype(np.float64), dhT.astype(np.float64), dcT.astype(np.float64), ws, a64[0],
                             a64[1], a64[2], a64[4], a64[5], lengths, rev)
    tm = (lambda a: np.ascontiguousarray(a.transpose(1, 0, 2))) if bf else (lambda a: a)
    row_bytes = 4 * ((4 * H + 15) // 16 * 16 + 16)             # a dZ row (ldz floats)
    chunk_rows = 1 if chunk == "step" else B + 2               # a full step per chunk, or more shorter ones
    old_chunk, old_threads = core._set_backward_chunk(chunk_rows * row_bytes), fastlstm.get_num_threads()
    got = {}
    try:
        fastlstm.set_num_threads(threads)
        for forced in (True, False):
            if not forced:
                core._set_backward_chunk(-1)                   # the rule: one chunk at this size
            with native.use_isa(isa):
                *_, tape = native.lstm_forward(tm(x), W_ih, W_hh, b, h0, c0, lengths, rev, True, bf)
                got[forced] = native.lstm_backward(tm(dy), dhT, dcT, tape, tm(x), W_ih, W_hh, h0, c0, lengths,
                                                   rev, need_dx, bf)
                assert native.last_isa() == isa
                W = core.vector_width()  # straight into dW when I and H keep its vectors aligned
                assert core._last_dw() == ("tn" if 4 * H * (I + H + 1) <= 1 << 18 else
                                           "gemm direct" if I % W == 0 and H % W == 0 else "gemm")
                if forced:  # the first step's dh_{-1} skipped: the rest as before
                    part = native.lstm_backward(tm(dy), dhT, dcT, tape, tm(x), W_ih, W_hh, h0, c0, lengths,
                                                rev, need_dx, bf, need_dh0=False)
                    assert part[4] is None and core._last_chunks() == _chunks(lengths, T, B, chunk_rows)
                    for g, p in zip(got[True][:4] + got[True][5:], part[:4] + part[5:]):
                        assert (g is None and p is None) or np.abs(g - p).max() <= 1e-6 * max(np.abs(g).max(), 1e-30)
            assert core._last_chunks() == (_chunks(lengths, T, B, chunk_rows) if forced else 1)
    finally:
        core._set_backward_chunk(old_chunk)
        fastlstm.set_num_threads(old_threads)
    for g1, g0, w in zip(got[True], got[False], want):
        if w is want[0] and not need_dx:
            assert g1 is None and g0 is None
            continue
        g1, g0 = (tm(g) if w is want[0] else g for g in (g1, g0))
        scale = max(np.abs(w).max(), 1e-30)
        assert np.abs(g1 - w).max() <= 1e-4 * scale and np.abs(g1 - g0).max() <= 1e-5 * scale


def _chunks(lengths, T, B, chunk_rows):
    """How many chunks the backward's rule makes: whole steps from the last, at most chunk_rows
    rows each unless a single step; one (empty) when no step is real."""
    rows = [B] * T if lengths is None else [int((lengths > t).sum()) for t in range(T)]
    rows = [r for r in rows if r > 0]
    count, sb = 0, len(rows)
    while True:
        sa = max(sb - 1, 0)
        while sa > 0 and sum(rows[sa - 1:sb]) <= chunk_rows:
            sa -= 1
        count, sb = count + 1, sa
        if sb == 0:
            return count


@pytest.mark.parametrize("threads", [1, 2])
def test_backward_chunks_by_rule(threads, native, core, rng):
    """The kernels' rule: chunks when dZ passes twice a chunk (2 MB, or twice the dW result),
    unless the dW result passes 3 MB."""
    old_chunk, old_threads = core._set_backward_chunk(-1), fastlstm.get_num_threads()
    try:
        fastlstm.set_num_threads(threads)
        # dZ 4.5 MB, result 75 KB: chunks; 8 steps, dZ 0.6 MB: one; H = 512: result 4.2 MB, dZ 17 MB: one
        for T, B, I, H, expect in ((64, 64, 8, 64, True), (8, 64, 8, 64, False), (32, 64, 1, 512, False)):
            args = random_problem(rng, T, B, I, H, dtype=np.float32)
            *_, tape = native.lstm_forward(*args, None, False, True, False)
            native.lstm_backward(np.ones((T, B, H), np.float32), args[4], args[5], tape, args[0], args[1],
                                 args[2], args[4], args[5], None, False, True, False)
            assert (core._last_chunks() > 1) is expect, (T, B, I, H)
    finally:
        core._set_backward_chunk(old_chunk)
        fastlstm.set_num_threads(old_threads)
