"""Numba LSTM kernels: the fallback when the native C++ module is not built.

Same contract, names and semantics as reference.py (the spec): lstm_forward / lstm_backward,
gate order i, f, g, o, variable lengths, reverse, NaN in -> NaN out, padded inputs never
read. Only how the work is done differs (DESIGN.md §4):

- forward: the input projection of all T steps is one merged GEMM, zx = X·W_ihᵀ + b over
  T·B rows (X in step order, padding zeroed). Then one jitted call runs the whole time loop,
  and per step computes h_{t-1}·W_hhᵀ followed by the fused epilogue (bias is in zx;
  activations and cell update run vectorised over the units while z is in cache).
- backward: one jitted call runs the time loop backwards: per step dh = dz_{t+1}·W_hh, then
  dz_t. After the loop three merged GEMMs over all T·B rows give dW_ih = dZᵀ·X,
  dW_hh = dZᵀ·H_prev and dX = dZ·W_ih (forward keeps H_prev and X transposed, backward
  writes dZ in both layouts, so no big transposes). Weight gradients come from those GEMMs,
  so no per-thread accumulators are needed.
- two loop kinds. "tiles" (H > 128): each step splits the hidden units between the threads
  (each keeps its rows of W_hh in its cache; one parallel region per step) and computes
  h·W_hhᵀ in 4x4 register tiles of dot products (4 gate rows of a unit x 4 batch rows).
  "rows" (H <= 128, or tiny models): the batch rows are split between the threads, each
  running all T steps of its rows with no synchronisation, and z = h·W_hhᵀ is built by rank-1
  updates along 4H, since dot products of length H would be mostly horizontal sums.
- the merged GEMMs are Numba kernels too (same tiles), not NumPy's BLAS: a multi-threaded
  BLAS pool spinning next to Numba's thread pool made the steps wait for a core (10-100x
  slowdowns measured on the 2-core box); with one pool that cannot happen, and the tiles
  reach 150-185 GFLOP/s here, near OpenBLAS. Serial and parallel compiles split the work
  into the same blocks, so results do not depend on the thread count.

Fast-math is one named flag set, FASTMATH, without nnan/ninf so NaN and Inf behave as in IEEE
arithmetic; error_model="numpy" makes x/0 give inf/nan rather than raise (and lets loops
vectorise). float32 uses a rational tanh (max abs error 3.5e-7 vs float64 tanh, measured on
a 2M-point grid over [-12, 12]); float64 uses libm tanh and matches the reference to ~1e-14.
sigmoid(x) = (1 + tanh(x/2)) / 2 as in the reference. Denormals are not flushed: Numba
cannot set FTZ/DAZ.

JIT warm-up: kernels are compiled lazily, per dtype and loop kind, on first use, and cached
on disk (cache=True; info()["cache_dir"]). Measured on the 2-core EPYC (Zen 4) dev box,
float32 forward + backward: without a disk cache the first call of a process compiles for
~14 s (small models), and the first large model another ~14 s; with the cache the first
calls cost ~0.3 s and ~0.15 s (loading); after that (50,1,1,32) takes ~0.1 ms.
Parallel kernels use Numba's threading layer (OpenMP here); like any OpenMP program, do not
fork a process after it has run them.

T = time steps, B = batch, I = input features, H = hidden units.
"""

from __future__ import annotations

import math
import threading
from typing import NamedTuple

import numpy as np

try:
    import numba as nb
    from numba.extending import overload
except ImportError as e:  # the registry then reports this backend as unavailable
    raise ImportError(f"the numba backend needs the numba package: {e}") from e

from .. import _validate
from . import get_num_threads as _registry_threads

# Numba's OpenMP threading layer is the libgomp.so.1 torch's CPU wheels load too, and its first
# parallel launch sets that runtime's thread count to numba's (all cores): torch.set_num_threads(1)
# then ran torch on 2 threads for the rest of the process (seen in the fit benchmark, where
# torch's "1 thread" char-LM epoch took 0.8 CPU seconds in 0.4 s of wall time). Unless the user
# chose a layer, prefer TBB, then numba's own workqueue (one kernel at a time: _PARALLEL_LOCK),
# then OpenMP. The layer is fixed at the process's first parallel launch.
import os as _os  # noqa: E402

if "NUMBA_THREADING_LAYER" not in _os.environ and "NUMBA_THREADING_LAYER_PRIORITY" not in _os.environ:
    nb.config.THREADING_LAYER_PRIORITY = ["tbb", "workqueue", "omp"]

NAME = "numba"
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# Everything LLVM may do except assume no NaN/Inf (nnan, ninf): contract to FMA, reassociate
# (vectorised dot products), approximate reciprocals, ignore the sign of zero, approximate
# libm. NaN and Inf still propagate as in IEEE arithmetic.
FASTMATH = {"contract", "arcp", "reassoc", "nsz", "afn"}
_JIT_OPTIONS = dict(cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy")
_jit = nb.njit(**_JIT_OPTIONS)

# a kernel with fewer multiply-adds runs its serial compile: a parallel launch costs µs, and
# more when the threads have gone to sleep
_PARALLEL_MIN = 1 << 20
_ROWS_MAX_H = 128        # up to this H (or this much work per step) the batch-split loops run
_ROWS_MAX_WORK = 1 << 18
_UB = 16                 # hidden units are split between threads in blocks of 16


# ----------------------------------------------------------------------------------------
# scalar helpers, specialised per dtype so float32 code never promotes to float64

def _typed(like, v):
    """v as a scalar of like's dtype (like: a scalar or an array)."""


@overload(_typed, jit_options={"fastmath": FASTMATH, "error_model": "numpy"})
def _typed_impl(like, v):
    dt = like.dtype if isinstance(like, nb.types.Array) else like
    if dt == nb.types.float32:
        return lambda like, v: np.float32(v)
    return lambda like, v: np.float64(v)


def _tanh(x):
    """tanh; float32: rational approximation, float64: libm."""


@overload(_tanh, jit_options={"fastmath": FASTMATH, "error_model": "numpy"})
def _tanh_impl(x):
    if x != nb.types.float32:
        return lambda x: math.tanh(x)
    f = np.float32
    clamp = f(7.90531110763549805)  # |tanh| rounds to 1 in float32 beyond this
    # odd 13/even 6 rational fit (the coefficients Eigen uses for its float tanh)
    a13, a11, a9 = f(-2.76076847742355e-16), f(2.00018790482477e-13), f(-8.60467152213735e-11)
    a7, a5, a3 = f(5.12229709037114e-08), f(1.48572235717979e-05), f(6.37261928875436e-04)
    a1 = f(4.89352455891786e-03)
    b6, b4 = f(1.19825839466702e-06), f(1.18534705686654e-04)
    b2, b0 = f(2.26843463243900e-03), f(4.89352518554385e-03)

    def tanh32(x):
        # clamp with comparisons, not min/max, so NaN passes through
        if x > clamp:
            x = clamp
        elif x < -clamp:
            x = -clamp
        x2 = x * x
        p = ((((((a13 * x2 + a11) * x2 + a9) * x2 + a7) * x2 + a5) * x2 + a3) * x2 + a1) * x
        q = ((b6 * x2 + b4) * x2 + b2) * x2 + b0
        return p / q
    return tanh32


@_jit
def _sigmoid(x):
    # tanh form, as the reference: no overflow for large |x|, NaN propagates
    half = _typed(x, 0.5)
    return half + half * _tanh(half * x)


# ----------------------------------------------------------------------------------------
# dot products over rows of 2-D arrays, in register tiles (rows by index, not as views:
# a view per tile costs more than the tile when rows are short)

@_jit
def _dot4x4(W, w0, w1, w2, w3, A, a0, a1, a2, a3):
    """s[4r + k] = A[a_r] · W[w_k]: 4 + 4 loads per 16 multiply-adds, vectorised along the
    rows (reassoc) with the 16 sums in registers."""
    z = _typed(W, 0.0)
    s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = z
    s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = z
    for k in range(W.shape[1]):
        p, q, r, t = W[w0, k], W[w1, k], W[w2, k], W[w3, k]
        x = A[a0, k]
        s00 += x * p; s01 += x * q; s02 += x * r; s03 += x * t  # noqa: E702
        x = A[a1, k]
        s10 += x * p; s11 += x * q; s12 += x * r; s13 += x * t  # noqa: E702
        x = A[a2, k]
        s20 += x * p; s21 += x * q; s22 += x * r; s23 += x * t  # noqa: E702
        x = A[a3, k]
        s30 += x * p; s31 += x * q; s32 += x * r; s33 += x * t  # noqa: E702
    return (s00, s01, s02, s03, s10, s11, s12, s13, s20, s21, s22, s23, s30, s31, s32, s33)


@_jit
def _dot4x1(W, w0, w1, w2, w3, A, a):
    """s[k] = A[a] · W[w_k]: the tail of a dimension not divisible by 4."""
    z = _typed(W, 0.0)
    s0 = s1 = s2 = s3 = z
    for k in range(W.shape[1]):
        x = A[a, k]
        s0 += x * W[w0, k]; s1 += x * W[w1, k]; s2 += x * W[w2, k]; s3 += x * W[w3, k]  # noqa: E702
    return s0, s1, s2, s3


@_jit
def _dot1(W, w, A, a):
    z = _typed(W, 0.0)
    for k in range(W.shape[1]):
        z += A[a, k] * W[w, k]
    return z


@_jit
def _rank1_x4(Z, z, n, A, a, W):
    """Z[z + r, :n] = A[a + r] · W for r < 4, as rank-1 updates along the rows of W (K, n),
    four rows of W at a time, each load of W shared by the 4 rows of Z. For small K, where
    dot products would be mostly horizontal sums."""
    o0, o1, o2, o3 = Z[z, 0:n], Z[z + 1, 0:n], Z[z + 2, 0:n], Z[z + 3, 0:n]
    o0[:] = 0
    o1[:] = 0
    o2[:] = 0
    o3[:] = 0
    K = W.shape[0]
    for k in range(0, K - 3, 4):
        x00, x01, x02, x03 = A[a, k], A[a, k + 1], A[a, k + 2], A[a, k + 3]
        x10, x11, x12, x13 = A[a + 1, k], A[a + 1, k + 1], A[a + 1, k + 2], A[a + 1, k + 3]
        x20, x21, x22, x23 = A[a + 2, k], A[a + 2, k + 1], A[a + 2, k + 2], A[a + 2, k + 3]
        x30, x31, x32, x33 = A[a + 3, k], A[a + 3, k + 1], A[a + 3, k + 2], A[a + 3, k + 3]
        w0, w1, w2, w3 = W[k], W[k + 1], W[k + 2], W[k + 3]
        for j in range(n):
            p, q, r, t = w0[j], w1[j], w2[j], w3[j]
            o0[j] += x00 * p + x01 * q + x02 * r + x03 * t
            o1[j] += x10 * p + x11 * q + x12 * r + x13 * t
            o2[j] += x20 * p + x21 * q + x22 * r + x23 * t
            o3[j] += x30 * p + x31 * q + x32 * r + x33 * t
    for k in range(K - K % 4, K):
        x0, x1, x2, x3, w0 = A[a, k], A[a + 1, k], A[a + 2, k], A[a + 3, k], W[k]
        for j in range(n):
            p = w0[j]
            o0[j] += x0 * p
            o1[j] += x1 * p
            o2[j] += x2 * p
            o3[j] += x3 * p


@_jit
def _rank1_x1(Z, z, n, A, a, W):
    """Z[z, :n] = A[a] · W for one row, with the arithmetic of _rank1_x4 (same bits)."""
    o0 = Z[z, 0:n]
    o0[:] = 0
    K = W.shape[0]
    for k in range(0, K - 3, 4):
        x00, x01, x02, x03 = A[a, k], A[a, k + 1], A[a, k + 2], A[a, k + 3]
        w0, w1, w2, w3 = W[k], W[k + 1], W[k + 2], W[k + 3]
        for j in range(n):
            o0[j] += x00 * w0[j] + x01 * w1[j] + x02 * w2[j] + x03 * w3[j]
    for k in range(K - K % 4, K):
        x0, w0 = A[a, k], W[k]
        for j in range(n):
            o0[j] += x0 * w0[j]


@_jit
def _row_range(c, nch, B):
    """Batch rows [b0, b1) of chunk c of nch, edges on multiples of 4 (the _rank1_x4 groups),
    so every thread count groups the rows the same way."""
    ngrp = (B + 3) // 4
    return min(c * ngrp // nch * 4, B), min((c + 1) * ngrp // nch * 4, B)


@_jit
def _unit_range(c, nch, H):
    """Hidden units [u0, u1) of chunk c of nch; chunk edges on multiples of _UB, so every
    thread count tiles the units the same way (results do not depend on it)."""
    nblk = (H + _UB - 1) // _UB
    return min(c * nblk // nch * _UB, H), min((c + 1) * nblk // nch * _UB, H)


@_jit
def _chunk_width(nch, H):
    """The widest chunk of _unit_range, a multiple of _UB."""
    nblk = (H + _UB - 1) // _UB
    return (nblk + nch - 1) // nch * _UB


# ----------------------------------------------------------------------------------------
# forward

@_jit
def _cells_forward(s, b, u0, n, R, st, zx, Hs, Cs, y, gates, HT, lengths, reverse):
    """Activations and cell update of units u0..u0+n-1 of row b at step s.

    R[b] (6·st,) scratch; on entry R[b, k·st + j] = the h_{t-1}·W_hhᵀ part of gate k, unit
    u0+j. Simple loops with one store each: LLVM vectorises those over the units (it gives up
    on loops touching many arrays, which would need too many runtime alias checks).
    """
    H, B = Hs.shape[2], Hs.shape[1]
    hc, hn = s % Hs.shape[0], (s + 1) % Hs.shape[0]
    cc, cn = s % Cs.shape[0], (s + 1) % Cs.shape[0]
    L = lengths[b]
    if HT.shape[0] > 0:                        # training: h_{t-1} transposed, for dW_hh = dZᵀ·H_prev
        hp = Hs[hc, b, u0:u0 + n]
        for j in range(n):
            HT[u0 + j, s * B + b] = hp[j]
    if s >= L:                                 # padding: the row carries its state
        Cs[cn, b, u0:u0 + n] = Cs[cc, b, u0:u0 + n]
        Hs[hn, b, u0:u0 + n] = Hs[hc, b, u0:u0 + n]
        return
    t = L - 1 - s if reverse else s
    rz = R[b]
    ri, rf, rg, ro = rz[0:n], rz[st:st + n], rz[2 * st:2 * st + n], rz[3 * st:3 * st + n]
    rc, rh = rz[4 * st:4 * st + n], rz[5 * st:5 * st + n]
    # z_t = (x_t · W_ihᵀ + b) + h_{t-1} · W_hhᵀ;  i, f, o = σ(z), g = tanh(z)
    zk = zx[s, b, u0:u0 + n]
    for j in range(n):
        ri[j] = _sigmoid(zk[j] + ri[j])
    zk = zx[s, b, H + u0:H + u0 + n]
    for j in range(n):
        rf[j] = _sigmoid(zk[j] + rf[j])
    zk = zx[s, b, 2 * H + u0:2 * H + u0 + n]
    for j in range(n):
        rg[j] = _tanh(zk[j] + rg[j])
    zk = zx[s, b, 3 * H + u0:3 * H + u0 + n]
    for j in range(n):
        ro[j] = _sigmoid(zk[j] + ro[j])
    cp = Cs[cc, b, u0:u0 + n]                  # c_{t-1}
    for j in range(n):
        rc[j] = rf[j] * cp[j] + ri[j] * rg[j]  # c_t = f ⊙ c_{t-1} + i ⊙ g, the error carousel
    for j in range(n):
        rh[j] = ro[j] * _tanh(rc[j])           # h_t = o ⊙ tanh(c_t)
    Cs[cn, b, u0:u0 + n] = rc
    Hs[hn, b, u0:u0 + n] = rh
    y[t, b, u0:u0 + n] = rh
    if gates.shape[0] > 0:                     # training: keep the activated gates for backward
        gates[s, b, u0:u0 + n] = ri
        gates[s, b, H + u0:H + u0 + n] = rf
        gates[s, b, 2 * H + u0:2 * H + u0 + n] = rg
        gates[s, b, 3 * H + u0:3 * H + u0 + n] = ro


@_jit
def _forward_step_tiles(s, u0, u1, zx, W_hh, Hs, Cs, y, gates, HT, lengths, reverse, R):
    """Step s for hidden units [u0, u1) of every row: h_{t-1}·W_hhᵀ in 4x4 register tiles
    (the 4 gate rows of one unit x 4 batch rows) into R, then the epilogue row by row.
    R (B, 6·CH) scratch, CH >= u1 - u0."""
    B, H = Hs.shape[1], Hs.shape[2]
    hp = Hs[s % 2]                             # (B, H) h_{t-1}
    CH = R.shape[1] // 6
    for u in range(u0, u1):
        j = u - u0
        b = 0
        while b + 4 <= B:
            (i0, f0, g0, o0, i1, f1, g1, o1, i2, f2, g2, o2, i3, f3, g3, o3) = _dot4x4(
                W_hh, u, H + u, 2 * H + u, 3 * H + u, hp, b, b + 1, b + 2, b + 3)
            R[b, j], R[b, CH + j], R[b, 2 * CH + j], R[b, 3 * CH + j] = i0, f0, g0, o0
            R[b + 1, j], R[b + 1, CH + j], R[b + 1, 2 * CH + j], R[b + 1, 3 * CH + j] = i1, f1, g1, o1
            R[b + 2, j], R[b + 2, CH + j], R[b + 2, 2 * CH + j], R[b + 2, 3 * CH + j] = i2, f2, g2, o2
            R[b + 3, j], R[b + 3, CH + j], R[b + 3, 2 * CH + j], R[b + 3, 3 * CH + j] = i3, f3, g3, o3
            b += 4
        while b < B:                           # tail rows
            i0, f0, g0, o0 = _dot4x1(W_hh, u, H + u, 2 * H + u, 3 * H + u, hp, b)
            R[b, j], R[b, CH + j], R[b, 2 * CH + j], R[b, 3 * CH + j] = i0, f0, g0, o0
            b += 1
    for b in range(B):
        _cells_forward(s, b, u0, u1 - u0, R, CH, zx, Hs, Cs, y, gates, HT, lengths, reverse)


@_jit
def _forward_step_rows(s, b0, b1, zx, W_hhT, Hs, Cs, y, gates, HT, lengths, reverse, R):
    """Step s, all units, batch rows [b0, b1): h_{t-1}·W_hhᵀ as rank-1 updates along 4H
    (dot products of length H would be mostly horizontal sums). W_hhT (H, 4H), R (B, 6H)."""
    H = Hs.shape[2]
    hp = Hs[s % 2]                             # (B, H) h_{t-1}
    b = b0
    while b + 4 <= b1:
        _rank1_x4(R, b, 4 * H, hp, b, W_hhT)
        b += 4
    while b < b1:
        _rank1_x1(R, b, 4 * H, hp, b, W_hhT)
        b += 1
    for b in range(b0, b1):
        _cells_forward(s, b, 0, H, R, H, zx, Hs, Cs, y, gates, HT, lengths, reverse)


def _forward_loop_rows(zx, W, Hs, Cs, y, gates, HT, lengths, reverse, nch):
    """All T steps in one call, one thread, W = W_hhᵀ (H, 4H); the rest as _forward_loop_tiles."""
    R = np.empty((Hs.shape[1], 6 * Hs.shape[2]), zx.dtype)
    for s in range(zx.shape[0]):
        _forward_step_rows(s, 0, Hs.shape[1], zx, W, Hs, Cs, y, gates, HT, lengths, reverse, R)


def _forward_loop_rows_parallel(zx, W, Hs, Cs, y, gates, HT, lengths, reverse, nch):
    """As _forward_loop_rows with the batch rows split into nch chunks: rows are independent,
    so each thread runs all T steps of its rows with no synchronisation."""
    B, H = Hs.shape[1], Hs.shape[2]
    R = np.empty((B, 6 * H), zx.dtype)
    for c in nb.prange(nch):
        b0, b1 = _row_range(c, nch, B)
        for s in range(zx.shape[0]):
            _forward_step_rows(s, b0, b1, zx, W, Hs, Cs, y, gates, HT, lengths, reverse, R)


def _forward_loop_tiles(zx, W, Hs, Cs, y, gates, HT, lengths, reverse, nch):
    """All T steps in one call, hidden units split into nch chunks (one per thread).

    zx (T,B,4H) = x·W_ihᵀ + b in step order, W = W_hh (4H, H), Hs (2,B,H) ring of h with
    slot 0 = h0, Cs (T+1,B,H) every c when training, else a ring (2,B,H), slot 0 = c0,
    y (T,B,H) time order (zeros at padding). Training only, else empty: gates (T,B,4H) and
    HT (H, T·B) = h_{t-1} of every step, transposed.
    """
    B, H = Hs.shape[1], Hs.shape[2]
    R = np.empty((nch, B, 6 * _chunk_width(nch, H)), zx.dtype)
    for s in range(zx.shape[0]):
        for c in nb.prange(nch):
            u0, u1 = _unit_range(c, nch, H)
            _forward_step_tiles(s, u0, u1, zx, W, Hs, Cs, y, gates, HT, lengths, reverse, R[c])


# ----------------------------------------------------------------------------------------
# backward

@_jit
def _cells_backward(s, b, u0, n, R, st, dy, dhT, DC, dh0, gates, Cs, dZ, dZT, lengths, reverse):
    """dz of units u0..u0+n-1 of row b at step s; s = -1: only dh0.

    R[b] (3·st,) scratch; on entry R[b, j] = dz_{s+1}[b] · W_hh[:, u0+j], the dh sent back by
    a real step s+1. Otherwise (step s+1 padded or past the end) dh is dhT, passed through
    unchanged by the padded steps. Simple loops, vectorised as in _cells_forward. dz goes to
    dZ (step, row, 4H) for the recurrence and to dZT (4H, T·B) for the weight gradients.
    """
    B, H = DC.shape[0], DC.shape[1]
    L = lengths[b]
    rd = R[b]
    dh = rd[0:n]
    if s + 1 >= L:
        dh[:] = dhT[b, u0:u0 + n]
    if s < 0:
        dh0[b, u0:u0 + n] = dh
        return
    dzi, dzf = dZ[s, b, u0:u0 + n], dZ[s, b, H + u0:H + u0 + n]
    dzg, dzo = dZ[s, b, 2 * H + u0:2 * H + u0 + n], dZ[s, b, 3 * H + u0:3 * H + u0 + n]
    col = s * B + b
    if s >= L:                                 # padding: dz = 0, dc carried
        dzi[:] = 0
        dzf[:] = 0
        dzg[:] = 0
        dzo[:] = 0
        for k in range(4):
            for j in range(n):
                dZT[k * H + u0 + j, col] = 0
        return
    t = L - 1 - s if reverse else s
    one = _typed(dZ, 1.0)
    i, f = gates[s, b, u0:u0 + n], gates[s, b, H + u0:H + u0 + n]
    g, o = gates[s, b, 2 * H + u0:2 * H + u0 + n], gates[s, b, 3 * H + u0:3 * H + u0 + n]
    c, cp, dcb = Cs[s + 1, b, u0:u0 + n], Cs[s, b, u0:u0 + n], DC[b, u0:u0 + n]  # c_t, c_{t-1}, dc
    tc, dc = rd[st:st + n], rd[2 * st:2 * st + n]
    dyb = dy[t, b, u0:u0 + n]
    for j in range(n):
        dh[j] += dyb[j]
    for j in range(n):
        tc[j] = _tanh(c[j])
    # h_t = o ⊙ tanh(c_t)  ->  dc += dh ⊙ o ⊙ (1 − tanh²(c_t))
    for j in range(n):
        dc[j] = dcb[j] + dh[j] * o[j] * (one - tc[j] * tc[j])
    # back through the activations: σ' = σ(1−σ), tanh' = 1−tanh²
    for j in range(n):
        dzo[j] = dh[j] * tc[j] * o[j] * (one - o[j])      # do = dh ⊙ tanh(c_t)
    # c_t = f ⊙ c_{t-1} + i ⊙ g
    for j in range(n):
        dzi[j] = dc[j] * g[j] * i[j] * (one - i[j])       # di = dc ⊙ g
    for j in range(n):
        dzf[j] = dc[j] * cp[j] * f[j] * (one - f[j])      # df = dc ⊙ c_{t-1}
    for j in range(n):
        dzg[j] = dc[j] * i[j] * (one - g[j] * g[j])       # dg = dc ⊙ i
    for j in range(n):
        dcb[j] = dc[j] * f[j]                             # dc_{t-1} = dc ⊙ f
    for j in range(n):                                    # strided: scalar stores
        dZT[u0 + j, col] = dzi[j]
        dZT[H + u0 + j, col] = dzf[j]
        dZT[2 * H + u0 + j, col] = dzg[j]
        dZT[3 * H + u0 + j, col] = dzo[j]


@_jit
def _backward_step_tiles(s, u0, u1, dy, dhT, DC, dh0, gates, Cs, W_hhT, dZ, dZT, lengths, reverse, R):
    """Step s (s = -1: only dh0) for hidden units [u0, u1) of every row: dh = dz_{s+1}·W_hh in
    4x4 register tiles (4 units = rows of W_hhT x 4 batch rows) into R, then the epilogue row
    by row. R (B, 3·CH) scratch, CH >= u1 - u0 and a multiple of 4."""
    T, B = dZ.shape[0], dZ.shape[1]
    CH = R.shape[1] // 3
    if s + 1 < T:                              # else no row uses dh (it is dhT)
        dzn = dZ[s + 1]                        # (B, 4H) dz_{s+1}
        last = u1 - 1
        for j in range(0, u1 - u0, 4):
            # the tail repeats the last unit; its sums land in unused scratch columns
            u = u0 + j
            w0, w1, w2, w3 = u, min(u + 1, last), min(u + 2, last), min(u + 3, last)
            b = 0
            while b + 4 <= B:
                (r00, r01, r02, r03, r10, r11, r12, r13, r20, r21, r22, r23, r30, r31, r32, r33) = _dot4x4(
                    W_hhT, w0, w1, w2, w3, dzn, b, b + 1, b + 2, b + 3)
                R[b, j], R[b, j + 1], R[b, j + 2], R[b, j + 3] = r00, r01, r02, r03
                R[b + 1, j], R[b + 1, j + 1], R[b + 1, j + 2], R[b + 1, j + 3] = r10, r11, r12, r13
                R[b + 2, j], R[b + 2, j + 1], R[b + 2, j + 2], R[b + 2, j + 3] = r20, r21, r22, r23
                R[b + 3, j], R[b + 3, j + 1], R[b + 3, j + 2], R[b + 3, j + 3] = r30, r31, r32, r33
                b += 4
            while b < B:                       # tail rows
                r00, r01, r02, r03 = _dot4x1(W_hhT, w0, w1, w2, w3, dzn, b)
                R[b, j], R[b, j + 1], R[b, j + 2], R[b, j + 3] = r00, r01, r02, r03
                b += 1
    for b in range(B):
        _cells_backward(s, b, u0, u1 - u0, R, CH, dy, dhT, DC, dh0, gates, Cs, dZ, dZT, lengths, reverse)


@_jit
def _backward_step_rows(s, b0, b1, dy, dhT, DC, dh0, gates, Cs, W_hhT, dZ, dZT, lengths, reverse, R):
    """Step s (s = -1: only dh0), all units, batch rows [b0, b1): dh = dz_{s+1}·W_hh in 4x4
    register tiles (4 units = rows of W_hhT x 4 batch rows; rows of length 4H are long enough
    for dot products). W_hhT (H, 4H), R (B, 3H + 4) scratch."""
    H = W_hhT.shape[0]
    if s + 1 < dZ.shape[0]:                    # else no row uses dh (it is dhT)
        dzn = dZ[s + 1]                        # (B, 4H) dz_{s+1}
        b = b0
        while b + 4 <= b1:
            for u in range(0, H, 4):           # the tail repeats unit H-1 into spare columns
                w0, w1, w2, w3 = u, min(u + 1, H - 1), min(u + 2, H - 1), min(u + 3, H - 1)
                (r00, r01, r02, r03, r10, r11, r12, r13, r20, r21, r22, r23, r30, r31, r32, r33) = _dot4x4(
                    W_hhT, w0, w1, w2, w3, dzn, b, b + 1, b + 2, b + 3)
                R[b, u], R[b, u + 1], R[b, u + 2], R[b, u + 3] = r00, r01, r02, r03
                R[b + 1, u], R[b + 1, u + 1], R[b + 1, u + 2], R[b + 1, u + 3] = r10, r11, r12, r13
                R[b + 2, u], R[b + 2, u + 1], R[b + 2, u + 2], R[b + 2, u + 3] = r20, r21, r22, r23
                R[b + 3, u], R[b + 3, u + 1], R[b + 3, u + 2], R[b + 3, u + 3] = r30, r31, r32, r33
            b += 4
        while b < b1:                          # tail rows
            for u in range(0, H, 4):
                w0, w1, w2, w3 = u, min(u + 1, H - 1), min(u + 2, H - 1), min(u + 3, H - 1)
                R[b, u], R[b, u + 1], R[b, u + 2], R[b, u + 3] = _dot4x1(W_hhT, w0, w1, w2, w3, dzn, b)
            b += 1
    for b in range(b0, b1):
        _cells_backward(s, b, 0, H, R, H, dy, dhT, DC, dh0, gates, Cs, dZ, dZT, lengths, reverse)


def _backward_loop_rows(dy, dhT, DC, dh0, gates, Cs, W, dZ, dZT, lengths, reverse, nch):
    """All T steps backwards in one call, then dh0; one thread. As _backward_loop_tiles."""
    R = np.empty((dZ.shape[1], 3 * W.shape[0] + 4), dZ.dtype)
    for s in range(dZ.shape[0] - 1, -2, -1):
        _backward_step_rows(s, 0, dZ.shape[1], dy, dhT, DC, dh0, gates, Cs, W, dZ, dZT, lengths, reverse, R)


def _backward_loop_rows_parallel(dy, dhT, DC, dh0, gates, Cs, W, dZ, dZT, lengths, reverse, nch):
    """As _backward_loop_rows with the batch rows split into nch independent chunks."""
    B = dZ.shape[1]
    R = np.empty((B, 3 * W.shape[0] + 4), dZ.dtype)
    for c in nb.prange(nch):
        b0, b1 = _row_range(c, nch, B)
        for s in range(dZ.shape[0] - 1, -2, -1):
            _backward_step_rows(s, b0, b1, dy, dhT, DC, dh0, gates, Cs, W, dZ, dZT, lengths, reverse, R)


def _backward_loop_tiles(dy, dhT, DC, dh0, gates, Cs, W, dZ, dZT, lengths, reverse, nch):
    """All T steps backwards in one call, then dh0; hidden units split into nch chunks.

    dy (T,B,H) time order, dhT (B,H), DC (B,H) = dcT on entry and dc0 on exit, dh0 (B,H) out,
    gates (T,B,4H) and Cs (T+1,B,H) from forward, W = W_hhᵀ (H, 4H); out: dZ (T,B,4H) in step
    order and dZT (4H, T·B), its transpose (both 0 at padding).
    """
    B, H = dZ.shape[1], W.shape[0]
    R = np.empty((nch, B, 3 * _chunk_width(nch, H)), dZ.dtype)
    for s in range(dZ.shape[0] - 1, -2, -1):
        for c in nb.prange(nch):
            u0, u1 = _unit_range(c, nch, H)
            _backward_step_tiles(s, u0, u1, dy, dhT, DC, dh0, gates, Cs, W, dZ, dZT, lengths, reverse, R[c])


# ----------------------------------------------------------------------------------------
# the merged (non-recurrent) GEMMs over all T·B rows, and transposes for them

_GEMM_MB, _GEMM_NB = 64, 64  # C block per task: 64 rows of A x 64 rows of Bm (Bm block in L2)
_GEMM_ROWS_MAX_K = 16        # below this K, rank-1 updates instead of dot products


@_jit
def _gemm_nt_task(task, A, Bm, C, bias):
    """Block `task` of C = A·Bmᵀ (+ bias): A (M,K), Bm (N,K), C (M,N), bias (N,) or (0,)."""
    M, N = A.shape[0], Bm.shape[0]
    nm = (M + _GEMM_MB - 1) // _GEMM_MB
    m0, n0 = (task % nm) * _GEMM_MB, (task // nm) * _GEMM_NB
    m1, n1 = min(m0 + _GEMM_MB, M), min(n0 + _GEMM_NB, N)
    z = _typed(C, 0.0)
    add = bias.shape[0] > 0
    m = m0
    while m + 4 <= m1:
        c0, c1, c2, c3 = C[m], C[m + 1], C[m + 2], C[m + 3]
        n = n0
        while n + 4 <= n1:
            (s00, s01, s02, s03, s10, s11, s12, s13, s20, s21, s22, s23, s30, s31, s32, s33) = _dot4x4(
                Bm, n, n + 1, n + 2, n + 3, A, m, m + 1, m + 2, m + 3)
            b0, b1, b2, b3 = (bias[n], bias[n + 1], bias[n + 2], bias[n + 3]) if add else (z, z, z, z)
            c0[n], c0[n + 1], c0[n + 2], c0[n + 3] = s00 + b0, s01 + b1, s02 + b2, s03 + b3
            c1[n], c1[n + 1], c1[n + 2], c1[n + 3] = s10 + b0, s11 + b1, s12 + b2, s13 + b3
            c2[n], c2[n + 1], c2[n + 2], c2[n + 3] = s20 + b0, s21 + b1, s22 + b2, s23 + b3
            c3[n], c3[n + 1], c3[n + 2], c3[n + 3] = s30 + b0, s31 + b1, s32 + b2, s33 + b3
            n += 4
        while n < n1:                          # tail columns: 4 rows of A against one of Bm
            s0, s1, s2, s3 = _dot4x1(A, m, m + 1, m + 2, m + 3, Bm, n)
            b0 = bias[n] if add else z
            c0[n], c1[n], c2[n], c3[n] = s0 + b0, s1 + b0, s2 + b0, s3 + b0
            n += 1
        m += 4
    while m < m1:                              # tail rows
        n = n0
        while n + 4 <= n1:
            s0, s1, s2, s3 = _dot4x1(Bm, n, n + 1, n + 2, n + 3, A, m)
            b0, b1, b2, b3 = (bias[n], bias[n + 1], bias[n + 2], bias[n + 3]) if add else (z, z, z, z)
            C[m, n], C[m, n + 1], C[m, n + 2], C[m, n + 3] = s0 + b0, s1 + b1, s2 + b2, s3 + b3
            n += 4
        while n < n1:
            C[m, n] = _dot1(Bm, n, A, m) + (bias[n] if add else z)
            n += 1
        m += 1


def _gemm_nt_serial(A, Bm, C, bias, nch):
    """C (M,N) = A (M,K) · Bm (N,K)ᵀ (+ bias (N,) unless it is empty), one thread."""
    ntask = ((A.shape[0] + _GEMM_MB - 1) // _GEMM_MB) * ((Bm.shape[0] + _GEMM_NB - 1) // _GEMM_NB)
    for task in range(ntask):
        _gemm_nt_task(task, A, Bm, C, bias)


def _gemm_nt_parallel(A, Bm, C, bias, nch):
    """As _gemm_nt_serial; blocks shared out to the threads (consecutive blocks share Bm)."""
    ntask = ((A.shape[0] + _GEMM_MB - 1) // _GEMM_MB) * ((Bm.shape[0] + _GEMM_NB - 1) // _GEMM_NB)
    for task in nb.prange(ntask):
        _gemm_nt_task(task, A, Bm, C, bias)


@_jit
def _gemm_rows_range(m0, m1, A, BT, C, bias):
    """Rows [m0, m1) of C = A·BT (+ bias) as rank-1 updates: A (M,K), BT (K,N), for small K."""
    N = BT.shape[1]
    m = m0
    while m + 4 <= m1:
        _rank1_x4(C, m, N, A, m, BT)
        m += 4
    while m < m1:
        _rank1_x1(C, m, N, A, m, BT)
        m += 1
    if bias.shape[0] > 0:
        for m in range(m0, m1):
            c = C[m]
            for j in range(N):
                c[j] += bias[j]


def _gemm_rows_serial(A, BT, C, bias, nch):
    """C (M,N) = A (M,K) · BT (K,N) (+ bias (N,) unless it is empty), one thread, small K."""
    _gemm_rows_range(0, A.shape[0], A, BT, C, bias)


def _gemm_rows_parallel(A, BT, C, bias, nch):
    for c in nb.prange(nch):
        m0, m1 = _row_range(c, nch, A.shape[0])
        _gemm_rows_range(m0, m1, A, BT, C, bias)


_TR = 32  # transpose tile


@_jit
def _transpose_task(task, src, dst):
    M, N = src.shape
    nm = (M + _TR - 1) // _TR
    m0, n0 = (task % nm) * _TR, (task // nm) * _TR
    for n in range(n0, min(n0 + _TR, N)):
        for m in range(m0, min(m0 + _TR, M)):
            dst[n, m] = src[m, n]


def _transpose_serial(src, dst, nch):
    """dst (N,M) = src (M,N)ᵀ, in tiles."""
    ntask = ((src.shape[0] + _TR - 1) // _TR) * ((src.shape[1] + _TR - 1) // _TR)
    for task in range(ntask):
        _transpose_task(task, src, dst)


def _transpose_parallel(src, dst, nch):
    ntask = ((src.shape[0] + _TR - 1) // _TR) * ((src.shape[1] + _TR - 1) // _TR)
    for task in nb.prange(ntask):
        _transpose_task(task, src, dst)


# ----------------------------------------------------------------------------------------
# step order <-> time order (padding zeroed: never read, never written)

def _gather_steps(x, lengths, reverse, X):
    """X[s, b] = x[t, b] for the real steps of row b (t = s, or lengths[b]-1-s reversed), else 0."""
    T, B = x.shape[0], x.shape[1]
    for s in range(T):
        for b in range(B):
            L = lengths[b]
            if s < L:
                X[s, b, :] = x[L - 1 - s if reverse else s, b, :]
            else:
                X[s, b, :] = 0


def _scatter_steps(dX, lengths, reverse, dx):
    """dx[t, b] = dX[s, b] for the real steps; dx must be zeros (padding stays 0)."""
    T, B = dX.shape[0], dX.shape[1]
    for s in range(T):
        for b in range(B):
            L = lengths[b]
            if s < L:
                dx[L - 1 - s if reverse else s, b, :] = dX[s, b, :]


# ----------------------------------------------------------------------------------------
# typed kernels, compiled per dtype on first use (then loaded from the disk cache)

# Inputs are typed read-only: a read-only or memory-mapped array is an ordinary input, and a
# writeable one converts to the read-only type for free. Outputs (and scratch) stay writeable.

def _ro(f, ndim):
    return nb.types.Array(f, ndim, "C", readonly=True)


def _sig_forward(f):
    a3, a2 = f[:, :, ::1], f[:, ::1]
    #               zx         W_hh(ᵀ)    Hs  Cs  y   gates HT  lengths
    return [nb.void(_ro(f, 3), _ro(f, 2), a3, a3, a3, a3, a2, _ro(nb.int64, 1), nb.boolean, nb.int64)]


def _sig_backward(f):
    a3, a2 = f[:, :, ::1], f[:, ::1]
    #               dy         dhT        DC  dh0 gates      Cs         W_hhᵀ      dZ  dZT lengths
    return [nb.void(_ro(f, 3), _ro(f, 2), a2, a2, _ro(f, 3), _ro(f, 3), _ro(f, 2), a3, a2, _ro(nb.int64, 1),
                    nb.boolean, nb.int64)]


def _sig_gemm(f):
    #               A          Bm         C          bias
    return [nb.void(_ro(f, 2), _ro(f, 2), f[:, ::1], _ro(f, 1), nb.int64)]


def _sig_transpose(f):
    return [nb.void(_ro(f, 2), f[:, ::1], nb.int64)]


def _sig_steps(f):
    #               src        lengths           reverse     dst
    return [nb.void(_ro(f, 3), _ro(nb.int64, 1), nb.boolean, f[:, :, ::1])]


# name -> (python function, parallel, signature builder). A serial and a parallel compile
# need two Python functions: numba's cache key ignores the compile flags.
_SPECS = {
    "forward_rows_serial": (_forward_loop_rows, False, _sig_forward),
    "forward_rows_parallel": (_forward_loop_rows_parallel, True, _sig_forward),
    "forward_tiles": (_forward_loop_tiles, True, _sig_forward),
    "backward_rows_serial": (_backward_loop_rows, False, _sig_backward),
    "backward_rows_parallel": (_backward_loop_rows_parallel, True, _sig_backward),
    "backward_tiles": (_backward_loop_tiles, True, _sig_backward),
    "gemm_nt_serial": (_gemm_nt_serial, False, _sig_gemm),
    "gemm_nt_parallel": (_gemm_nt_parallel, True, _sig_gemm),
    "gemm_rows_serial": (_gemm_rows_serial, False, _sig_gemm),
    "gemm_rows_parallel": (_gemm_rows_parallel, True, _sig_gemm),
    "transpose_serial": (_transpose_serial, False, _sig_transpose),
    "transpose_parallel": (_transpose_parallel, True, _sig_transpose),
    "gather_steps": (_gather_steps, False, _sig_steps),
    "scatter_steps": (_scatter_steps, False, _sig_steps),
}
_NB_FLOAT = {np.dtype(np.float32): nb.float32, np.dtype(np.float64): nb.float64}
_KERNELS: dict = {}  # (name, dtype) -> numba dispatcher; empty until the first call
_KERNELS_LOCK = threading.Lock()


def kernel(name: str, dtype):
    """The compiled dispatcher `name` for `dtype` (compiled, or loaded from cache, on first use)."""
    key = (name, np.dtype(dtype))
    k = _KERNELS.get(key)
    if k is None:
        with _KERNELS_LOCK:                    # compile once even if two threads ask at once
            k = _KERNELS.get(key)
            if k is None:
                py, parallel, sig = _SPECS[name]
                k = nb.njit(sig(_NB_FLOAT[key[1]]), parallel=parallel, **_JIT_OPTIONS)(py)
                _KERNELS[key] = k
    return k


# ----------------------------------------------------------------------------------------
# threads and dispatch

_threads = max(1, min(_registry_threads(), nb.config.NUMBA_NUM_THREADS))


def set_num_threads(n: int) -> None:
    """Threads for the parallel kernels (capped at NUMBA_NUM_THREADS, fixed when numba loads)."""
    global _threads
    n = int(n)
    if n < 1:
        raise ValueError(f"set_num_threads needs n >= 1, got {n}")
    _threads = min(n, nb.config.NUMBA_NUM_THREADS)


def get_num_threads() -> int:
    return _threads


# one parallel kernel at a time: numba's workqueue layer (used when no OpenMP/TBB) aborts on
# concurrent launches, and two would only fight for the same cores
_PARALLEL_LOCK = threading.Lock()


def _threaded(k, *args):
    """Call parallel kernel k on _threads threads."""
    with _PARALLEL_LOCK:
        if nb.get_num_threads() != _threads:   # numba's count is per calling thread
            nb.set_num_threads(_threads)
        k(*args, _threads)


def _run(name: str, dtype, work: int, *args):
    """Kernel `name` on all threads when it has `work` >= _PARALLEL_MIN multiply-adds, else
    its serial compile; both split the work into the same blocks."""
    if _threads > 1 and work >= _PARALLEL_MIN:
        _threaded(kernel(name + "_parallel", dtype), *args)
    else:
        kernel(name + "_serial", dtype)(*args, 1)


def _rows(B: int, H: int) -> bool:
    """Small H (W_hh fits a core's L2) or a small model: the rank-1, batch-split loops;
    else the dot-tiled loops that split the hidden units (and W_hh) between threads."""
    return H <= _ROWS_MAX_H or B * 4 * H * H < _ROWS_MAX_WORK


def _gemm_nt(A, Bm, bias=None):
    """A (M,K) · Bm (N,K)ᵀ (+ bias (N,)) -> (M,N)."""
    M, K = A.shape
    C = np.empty((M, Bm.shape[0]), A.dtype)
    if bias is None:
        bias = np.empty(0, A.dtype)
    if K < _GEMM_ROWS_MAX_K:                   # dot products this short are mostly overhead
        _run("gemm_rows", A.dtype, C.size * K, A, np.ascontiguousarray(Bm.T), C, bias)
    else:
        _run("gemm_nt", A.dtype, C.size * K, A, Bm, C, bias)
    return C


def _transpose(A):
    """A (M,N) -> Aᵀ (N,M), C-contiguous."""
    At = np.empty((A.shape[1], A.shape[0]), A.dtype)
    _run("transpose", A.dtype, A.size * 8, A, At)
    return At


def info() -> dict:
    try:
        layer = nb.threading_layer()
    except ValueError:  # chosen by the first parallel call
        layer = f"not chosen yet (config: {nb.config.THREADING_LAYER})"
    return {
        "name": NAME,
        "dtypes": "float32, float64",
        "numba": nb.__version__,
        "threading_layer": layer,
        "threads": _threads,
        "fastmath": ",".join(sorted(FASTMATH)),
        "cache_dir": _cache_dir(),
    }


def _cache_dir() -> str:
    """Where numba keeps the compiled kernels of this module."""
    for k in _KERNELS.values():
        path = getattr(getattr(k, "_cache", None), "_cache_path", None)
        if path:
            return str(path)
    try:  # what numba would choose: __pycache__ beside this file, else a user-wide directory
        from numba.core import caching
        impl = getattr(caching, "CacheImpl", None) or caching._CacheImpl
        for cls in impl._locator_classes:
            loc = cls.from_function(_forward_loop_rows, __file__)
            if loc is not None:
                return loc.get_cache_path()
    except Exception:  # a private numba API; the path is informational only
        pass
    return "unknown"


# ----------------------------------------------------------------------------------------
# the kernel contract

class Workspace(NamedTuple):
    """What forward keeps for backward. Step order (step s, not time t); (·, T·B) arrays are
    transposed, column s·B + b, ready for the weight-gradient GEMMs."""

    gates: np.ndarray   # (T, B, 4H)  activated i, f, g, o (undefined at padded steps)
    c: np.ndarray       # (T+1, B, H) c before step s at [s], after it at [s+1]
    hT: np.ndarray      # (H, T·B)    h_{t-1} of every step
    xT: np.ndarray      # (I, T·B)    x_t of every step, padding zeroed
    lengths: np.ndarray  # (B,)       forward's lengths (a private copy; all T when None)
    reverse: bool
    batch_first: bool = False  # the call's x, y (and backward's dy, dx) were (B, T, ·)


def _plain(lengths, T: int, reverse: bool) -> bool:
    """True when step order is time order and nothing is padded (no gather/scatter needed)."""
    return not reverse and (lengths is None or bool((lengths == T).all()))


# The compiled loops index without bounds checks, so these two functions check every argument
# themselves (shapes, dtypes, layout, lengths in [0, T], the workspace's shapes) — they are
# reachable by name as fastlstm.backends.numba.lstm_forward/lstm_backward. lengths is copied
# before it is checked: the loops run without the GIL while other Python threads may run.

def lstm_forward(x, W_ih, W_hh, b, h0, c0, lengths=None, reverse=False, training=False, batch_first=False):
    """One layer, one direction.

    x (T,B,I), W_ih (4H,I), W_hh (4H,H), b (4H,), h0 (B,H), c0 (B,H), lengths (B,) or None
    -> y (T,B,H), hT (B,H), cT (B,H), workspace (None unless training)
    batch_first: x and y are (B,T,·) (served through time-major copies here)
    """
    if _validate.flag("batch_first", batch_first):
        y, hT, cT, ws = lstm_forward(_validate.swap_tb(x), W_ih, W_hh, b, h0, c0, lengths, reverse, training)
        return _validate.swap_tb(y), hT, cT, None if ws is None else ws._replace(batch_first=True)
    lengths, reverse, training = _validate.kernel_forward_args(x, W_ih, W_hh, b, h0, c0, lengths, reverse,
                                                               training, DTYPES)
    T, B, I = x.shape
    H = W_hh.shape[1]
    dt = x.dtype
    plain = _plain(lengths, T, reverse)
    lens = np.full(B, T, dtype=np.int64) if lengths is None else lengths
    if plain:
        X = x
    else:                                      # step order, padding zeroed (never read)
        X = np.empty(x.shape, dt)
        kernel("gather_steps", dt)(x, lens, reverse, X)
    # the input projection of all T·B rows in one GEMM: zx = X · W_ihᵀ + b  (T·B, 4H)
    zx = _gemm_nt(X.reshape(T * B, I), W_ih, b).reshape(T, B, 4 * H)
    Hs = np.empty((2, B, H), dt)               # ring: h_{t-1}, h_t
    Cs = np.empty((T + 1 if training else 2, B, H), dt)  # every c for backward, else a ring
    Hs[0], Cs[0] = h0, c0
    y = np.empty((T, B, H), dt) if plain else np.zeros((T, B, H), dt)
    if training:
        gates, HT = np.empty((T, B, 4 * H), dt), np.empty((H, T * B), dt)
    else:
        gates, HT = np.empty((0, 0, 0), dt), np.empty((0, 0), dt)
    if _rows(B, H):
        _run("forward_rows", dt, T * B * 4 * H * H if B > 4 else 0,
             zx, _transpose(W_hh), Hs, Cs, y, gates, HT, lens, reverse)
    else:
        _threaded(kernel("forward_tiles", dt), zx, W_hh, Hs, Cs, y, gates, HT, lens, reverse)
    hT, cT = Hs[T % 2].copy(), Cs[T % Cs.shape[0]].copy()
    ws = Workspace(gates, Cs, HT, _transpose(X.reshape(T * B, I)), lens, reverse) if training else None
    return y, hT, cT, ws


def lstm_backward(dy, dhT, dcT, workspace, x, W_ih, W_hh, h0, c0, lengths=None, reverse=False, need_dx=True,
                  batch_first=False, need_dh0=True):
    """Gradients of one layer, one direction, given the forward's workspace.

    dy (T,B,H), dhT (B,H), dcT (B,H) -> dx (T,B,I), dW_ih (4H,I), dW_hh (4H,H), db (4H,),
    dh0 (B,H), dc0 (B,H). dhT/dcT carry the gradient from a later chunk (truncated BPTT).
    need_dx=False: dx is not computed and None is returned in its place. need_dh0=False: None
    in dh0's place (the kernels here still compute it: one step's dz · W_hh of T).
    h0 and c0 are not read (the workspace holds every h_{t-1} and c); lengths and reverse must
    be those of the forward call.

    batch_first: dy, x and dx are (B,T,·), as x and y were in the forward call.
    """
    bf = _validate.flag("batch_first", batch_first)
    if isinstance(workspace, Workspace) and workspace.batch_first != bf:
        raise ValueError("batch_first differs from the forward call")
    if bf:
        dx, *grads = lstm_backward(_validate.swap_tb(dy), dhT, dcT,
                                   workspace._replace(batch_first=False) if isinstance(workspace, Workspace) else workspace,
                                   _validate.swap_tb(x), W_ih, W_hh, h0, c0, lengths, reverse, need_dx,
                                   need_dh0=need_dh0)
        return (_validate.swap_tb(dx), *grads)
    need_dh0 = _validate.flag("need_dh0", need_dh0)
    reverse = _validate.kernel_backward_args(dy, dhT, dcT, x, W_ih, W_hh, reverse, DTYPES)
    T, B, I = x.shape
    H = W_hh.shape[1]
    dt = x.dtype
    ws = _checked_workspace(workspace, T, B, I, H, dt)
    lens = np.full(B, T, dtype=np.int64) if lengths is None else _validate.as_lengths(lengths, T, B)
    if reverse != ws.reverse or not np.array_equal(lens, ws.lengths):
        raise ValueError("lengths and reverse must be those of the forward call")
    dZ = np.empty((T, B, 4 * H), dt)           # step order; 0 at padding
    dZT = np.empty((4 * H, T * B), dt)         # its transpose, for the weight gradients
    dh0 = np.empty((B, H), dt)
    dc0 = np.array(dcT, dtype=dt, order="C")   # carried dc, updated in place
    W_hhT = _transpose(W_hh)                   # (H, 4H): dh_prev = dz · W_hh as row dot products
    if _rows(B, H):
        _run("backward_rows", dt, T * B * 4 * H * H if B > 4 else 0,
             dy, dhT, dc0, dh0, ws.gates, ws.c, W_hhT, dZ, dZT, lens, reverse)
    else:
        _threaded(kernel("backward_tiles", dt),
                  dy, dhT, dc0, dh0, ws.gates, ws.c, W_hhT, dZ, dZT, lens, reverse)

    # the non-recurrent gradients, merged over all T·B rows (padding columns of dZT are 0)
    dW_ih = _gemm_nt(dZT, ws.xT)               # dZᵀ · X       (4H, I)
    dW_hh = _gemm_nt(dZT, ws.hT)               # dZᵀ · H_prev  (4H, H)
    db = dZT.sum(axis=1)
    dh0 = dh0 if need_dh0 else None
    if not need_dx:
        return None, dW_ih, dW_hh, db, dh0, dc0
    dX = _gemm_nt(dZ.reshape(T * B, 4 * H), _transpose(W_ih)).reshape(T, B, I)  # dZ · W_ih
    if _plain(lens, T, reverse):
        return dX, dW_ih, dW_hh, db, dh0, dc0
    dx = np.zeros((T, B, I), dt)
    kernel("scatter_steps", dt)(dX, lens, reverse, dx)
    return dx, dW_ih, dW_hh, db, dh0, dc0


def _checked_workspace(ws, T, B, I, H, dt) -> Workspace:
    """ws as a Workspace of this module whose arrays fit a (T, B, I, H) call of dtype dt."""
    if not isinstance(ws, Workspace):
        raise TypeError(f"workspace must be the Workspace of this backend's lstm_forward(..., training=True), "
                        f"got {type(ws).__name__}")
    want = {"gates": (T, B, 4 * H), "c": (T + 1, B, H), "hT": (H, T * B), "xT": (I, T * B), "lengths": (B,)}
    for name, shape in want.items():
        a = getattr(ws, name)
        kind = np.int64 if name == "lengths" else dt
        if not isinstance(a, np.ndarray) or a.shape != shape or a.dtype != kind or not a.flags.c_contiguous:
            raise ValueError(f"workspace does not belong to a forward call of this shape: workspace.{name} "
                             f"must be a C-contiguous {np.dtype(kind)} array of shape {shape}")
    return ws
