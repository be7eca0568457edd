"""Benchmark shapes (DESIGN.md §5), problem construction and FLOP counts.

T = time steps, B = batch, I = input features, H = hidden units; time-major (T, B, I).
Forward FLOPs = 2·(real steps)·4H·(I+H), real steps = T·B or Σ lengths; forward+backward = 3×.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class Shape:
    name: str
    T: int
    B: int
    I: int
    H: int
    variable: bool = False   # lengths uniform in 1..T (seeded), else every row runs T steps
    cut_from: int | None = None   # the protocol's T when T was truncated (--quick)

    @property
    def dims(self) -> str:
        return f"{self.T}×{self.B}×{self.I}×{self.H}"

    @property
    def label(self) -> str:
        """Name for tables: 'medium var' for variable lengths, a '*' when T was truncated."""
        return f"{self.name}{' var' if self.variable else ''}{'*' if self.cut_from else ''}"

    def with_T(self, T: int) -> Shape:
        return self if T == self.T else replace(self, T=T, cut_from=self.T)


# the protocol's shapes; medium-var is medium with variable lengths
SHAPES = {
    "book": Shape("book", 50, 1, 1, 32),
    "latency": Shape("latency", 100, 1, 256, 256),
    "small": Shape("small", 100, 16, 128, 128),
    "medium": Shape("medium", 100, 32, 512, 512),
    "large": Shape("large", 50, 64, 1024, 1024),
    "medium-var": Shape("medium", 100, 32, 512, 512, variable=True),
}
DEFAULT_SHAPES = ("book", "latency", "small", "medium", "large", "medium-var")
# --quick: about a minute on 2 cores; the long shapes run with T truncated
QUICK_SHAPES = (SHAPES["book"], SHAPES["latency"].with_T(50), SHAPES["small"],
                SHAPES["medium"].with_T(50), SHAPES["medium-var"].with_T(50))
STREAMING_SIZES = (32, 128, 512)

_SHAPE_RE = re.compile(r"^\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*$")


def parse_shape(text: str) -> Shape:
    """'T,B,I,H' (positive integers) or a protocol shape name such as 'medium'."""
    key = text.strip().lower()
    if key in SHAPES:
        return SHAPES[key]
    m = _SHAPE_RE.match(text)
    if not m:
        raise ValueError(f"invalid shape {text!r}: expected T,B,I,H (four positive integers, "
                         f"e.g. 100,32,512,512) or one of {', '.join(SHAPES)}")
    T, B, I, H = (int(v) for v in m.groups())
    if min(T, B, I, H) < 1:
        raise ValueError(f"invalid shape {text!r}: T, B, I and H must all be >= 1")
    return Shape(f"{T},{B},{I},{H}", T, B, I, H)


def flops_forward(shape: Shape, lengths: np.ndarray | None) -> float:
    steps = shape.T * shape.B if lengths is None else int(np.sum(lengths))
    return 2.0 * steps * 4 * shape.H * (shape.I + shape.H)


def flops(shape: Shape, lengths: np.ndarray | None, mode: str) -> float:
    return flops_forward(shape, lengths) * (3.0 if mode == "train" else 1.0)


@dataclass
class Problem:
    """One set of float32 inputs; every contender gets exactly these arrays."""

    shape: Shape
    x: np.ndarray          # (T, B, I)
    W_ih: np.ndarray       # (4H, I)
    W_hh: np.ndarray       # (4H, H)
    b: np.ndarray          # (4H,)  = b_ih + b_hh
    h0: np.ndarray         # (B, H)
    c0: np.ndarray         # (B, H)
    lengths: np.ndarray | None   # (B,) int64, or None for full length

    @property
    def T(self) -> int:
        return self.x.shape[0]

    @property
    def B(self) -> int:
        return self.x.shape[1]

    @property
    def I(self) -> int:
        return self.x.shape[2]

    @property
    def H(self) -> int:
        return self.W_hh.shape[1]

    def astype(self, dtype) -> Problem:
        cast = (lambda a: np.ascontiguousarray(a, dtype=dtype))
        return Problem(self.shape, cast(self.x), cast(self.W_ih), cast(self.W_hh), cast(self.b),
                       cast(self.h0), cast(self.c0), self.lengths)

    def truncated(self, T: int, B: int) -> Problem:
        """The first T steps of the first B rows, same weights (a cheap correctness check).

        Variable lengths are rescaled to 1..T (not clipped), so the check still has ragged rows.
        """
        T, B = min(T, self.T), min(B, self.B)
        lengths = None
        if self.lengths is not None:
            lengths = np.maximum(1, np.ceil(self.lengths[:B] * T / self.T)).astype(np.int64)
        sh = replace(self.shape, T=T, B=B)
        c = np.ascontiguousarray
        return Problem(sh, c(self.x[:T, :B]), self.W_ih, self.W_hh, self.b, c(self.h0[:B]),
                       c(self.c0[:B]), lengths)


def make_problem(shape: Shape, seed: int = 0) -> Problem:
    """Random float32 inputs; weights ~ U(±1/√H) like torch.nn.LSTM's init, so gates are not saturated."""
    rng = np.random.default_rng([seed, shape.T, shape.B, shape.I, shape.H, int(shape.variable)])
    T, B, I, H = shape.T, shape.B, shape.I, shape.H
    k = 1.0 / math.sqrt(H)
    f32 = np.float32
    x = rng.standard_normal((T, B, I)).astype(f32)
    W_ih = rng.uniform(-k, k, (4 * H, I)).astype(f32)
    W_hh = rng.uniform(-k, k, (4 * H, H)).astype(f32)
    b = rng.uniform(-k, k, 4 * H).astype(f32)
    h0 = (0.5 * rng.standard_normal((B, H))).astype(f32)
    c0 = (0.5 * rng.standard_normal((B, H))).astype(f32)
    lengths = rng.integers(1, T + 1, size=B).astype(np.int64) if shape.variable else None
    return Problem(shape, x, W_ih, W_hh, b, h0, c0, lengths)
