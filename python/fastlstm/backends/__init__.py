"""Backend registry: which implementation of the kernel contract (DESIGN.md §2) runs.

Each backend is one module in this package exposing NAME, DTYPES, info(), lstm_forward and
lstm_backward; importing it raises ImportError when it cannot run here. Adding a backend is
one new module plus its name in PREFERENCE.

At import the first backend of PREFERENCE that loads becomes active. FASTLSTM_BACKEND=name
forces one: if that one cannot load, importing fastlstm raises (never a silent fallback).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

PREFERENCE = ("native", "numba", "reference")

_modules: dict[str, ModuleType] = {}
_errors: dict[str, str] = {}
_active: ModuleType | None = None


class BackendUnavailable(ImportError):
    """The requested backend cannot be loaded on this machine."""


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
