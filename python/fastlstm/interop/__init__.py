"""Interop: fastlstm models in and out of PyTorch, Keras and ONNX.

    weights  layout conversions (NumPy only): torch state_dicts, Keras get_weights(), ONNX W/R/B
    keras    read a Keras 3 .keras / .weights.h5 file's LSTM and Dense weights (needs h5py)
    onnx     export a trained model to an ONNX file for ONNX Runtime (needs onnx)
The torch drop-in for torch.nn.LSTM is fastlstm.torch (needs torch).
"""

from __future__ import annotations

from .weights import (dense_from_keras, dense_to_keras, from_keras_weights, from_onnx_weights,
                      from_torch_state_dict, keras_from_torch_layout, to_keras_weights, to_onnx_weights,
                      to_torch_state_dict, torch_from_keras_layout)

__all__ = ["from_torch_state_dict", "to_torch_state_dict", "keras_from_torch_layout", "torch_from_keras_layout",
           "to_keras_weights", "from_keras_weights", "dense_from_keras", "dense_to_keras", "to_onnx_weights",
           "from_onnx_weights", "export_onnx", "read_keras", "load_keras"]


def __getattr__(name):
    # onnx / h5py are optional: import their modules on first use only
    if name in ("export_onnx", "to_onnx_model"):
        from . import onnx as _onnx
        return getattr(_onnx, name)
    if name in ("read_keras", "load_keras"):
        from . import keras as _keras
        return getattr(_keras, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
