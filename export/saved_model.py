"""Export of a Keras model as a TensorFlow SavedModel with a `serving_default` signature."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

__all__ = ["SIGNATURE_KEY", "to_saved_model", "load_signature"]

#: The signature that TensorFlow Serving, `tf.saved_model.load(...).signatures` and
#: `keras.layers.TFSMLayer` use by default.
SIGNATURE_KEY = "serving_default"


def to_saved_model(
    layer: Any,
    function: Callable[..., Any],
    input_signature: list[Any],
    path: str | os.PathLike[str],
) -> None:
    """Writes `layer` as a SavedModel whose `serving_default` signature is `function`.

    Uses `keras.export.ExportArchive`, which tracks the Keras 3 variables of `layer`;
    variables that `function` captures from elsewhere (a tied decoder reads the
    encoder's kernels) are saved with the traced function (the tied-decoder parity
    test checks it).

    Args:
        layer: the Keras layer or model whose variables `function` uses.
        function: a Python function returning a dict ``{output_name: tensor}``, traced
            with `input_signature`; the dict keys become the signature's output names.
        input_signature: its `tf.TensorSpec` list; the spec names become the
            signature's input names.
        path: the SavedModel directory to write (must not exist).

    Example:

    >>> import tensorflow as tf                                           # doctest: +SKIP
    >>> tf.saved_model.load(path).signatures["serving_default"](x=x)      # doctest: +SKIP
    {'code': <tf.Tensor: shape=(7, 32), dtype=float32, numpy=...>}
    """
    import keras

    archive = keras.export.ExportArchive()
    archive.track(layer)
    archive.add_endpoint(name=SIGNATURE_KEY, fn=function, input_signature=input_signature)
    archive.write_out(os.fspath(path), verbose=False)


def load_signature(path: str | os.PathLike[str]) -> tuple[Any, Callable[..., Any]]:
    """Loads a SavedModel; returns the loaded object and its `serving_default` signature.

    Keep the loaded object alive while the signature is used: it owns the variables.
    """
    import tensorflow as tf

    loaded = tf.saved_model.load(os.fspath(path))
    return loaded, loaded.signatures[SIGNATURE_KEY]
