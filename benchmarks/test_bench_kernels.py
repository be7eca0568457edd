"""pytest-benchmark suites: forward (inference), train (forward + backward of y.sum()) and
streaming (one time step, B = 1, state carried by the caller), parametrized over
contender × shape; the LSTM layer's call with and without LSTM.prepack(). Every benchmark asserts its own result against the NumPy reference:
fast and wrong is worthless.

T = time steps, B = batch, I = input features, H = hidden units.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import fastlstm
from fastlstm.bench import peers, runner
from fastlstm.bench.shapes import SHAPES, STREAMING_SIZES, Shape, flops, make_problem

SHAPE_NAMES = [s.strip() for s in os.environ.get("FASTLSTM_BENCH_SHAPES", "book,small,medium").split(",")
               if s.strip()]
if set(SHAPE_NAMES) - set(SHAPES):
    raise ValueError(f"FASTLSTM_BENCH_SHAPES: unknown shape(s) {sorted(set(SHAPE_NAMES) - set(SHAPES))}; "
                     f"choose from {', '.join(SHAPES)}")
BENCH_SHAPES = [SHAPES[n] for n in SHAPE_NAMES]
CONTENDERS = list(fastlstm.backends.PREFERENCE) + ["native-prepacked"] + list(peers.PEER_NAMES)
TRAINERS = [c for c in CONTENDERS if c not in ("onnxruntime", "native-prepacked")]  # inference only
STREAMERS = list(fastlstm.backends.PREFERENCE) + ["torch"]      # torch: nn.LSTMCell


def _label(shape: Shape) -> str:
    return shape.label.replace(" ", "-")


def _bench(benchmark, contender, problem, check, who, shape, mode):
    c = contender(who)
    p = problem(shape)
    fn = c.prepare(p, mode)
    benchmark.group = f"{mode} {shape.label} {shape.dims}"
    benchmark.extra_info.update(gflop=flops(shape, p.lengths, mode) / 1e9, threads=fastlstm.get_num_threads())
    result = benchmark(fn)
    check(c, result, p, mode)


@pytest.mark.parametrize("shape", BENCH_SHAPES, ids=_label)
@pytest.mark.parametrize("who", CONTENDERS)
def test_forward(benchmark, contender, problem, check, who, shape):
    _bench(benchmark, contender, problem, check, who, shape, "forward")


@pytest.mark.parametrize("shape", BENCH_SHAPES, ids=_label)
@pytest.mark.parametrize("who", TRAINERS)
def test_train(benchmark, contender, problem, check, who, shape):
    _bench(benchmark, contender, problem, check, who, shape, "train")


@pytest.mark.parametrize("H", STREAMING_SIZES)
@pytest.mark.parametrize("who", STREAMERS)
def test_streaming(benchmark, contender, who, H):
    c = contender(who)
    p = make_problem(Shape(f"stream{H}", 3, 1, H, H))
    st = c.stepper(p.W_ih, p.W_hh, p.b, p.h0, p.c0)
    benchmark.group = f"streaming H={H}"
    benchmark(st.step, p.x[0])
    # the stepper that was benchmarked, from wherever its state got to: three more steps
    h, cs = (np.array(a, np.float32) for a in st.state())
    for t in range(p.T):
        st.step(p.x[t])
    q = type(p)(p.shape, p.x, p.W_ih, p.W_hh, p.b, h, cs, None)
    ref = runner.reference_outputs(q, "forward")
    got_h, got_c = st.state()
    ok, errors = runner.compare({"hT": got_h, "cT": got_c}, {"hT": ref["hT"], "cT": ref["cT"]})
    assert ok, f"{who} streaming H={H}: {runner.describe_failure(errors)}"


@pytest.mark.parametrize("layers,bidir", [(1, False), (2, True)], ids=["1-layer", "2-layer-bidirectional"])
@pytest.mark.parametrize("prepacked", [False, True], ids=["LSTM", "LSTM.prepack"])
def test_layer_forward(benchmark, layers, bidir, prepacked):
    """A book-size model (T = 50, B = 1, I = 1, H = 32) through the layer API: Python overhead
    shows here, and LSTM.prepack() validates once per call and packs nothing."""
    m = fastlstm.LSTM(1, 32, layers, bidirectional=bidir, seed=0)
    model = m.prepack() if prepacked else m
    x = make_problem(Shape("book", 50, 1, 1, 32)).x
    benchmark.group = f"layer forward, book size, {layers} layer(s){' bidirectional' if bidir else ''}"
    y, (h_n, c_n) = benchmark(model, x)
    r = fastlstm.LSTM(1, 32, layers, bidirectional=bidir, dtype=np.float64, backend="reference")
    r.load_state_dict(m.state_dict())
    yr, (hr, cr) = r(x.astype(np.float64))
    ok, errors = runner.compare({"y": y, "hT": h_n, "cT": c_n}, {"y": yr, "hT": hr, "cT": cr})
    assert ok, runner.describe_failure(errors)
