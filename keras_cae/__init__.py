"""keras-cae: contractive auto-encoders for Keras 3 on TensorFlow.

The training API (`ContractiveAutoencoder`, `contractive_penalty`, ...) imports
TensorFlow. If Keras is already imported it is loaded at once, which registers the
serializable classes for `keras.models.load_model`; otherwise it is loaded on first
use of any public name, or by an import hook as soon as Keras is imported, so that
the TensorFlow-free parts of the package (`keras-cae encode`, `keras-cae serve`, the
onnxruntime runtime in `export`) start fast without it. Reloading works in every
import order (see docs/pipeline.md).

Example:

>>> import numpy as np
>>> import keras_cae
>>> model = keras_cae.dense_autoencoder(64, 16)
>>> x = np.random.default_rng(0).random((32, 64)).astype("float32")
>>> history = model.fit(x, epochs=1, verbose=0).history
>>> all(value > 0 for value in history["contractive_loss"])
True
"""

from __future__ import annotations

import importlib
import importlib.abc
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
    "stacked_encoder": "keras_cae.studies.stacked",
    "jacobian_spectrum": "keras_cae.studies.analysis",
    "jacobian_norm": "keras_cae.studies.analysis",
    "contraction_curve": "keras_cae.studies.analysis",
    "tangent_directions": "keras_cae.studies.analysis",
    "load_model": "keras_cae.saving",
}
_TRAINING_MODULES = (
    "keras_cae.saving",
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


# Keras's own import chain: `import keras` imports TensorFlow, and `import tensorflow`
# imports Keras half-way through its own initialisation; and our own modules import
# each other. Our classes are registered when the last of these imports has finished,
# never while any of them is half-initialised (importing the training modules then
# would meet a partial module).
_KERAS_ROOTS = ("keras", "tensorflow")


def _initializing(module: Any) -> bool:
    """Whether `module` is still running its top level: the one read of CPython's private
    `ModuleSpec._initializing` (no public API tells; importlib itself reads it to report
    circular imports). `tests/test_imports.py` names the Python version if it moves."""
    return bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


def _register_if_ready(finishing: str) -> None:
    """Loads the training modules if Keras and TensorFlow are in and nothing is half-done."""
    for root in _KERAS_ROOTS:
        module = sys.modules.get(root)
        if module is None or (root != finishing and _initializing(module)):
            return
    for name, module in list(sys.modules.items()):
        if name.startswith("keras_cae.") and name != finishing and _initializing(module):
            return  # Its completion calls this again.
    _HOOK.remove()
    _load_training_modules()


class _RegisteringLoader(importlib.abc.Loader):
    """Runs a module's own loader, then registers our classes if the time has come."""

    def __init__(self, loader: Any, name: str) -> None:
        self._loader = loader
        self._name = name

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        _register_if_ready(self._name)

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, get_source, ...
        return getattr(self._loader, name)


class _RegisterWithKeras(importlib.abc.MetaPathFinder):
    """Registers our serializable classes as soon as Keras is imported, in any order.

    Without it, `import keras_cae` before `import keras` (which does not load
    TensorFlow, to keep `keras-cae encode`/`serve` TensorFlow-free) would leave
    `ContractiveAutoencoder` unknown to `keras.models.load_model`. It watches the
    imports of `keras`, `tensorflow` and our own submodules, and removes itself once
    the classes are registered.
    """

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in _KERAS_ROOTS and not fullname.startswith("keras_cae."):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _RegisteringLoader(spec.loader, fullname)
        return spec

    def remove(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)


_HOOK = _RegisterWithKeras()

if "keras" in sys.modules:
    # Keras (and so TensorFlow) is loaded already: registering our classes is free.
    _load_training_modules()
elif not any(isinstance(finder, _RegisterWithKeras) for finder in sys.meta_path):
    sys.meta_path.insert(0, _HOOK)
