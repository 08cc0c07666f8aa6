"""Export trained encoders to ONNX and SavedModel, and run them with onnxruntime.

`OnnxEncoder` (the onnxruntime runtime) imports no TensorFlow. The export functions
import TensorFlow, Keras and tf2onnx; they are loaded on first use (PEP 562), so
``from keras_cae.export import OnnxEncoder`` stays TensorFlow-free.

Example:

>>> from keras_cae import export                                                    # doctest: +SKIP
>>> result = export.export_encoder(model, "exported/")               # doctest: +SKIP
>>> export.OnnxEncoder(result.path("onnx")).encode(x)                 # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> module that defines it. `keras_cae.export.runtime` imports onnxruntime only;
# `keras_cae.export._export` imports TensorFlow when its function runs; the others import
# numpy at most.
_LAZY = {
    "OnnxEncoder": "keras_cae.export.runtime",
    "METADATA_PREFIX": "keras_cae.export.runtime",
    "export_encoder": "keras_cae.export._export",
    "ExportResult": "keras_cae.export.result",
    "ExportError": "keras_cae.export.errors",
    "ParityError": "keras_cae.export.errors",
    "FORMATS": "keras_cae.export.formats",
    "DEFAULT_FORMATS": "keras_cae.export.formats",
    "PARTS": "keras_cae.export._export",
    "DEFAULT_TOLERANCE": "keras_cae.export.parity",
    "DEFAULT_OPSET": "keras_cae.export.onnx",
    "to_onnx": "keras_cae.export.onnx",
    "to_saved_model": "keras_cae.export.saved_model",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'keras_cae.export' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
