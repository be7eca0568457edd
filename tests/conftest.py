"""Shared test fixtures and the tier policy.

Required tiers: the README's test command installs every optional dependency, so a missing
tier (the compiled module, Numba, torch, ONNX Runtime) FAILS the run instead of skipping.
FASTLSTM_ALLOW_MISSING=numba,torch,... lets a developer run without some of them on purpose;
those tests then skip with the reason shown.
"""

from __future__ import annotations

import importlib
import os
import zlib

import numpy as np
import pytest

ALLOW_MISSING = {s.strip() for s in os.environ.get("FASTLSTM_ALLOW_MISSING", "").split(",") if s.strip()}


def require(tier: str, module: str | None = None):
    """Import `module` (default: tier) or fail, unless the tier is allowed to be missing."""
    try:
        return importlib.import_module(module or tier)
    except ImportError as e:
        if tier in ALLOW_MISSING:
            pytest.skip(f"{tier} not installed (allowed by FASTLSTM_ALLOW_MISSING): {e}")
        pytest.fail(f"required test tier {tier!r} is missing: {e}. Install the test extra, "
                    f"or set FASTLSTM_ALLOW_MISSING={tier} to skip it deliberately.")


def require_backend(name: str):
    import fastlstm

    try:
        return fastlstm.backends.load(name)
    except fastlstm.BackendUnavailable as e:
        if name in ALLOW_MISSING:
            pytest.skip(str(e))
        pytest.fail(f"required backend {name!r} is missing: {e}")


def random_problem(rng, T, B, I, H, dtype=np.float64, scale=0.5, lengths=None, state=True):
    """x, W_ih, W_hh, b, h0, c0 with values in a range that exercises every gate."""
    x = rng.standard_normal((T, B, I)).astype(dtype)
    W_ih = (rng.standard_normal((4 * H, I)) * scale).astype(dtype)
    W_hh = (rng.standard_normal((4 * H, H)) * scale).astype(dtype)
    b = (rng.standard_normal(4 * H) * scale).astype(dtype)
    h0 = (rng.standard_normal((B, H)) * 0.5).astype(dtype) if state else np.zeros((B, H), dtype)
    c0 = (rng.standard_normal((B, H)) * 0.5).astype(dtype) if state else np.zeros((B, H), dtype)
    return x, W_ih, W_hh, b, h0, c0


def random_lengths(rng, T, B, zeros=True):
    lo = 0 if zeros else 1
    lengths = rng.integers(lo, T + 1, size=B)
    if B > 2 and zeros:
        lengths[B // 2] = 0  # a zero in the middle
    lengths[0] = T if B > 1 else lengths[0]
    return lengths


@pytest.fixture(scope="session", autouse=True)
def forced_backend_is_active():
    """Under FASTLSTM_BACKEND=name (CI runs the suite so) that backend must really be active."""
    forced = os.environ.get("FASTLSTM_BACKEND", "").strip().lower()
    if forced:
        import fastlstm

        assert fastlstm.backends.active().NAME == forced, (forced, fastlstm.backends.active().NAME)


@pytest.fixture
def rng(request):
    # a different, reproducible stream per test
    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)
