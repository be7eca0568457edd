"""Native backend: the fused C++ SIMD kernels of fastlstm._core (float32).

Runtime ISA dispatch (avx512 -> avx2 -> generic) happens in C++; FASTLSTM_ISA or use_isa()
forces a lower path. Arrays arrive validated and C-contiguous from fastlstm.core; the
extension checks them again before touching raw pointers.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np

from .. import _core  # ImportError here marks the backend unavailable
from . import get_num_threads as _registry_threads

NAME = "native"
DTYPES = (np.dtype(np.float32),)


def info() -> dict:
    feats = _core.cpu_features()
    flags = [k for k in ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "amx_tile") if feats[k]]
    return {
        "name": NAME,
        "dtypes": "float32",
        "isa": _core.get_isa(),
        "compiled isas": ", ".join(_core.compiled_isas()),
        "cpu": f"{feats['brand'] or feats['vendor']} ({' '.join(flags)})",
        "threads": _core.get_num_threads(),
        "version": _core.__version__ + (" (sanitized)" if _core.sanitized else ""),
    }


# The raw kernels are the extension's functions themselves (same names and defaults as the other
# backends'): a Python wrapper around each cost ~5 µs per call inside a training loop whose
# kernels had evicted it from the caches.
#   lstm_forward(x, W_ih, W_hh, b, h0, c0, lengths=None, reverse=False, training=False, batch_first=False)
#   lstm_backward(dy, dhT, dcT, workspace, x, W_ih, W_hh, h0, c0, lengths=None, reverse=False, need_dx=True,
#                 batch_first=False, need_dh0=True)
lstm_forward = _core.lstm_forward
lstm_backward = _core.lstm_backward


def set_num_threads(n: int) -> None:
    """Called by fastlstm.set_num_threads (the registry), which checks n first."""
    _core.set_num_threads(int(n))


def empty_cache() -> None:
    """Free the calling thread's scratch buffers and the buffer pool's idle buffers (called by
    fastlstm.empty_cache)."""
    _core.release_scratch()


def supported_isas() -> list:
    """ISA paths this CPU executes, best first."""
    return list(_core.supported_isas())


def compiled_isas() -> list:
    return list(_core.compiled_isas())


def last_isa() -> str:
    """The ISA path that ran the last native kernel call."""
    return _core.last_isa()


@contextlib.contextmanager
def use_isa(name: str):
    """Force the ISA path `name` (one of supported_isas()) inside the block."""
    old = _core.get_isa()
    _core.set_isa(name)
    try:
        yield
    finally:
        _core.set_isa(old)


Cell = _core.Cell

_forced_isa = os.environ.get("FASTLSTM_ISA", "").strip()
if _forced_isa:
    try:
        _core.set_isa(_forced_isa)
    except ValueError as e:  # not ImportError: a forced ISA must fail loudly, never fall back
        raise RuntimeError(f"FASTLSTM_ISA={_forced_isa!r}: {e}") from None


def set_split(mode: str) -> str:
    """How the recurrent loops share work over threads: "auto" (the kernels' static rule, the
    default), "measured" (the rule, but a loop it splits is timed split and on one thread, and
    the faster runs, the other now and then: for machines shared with other load, where a
    descheduled thread holds up every step), or "rows" / "units" (forced, for measurements).
    Returns the previous mode."""
    if not isinstance(mode, str) or mode not in ("auto", "measured", "rows", "units"):
        raise ValueError(f"split must be 'auto', 'measured', 'rows' or 'units', got {mode!r}")
    measured = _core._set_split_adaptive(mode == "measured")
    old = _core._set_split("auto" if mode == "measured" else mode)
    return "measured" if measured and old == "auto" else old


def set_openmp_team(fns) -> bool:
    """Run the calling thread's kernel teams on an OpenMP runtime: fns = the addresses of its
    GOMP_parallel, omp_get_thread_num and omp_get_num_threads (fastlstm.torch passes torch's);
    None: on the kernels' own thread pool again. Returns whether a runtime is set."""
    return _core._set_openmp_executor(*(fns or (0, 0, 0)))


# Loop variants: FASTLSTM_SPLIT=auto|measured|rows|units (set_split), FASTLSTM_FUSE_ROWS=N (fuse
# the input projection into the recurrent tile when a step has >= N rows; -1 = the kernels'
# rule; for measurements). Bad values fail loudly, like FASTLSTM_ISA.
_split = os.environ.get("FASTLSTM_SPLIT", "").strip()
if _split:
    try:
        set_split(_split)
    except ValueError as e:
        raise RuntimeError(f"FASTLSTM_SPLIT={_split!r}: {e}") from None
_fuse_rows = os.environ.get("FASTLSTM_FUSE_ROWS", "").strip()
if _fuse_rows:
    try:
        _n = int(_fuse_rows)
        if _n < -1:
            raise ValueError
    except ValueError:
        raise RuntimeError(f"FASTLSTM_FUSE_ROWS={_fuse_rows!r}: expected an integer >= -1") from None
    _core._set_fuse_rows(_n)

_core.set_num_threads(_registry_threads())
