"""Fixtures for the pytest-benchmark suites (the same kernels and shapes as `python -m fastlstm bench`).

    pytest benchmarks -p no:cacheprovider                       # book, small, medium
    FASTLSTM_BENCH_SHAPES=book,large,medium-var pytest benchmarks -p no:cacheprovider
    FASTLSTM_BENCH_THREADS=1 pytest benchmarks -p no:cacheprovider --benchmark-group-by=group

Every contender runs with the same thread count (default: fastlstm's, i.e. the physical cores).
A backend or peer that is not available here is skipped with the reason: benchmarks measure,
the test suite (tests/) is where a missing tier fails.
"""

from __future__ import annotations

import os

import pytest

import fastlstm
from fastlstm.bench import peers, runner
from fastlstm.bench.shapes import make_problem

THREADS = int(os.environ.get("FASTLSTM_BENCH_THREADS", "0") or 0) or fastlstm.get_num_threads()


@pytest.fixture(scope="session", autouse=True)
def same_threads_for_everyone():
    blas = runner._OpenBLAS()
    old = fastlstm.get_num_threads(), blas.get()
    fastlstm.set_num_threads(THREADS)
    blas.set(THREADS)
    yield THREADS
    fastlstm.set_num_threads(old[0])
    if old[1] is not None:
        blas.set(old[1])


_contenders: dict = {}


@pytest.fixture(scope="session")
def contender():
    """name -> its Contender with THREADS set, or a skip with the reason it is unavailable."""

    def get(name: str):
        if name not in _contenders:
            if name in peers.PEER_NAMES:
                c, why = peers.load_peer(name)
            else:
                try:
                    base, _, variant = name.partition("-")
                    c, why = (peers.FastlstmPrepacked(base) if variant == "prepacked"
                              else peers.FastlstmBackend(name)), None
                except ImportError as e:
                    c, why = None, str(e)
            if c is not None:
                c.set_threads(THREADS)
            _contenders[name] = (c, why)
        c, why = _contenders[name]
        if c is None:
            pytest.skip(f"{name}: {why}")
        return c
    return get


_problems: dict = {}
_references: dict = {}


@pytest.fixture(scope="session")
def problem():
    def get(shape):
        if shape not in _problems:
            _problems[shape] = make_problem(shape)
        return _problems[shape]
    return get


@pytest.fixture(scope="session")
def check():
    """check(contender, result, problem, mode): the benchmarked result against the float64
    reference on the same inputs (computed once per shape and mode)."""

    def run(c, result, p, mode):
        key = (p.shape, mode)
        if key not in _references:
            _references[key] = runner.reference_outputs(p, mode)
        ok, errors = runner.compare(c.outputs(result, mode), _references[key])
        assert ok, f"{c.name} {mode} {p.shape.label}: {runner.describe_failure(errors)}"
    return run

