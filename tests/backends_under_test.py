"""The backends and native ISA paths the shared kernel suite runs on.

Variants: "reference", "numba", and "native:<isa>" for every ISA the native module was
compiled for. An ISA this CPU cannot execute is skipped with the hardware reason (that is a
fact about the machine, not a missing tier); a backend that does not load FAILS (conftest).
"""

from __future__ import annotations

import contextlib

import pytest
from conftest import require_backend

ALL_BACKENDS = ["reference", "numba", "native"]
NATIVE_ISAS = ["generic", "avx2", "avx512"]
KERNEL_VARIANTS = ["numba"] + [f"native:{isa}" for isa in NATIVE_ISAS]


def load_backend(name: str):
    return require_backend(name)


@contextlib.contextmanager
def variant(name: str):
    """Load the backend of a variant and, for native ones, force its ISA while in use.

    Yields the backend module; the test must check that this variant really ran.
    """
    backend, _, isa = name.partition(":")
    mod = require_backend(backend)
    if not isa:
        yield mod
        return
    if isa not in mod.supported_isas():
        pytest.skip(f"this CPU cannot run the {isa} path (supported: {mod.supported_isas()})")
    with mod.use_isa(isa):
        yield mod
