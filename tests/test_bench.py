"""The benchmark suite (fastlstm.bench, `python -m fastlstm bench`): its correctness gate stops a
wrong backend from being timed, the peers' adapters pass that gate, a tiny end-to-end run writes
sane JSON and markdown, and the CLI rejects bad arguments clearly. No timing is asserted.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
import types

import numpy as np
import pytest
from conftest import require, require_backend

from fastlstm.__main__ import bench_options, build_parser, main, sweep_options
from fastlstm.backends import reference
from fastlstm.bench import peers, report, runner
from fastlstm.bench.shapes import SHAPES, Shape, make_problem, parse_shape

TINY = Shape("tiny", 6, 3, 4, 5)


def gate_backend(flip_forget: bool, calls: list):
    """A kernel-contract module wrapping the reference; with flip_forget the forget gate's
    pre-activation is negated (its W_ih, W_hh and b rows), i.e. a plausible sign bug."""

    def flip(W_ih, W_hh, b):
        if not flip_forget:
            return W_ih, W_hh, b
        H = W_hh.shape[1]
        W_ih, W_hh, b = W_ih.copy(), W_hh.copy(), b.copy()
        for a in (W_ih, W_hh, b):
            a[H:2 * H] *= -1
        return W_ih, W_hh, b

    def lstm_forward(x, W_ih, W_hh, b, h0, c0, lengths=None, reverse=False, training=False):
        calls.append("forward")
        return reference.lstm_forward(x, *flip(W_ih, W_hh, b), h0, c0, lengths, reverse, training)

    def lstm_backward(dy, dhT, dcT, ws, x, W_ih, W_hh, h0, c0, lengths=None, reverse=False):
        calls.append("backward")
        W_ih2, W_hh2, _ = flip(W_ih, W_hh, np.zeros(W_hh.shape[0], W_hh.dtype))
        return reference.lstm_backward(dy, dhT, dcT, ws, x, W_ih2, W_hh2, h0, c0, lengths, reverse)

    mod = types.ModuleType("gate_double")
    mod.NAME = "flipped" if flip_forget else "wrapped"
    mod.DTYPES = reference.DTYPES
    mod.info = lambda: {"name": mod.NAME, "dtypes": "float32, float64"}
    mod.lstm_forward, mod.lstm_backward = lstm_forward, lstm_backward
    return mod


def tiny_options(backends, **kw):
    kw = {"shapes": [TINY], "threads": [1], "backends": backends, "peers": [], "repeats": 2,
          "min_time": 0.0, "streaming": (4,), "progress": False, **kw}
    return runner.Options(**kw)


@pytest.mark.parametrize("flip", [True, False], ids=["flipped-forget-gate", "faithful-wrapper"])
def test_gate_rejects_a_wrong_backend_and_does_not_time_it(flip):
    calls = []
    double = gate_backend(flip, calls)
    res = runner.run(tiny_options(["reference", double]))
    rows = {(r["contender"], r["mode"]): r for r in res["rows"]}
    stream = {r["contender"]: r for r in res["streaming"]}
    for mode in ("forward", "train"):
        assert rows[("reference", mode)]["status"] == "ok"
        assert rows[("reference", mode)]["median_ms"] > 0
    mine = [rows[(double.NAME, "forward")], rows[(double.NAME, "train")], stream[double.NAME]]
    if not flip:   # the module path itself works: the failure below is the sign bug's doing
        assert all(r["status"] == "ok" for r in mine)
        return
    for r in mine:
        assert r["status"] == "failed", r
        assert r["note"].startswith("FAILED correctness")
        assert "median_ms" not in r and "median_us" not in r
    # called only by the gate: one forward check, one train check, the streaming steps
    assert calls.count("forward") == 2 + runner.STREAM_CHECK_STEPS
    assert calls.count("backward") == 1
    assert not any(s["backend"] == double.NAME for s in res["speedups"])
    text = report.format_text(res)
    line = next(ln for ln in text.splitlines() if f" {double.NAME} " in ln)
    assert "FAILED correctness" in line


@pytest.mark.parametrize("variable", [False, True], ids=["full", "variable-lengths"])
@pytest.mark.parametrize("peer", peers.PEER_NAMES)
def test_peer_adapters_pass_the_gate(peer, variable):
    require(peer)
    if peer == "onnxruntime":
        require("onnxruntime", "onnx")
    c, why = peers.load_peer(peer)
    assert c is not None, why
    p = make_problem(Shape("tiny", 7, 4, 3, 6, variable=variable), seed=3)
    for mode in c.modes:
        ok, errors = runner.compare(c.outputs(c.prepare(p, mode)(), mode), runner.reference_outputs(p, mode))
        assert ok, (mode, errors)


@pytest.mark.parametrize("variable", [False, True], ids=["full", "variable-lengths"])
def test_native_prepacked_contender_passes_the_gate_and_is_forward_only(variable):
    require_backend("native")
    contenders, roster = runner.build_contenders(runner.Options(shapes=[], threads=[1], peers=[]))
    names = [c.name for c in contenders]
    assert names.index("native-prepacked") == names.index("native") + 1
    c = contenders[names.index("native-prepacked")]
    assert c.modes == ("forward",) and not c.streaming
    p = make_problem(Shape("tiny", 7, 14, 3, 6, variable=variable), seed=3)
    ok, errors = runner.compare(c.outputs(c.prepare(p, "forward")(), "forward"), runner.reference_outputs(p, "forward"))
    assert ok, errors
    no, _ = runner.build_contenders(runner.Options(shapes=[], threads=[1], peers=[], prepacked=False))
    assert "native-prepacked" not in [c.name for c in no]


def test_truncated_check_problem_keeps_weights_and_ragged_lengths():
    p = make_problem(SHAPES["medium-var"])
    q = runner.check_problem(p, 0.5)
    assert q.T < p.T and q.W_hh is p.W_hh and q.I == p.I and q.H == p.H
    np.testing.assert_array_equal(q.x, p.x[:q.T, :q.B])
    assert q.lengths.min() >= 1 and q.lengths.max() == q.T and len(set(q.lengths)) > 1
    tiny = make_problem(TINY)
    assert runner.check_problem(tiny, 0.5) is tiny          # cheap problems are checked whole


def test_end_to_end_cli_writes_json_and_markdown(tmp_path, capsys):
    require("torch")
    require("onnxruntime")
    js, md = tmp_path / "r.json", tmp_path / "r.md"
    rc = main(["bench", "--shape", "6,3,4,5", "--backends", "reference", "--peers", "torch,onnxruntime",
               "--threads", "1", "--repeats", "2", "--min-time", "0", "--no-progress",
               "--json", str(js), "--markdown", str(md)])
    out = capsys.readouterr().out
    assert rc == 0, out
    data = json.loads(js.read_text())
    assert data["machine"]["cpu"] and data["machine"]["date"] and data["fastlstm_config"]["backend"]
    assert data["machine"]["others_busy_cpus"] >= 0                 # measured, not left out
    if platform.libc_ver()[0] == "glibc":                             # freed memory stays in the heap
        assert data["machine"]["allocator"].startswith("glibc malloc pinned")
        assert os.environ["MALLOC_MMAP_MAX_"] == "0"                  # and in the children (Keras)
    usable = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(usable) > 1 and sys.platform.startswith("linux"):         # measured, and in the report
        rt = data["machine"]["core_round_trip_ns"]
        assert f"{usable[0]}-{usable[1]}" in rt and all(v > 0 for v in rt.values())
        assert f"CPUs {usable[0]}-{usable[1]} " in md.read_text()
    rows = {(r["contender"], r["mode"]): r for r in data["rows"]}
    assert set(rows) == {("reference", "forward"), ("reference", "train"), ("torch", "forward"),
                         ("torch", "train"), ("onnxruntime", "forward")}
    for r in rows.values():
        assert r["status"] == "ok" and len(r["times_ms"]) == 2 and r["min_ms"] <= r["median_ms"] <= r["max_ms"]
        assert r["gflop"] == pytest.approx(2 * 6 * 3 * 4 * 5 * (4 + 5) * (3 if r["mode"] == "train" else 1) / 1e9)
    assert {(s["peer"], s["mode"]) for s in data["speedups"]} == {("torch", "forward"), ("torch", "train"),
                                                                  ("onnxruntime", "forward")}
    assert {(r["contender"], r["H"]) for r in data["streaming"] if r["status"] == "ok"} == \
        {(c, H) for c in ("reference", "torch") for H in (32, 128, 512)}
    assert [p["threads"] for p in data["peaks"]] == [1]
    text = md.read_text()
    assert data["machine"]["cpu"] in text and data["machine"]["date"] in text and "1 thread(s)" in text
    assert "| shape | T×B×I×H | contender | median ms |" in text and "| vs torch |" in text
    assert "6×3×4×5" in text and "6×3×4×5" in out
    assert not list(tmp_path.glob(".tmp-*"))            # atomic writes leave no temporaries


def test_missing_peer_and_missing_fma_peak_are_reported_not_dropped(monkeypatch):
    import fastlstm

    class NotInstalled:
        def __init__(self):
            raise ImportError("No module named 'torch'")

    monkeypatch.setitem(peers.PEERS, "torch", NotInstalled)
    monkeypatch.delattr(fastlstm, "_core", raising=False)        # `from fastlstm import _core` fails
    monkeypatch.setitem(sys.modules, "fastlstm._core", None)
    res = runner.run(tiny_options(["reference"], peers=["torch"], streaming=()))
    assert {"name": "torch", "kind": "peer", "state": "not installed (No module named 'torch')"} in res["contenders"]
    assert res["peaks"][0]["gflops"] is None and res["peaks"][0]["state"].startswith("unavailable")
    assert all(r["status"] == "ok" and r["pct_peak"] is None for r in res["rows"])
    text = report.format_text(res)
    assert "torch:" in text and "not installed" in text and "FMA peak — (unavailable)" in text
    assert "Not measured: torch: not installed" in report.format_markdown(res)


def test_cli_parses_arguments():
    args = build_parser().parse_args(["bench", "--shape", "100,32,512,512", "book", "--threads", "1,2",
                                      "--lengths", "variable", "--mode", "train", "--backends",
                                      "reference", "--repeats", "3", "--no-progress"])
    opts = bench_options(args)
    assert [(s.T, s.B, s.I, s.H, s.variable) for s in opts.shapes] == [(100, 32, 512, 512, True),
                                                                       (50, 1, 1, 32, True)]
    assert opts.threads == [1, 2] and opts.modes == ("train",) and opts.backends == ["reference"]
    assert opts.repeats == 3 and not opts.progress and opts.peers is None
    quick = bench_options(build_parser().parse_args(["bench", "--quick"]))
    assert all(s.cut_from or s.T * s.B * s.H <= 100 * 16 * 128 for s in quick.shapes)
    assert quick.reference_max_gflop is not None
    assert parse_shape("medium") == SHAPES["medium"]


def test_cli_config_shows_the_backend(capsys):
    assert main(["config"]) == 0
    assert "backend   :" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--shape", "100,32,512"], "invalid shape '100,32,512': expected T,B,I,H"),
    (["--shape", "100,0,8,8"], "must all be >= 1"),
    (["--shape", "big"], "invalid shape 'big'"),
    (["--threads", "0"], "invalid thread counts"),
    (["--backends", "cuda"], "unknown backend 'cuda'"),
    (["--repeats", "0"], "expected a positive integer"),
])
def test_cli_rejects_bad_arguments_clearly(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench"] + argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_sweep_grid_matches_the_issue_and_quick_is_smaller():
    from fastlstm.bench import sweep

    full = sweep.grid(sweep.SweepOptions(threads=[1]))
    assert {s.H for s in full} == {16, 32, 50, 64, 100, 128, 200, 256, 300, 512}
    assert {s.B for s in full} == {1, 8, 32, 64}
    assert {(s.H, s.I) for s in full if s.H == 50} == {(50, 1), (50, 32), (50, 50)}
    assert len(full) == 10 * 4 * 3 - 4                      # H = 32: I = 32 and I = H are one cell
    assert all(s.T == (20 if s.H >= 300 else 50) and (s.cut_from == 50) == (s.H >= 300) for s in full)
    quick = sweep.grid(sweep.SweepOptions(threads=[1], quick=True))
    assert len(quick) < len(full) / 3 and {s.H for s in quick} >= {16, 50, 100, 200, 512}
    opts = sweep_options(build_parser().parse_args(["bench", "--sweep", "--quick", "--threads", "1,2"]))
    assert opts.quick and opts.threads == [1, 2] and opts.modes == ("forward", "train")


def test_sweep_end_to_end_writes_heat_map_json_and_worst_cells(tmp_path):
    """A 2-cell sweep, 1 and 2 threads: every contender passes the gate, every cell gets its
    ratios (and the thread comparison from 2 threads on), the PNG and JSON are written."""
    require_backend("native")
    require("torch")
    require("onnxruntime")
    require("matplotlib")
    from fastlstm.bench import sweep

    opts = sweep.SweepOptions(threads=[1, 2], hidden=[5], batches=[3], inputs=["1", "H"], repeats=1,
                              min_time=0.0, progress=False)
    res = sweep.run(opts)
    assert {(r["role"], r["mode"], r["contender"]) for r in res["rows"]} == {
        ("native", "forward", "native-prepacked"), ("torch", "forward", "torch"),
        ("onnxruntime", "forward", "onnxruntime"), ("native", "train", "native"), ("torch", "train", "torch")}
    assert all(r["status"] == "ok" for r in res["rows"]), [r.get("note") for r in res["rows"]]
    # each shape at both thread counts back to back (drift between passes would bias 2t vs 1t)
    order = list(dict.fromkeys((r["shape"], r["threads"]) for r in res["rows"]))
    assert order == [("H5 B3 I1", 1), ("H5 B3 I1", 2), ("H5 B3 IH", 1), ("H5 B3 IH", 2)]
    cells = res["cells"]
    assert len(cells) == 2 * 2 * 2                          # threads × modes × shapes
    for c in cells:
        assert c["ratio"] > 0 and c["best_peer_ms"] > 0
        peers = [c.get("torch_ms"), c.get("onnxruntime_ms")] if c["mode"] == "forward" else [c["torch_ms"]]
        assert c["best_peer_ms"] == min(peers) and c["ratio"] == pytest.approx(c["best_peer_ms"] / c["native_ms"])
        assert (c["mode"] == "train") == ("target" in c)
        assert ("native_vs_first" in c) == (c["threads"] == 2)
        assert c["native_split"] == "serial"                # H = 5, B = 3: the rule keeps one thread
    text = sweep.format_text(res)
    assert "forward, 1 thread(s): 2 cells" in text and "train, 2 thread(s): 2 cells" in text
    assert "slower than 1 thread:" in text and "H5 B3 I1" in text
    # a 2-thread cell slower than 1 thread is told apart by the path its 2-thread run took
    fwd2 = [c for c in cells if c["threads"] == 2 and c["mode"] == "forward"]
    for c, split in zip(fwd2, ("serial", "rows")):
        c["native_vs_first"], c["native_split"] = 0.9, split
    text = sweep.format_text(res)
    assert "native at 2 cells (1 of them on one thread at 2 threads too: the same code" in text
    assert "native 0.90× [serial]" in text and "native 0.90× [rows]" in text
    png, js = tmp_path / "s.png", tmp_path / "s.json"
    sweep.write_plot(res, str(png))
    sweep.write_json(res, str(js))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(js.read_text())["cells"][0]["shape"] == "H5 B3 I1"
    assert not list(tmp_path.glob(".tmp-*"))


def test_sweep_keeps_the_higher_fma_peak_probe_for_its_training_target(monkeypatch):
    """The FMA peak is probed at the start and again at the end of a sweep, and the higher one is
    the peak: a start probe taken while the host held the other vCPU (round 19: 104 against
    186-188 GFLOP/s on 2 threads) would lower the training target and every % of peak."""
    require_backend("native")
    require("torch")
    require("onnxruntime")
    from fastlstm.bench import sweep

    probes = iter([(10.0, "measured"), (40.0, "measured")])
    monkeypatch.setattr(runner, "fma_peak", lambda n, seconds=0.2: next(probes))
    opts = sweep.SweepOptions(threads=[1], hidden=[5], batches=[3], inputs=["1"], repeats=1,
                              min_time=0.0, progress=False)
    res = sweep.run(opts)
    assert res["peaks"] == [{"threads": 1, "gflops": 40.0, "state": "measured", "samples": [10.0, 40.0]}]
    train = next(c for c in res["cells"] if c["mode"] == "train")
    gf = train["native_gflops"]
    torch_gf = gf * train["native_ms"] / train["torch_ms"]
    assert train["target"] == pytest.approx(gf / min(1.2 * torch_gf, 0.85 * 40.0))
    ok = [r for r in res["rows"] if r["status"] == "ok"]
    assert ok and all(r["pct_peak"] == pytest.approx(100.0 * r["gflops"] / 40.0) for r in ok)
    assert "FMA peak, 1 thread(s): 40.0 GFLOP/s (the higher of the probes at the start and the end: 10.0, 40.0)" \
        in sweep.format_text(res)


def test_sweep_rejects_options_of_the_shape_benchmark(capsys):
    assert main(["bench", "--sweep", "--shape", "book", "--no-progress"]) == 2
    assert "--shape cannot be combined with --sweep" in capsys.readouterr().err


def test_fit_benchmark_runs_torch_at_the_thread_count_it_reports(monkeypatch):
    require("torch")
    import torch

    from fastlstm.bench import fit

    epochs = fit.fastlstm_epochs

    def and_then_2_threads(*a, **k):  # as numba's OpenMP layer did to torch's runtime
        out = epochs(*a, **k)
        torch.set_num_threads(2)
        return out

    monkeypatch.setattr(fit, "fastlstm_epochs", and_then_2_threads)
    old = torch.get_num_threads()
    try:
        res = fit.run_fit(problems=("forecast",), threads=(1,), repeats=1, backends=("native",),
                          peers=("torch",), progress=False)
    finally:
        torch.set_num_threads(old)
    row = next(r for r in res["rows"] if r["contender"] == "torch")
    assert row["threads"] == 1 and row["torch_threads"] == 1 and len(row["times"]) == 1


def test_core_round_trip_probe():
    """Two threads pinned to two usable CPUs hand a cache line back and forth: a positive time;
    one CPU twice is refused (the threads would take turns by time slice); a CPU outside the
    affinity gives None."""
    require_backend("native")
    from fastlstm import _core

    with pytest.raises(ValueError, match="two CPUs"):
        _core.core_round_trip_ns(0, 0)
    if not sys.platform.startswith("linux"):
        assert _core.core_round_trip_ns(0, 1, 10, 1) is None
        return
    usable = sorted(os.sched_getaffinity(0))
    outside = max(usable) + 1
    assert _core.core_round_trip_ns(usable[0], outside, 10, 1) is None
    if len(usable) > 1:
        ns = _core.core_round_trip_ns(usable[0], usable[1], 2000, 3)
        assert 0 < ns < 1e6
        assert sorted(os.sched_getaffinity(0)) == usable              # the caller's affinity restored


def test_settle_waits_for_a_spinning_thread_to_stop():
    """settle() sleeps its minimum and then on while another thread of the process burns CPU (a
    peer's pool spinning after its call), returning once that has stopped; idle, it returns after
    its minimum and one short window."""
    import threading

    from fastlstm.bench import runner

    done = threading.Event()

    def spin(seconds=0.15):
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass
        done.set()

    t = threading.Thread(target=spin)
    t.start()
    slept = runner.settle(0.0, max_s=5.0)
    assert done.is_set() and slept >= 0.1
    t.join()
    slept = runner.settle(0.02, max_s=5.0)
    assert 0.02 <= slept < 0.5


def test_time_interleaved_times_every_contender_in_rotating_rounds(monkeypatch):
    """Each round times every contender once, the order rotating by one per round, with `before`
    run for the contender about to be timed; every contender gets `repeats` samples."""
    from fastlstm.bench import runner

    monkeypatch.setattr(runner, "SETTLE_S", 0.0)
    monkeypatch.setattr(runner, "SETTLE_BETWEEN_S", 0.0)
    calls, befores = [], []
    fns = [lambda i=i: calls.append(i) for i in range(3)]
    out = runner.time_interleaved(fns, repeats=4, warmup=1, min_time=0.0, before=befores.append)
    assert [len(t["times_ms"]) for t in out] == [4, 4, 4]
    assert all(t["inner"] == 1 and t["min_ms"] <= t["median_ms"] <= t["max_ms"] for t in out)
    timed = calls[6:]                      # after each contender's warm-up and sizing call
    assert timed == [0, 1, 2, 1, 2, 0, 2, 0, 1, 0, 1, 2]
    assert befores[3:] == timed            # before() ran for the contender timed next
