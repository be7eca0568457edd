"""Backend registry: which implementation of the kernel contract (DESIGN.md §2) runs.

Each backend is one module in this package exposing NAME, DTYPES, info(), lstm_forward and
lstm_backward; importing it raises ImportError when it cannot run here. Adding a backend is
one new module plus its name in PREFERENCE.

At import the first backend of PREFERENCE that loads becomes active. FASTLSTM_BACKEND=name
forces one: if that one cannot load, importing fastlstm raises (never a silent fallback).

The registry also holds what every backend shares: the thread count (FASTLSTM_NUM_THREADS,
default = physical cores). Backends read it when they load and get every change through
set_num_threads; nothing here imports fastlstm._config (that one reads this module).
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType

PREFERENCE = ("native", "numba", "reference")

_modules: dict[str, ModuleType] = {}
_errors: dict[str, str] = {}
_active: ModuleType | None = None


class BackendUnavailable(ImportError):
    """The requested backend cannot be loaded on this machine."""


# ----------------------------------------------------------------------------------------
# threads, shared by the backends that run threads (native, numba)

MAX_THREADS = 1024  # the native pool spawns that many workers: a typo must not spawn millions


def _physical_cores() -> int:
    """Physical cores available to this process (SMT siblings counted once)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return max(1, os.cpu_count() or 1)
    cores = set()
    for c in cpus:
        try:
            with open(f"/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list") as f:
                cores.add(f.read().strip())
        except OSError:
            cores.add(str(c))
    return max(1, len(cores))


def _check_threads(n, what: str) -> int:
    """n as an int in [1, MAX_THREADS], or a ValueError/TypeError naming `what`."""
    if isinstance(n, bool) or not hasattr(n, "__index__"):
        raise TypeError(f"{what} must be an integer, got {type(n).__name__}")
    n = int(n.__index__())
    if not 1 <= n <= MAX_THREADS:
        raise ValueError(f"{what} must be in [1, {MAX_THREADS}], got {n}")
    return n


def _threads_from_env() -> int:
    raw = os.environ.get("FASTLSTM_NUM_THREADS", "").strip()
    if not raw:
        return min(_physical_cores(), MAX_THREADS)
    try:
        return _check_threads(int(raw, 10), "FASTLSTM_NUM_THREADS")
    except (TypeError, ValueError):
        # at import, like FASTLSTM_ISA: a bad setting fails loudly instead of being ignored
        raise RuntimeError(f"FASTLSTM_NUM_THREADS={raw!r}: expected an integer in [1, {MAX_THREADS}]") from None


_num_threads = _threads_from_env()


def set_num_threads(n: int) -> None:
    """Threads used by the native and Numba kernels; default = physical cores
    (FASTLSTM_NUM_THREADS). Checked before anything changes: a bad n changes nothing."""
    global _num_threads
    n = _check_threads(n, "set_num_threads's n")
    for name in PREFERENCE:  # every backend already imported, by load() or directly
        mod = sys.modules.get(f"{__name__}.{name}")
        if mod is not None and hasattr(mod, "set_num_threads"):
            mod.set_num_threads(n)
    _num_threads = n


def get_num_threads() -> int:
    return _num_threads


def empty_cache() -> None:
    """Give back the memory the kernels keep between calls: the native backend's idle pooled
    buffers (workspaces and output arrays of 128 KB or more, up to 64 buffers and 256 MB, kept so
    the next call of a training loop finds warm pages) and the calling thread's scratch. Arrays
    still in use are not touched; the next call allocates afresh."""
    for name in PREFERENCE:
        mod = sys.modules.get(f"{__name__}.{name}")
        if mod is not None and hasattr(mod, "empty_cache"):
            mod.empty_cache()


def load(name: str) -> ModuleType:
    """Import backend `name`, or raise BackendUnavailable with the reason."""
    if name not in PREFERENCE:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(PREFERENCE)}")
    if name in _modules:
        return _modules[name]
    if name in _errors:
        raise BackendUnavailable(f"fastlstm backend {name!r} is unavailable: {_errors[name]}")
    try:
        mod = importlib.import_module(f"{__name__}.{name}")
    except ImportError as e:  # the backend's own dependency is missing or failed to load
        _errors[name] = f"{type(e).__name__}: {e}"
        raise BackendUnavailable(f"fastlstm backend {name!r} is unavailable: {_errors[name]}") from e
    _modules[name] = mod
    return mod


def available() -> dict[str, str | None]:
    """name -> None if the backend loads here, else the reason it does not."""
    out = {}
    for name in PREFERENCE:
        try:
            load(name)
            out[name] = None
        except BackendUnavailable:
            out[name] = _errors[name]
    return out


def get(name: str | None = None) -> ModuleType:
    """The backend module `name`, or the active one."""
    if name is None:
        return active()
    return load(name)


def active() -> ModuleType:
    global _active
    if _active is None:
        _active = _select()
    return _active


def set_backend(name: str) -> ModuleType:
    """Make `name` the active backend (raises if it cannot load)."""
    global _active
    _active = load(name)
    return _active


def for_dtype(dtype, name: str | None = None) -> ModuleType:
    """The backend that runs arrays of `dtype`.

    An explicitly named backend must support it (TypeError otherwise). Without a name the
    active backend runs it if it can, else the next backend of PREFERENCE that can (float64
    on the float32-only native backend goes to Numba or the reference).
    """
    if name is not None:
        mod = load(name)
        if dtype not in mod.DTYPES:
            raise TypeError(f"backend {name!r} supports {mod.info()['dtypes']}, not {dtype}")
        return mod
    mod = active()
    if dtype in mod.DTYPES:
        return mod
    for other in PREFERENCE[PREFERENCE.index(mod.NAME) + 1:]:
        try:
            cand = load(other)
        except BackendUnavailable:
            continue
        if dtype in cand.DTYPES:
            return cand
    raise TypeError(f"no available backend supports dtype {dtype}")


def _select() -> ModuleType:
    forced = os.environ.get("FASTLSTM_BACKEND", "").strip().lower()
    if forced:
        return load(forced)  # raises loudly if it cannot load
    for name in PREFERENCE:
        try:
            return load(name)
        except BackendUnavailable:
            continue
    raise RuntimeError("no fastlstm backend could be loaded")  # the reference needs only NumPy
