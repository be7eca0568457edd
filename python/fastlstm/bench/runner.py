"""The benchmark runner: correctness gate first, then timing (DESIGN.md §5).

For every thread count, shape, mode (forward = inference, train = forward + backward of y.sum())
and contender: check the result against the float64 NumPy reference on the same inputs (a
truncated problem for big shapes: first steps / first rows, same weights, same code path), and
only if it matches, time it: warm-up, then the median of `repeats` runs, each run looping short
calls until it lasts `min_time`. A contender that fails the gate is reported, never timed.

T = time steps, B = batch, I = input features, H = hidden units.
"""

from __future__ import annotations

import ctypes
import gc
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from types import ModuleType
from typing import Callable, Sequence

import numpy as np

import fastlstm
from fastlstm._blas import OpenBLAS
from fastlstm.backends import reference

from . import peers as _peers
from .shapes import STREAMING_SIZES, Problem, Shape, flops, flops_forward, make_problem

# correctness gate: forward |got − ref| ≤ ATOL + RTOL·|ref| elementwise; gradients
# max|got − ref| / max|ref| ≤ GRAD_RTOL per array
ATOL, RTOL, GRAD_RTOL = 1e-3, 1e-3, 1e-3
STREAM_CHECK_STEPS = 5


@dataclass
class Options:
    shapes: Sequence[Shape]
    threads: Sequence[int]
    modes: Sequence[str] = ("forward", "train")
    backends: Sequence[str | ModuleType] | None = None   # None: every fastlstm backend
    peers: Sequence[str] | None = None                   # None: torch and onnxruntime
    prepacked: bool = True            # also time native inference with weights packed once
    repeats: int = 7
    warmup: int = 1
    min_time: float = 0.05            # seconds per repeat; shorter calls are looped
    streaming: Sequence[int] = STREAMING_SIZES   # hidden sizes; () skips the streaming benchmark
    reference_max_gflop: float | None = 20.0     # forward GFLOP above which the reference is skipped
    check_max_gflop: float = 0.5      # forward GFLOP above which the gate uses a truncated problem
    progress: bool = True
    seed: int = 0
    argv: Sequence[str] | None = None   # the command line, recorded in the results


# ---------------------------------------------------------------------------------------------
# contenders

def build_contenders(opts: Options):
    """(contenders, roster): roster lists every requested contender with its state, so a
    missing peer or backend shows up as 'not installed' / 'unavailable' instead of vanishing."""
    contenders, roster = [], []
    names = opts.backends if opts.backends is not None else list(fastlstm.backends.PREFERENCE)
    why = fastlstm.backends.available()
    for b in names:
        label = b if isinstance(b, str) else getattr(b, "NAME", repr(b))
        try:
            c = _peers.FastlstmBackend(b)
        except ImportError as e:                 # BackendUnavailable is an ImportError
            roster.append({"name": label, "kind": "fastlstm",
                           "state": f"unavailable ({why.get(label) or e})"})
            continue
        contenders.append(c)
        roster.append({"name": c.name, "kind": "fastlstm", "state": "available",
                       "version": c.version()})
        if opts.prepacked and c.name == "native" and c._registered:
            contenders.append(_peers.FastlstmPrepacked(c.name))
            roster.append({"name": contenders[-1].name, "kind": "fastlstm",
                           "state": "available (inference only)", "version": c.version()})
    for name in (opts.peers if opts.peers is not None else _peers.PEER_NAMES):
        c, why = _peers.load_peer(name)
        if c is None:
            roster.append({"name": name, "kind": "peer", "state": why})
            continue
        contenders.append(c)
        state = "available" + ("" if "train" in c.modes else " (inference only)")
        roster.append({"name": name, "kind": "peer", "state": state, "version": c.version()})
    return contenders, roster


# ---------------------------------------------------------------------------------------------
# the correctness gate

def reference_outputs(p: Problem, mode: str) -> dict:
    """The spec's answer in float64 for the same (float32) inputs."""
    q = p.astype(np.float64)
    y, hT, cT, ws = reference.lstm_forward(q.x, q.W_ih, q.W_hh, q.b, q.h0, q.c0, q.lengths,
                                           False, mode == "train")
    out = {"y": y, "hT": hT, "cT": cT}
    if mode == "train":
        dy = np.ones_like(y)
        z = np.zeros_like(hT)
        grads = reference.lstm_backward(dy, z, z, ws, q.x, q.W_ih, q.W_hh, q.h0, q.c0, q.lengths, False)
        out.update(zip(_peers.GRAD_KEYS, grads))
    return out


def compare(got: dict, ref: dict) -> tuple[bool, dict]:
    """(ok, errors). Forward arrays: error = max |got−ref| / (ATOL + RTOL·|ref|), ok if ≤ 1.
    Gradients: error = max|got−ref| / max|ref|, ok if ≤ GRAD_RTOL."""
    errors, ok = {}, True
    for k, r in ref.items():
        g = got.get(k)
        if g is None or np.shape(g) != r.shape:
            errors[k] = f"shape {None if g is None else np.shape(g)} != {r.shape}"
            ok = False
            continue
        d = np.abs(np.asarray(g, np.float64) - r)
        if k in _peers.GRAD_KEYS:
            e = float(np.max(d) / max(float(np.max(np.abs(r))), 1e-30)) if d.size else 0.0
            bad = not e <= GRAD_RTOL          # NaN fails
        else:
            e = float(np.max(d / (ATOL + RTOL * np.abs(r)))) if d.size else 0.0
            bad = not e <= 1.0
        errors[k] = e
        ok = ok and not bad
    return ok, errors


def describe_failure(errors: dict) -> str:
    worst = []
    for k, e in errors.items():
        if isinstance(e, str):
            worst.append(f"{k}: {e}")
        elif k in _peers.GRAD_KEYS and not e <= GRAD_RTOL:
            worst.append(f"{k}: rel err {e:.2g} > {GRAD_RTOL:g}")
        elif k not in _peers.GRAD_KEYS and not e <= 1.0:
            worst.append(f"{k}: err {e:.2g}× tol")
    return "; ".join(worst[:3])


def check_problem(p: Problem, max_gflop: float) -> Problem:
    """p itself if the reference is cheap there, else its first steps (and, if needed, rows)."""
    limit = max_gflop * 1e9
    if flops_forward(p.shape, p.lengths) <= limit:
        return p
    per_step = flops_forward(Shape("", 1, p.B, p.I, p.H), None)
    T = max(2, min(p.T, int(limit // per_step)))
    B = p.B
    if T * per_step > limit:        # even two steps of all rows are too much: fewer rows
        B = max(1, min(p.B, int(limit // (2 * per_step / p.B))))
    return p.truncated(T, B)


# ---------------------------------------------------------------------------------------------
# timing

# Idle time before each contender is timed: the previous contender's worker threads (OpenMP,
# ONNX Runtime, ours) spin for a while after their last call, and on 2 cores a spinning thread
# of one contender halves the next one's second core (measured: fastlstm's 2-thread forward at
# (50,32,200,200) 2.38 ms alone, 2.85 ms right after a torch call, 2.36 ms 1 s later).
SETTLE_S = 0.15
# How long they spin, measured on the 2-core VM as the process's CPU time while its caller slept,
# after a 2-thread forward at (20,64,300,300): ONNX Runtime's worker 40-60 ms of a whole core,
# torch's OpenMP workers ~10 ms, fastlstm's pool under 1 ms. So settle() waits until no other
# thread of the process is busy, not a fixed time: with a fixed 30 ms between samples the sweep's
# 2-thread forwards of fastlstm ran while ONNX Runtime's worker still spun, in the two rounds of
# three where they followed it (fastlstm / ONNX Runtime at 2 threads, samples alternating, fixed
# 30 ms against settle(): (20,64,300,300) 17.8 / 15.2 ms against 14.5 / 14.5 ms;
# (50,32,200,200) 9.5 / 8.3 against 7.5 / 7.9; (50,32,100,100) 2.9 / 2.5 against 2.6 / 2.5).
SETTLE_MAX_S = 0.5
SETTLE_WINDOW_S = 0.005


def settle(min_s: float, max_s: float = SETTLE_MAX_S) -> float:
    """Sleep min_s, then on until the process's other threads used under a fifth of a core for
    SETTLE_WINDOW_S (the caller sleeps, so its CPU time is theirs), at most max_s more: the
    previous contender's pools have stopped spinning. Returns the seconds slept."""
    t_start = time.perf_counter()
    time.sleep(min_s)
    end = time.perf_counter() + max_s
    while time.perf_counter() < end:
        c0, t0 = time.process_time(), time.perf_counter()
        time.sleep(SETTLE_WINDOW_S)
        if time.process_time() - c0 < 0.2 * (time.perf_counter() - t0):
            break
    return time.perf_counter() - t_start


def time_call(fn: Callable[[], object], repeats: int, warmup: int, min_time: float) -> dict:
    """Median and spread (ms per call) of `repeats` runs; each run loops `inner` calls."""
    settle(SETTLE_S)
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter_ns()
    fn()
    one = max(time.perf_counter_ns() - t0, 1)
    inner = max(1, math.ceil(min_time * 1e9 / one))
    samples = []
    gc_was = gc.isenabled()
    gc.disable()                       # a collection inside one run is noise, not the kernel
    try:
        for _ in range(repeats):
            t0 = time.perf_counter_ns()
            for _ in range(inner):
                fn()
            samples.append((time.perf_counter_ns() - t0) / inner / 1e6)
    finally:
        if gc_was:
            gc.enable()
    return _stats(samples, inner)


def _stats(samples: list, inner: int) -> dict:
    a = np.array(samples)
    return {"times_ms": list(samples), "inner": inner, "median_ms": float(np.median(a)),
            "min_ms": float(a.min()), "max_ms": float(a.max()),
            "q1_ms": float(np.percentile(a, 25)), "q3_ms": float(np.percentile(a, 75))}


# Idle time before each sample of an interleaved round, at least: settle() then waits until the
# contender before has stopped spinning on the second core.
SETTLE_BETWEEN_S = 0.03


def time_interleaved(fns: Sequence[Callable[[], object]], repeats: int, warmup: int, min_time: float,
                     before: Callable[[int], None] | None = None) -> list:
    """time_call for several contenders at once, in rounds: each round times every contender once
    (`inner` calls, sized as time_call sizes them), the order rotating by one each round. This VM's
    speed changes for seconds at a time (the FMA peak of one core measured 82-102 GFLOP/s within
    minutes on 2026-12-01; one forward took 5.6 or 7.7 ms in alternating spells of a few seconds),
    which is as long as timing one contender after another takes, so a slow spell landed on one
    contender of a cell and not on the next; in rounds it falls on all of them alike.
    `before(i)` runs before each sample of contender i, untimed (thread counts)."""
    settle(SETTLE_S)
    inner = []
    for i, fn in enumerate(fns):
        if before is not None:
            before(i)
        for _ in range(warmup):
            fn()
        t0 = time.perf_counter_ns()
        fn()
        inner.append(max(1, math.ceil(min_time * 1e9 / max(time.perf_counter_ns() - t0, 1))))
    samples: list = [[] for _ in fns]
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for r in range(repeats):
            for j in range(len(fns)):
                i = (j + r) % len(fns)
                if before is not None:
                    before(i)
                settle(SETTLE_BETWEEN_S)
                t0 = time.perf_counter_ns()
                for _ in range(inner[i]):
                    fns[i]()
                samples[i].append((time.perf_counter_ns() - t0) / inner[i] / 1e6)
    finally:
        if gc_was:
            gc.enable()
    return [_stats(s, n) for s, n in zip(samples, inner)]


# ---------------------------------------------------------------------------------------------
# threads: fastlstm, torch and ONNX Runtime are told directly; NumPy's OpenBLAS (the reference)
# through its C API, found in this process's mapped libraries (what threadpoolctl does)

_OpenBLAS = OpenBLAS   # fastlstm._blas.OpenBLAS (also used by fit)


def fma_peak(threads: int, seconds: float = 0.2) -> tuple[float | None, str]:
    """The machine's FMA peak (GFLOP/s) from the native module's FMA loop, or (None, why)."""
    try:
        from fastlstm import _core
    except ImportError as e:
        return None, f"unavailable (fastlstm._core: {e})"
    fn = getattr(_core, "fma_peak_gflops", None)
    if fn is None:
        return None, "unavailable (fastlstm._core has no fma_peak_gflops)"
    try:
        return float(fn(int(threads), float(seconds))), "measured"
    except Exception as e:           # a broken probe must not cost the whole run
        return None, f"unavailable ({type(e).__name__}: {e})"


# ---------------------------------------------------------------------------------------------
# machine description

def recheck_peak(entry: dict, rows: list) -> None:
    """A peak is a maximum: probe it again (at the end of a run, the threads already set) and keep
    the higher, rescaling the % of peak of `rows` at that thread count, so that one probe taken
    while the host held a vCPU does not inflate it (or, in the sweep, lower the training
    target: round 19's full sweep probed 104 GFLOP/s on 2 threads, against 186-188 minutes
    later)."""
    n = entry["threads"]
    again, _ = fma_peak(n)
    entry.setdefault("samples", [entry["gflops"]]).append(again)
    if again is not None and (entry["gflops"] is None or again > entry["gflops"]):
        entry["gflops"], entry["state"] = again, "measured"
        for r in rows:
            if r["threads"] == n and r.get("gflops") is not None:
                r["pct_peak"] = 100.0 * r["gflops"] / again


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if ln.lower().startswith("model name"):
                    return ln.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# How the run's memory allocator was set (machine_info records it): see pin_allocator.
_ALLOCATOR = "default"

# glibc mallopt parameters and the environment variables that set the same in child processes
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_PINNED_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "2147483647"}


def pin_allocator() -> str:
    """Keep every block glibc malloc hands out in its heap, and the heap's free memory for reuse
    (no mmap per big block, no trimming), in this process and in the children it starts (Keras).

    Why: a block of 128 KB or more normally comes from mmap and goes back to the OS when freed,
    so the next call's block is fresh pages the kernel zeroes one page fault at a time. Whether a
    contender pays for that depends on what ran before it in the process (glibc raises its mmap
    threshold after big frees): torch's char-LM training epoch took 0.88 s in a fresh process and
    0.65 s with these settings (167 000 page faults per epoch fewer).
    fastlstm's kernels keep their buffers between calls and are not affected. Pinned, every
    contender runs with warm memory, whatever ran before it. Returns what was done, for the report.
    """
    global _ALLOCATOR
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(2 ** 31 - 1)) == 1
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        ok = False
    if ok:
        os.environ.update(_PINNED_ENV)
        _ALLOCATOR = "glibc malloc pinned: no mmap, no trim (--default-malloc to measure without)"
    else:
        _ALLOCATOR = "default (not glibc: not pinned)"
    return _ALLOCATOR


def core_round_trips() -> dict:
    """{"a-b": ns}: the round trip of a cache line between threads pinned to usable CPUs a and b
    (fastlstm._core.core_round_trip_ns), from the first usable CPU to the second (and to the
    middle and last one on bigger machines). A 2-thread step's sync costs about this, and on a
    VM it depends on where the host put the vCPUs: on the 2-vCPU VM 390-420 ns at one time and
    47-50 ns half an hour later, with torch's 2-thread forecast epoch at 89 and 60 ms (same
    code). So the reports carry it beside the figures. {} where it cannot be measured (one
    usable CPU, no native module, not Linux)."""
    try:
        from fastlstm import _core
        cpus = sorted(os.sched_getaffinity(0))
    except (ImportError, AttributeError):
        return {}
    out = {}
    for b in dict.fromkeys(cpus[i] for i in (1, len(cpus) // 2, -1) if len(cpus) > 1):
        if b != cpus[0]:
            ns = _core.core_round_trip_ns(cpus[0], b)
            if ns is not None:
                out[f"{cpus[0]}-{b}"] = round(ns)
    return out


def round_trip_text(m: dict) -> str:
    """The machine's core-to-core round trips for a report line ("" when not measured)."""
    rt = m.get("core_round_trip_ns") or {}
    return ", ".join(f"CPUs {k} {v} ns" for k, v in rt.items())


def machine_info() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    vers = {"python": sys.version.split()[0], "numpy": np.__version__, "fastlstm": fastlstm.__version__}
    for pkg in ("torch", "onnxruntime", "onnx", "numba"):
        try:
            vers[pkg] = version(pkg)
        except PackageNotFoundError:
            vers[pkg] = "not installed"
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    env = {k: v for k, v in os.environ.items()
           if k.startswith(("FASTLSTM_", "OMP_", "MKL_", "OPENBLAS_", "NUMBA_", "KMP_"))}
    return {"cpu": _cpu_model(), "logical_cpus": os.cpu_count(), "cpus_usable": affinity,
            "platform": platform.platform(), "versions": vers, "env": env,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "loadavg_start": _loadavg(), "allocator": _ALLOCATOR, "core_round_trip_ns": core_round_trips()}


def _cpu_seconds():
    """(CPU seconds all processes spent busy, incl. hypervisor steal; this process's CPU seconds)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        busy = (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        busy = None
    t = os.times()
    return busy, t.user + t.system


def _others_busy(start, wall_s: float):
    """CPUs' worth of work that other processes (or the hypervisor) did while we ran."""
    end = _cpu_seconds()
    if start[0] is None or end[0] is None or wall_s <= 0:
        return None
    return round(max(0.0, ((end[0] - start[0]) - (end[1] - start[1])) / wall_s), 2)


def _loadavg():
    """1-minute load average: other work on a shared machine shows up here, not in our numbers."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


# ---------------------------------------------------------------------------------------------
# progress: tqdm on a terminal when installed, else one line per job on stderr (logs, CI)

class _Progress:
    def __init__(self, total: int, enabled: bool):
        self.bar, self.n, self.total, self.enabled = None, 0, total, enabled
        if not enabled or not sys.stderr.isatty():
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self.bar = tqdm(total=total, desc="bench", unit="job", file=sys.stderr, leave=False,
                        dynamic_ncols=True)

    def describe(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=True)
        elif self.enabled:
            print(f"[{self.n + 1}/{self.total}] {text}", file=sys.stderr, flush=True)

    def advance(self) -> None:
        self.n += 1
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------------------------------------
# the run

def _set_threads(contenders, blas: _OpenBLAS, n: int) -> int | None:
    """Same thread count for every contender; returns the BLAS count set (None: not controllable)."""
    for c in contenders:
        c.set_threads(n)
    fastlstm.set_num_threads(n)        # also when no fastlstm contender: the library's own state
    return n if blas.set(n) else None


def _shape_row(shape: Shape, lengths) -> dict:
    return {"shape": shape.label, "name": shape.name, "dims": shape.dims, "T": shape.T, "B": shape.B,
            "I": shape.I, "H": shape.H, "variable": shape.variable, "cut_from": shape.cut_from,
            "real_steps": int(shape.T * shape.B if lengths is None else np.sum(lengths))}


def _bench_one(c, p: Problem, mode: str, opts: Options, ref_cache: dict, peak, timed: list | None = None) -> dict:
    """Gate, then time one contender. With `timed` (a list), a contender that passes the gate is
    not timed: its prepared call is appended to `timed` and the row returned without a status,
    for finish_row once time_interleaved has timed it with the others."""
    row = {"contender": c.name, "kind": c.kind, "mode": mode}
    gflop = flops(p.shape, p.lengths, mode) / 1e9
    row["gflop"] = gflop
    if (c.kind == "fastlstm" and c.name == "reference" and opts.reference_max_gflop is not None
            and flops_forward(p.shape, p.lengths) / 1e9 > opts.reference_max_gflop):
        row.update(status="skipped", note="skipped (too slow)")
        return row
    # 1. correctness gate
    cp = check_problem(p, opts.check_max_gflop)
    key = (cp.shape, mode)
    if key not in ref_cache:
        ref_cache[key] = reference_outputs(cp, mode)
    row["check_on"] = f"T={cp.T}, B={cp.B}" + ("" if cp is p else " (truncated)")
    try:
        got = c.outputs(c.prepare(cp, mode)(), mode)
    except Exception as e:
        row.update(status="error", note=f"error: {type(e).__name__}: {e}")
        return row
    ok, errors = compare(got, ref_cache[key])
    row["check_errors"] = errors
    if not ok:
        row.update(status="failed", note=f"FAILED correctness ({describe_failure(errors)})")
        return row
    # 2. timing, on the full problem
    try:
        fn = c.prepare(p, mode)
        if timed is not None:          # timed later, with others (time_interleaved)
            timed.append(fn)
            return row
        row.update(time_call(fn, opts.repeats, opts.warmup, opts.min_time))
    except Exception as e:
        row.update(status="error", note=f"error: {type(e).__name__}: {e}")
        return row
    return finish_row(row, row, peak)


def finish_row(row: dict, timing: dict, peak) -> dict:
    """A row whose contender passed the gate, with its timing: status, GFLOP/s, % of peak."""
    row.update(timing)
    row["status"] = "ok"
    row["gflops"] = row["gflop"] / (row["median_ms"] / 1e3)
    row["pct_peak"] = None if peak is None else 100.0 * row["gflops"] / peak
    return row


def _stream_one(c, H: int, opts: Options) -> dict:
    row = {"contender": c.name, "kind": c.kind, "H": H, "I": H, "B": 1}
    p = make_problem(Shape(f"stream{H}", STREAM_CHECK_STEPS, 1, H, H), opts.seed)
    try:
        # gate: STREAM_CHECK_STEPS single steps, state carried, against one reference sequence
        st = c.stepper(p.W_ih, p.W_hh, p.b, p.h0, p.c0)
        for t in range(p.T):
            st.step(p.x[t])
        h, cs = st.state()
        ref = reference_outputs(p, "forward")
        ok, errors = compare({"hT": h, "cT": cs}, {"hT": ref["hT"], "cT": ref["cT"]})
        row["check_errors"] = errors
        if not ok:
            row.update(status="failed", note=f"FAILED correctness ({describe_failure(errors)})")
            return row
        st = c.stepper(p.W_ih, p.W_hh, p.b, p.h0, p.c0)
        x0 = p.x[0]
        t = time_call(lambda: st.step(x0), opts.repeats, max(opts.warmup, 1), opts.min_time)
    except Exception as e:
        row.update(status="error", note=f"error: {type(e).__name__}: {e}")
        return row
    row.update(status="ok", inner=t["inner"], times_us=[s * 1e3 for s in t["times_ms"]])
    row.update({k[:-3] + "_us": t[k] * 1e3 for k in ("median_ms", "min_ms", "max_ms", "q1_ms", "q3_ms")})
    return row


def speedups(rows: list) -> list:
    """peer median / fastlstm median for every (threads, mode, shape): > 1 means fastlstm is faster."""
    out = []
    ok = [r for r in rows if r.get("status") == "ok"]
    for r in ok:
        if r["kind"] != "fastlstm":
            continue
        for q in ok:
            if (q["kind"] == "peer" and q["threads"] == r["threads"] and q["mode"] == r["mode"]
                    and q["shape"] == r["shape"] and q["dims"] == r["dims"]):
                out.append({"threads": r["threads"], "mode": r["mode"], "shape": r["shape"],
                            "dims": r["dims"], "backend": r["contender"], "peer": q["contender"],
                            "ratio": q["median_ms"] / r["median_ms"]})
    return out


def run(opts: Options) -> dict:
    """Run the benchmark; returns every raw number as a JSON-ready dict (see report.py)."""
    contenders, roster = build_contenders(opts)
    blas = _OpenBLAS()
    problems = {s: make_problem(s, opts.seed) for s in opts.shapes}
    stream_cs = [c for c in contenders if c.streaming]
    jobs = len(opts.threads) * (sum(1 for s in opts.shapes for m in opts.modes for c in contenders
                                    if m in c.modes) + len(opts.streaming) * len(stream_cs))
    old = {"fastlstm": fastlstm.get_num_threads(), "blas": blas.get()}
    old_torch = next((c.torch.get_num_threads() for c in contenders if c.name == "torch"), None)
    results = {"machine": machine_info(), "fastlstm_config": _safe_config(),
               "argv": list(opts.argv) if opts.argv is not None else None,
               "options": {"threads": list(opts.threads), "modes": list(opts.modes),
                           "repeats": opts.repeats, "warmup": opts.warmup, "min_time_s": opts.min_time,
                           "reference_max_gflop": opts.reference_max_gflop,
                           "check_max_gflop": opts.check_max_gflop, "seed": opts.seed,
                           "shapes": [asdict(s) for s in opts.shapes],
                           "streaming_sizes": list(opts.streaming)},
               "tolerance": {"forward_atol": ATOL, "forward_rtol": RTOL, "grad_rtol": GRAD_RTOL},
               "contenders": roster, "peaks": [], "rows": [], "streaming": []}
    ref_cache: dict = {}
    cpu0, wall0 = _cpu_seconds(), time.perf_counter()
    bar = _Progress(jobs, opts.progress)
    try:
        for n in opts.threads:
            blas_n = _set_threads(contenders, blas, n)
            peak, how = fma_peak(n)
            entry = {"threads": n, "gflops": peak, "state": how, "blas_threads": blas_n,
                     "samples": [peak]}
            results["peaks"].append(entry)
            for shape in opts.shapes:
                p = problems[shape]
                for mode in opts.modes:
                    for c in contenders:
                        if mode not in c.modes:
                            continue
                        bar.describe(f"{n}t {mode} {shape.label} {c.name}")
                        # again before each contender: a Numba parallel launch resets the OpenMP
                        # thread count torch shares (seen: torch "1 thread" ran on 2 cores)
                        c.set_threads(n)
                        row = _bench_one(c, p, mode, opts, ref_cache, peak)
                        row.update(_shape_row(shape, p.lengths), threads=n)
                        results["rows"].append(row)
                        bar.advance()
            for H in opts.streaming:
                for c in stream_cs:
                    bar.describe(f"{n}t stream H={H} {c.name}")
                    c.set_threads(n)
                    row = _stream_one(c, H, opts)
                    row["threads"] = n
                    results["streaming"].append(row)
                    bar.advance()
            recheck_peak(entry, results["rows"])
    finally:
        bar.close()
        fastlstm.set_num_threads(old["fastlstm"])
        if old["blas"] is not None:
            blas.set(old["blas"])
        if old_torch is not None:
            next(c for c in contenders if c.name == "torch").torch.set_num_threads(old_torch)
    results["machine"]["loadavg_end"] = _loadavg()
    results["machine"]["others_busy_cpus"] = _others_busy(cpu0, time.perf_counter() - wall0)
    results["speedups"] = speedups(results["rows"])
    return results


def _safe_config() -> dict:
    try:
        return fastlstm.config()
    except Exception as e:       # config() loads every backend; one broken must not stop the bench
        return {"error": f"{type(e).__name__}: {e}"}
