"""The checks `ContractiveAutoencoder` runs on its data before Keras sees it.

NumPy inputs are given the encoder's input shape by the package's one shape rule,
`keras_cae.data.to_model_input` (``(n, 28, 28)`` images flatten into a ``(None, 784)``
Dense encoder). NumPy inputs with non-finite rows, a shape that neither matches nor
flattens to the encoder input, or
a global batch that the replicas of a `tf.distribute` strategy cannot share evenly
raise a `ValueError` that names the argument, before training starts. The input
shapes read here also let the model build itself from the data, as `fit` builds any
Keras model.

Example:

>>> import numpy as np
>>> from keras_cae._inputs import data_input_shape
>>> data_input_shape(np.zeros((5, 8, 8)))
(None, 8, 8)
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_cae.data import check_finite, to_model_input

__all__ = [
    "built_input_shape",
    "data_input_shape",
    "expected_input_shape",
    "check_array",
    "check_data",
    "check_batch_size",
]


def built_input_shape(layer: keras.layers.Layer) -> tuple[int | None, ...] | None:
    """The input shape of a built single-input layer, batch axis None; None if unknown.

    Read from the model's `Input` (Sequential, Functional), else from the shape it was
    built with (`get_build_config`, a subclassed model or a plain layer).
    """
    if not layer.built:
        return None
    try:
        inputs = layer.inputs
    except (AttributeError, ValueError):
        inputs = None
    shape: Any
    if isinstance(inputs, (list, tuple)) and len(inputs) == 1:
        shape = tuple(inputs[0].shape)
    else:
        shape = (layer.get_build_config() or {}).get("input_shape")
    if not isinstance(shape, (tuple, list)) or len(shape) < 2:
        return None
    shape = (None, *tuple(shape)[1:])
    if all(d is None or (isinstance(d, int) and not isinstance(d, bool)) for d in shape):
        return shape
    return None


def data_input_shape(x: Any) -> tuple[int | None, ...] | None:
    """The input shape, batch axis None, of array or `tf.data` inputs; None if unknown."""
    if isinstance(x, tf.data.Dataset):
        spec = x.element_spec
        spec = spec[0] if isinstance(spec, tuple) else spec
        shape = getattr(spec, "shape", None)
        shape = None if shape is None or shape.rank is None else tuple(shape)
    elif isinstance(x, (np.ndarray, tf.Tensor)) and x.ndim > 1:
        shape = tuple(x.shape)
    else:
        return None
    if shape is None or len(shape) < 2 or any(d is None for d in shape[1:]):
        return None
    return (None, *(int(d) for d in shape[1:]))


def expected_input_shape(encoder: keras.layers.Layer) -> tuple[int | None, ...] | None:
    """The input shape of a built `encoder`, batch axis included; None if unknown."""
    shape = getattr(encoder, "input_shape", None) if encoder.built else None
    if isinstance(shape, tuple) and all(d is None or isinstance(d, int) for d in shape):
        return shape
    return None


def check_array(
    encoder: keras.layers.Layer, name: str, array: Any, check_values: bool = True
) -> Any:
    """NumPy data in the encoder's input shape (`to_model_input`'s rule), checked.

    Returns anything that is not a numeric NumPy array unchanged. With
    `check_values=False` only the shape is checked (not NaN and infinities).

    Raises:
        ValueError: the samples neither match nor flatten to the encoder input, or
            rows hold NaN or infinities.
    """
    if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.number):
        return array
    expected = expected_input_shape(encoder)
    if expected is not None:
        try:
            if array.ndim < 2:
                raise ValueError("no batch axis")
            array = to_model_input(array, expected, name)
        except ValueError:
            features = ", ".join(str(d) for d in expected[1:])
            flat = (
                f" (or samples of any shape holding {features} values, flattened)"
                if len(expected) == 2
                else ""
            )
            raise ValueError(
                f"`{name}` should have shape (batch, {features}) to match the encoder "
                f"input{flat}. Received: {name}.shape={array.shape}"
            ) from None
    if check_values and array.ndim > 0:
        check_finite(array, name)
    return array


def check_data(
    encoder: keras.layers.Layer, x: Any, y: Any, validation_data: Any = None
) -> tuple[Any, Any, Any]:
    """`check_array` on `x`, `y` and the arrays of a `validation_data` tuple; returns
    them in the encoder's input shape."""
    x = check_array(encoder, "x", x)
    y = check_array(encoder, "y", y)
    if isinstance(validation_data, (tuple, list)):
        names = ("validation_data[0]", "validation_data[1]")
        validation_data = type(validation_data)(
            [check_array(encoder, name, part) for part, name in zip(validation_data[:2], names)]
            + list(validation_data[2:])
        )
    return x, y, validation_data


def check_batch_size(strategy: tf.distribute.Strategy, x: Any, batch_size: int | None) -> None:
    """Keras fails with an obscure AddN shape error when the first global batch
    splits unevenly over replicas; say so before training instead."""
    if not isinstance(x, np.ndarray):
        return
    replicas = strategy.num_replicas_in_sync
    batch_size = 32 if batch_size is None else batch_size
    if replicas > 1 and batch_size % replicas:
        raise ValueError(
            f"`batch_size` is the global batch and should be a multiple of the "
            f"{replicas} replicas of {type(strategy).__name__}. "
            f"Received: batch_size={batch_size}"
        )
