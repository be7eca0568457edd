"""The backends and native ISA paths the shared kernel suite runs on.

Each entry names one backend variant. Native ISA variants the CPU cannot execute are reported
as skipped (hardware), never silently dropped; a missing backend fails (see conftest).
"""

from __future__ import annotations

import pytest
from conftest import require_backend

# reference first: the spec also passes its own suite
ALL_BACKENDS = ["reference", "numba", "native"]
FAST_BACKENDS = ["numba", "native"]


def load_backend(name: str):
    return require_backend(name)
