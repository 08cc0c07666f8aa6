"""keras-cae: contractive auto-encoders for Keras 3 on TensorFlow.

The training API (`ContractiveAutoencoder`, `contractive_penalty`, ...) imports
TensorFlow. If Keras is already imported (``import keras`` before ``import
keras_cae``, as sorted imports put it), it is loaded at once, which registers the
serializable classes for `keras.models.load_model`; otherwise it is loaded on first
use of any public name, so that the TensorFlow-free parts of the package
(`keras-cae encode`, `keras-cae serve`, the onnxruntime runtime in `export`) start
fast without it.

Example:

>>> import numpy as np
>>> import keras_cae
>>> model = keras_cae.dense_autoencoder(64, 16)
>>> x = np.random.default_rng(0).random((32, 64)).astype("float32")
>>> model.fit(x, epochs=1, verbose=0).history["contractive_loss"][0] > 0
True
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

__version__ = "0.1.0"

# Public name -> module that defines it. Loading any of them loads all of
# `_TRAINING_MODULES`, so that every serializable class is registered with Keras
# before `keras.models.load_model` needs it.
_EXPORTS = {
    "ContractiveAutoencoder": "keras_cae.model",
    "TiedDecoder": "keras_cae.layers",
    "dense_autoencoder": "keras_cae.builders",
    "contractive_penalty": "keras_cae.penalties",
    "hessian_penalty": "keras_cae.penalties",
    "PENALTY_METHODS": "keras_cae.penalties",
    "load_digits": "keras_cae.data",
    "load_array": "keras_cae.data",
    "load_mnist_npz": "keras_cae.data",
    "stacked_encoder": "keras_cae.stacked",
    "jacobian_spectrum": "keras_cae.analysis",
    "jacobian_norm": "keras_cae.analysis",
    "contraction_curve": "keras_cae.analysis",
    "tangent_directions": "keras_cae.analysis",
}
_TRAINING_MODULES = (
    "keras_cae.penalties",
    "keras_cae.model",
    "keras_cae.layers",
    "keras_cae.builders",
)

__all__ = [*_EXPORTS, "__version__"]


def _load_training_modules() -> None:
    for module in _TRAINING_MODULES:
        importlib.import_module(module)


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'keras_cae' has no attribute {name!r}")
    if module_name in _TRAINING_MODULES:
        _load_training_modules()
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if "keras" in sys.modules:
    # Keras (and so TensorFlow) is loaded already: registering our classes is free.
    _load_training_modules()
