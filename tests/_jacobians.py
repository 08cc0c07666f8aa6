"""Small encoders and independent references for the tests of the contractive penalty
(`tests/keras_cae/test_penalties.py`, `test_closed_form.py`, `test_hutchinson.py`):
Dense and convolution encoders with random (non-zero) biases, ‖J‖²_F by float64 central
differences, and the Jacobian by `tf.GradientTape.batch_jacobian`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf


def dense_encoder(
    sizes: list[int], activation: Any = "sigmoid", dtype: str = "float32", seed: int = 0
) -> keras.Sequential:
    """A Dense chain input sizes[0] → ... → sizes[-1] with random (non-zero) biases."""
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((sizes[0],), dtype=dtype)]
    for units in sizes[1:]:
        layers.append(
            keras.layers.Dense(
                units,
                activation=activation,
                dtype=dtype,
                bias_initializer=keras.initializers.RandomNormal(stddev=0.3, seed=seed),
            )
        )
    return keras.Sequential(layers)


def conv_encoder(
    shape: tuple[int, ...],
    layers: Callable[[str], list[keras.layers.Layer]],
    dtype: str = "float64",
    seed: int = 0,
) -> keras.Sequential:
    """A Sequential encoder of `layers(dtype)` with random (non-zero) biases."""
    keras.utils.set_random_seed(seed)
    encoder = keras.Sequential([keras.Input(shape, dtype=dtype), *layers(dtype)])
    bias_rng = np.random.default_rng(seed)
    for layer in encoder.layers:
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(bias_rng.normal(scale=0.3, size=layer.bias.shape))
    return encoder


def conv_layer(
    rank: int, filters: int, kernel: Any, activation: Any, dtype: str, **kwargs: Any
) -> keras.layers.Layer:
    """A Conv1D, Conv2D or Conv3D layer (`rank` 1, 2 or 3)."""
    kind = {1: keras.layers.Conv1D, 2: keras.layers.Conv2D, 3: keras.layers.Conv3D}[rank]
    return kind(filters, kernel, activation=activation, dtype=dtype, **kwargs)


def relative_error(actual: Any, expected: Any) -> float:
    """The largest elementwise |actual − expected| / |expected|, in float64."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(actual - expected) / np.maximum(np.abs(expected), 1e-30)))


def finite_difference_norm(encoder: Any, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """‖J‖²_F per sample by float64 central differences, one input coordinate at a time."""
    batch = x.shape[0]
    flat = x.reshape(batch, -1)
    total = np.zeros(batch)
    for j in range(flat.shape[1]):
        step = np.zeros_like(flat)
        step[:, j] = eps
        up = np.asarray(encoder((flat + step).reshape(x.shape))).reshape(batch, -1)
        down = np.asarray(encoder((flat - step).reshape(x.shape))).reshape(batch, -1)
        total += np.sum(((up - down) / (2 * eps)) ** 2, axis=1)
    return total


def batched_finite_difference_norm(encoder: Any, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """As `finite_difference_norm`, with every perturbed input in one call."""
    batch, size = x.shape[0], int(np.prod(x.shape[1:]))
    steps = np.eye(size).reshape(size, 1, *x.shape[1:]) * eps
    perturbed = np.concatenate([x[np.newaxis] + steps, x[np.newaxis] - steps])
    codes = np.asarray(encoder(perturbed.reshape(-1, *x.shape[1:]))).reshape(2, size, batch, -1)
    return np.sum(((codes[0] - codes[1]) / (2 * eps)) ** 2, axis=(0, 2))


def tape_jacobian(encoder: Any, x: Any) -> tf.Tensor:
    """The per-sample Jacobian of the code w.r.t. `x` (`tf.GradientTape.batch_jacobian`)."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        code = encoder(x)
    return tape.batch_jacobian(code, x)
