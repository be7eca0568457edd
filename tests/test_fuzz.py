"""Fuzz of the public API and the compiled module (issue #14): random valid and invalid calls.

Every case starts from a valid small problem (T, B, I, H <= 5, float32 or float64, random
lengths) and then changes how some arguments are passed: the same values in another layout
(Fortran order, strided views, read-only, non-native byte order, unpickled or
metadata-carrying dtypes, nested lists), or something invalid (another dtype, a wrong shape or
rank, None, a scalar, a string, lengths out of range or of a wrong kind, non-bool flags,
arrays sharing memory, a workspace of another call). Each call must then either
  - be rejected with a TypeError, ValueError or MemoryError whose message names a changed
    argument (a call whose changes all keep it valid must not be rejected), or
  - be accepted and equal the NumPy reference in float64 on the original values,
and never crash the process (run it under the ASan + UBSan build, see .ci/run).

Entry points: fastlstm.lstm_forward/lstm_backward (every backend and the default), prepack()
.forward, stepper().step, the LSTM layer (forward, backward, prepack), and the raw
fastlstm._core functions and Cell, and the raw Numba backend functions. Hypothesis runs
derandomized (the same cases every run) with no example database; FASTLSTM_FUZZ_SCALE=k runs
k times as many cases, FASTLSTM_FUZZ_REPORT=path writes the outcome counts as JSON.
"""

from __future__ import annotations

import collections
import json
import os
import pickle
import re

import numpy as np
import pytest
from conftest import require, require_backend

import fastlstm
from fastlstm.backends import reference as ref

hypothesis = require("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SCALE = float(os.environ.get("FASTLSTM_FUZZ_SCALE", "1"))
OUTCOMES: collections.Counter = collections.Counter()


def fuzz(n: int):
    """Hypothesis settings for n cases (times FASTLSTM_FUZZ_SCALE), reproducible in CI. The
    tests below run 1000·4 + 800·3 + 600 + 2000 + 1000 = 10,000 cases (about 12,000 calls)."""
    return settings(max_examples=max(1, int(n * SCALE)), deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck), print_blob=False)


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    path = os.environ.get("FASTLSTM_FUZZ_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump(dict(sorted(OUTCOMES.items())), f, indent=1)


# ---- how an argument is passed

# same values, another representation; which entry points must accept each
SAME_VALUES = ["ok", "fortran", "strided", "readonly", "bigendian", "pickled", "metadata", "list"]
INVALID = ["float16", "int32", "complex", "other_float", "none", "scalar", "string", "shape+", "shape-",
           "rank", "empty"]
PUBLIC_OK = {"ok", "fortran", "strided", "readonly", "bigendian", "pickled", "metadata"}
RAW_OK = {"ok", "readonly", "pickled", "metadata"}  # the kernel contract: C-contiguous native floats
DTYPE_CHANGING = {"list", "other_float", "float16", "int32", "complex"}


def chance(data, p: float, label: str) -> bool:
    """True with probability about p (sampled_from is near-uniform; floats are not)."""
    n = max(2, round(1 / p))
    return data.draw(st.sampled_from([False] * (n - 1) + [True]), label=label)


def _weighted(p_invalid):
    """About 60% "ok", 34% the same values passed another way, p_invalid invalid: one draw."""
    n_invalid = len(INVALID)
    total = round(n_invalid / p_invalid)
    same = [k for k in SAME_VALUES if k != "ok"] * round(0.34 * total / (len(SAME_VALUES) - 1))
    return ["ok"] * (total - len(same) - n_invalid) + same + INVALID


_KINDS = {p: _weighted(p) for p in (0.06, 0.1)}


def variant_kind(data, label, p_invalid=0.06):
    return data.draw(st.sampled_from(_KINDS[p_invalid]), label=label)


def apply(a: np.ndarray, kind: str):
    if kind == "ok":
        return a
    if kind == "fortran":
        return np.asfortranarray(a) if a.ndim > 1 else np.repeat(a, 2)[::2]
    if kind == "strided":
        return np.repeat(a, 2, axis=-1)[..., ::2]
    if kind == "readonly":
        b = a.copy()
        b.flags.writeable = False
        return b
    if kind == "bigendian":
        return a.astype(a.dtype.newbyteorder(">"))
    if kind == "pickled":
        return pickle.loads(pickle.dumps(a))
    if kind == "metadata":
        return a.astype(np.dtype(a.dtype.type, metadata={"unit": "V"}))
    if kind == "list":
        return a.tolist()
    if kind == "float16":
        return a.astype(np.float16)
    if kind == "int32":
        return np.nan_to_num(a).astype(np.int32)
    if kind == "complex":
        return a.astype(np.complex64)
    if kind == "other_float":
        return a.astype(np.float64 if a.dtype == np.float32 else np.float32)
    if kind == "none":
        return None
    if kind == "scalar":
        return 1.5
    if kind == "string":
        return "abc"
    if kind == "shape+":
        return np.concatenate([a, a[..., :1]], axis=-1)
    if kind == "shape-":
        return a[..., :-1] if a.shape[-1] > 1 else np.concatenate([a, a], axis=-1)
    if kind == "rank":
        return a[..., None]
    if kind == "empty":
        return a[:0]
    raise AssertionError(kind)


LENGTHS_OK_PUBLIC = {"none", "int64", "list", "tuple", "int32", "uint8", "whole_float", "readonly"}
LENGTHS_OK_RAW = {"none", "int64", "list", "tuple", "readonly"}
LENGTHS_KINDS = sorted(LENGTHS_OK_PUBLIC) + ["too_long", "negative", "huge", "uint64_huge", "shape", "fraction",
                                             "string", "bool"]


def draw_lengths_kind(data):
    if not chance(data, 0.4, "lengths changed"):
        return "int64"
    return data.draw(st.sampled_from(LENGTHS_KINDS), label="lengths kind")


def apply_lengths(L, kind, T):
    """L: the valid int64 lengths (or None); returns what is passed and the lengths it means."""
    if kind == "none" or L is None:
        return None, None
    out = {"int64": lambda: L.copy(), "list": lambda: L.tolist(), "tuple": lambda: tuple(L.tolist()),
           "int32": lambda: L.astype(np.int32), "uint8": lambda: L.astype(np.uint8),
           "whole_float": lambda: L.astype(np.float64), "readonly": lambda: _readonly(L),
           "too_long": lambda: _set0(L, T + 1), "negative": lambda: _set0(L, -1), "huge": lambda: _set0(L, 10**9),
           "uint64_huge": lambda: _set0(L.astype(np.uint64), 2**63 + 5), "shape": lambda: np.append(L, 1),
           "fraction": lambda: L + 0.5, "string": lambda: "lengths", "bool": lambda: L > 0}[kind]()
    return out, L


def _readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def _set0(a, v):
    a = a.copy()
    a[0] = v
    return a


FLAGS_OK = [False, True, np.bool_(True), np.bool_(False)]
FLAGS_BAD = ["no", 0, 1, None]


def draw_flag(data, label, p_bad=0.05):
    if chance(data, p_bad, f"{label} bad"):
        return data.draw(st.sampled_from(FLAGS_BAD), label=label), False
    return data.draw(st.sampled_from(FLAGS_OK), label=label), True


# ---- the problem and its reference

def draw_problem(data, dtypes=(np.float32, np.float64), nan=True):
    T = data.draw(st.integers(1, 4), label="T")
    B = data.draw(st.integers(1, 4), label="B")
    I = data.draw(st.integers(1, 4), label="I")
    H = data.draw(st.integers(1, 5), label="H")
    dt = np.dtype(data.draw(st.sampled_from(dtypes), label="dtype"))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    x = rng.standard_normal((T, B, I)).astype(dt)
    W_ih, W_hh, b = (rng.standard_normal(s).astype(dt) * dt.type(0.6) for s in ((4 * H, I), (4 * H, H), (4 * H,)))
    h0, c0 = (rng.standard_normal((B, H)).astype(dt) * dt.type(0.5) for _ in range(2))
    if nan and chance(data, 0.05, "nan"):
        x[rng.integers(T), rng.integers(B), rng.integers(I)] = np.nan
    L = rng.integers(0, T + 1, B).astype(np.int64) if data.draw(st.booleans(), label="lengths?") else None
    return dict(x=x, W_ih=W_ih, W_hh=W_hh, b=b, h0=h0, c0=c0), L


def reference(p, L, reverse, grads=None):
    """(y, hT, cT) of the float64 reference, and with grads = (dy, dhT, dcT) (None: zeros) the
    six gradients."""
    a = {k: v.astype(np.float64) for k, v in p.items()}
    y, hT, cT, ws = ref.lstm_forward(a["x"], a["W_ih"], a["W_hh"], a["b"], a["h0"], a["c0"], L, bool(reverse), True)
    if grads is None:
        return (y, hT, cT), None
    dy, dhT, dcT = (np.zeros_like(z) if g is None else g.astype(np.float64) for g, z in zip(grads, (y, hT, cT)))
    return (y, hT, cT), ref.lstm_backward(dy, dhT, dcT, ws, a["x"], a["W_ih"], a["W_hh"], a["h0"], a["c0"], L,
                                          bool(reverse))


def as_passed(args: dict, lengths):
    """The problem an accepted call actually computed (an accepted "invalid" change can be a
    valid problem of its own, e.g. x and W_ih both one feature wider)."""
    p = {k: None if v is None else np.asarray(v).astype(np.float64) for k, v in args.items()}
    B, H = p["x"].shape[1], p["W_hh"].shape[1]
    for k in ("h0", "c0"):
        if p.get(k) is None:
            p[k] = np.zeros((B, H))
    return p, None if lengths is None else np.asarray(lengths).astype(np.int64)


def assert_equal_to_reference(got, want, grads=False):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        g = np.asarray(g)
        assert g.shape == w.shape, (g.shape, w.shape)
        if grads:
            scale = max(np.nanmax(np.abs(w)) if w.size and not np.isnan(w).all() else 0, 1e-3)
            ok = np.abs(g - w) <= 2e-4 * scale
        else:
            ok = np.abs(g - w) <= 2e-5 + 1e-5 * np.abs(w)
        ok |= np.isnan(g) & np.isnan(w)
        assert ok.all(), (g, w)


def named(msg: str, names) -> bool:
    return any(re.search(rf"(?<![\w]){re.escape(n)}(?![\w])", msg) for n in names)


class Case:
    """Bookkeeping of one call: which arguments were changed, whether it must be accepted."""

    def __init__(self, entry):
        self.entry, self.changed, self.valid = entry, [], True

    def arg(self, name, kind, accepted):
        if kind not in ("ok", "none_ok"):
            self.changed.append(name)
        if kind not in accepted:
            self.valid = False

    def run(self, fn, *args, **kw):
        """fn(*args, **kw) -> (True, result) or (False, None) after checking the rejection."""
        try:
            out = fn(*args, **kw)
        except (TypeError, ValueError, MemoryError) as e:
            msg = str(e)
            assert not self.valid, f"{self.entry}: a valid call was rejected: {type(e).__name__}: {msg}"
            allowed = set(self.changed)
            if allowed & {"x", "W_ih", "W_hh", "b", "h0", "c0", "dy", "dhT", "dcT"}:
                allowed |= {"x", "W_hh", "backend"}  # dtypes are checked against x's (W_hh's)
            if "workspace" in allowed:
                allowed |= {"dy", "x", "dhT", "dcT", "W_ih", "W_hh", "reverse", "lengths"}
            assert named(msg, allowed), f"{self.entry}: {type(e).__name__}({msg!r}) names none of {sorted(allowed)}"
            OUTCOMES[f"{self.entry}: rejected ({type(e).__name__})"] += 1
            return False, None
        OUTCOMES[f"{self.entry}: accepted"] += 1
        return True, out


# ---- public API: lstm_forward / lstm_backward, prepack().forward

@pytest.mark.parametrize("backend", [None, "native", "numba", "reference"])
@fuzz(1000)
@given(data=st.data())
def test_fuzz_public_forward_backward(backend, data):
    if backend:
        require_backend(backend)
    p, L = draw_problem(data)
    case = Case(f"lstm_forward[{backend or 'default'}]")
    if backend == "native" and p["x"].dtype == np.float64:
        case.arg("backend", "float64 on native", ())
    kinds = {k: variant_kind(data, k) for k in p}
    args = {}
    for k, a in p.items():
        kind = kinds[k]
        if k in ("h0", "c0") and kind == "none":  # None is zeros here
            p[k] = np.zeros_like(a)
            case.arg(k, "none_ok", ())
            args[k] = None
            continue
        ok = PUBLIC_OK | ({"list"} if a.dtype == np.float64 else set())
        case.arg(k, kind, ok)
        args[k] = apply(a, kind)
    if kinds["h0"] == kinds["c0"] == "ok" and data.draw(st.booleans(), label="alias h0 c0"):
        p["c0"] = p["h0"]
        args["c0"] = args["h0"]  # one array as both: read-only use, fine
    lkind = draw_lengths_kind(data) if L is not None else "none"
    lengths, L = apply_lengths(L, lkind, p["x"].shape[0])
    case.arg("lengths", "ok" if lkind in ("none", "int64") else lkind, LENGTHS_OK_PUBLIC | {"ok"})
    reverse, rok = draw_flag(data, "reverse")
    training, tok = draw_flag(data, "training")
    case.arg("reverse", "ok" if rok else "bad", {"ok"})
    case.arg("training", "ok" if tok else "bad", {"ok"})
    if data.draw(st.booleans(), label="prepacked?"):
        case.entry = f"prepack[{backend or 'default'}]"
        ok, model = case.run(fastlstm.prepack, args["W_ih"], args["W_hh"], args["b"], backend=backend)
        if ok:
            case.entry = f"prepack.forward[{backend or 'default'}]"
            ok, out = case.run(model.forward, args["x"], args["h0"], args["c0"], lengths, reverse=reverse)
        if ok:
            if not case.valid:
                p, L = as_passed(args, lengths)
            assert_equal_to_reference(out, reference(p, L, reverse)[0])
        return
    ok, out = case.run(fastlstm.lstm_forward, args["x"], args["W_ih"], args["W_hh"], args["b"], args["h0"],
                       args["c0"], lengths, reverse=reverse, training=training, backend=backend)
    if not ok:
        return
    if not case.valid:
        p, L = as_passed(args, lengths)
    y, hT, cT, tape = out
    if not training:
        assert tape is None
        assert_equal_to_reference((y, hT, cT), reference(p, L, reverse)[0])
        return
    # backward, with its own argument changes
    T, B, I = p["x"].shape
    H = p["W_hh"].shape[1]
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="grad seed"))
    g = {k: (None if data.draw(st.booleans(), label=f"{k} None") else rng.standard_normal(s).astype(y.dtype))
         for k, s in (("dy", (T, B, H)), ("dhT", (B, H)), ("dcT", (B, H)))}
    bcase = Case(f"lstm_backward[{backend or 'default'}]")
    gargs = {}
    for k, a in g.items():
        kind = "ok" if a is None else variant_kind(data, k)
        if kind == "none":
            g[k] = None
        bcase.arg(k, kind, PUBLIC_OK | ({"list"} if y.dtype == np.float64 else set()) | {"none"})
        gargs[k] = None if a is None else apply(a, kind)
    ok, grads = bcase.run(fastlstm.lstm_backward, gargs["dy"], gargs["dhT"], gargs["dcT"], tape)
    fwd, want = reference(p, L, reverse, (g["dy"], g["dhT"], g["dcT"]))
    assert_equal_to_reference((y, hT, cT), fwd)
    if ok:
        assert_equal_to_reference(grads, want, grads=True)


# ---- public API: stepper().step (state updated in place; a rejected call changes nothing)

@pytest.mark.parametrize("backend", ["native", "numba", "reference"])
@fuzz(800)
@given(data=st.data())
def test_fuzz_stepper(backend, data):
    require_backend(backend)
    p, _ = draw_problem(data, dtypes=(np.float32,) if backend == "native" else (np.float32, np.float64))
    same_size = data.draw(st.booleans(), label="I = H")
    if same_size:  # so that x can alias h or c
        H = p["W_hh"].shape[1]
        p["W_ih"] = np.ascontiguousarray(np.resize(p["W_ih"], (4 * H, H)))
        p["x"] = np.ascontiguousarray(np.resize(p["x"], p["x"].shape[:2] + (H,)))
    cell = fastlstm.stepper(p["W_ih"], p["W_hh"], p["b"], backend=backend)
    case = Case(f"stepper.step[{backend}]")
    x = p["x"][0].copy()
    xkind = variant_kind(data, "x")
    # native's step goes straight to C++: the arrays must be C-contiguous float32 (documented)
    case.arg("x", xkind, RAW_OK if backend == "native" else PUBLIC_OK | ({"list"} if x.dtype == np.float64 else set()))
    xarg = apply(x, xkind)
    state = {}
    for k in ("h", "c"):
        kind = data.draw(st.sampled_from(["ok"] * 6 + ["readonly", "fortran", "strided", "bigendian", "other_float",
                                                       "shape-", "list", "none", "metadata"]), label=k)
        arr = p[k + "0"].copy()
        # native wants C-contiguous state (it writes through raw pointers); Python paths take views
        ok = {"ok", "metadata"} | (set() if backend == "native" else {"fortran", "strided"})
        case.arg(k, kind, ok)
        state[k] = apply(arr, kind) if kind != "readonly" else _readonly(arr)
    alias = data.draw(st.sampled_from(["none"] * 5 + ["h is c", "x is h", "x is c"]), label="alias")
    if alias == "h is c":
        state["c"] = state["h"]
        case.arg("h", "alias", ())
        case.arg("c", "alias", ())
    elif alias != "none" and same_size and isinstance(state[alias[-1]], np.ndarray):
        xarg = state[alias[-1]]
        case.arg("x", "alias", ())
        case.arg(alias[-1], "alias", ())
    before = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in state.items()}
    ok, out = case.run(cell.step, xarg, state["h"], state["c"])
    if not ok:
        for k, v in state.items():  # a failed call leaves the state as it was
            if isinstance(v, np.ndarray):
                np.testing.assert_array_equal(v, before[k])
        return
    q = dict(p, x=x[None].astype(x.dtype), h0=np.asarray(before["h"], x.dtype), c0=np.asarray(before["c"], x.dtype))
    (y, hT, cT), _ = reference(q, None, False)
    assert_equal_to_reference((state["h"], state["c"]), (hT, cT))


# ---- the LSTM layer: forward (training or not), backward, prepack; against a float64 reference layer

@fuzz(600)
@given(data=st.data())
def test_fuzz_lstm_layer(data):
    I = data.draw(st.integers(1, 4), label="I")
    H = data.draw(st.integers(1, 5), label="H")
    L = data.draw(st.integers(1, 2), label="layers")
    bidir, batch_first = data.draw(st.booleans(), label="bidir"), data.draw(st.booleans(), label="batch_first")
    backend = data.draw(st.sampled_from([None, "native", "numba", "reference"]), label="backend")
    if backend:
        require_backend(backend)
    m = fastlstm.LSTM(I, H, L, bidirectional=bidir, batch_first=batch_first, seed=0, backend=backend)
    want_m = fastlstm.LSTM(I, H, L, bidirectional=bidir, batch_first=batch_first, dtype=np.float64,
                           backend="reference")
    want_m.load_state_dict(m.state_dict())
    T, B = data.draw(st.integers(1, 4), label="T"), data.draw(st.integers(1, 4), label="B")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I)).astype(np.float32)
    lens = rng.integers(0, T + 1, B) if data.draw(st.booleans(), label="lengths?") else None
    lkind = draw_lengths_kind(data) if lens is not None else "none"
    lengths, lens = apply_lengths(lens, lkind, T)
    case = Case(f"LSTM[{backend or 'default'}]")
    xkind = variant_kind(data, "x")
    case.arg("x", xkind, PUBLIC_OK)
    case.arg("lengths", "ok" if lkind in ("none", "int64") else lkind, LENGTHS_OK_PUBLIC | {"ok"})
    training = data.draw(st.booleans(), label="training")
    use_prepacked = not training and data.draw(st.booleans(), label="prepacked")
    model = m.prepack() if use_prepacked else m
    ok, out = case.run(model, apply(x, xkind), None, lengths, **({} if use_prepacked else {"training": training}))
    if not ok:
        return
    y_want, (h_want, c_want) = want_m(x.astype(np.float64), None, lens, training=training)
    assert_equal_to_reference((out[0], out[1][0], out[1][1]), (y_want, h_want, c_want))
    if training:
        dy = rng.standard_normal(y_want.shape).astype(np.float32)
        dx, _ = m.backward(dy)
        dx_want, _ = want_m.backward(dy.astype(np.float64))
        assert_equal_to_reference((dx,) + tuple(m.grads.values()), (dx_want,) + tuple(want_m.grads.values()),
                                  grads=True)
        OUTCOMES[f"LSTM[{backend or 'default'}].backward: accepted"] += 1


# ---- the compiled module itself: _core.lstm_forward / lstm_backward, Cell

@fuzz(2000)
@given(data=st.data())
def test_fuzz_native_core(data):
    require_backend("native")
    from fastlstm import _core

    p, L = draw_problem(data, dtypes=(np.float32, np.float32, np.float32, np.float64))
    case = Case("_core.lstm_forward")
    if p["x"].dtype == np.float64:
        for k in p:
            case.arg(k, "float64", ())
    args = {}
    for k, a in p.items():
        kind = variant_kind(data, k, p_invalid=0.1)
        case.arg(k, kind, RAW_OK)
        args[k] = apply(a, kind)
    lkind = draw_lengths_kind(data) if L is not None else "none"
    lengths, L = apply_lengths(L, lkind, p["x"].shape[0])
    case.arg("lengths", "ok" if lkind in ("none", "int64") else lkind, LENGTHS_OK_RAW | {"ok"})
    reverse, rok = draw_flag(data, "reverse")
    training, tok = draw_flag(data, "training")
    case.arg("reverse", "ok" if rok else "bad", {"ok"})
    case.arg("training", "ok" if tok else "bad", {"ok"})
    a = [args[k] for k in ("x", "W_ih", "W_hh", "b", "h0", "c0")]
    if data.draw(st.booleans(), label="Cell?"):
        case.entry = "_core.Cell"
        try:
            cell = _core.Cell(a[1], a[2], a[3])
        except (TypeError, ValueError) as e:
            assert named(str(e), {"W_ih", "W_hh", "b"}) and not case.valid, e
            OUTCOMES[f"_core.Cell: rejected ({type(e).__name__})"] += 1
            return
        case.entry = "_core.Cell.forward"
        ok, out = case.run(cell.forward, a[0], a[4], a[5], lengths, reverse)
        if ok:
            if not case.valid:
                p, L = as_passed(args, lengths)
            assert_equal_to_reference(out, reference(p, L, reverse)[0])
        return
    ok, out = case.run(_core.lstm_forward, *a, lengths, reverse, training)
    if not ok:
        return
    if not case.valid:
        p, L = as_passed(args, lengths)
    y, hT, cT, ws = out
    if not training:
        assert ws is None
        assert_equal_to_reference((y, hT, cT), reference(p, L, reverse)[0])
        return
    T, B, I = p["x"].shape
    H = p["W_hh"].shape[1]
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="grad seed"))
    g = {"dy": rng.standard_normal((T, B, H)).astype(np.float32), "dhT": rng.standard_normal((B, H)).astype(np.float32),
         "dcT": np.zeros((B, H), np.float32)}
    bcase = Case("_core.lstm_backward")
    gargs = {}
    for k, v in g.items():
        kind = variant_kind(data, k, p_invalid=0.1)
        bcase.arg(k, kind, RAW_OK)
        gargs[k] = apply(v, kind)
    ws_kind = data.draw(st.sampled_from(["ok"] * 8 + ["none", "other", "uninitialised"]), label="workspace")
    if ws_kind == "other":  # a workspace of another call (another shape)
        ws = _core.lstm_forward(np.zeros((T + 1, B, I), np.float32), *a[1:], None, reverse, True)[3]
    elif ws_kind == "none":
        ws = None
    elif ws_kind == "uninitialised":
        ws = _core.Workspace.__new__(_core.Workspace)
    bcase.arg("workspace", ws_kind, {"ok"})
    brev, brok = (not reverse, False) if chance(data, 0.05, "reverse differs") else (reverse, True)
    bcase.arg("reverse", "ok" if brok else "bad", {"ok"})
    junk = data.draw(st.sampled_from([None, "junk", 3]), label="unused")  # h0, c0, lengths are not read
    ok, grads = bcase.run(_core.lstm_backward, gargs["dy"], gargs["dhT"], gargs["dcT"], ws, args["x"],
                          args["W_ih"], args["W_hh"], junk, junk, junk, brev)
    if ok:
        assert_equal_to_reference(grads, reference(p, L, reverse, (g["dy"], g["dhT"], g["dcT"]))[1], grads=True)


# ---- the raw Numba backend functions (reachable by name, so they check their arguments)

@fuzz(1000)
@given(data=st.data())
def test_fuzz_numba_raw(data):
    nbk = require_backend("numba")
    p, L = draw_problem(data)
    case = Case("backends.numba.lstm_forward")
    args = {}
    for k, a in p.items():
        kind = variant_kind(data, k, p_invalid=0.1)
        case.arg(k, kind, RAW_OK)
        args[k] = apply(a, kind)
    lkind = draw_lengths_kind(data) if L is not None else "none"
    lengths, L = apply_lengths(L, lkind, p["x"].shape[0])
    case.arg("lengths", "ok" if lkind in ("none", "int64") else lkind, LENGTHS_OK_PUBLIC | {"ok"})
    reverse, rok = draw_flag(data, "reverse")
    case.arg("reverse", "ok" if rok else "bad", {"ok"})
    a = [args[k] for k in ("x", "W_ih", "W_hh", "b", "h0", "c0")]
    ok, out = case.run(nbk.lstm_forward, *a, lengths, reverse, True)
    if not ok:
        return
    if not case.valid:
        p, L = as_passed(args, lengths)
    y, hT, cT, ws = out
    T, B, I = p["x"].shape
    H = p["W_hh"].shape[1]
    dy = np.random.default_rng(T * B).standard_normal((T, B, H)).astype(a[0].dtype)
    z = np.zeros((B, H), a[0].dtype)
    bcase = Case("backends.numba.lstm_backward")
    lb_kind = data.draw(st.sampled_from(["same"] * 8 + ["other", "bad"]), label="backward lengths")
    lb = lengths
    if lb_kind == "other":
        lb = np.zeros(B, np.int64)
    elif lb_kind == "bad":
        lb = np.full(B, T + 3)
    if lb_kind != "same":
        bcase.arg("lengths", lb_kind, ())
    ok, grads = bcase.run(nbk.lstm_backward, dy, z, z, ws, a[0], a[1], a[2], None, None, lb, reverse)
    if ok:
        assert_equal_to_reference(grads, reference(p, L, reverse, (dy, z, z))[1], grads=True)
