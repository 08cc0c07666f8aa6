"""Export trained encoders to ONNX and SavedModel, and run them with onnxruntime.

`OnnxEncoder` (the onnxruntime runtime) imports no TensorFlow. The export functions
import TensorFlow, Keras and tf2onnx; they are loaded on first use (PEP 562), so
``from export import OnnxEncoder`` stays TensorFlow-free.

Example:

>>> import export                                                    # doctest: +SKIP
>>> result = export.export_encoder(model, "exported/")               # doctest: +SKIP
>>> export.OnnxEncoder(result.path("onnx")).encode(x)                 # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> module that defines it. `export.runtime` imports onnxruntime only;
# `export._export` imports TensorFlow when its function runs; the others import
# numpy at most.
_LAZY = {
    "OnnxEncoder": "export.runtime",
    "METADATA_PREFIX": "export.runtime",
    "export_encoder": "export._export",
    "ExportResult": "export.result",
    "ExportError": "export.errors",
    "ParityError": "export.errors",
    "FORMATS": "export.formats",
    "DEFAULT_FORMATS": "export.formats",
    "PARTS": "export._export",
    "DEFAULT_TOLERANCE": "export.parity",
    "DEFAULT_OPSET": "export.onnx",
    "to_onnx": "export.onnx",
    "to_saved_model": "export.saved_model",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'export' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
