"""fastlstm's benchmark suite: every backend side by side with PyTorch and ONNX Runtime.

    python -m fastlstm bench --quick            # about a minute on 2 cores
    python -m fastlstm bench --json r.json --markdown perf.md --plot speedup.png

shapes.py   the protocol's shapes (DESIGN.md §5), problems, FLOP counts
peers.py    contenders: fastlstm backends (public API) and the torch / onnxruntime adapters
runner.py   correctness gate against the NumPy reference, then timing
report.py   text table, markdown, JSON, plot
The same kernels and shapes as pytest-benchmark suites: benchmarks/ at the repository root.
"""

from .runner import Options, run
from .shapes import SHAPES, Shape, parse_shape

__all__ = ["Options", "run", "SHAPES", "Shape", "parse_shape"]
