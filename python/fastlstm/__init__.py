"""fastlstm: fast LSTMs on the CPU.

Kernel API (one layer, one direction, time-major):  lstm_forward / lstm_backward
Stacked / bidirectional functional API:           lstm / lstm_grad
Layer with parameters (torch.nn.LSTM layout):     LSTM (LSTM.prepack() for inference)
Packed weights for repeated inference:            prepack
Streaming, one step per call:                     stepper
Training (layers, losses, optimizers, the loop):  nn, optim, fit / evaluate / predict, save / load
Backends: native (C++ SIMD) -> numba -> reference (NumPy, the spec); see show_config().
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import backends, nn  # nn before layers: the LSTM layer is a nn.Module
from ._config import config, empty_cache, get_num_threads, set_num_threads, show_config
from .backends import BackendUnavailable, set_backend
from .core import Prepacked, Tape, lstm_backward, lstm_forward, prepack, stepper
from .functional import StackTape, lstm, lstm_grad
from .layers import LSTM, PrepackedLSTM
from . import data, optim, train  # noqa: E402  (after nn and layers)
from .data import NotFittedError
from .io import CheckpointError, load, save
from .train import evaluate, fit, predict

backends.active()  # choose at import: FASTLSTM_BACKEND forces one and fails loudly

__all__ = [
    "__version__", "backends", "BackendUnavailable", "set_backend", "config", "show_config",
    "set_num_threads", "get_num_threads", "empty_cache", "lstm_forward", "lstm_backward", "Tape",
    "lstm", "lstm_grad", "StackTape", "LSTM", "PrepackedLSTM", "prepack", "Prepacked", "stepper",
    "nn", "data", "optim", "train", "fit", "evaluate", "predict", "save", "load", "CheckpointError", "NotFittedError",
]

# Interop (issue 13): weights in and out (torch state_dicts, Keras files, ONNX tensors) and ONNX
# export — NumPy only until used. The torch.nn.LSTM drop-in is `import fastlstm.torch` (needs torch).
from . import interop  # noqa: E402
from .interop import export_onnx, load_keras  # noqa: E402

__all__ += ["interop", "export_onnx", "load_keras"]
