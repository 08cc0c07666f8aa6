"""Analysis of a trained encoder: Jacobian spectrum, contraction curve, tangent directions.

The first two are the measurements Rifai et al. (ICML 2011, defined in section 5.2,
discussed in section 5.3) use to show what the contractive penalty does; the third
follows their section 5.3 argument and is what Rifai et al. (NIPS 2011) use as tangents:

- the singular values of the encoder Jacobian ``J_f(x)`` at held-out points: a CAE has
  a few large ones (directions along the data manifold) and the rest near zero;
- the *contraction ratio* ``‖f(x + r·u) − f(x)‖ / ‖r·u‖`` for random unit directions
  ``u``, as a function of the distance ``r``: lower means more contractive;
- the leading right singular vectors of ``J_f(x)``: the input directions the code is
  most sensitive to, the estimated tangents of the data manifold at ``x``.

Every function takes an encoder (any Keras layer or model mapping ``(batch, *input)``
to ``(batch, *code)``) in inference mode, and a NumPy array of inputs. Results are
NumPy float64 arrays.

Example:

>>> import keras, numpy as np
>>> from keras_cae.studies import analysis
>>> encoder = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, "sigmoid")])
>>> x = np.random.default_rng(0).random((5, 6)).astype("float32")
>>> analysis.jacobian_spectrum(encoder, x).shape
(5, 3)
>>> analysis.contraction_curve(encoder, x, [0.1, 1.0]).shape
(2,)
>>> analysis.tangent_directions(encoder, x, k=2).shape
(5, 2, 6)
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from keras_cae import penalties
from keras_cae._checks import positive_int
from keras_cae.data import check_finite

__all__ = [
    "jacobian",
    "jacobian_norm",
    "jacobian_spectrum",
    "contraction_curve",
    "random_directions",
    "tangent_directions",
]

_DEFAULT_BATCH_SIZE = 256


def _check_inputs(x: Any, name: str = "x") -> np.ndarray:
    """Returns `x` as a float32 array of shape ``(batch, *input_shape)``, or raises."""
    array = np.asarray(x)
    if array.ndim < 2 or array.shape[0] < 1 or array.size == 0:
        raise ValueError(
            f"`{name}` should be an array of shape (batch, *input_shape) with at least one "
            f"sample. Received: {name} with shape {array.shape}"
        )
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"`{name}` should be numeric. Received: {name} of dtype {array.dtype}")
    array = array.astype(np.float32, copy=False)
    check_finite(array, name)
    return array


def _batches(x: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(x), batch_size):
        yield x[start : start + batch_size]


def _flat_jacobians(encoder: Any, x: np.ndarray) -> np.ndarray:
    """Returns the Jacobians of one batch as float64, shape ``(batch, code_size, input_size)``.

    One reverse-mode pass per code unit: samples are independent (as the CAE penalty
    also assumes), so the gradient of unit j summed over the batch is row j of every
    sample's Jacobian. Unlike `tf.GradientTape.batch_jacobian`, whose eager `pfor`
    retraces a `tf.function` on every call (slow, and TensorFlow logs retracing
    warnings after a few encoders), this traces nothing.
    """
    inputs = tf.convert_to_tensor(x)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(inputs)
        code = tf.reshape(tf.cast(encoder(inputs, training=False), tf.float32), [len(x), -1])
        units = [code[:, j] for j in range(code.shape[1])]
    rows = [tape.gradient(unit, inputs, unconnected_gradients="zero") for unit in units]
    del tape
    jac = np.stack([np.asarray(row, dtype=np.float64) for row in rows], axis=1)
    return jac.reshape(len(x), len(rows), int(np.prod(x.shape[1:])))


def jacobian(encoder: Any, x: Any, batch_size: int = _DEFAULT_BATCH_SIZE) -> np.ndarray:
    """Returns the encoder Jacobian ``J_f(x) = ∂f(x)/∂x`` at every sample.

    Code and input axes are flattened, so the result is the matrix the other functions
    decompose. Computed by reverse-mode autodiff in inference mode, one pass per code
    unit (so it assumes, like the CAE penalty, that samples are processed independently).

    Args:
        encoder: a Keras layer or model mapping ``(batch, *input_shape)`` to codes.
        x: inputs of shape ``(batch, *input_shape)``.
        batch_size: samples per autodiff call (bounds memory). Defaults to `256`.

    Returns:
        A float64 array of shape ``(batch, code_size, input_size)``.

    Raises:
        ValueError: if `x` is not a non-empty finite numeric array with a batch axis,
            or `batch_size` is not a positive integer.

    Example:

    >>> import keras, numpy as np
    >>> from keras_cae.studies.analysis import jacobian
    >>> encoder = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> jacobian(encoder, np.zeros((3, 4))).shape
    (3, 2, 4)
    """
    x = _check_inputs(x)
    batch_size = positive_int("batch_size", batch_size)
    return np.concatenate([_flat_jacobians(encoder, part) for part in _batches(x, batch_size)])


def jacobian_norm(encoder: Any, x: Any, batch_size: int = _DEFAULT_BATCH_SIZE) -> np.ndarray:
    """Returns the per-sample Frobenius norm ``‖J_f(x)‖_F`` (not squared).

    This is the square root of the CAE penalty, computed exactly: by the closed form
    for chains of Dense layers, else from the full Jacobian (see
    `keras_cae.contractive_penalty`).

    Args:
        encoder: a Keras layer or model mapping ``(batch, *input_shape)`` to codes.
        x: inputs of shape ``(batch, *input_shape)``.
        batch_size: samples per call. Defaults to `256`.

    Returns:
        A float64 array of shape ``(batch,)``.

    Raises:
        ValueError: if `x` or `batch_size` is invalid.
    """
    x = _check_inputs(x)
    batch_size = positive_int("batch_size", batch_size)
    method = penalties.resolve_method(encoder, "auto", training=False)
    squared = [
        np.asarray(penalties.contractive_penalty(encoder, part, method=method), dtype=np.float64)
        for part in _batches(x, batch_size)
    ]
    # The closed form's Gram-matrix path, tr(T G Tᵀ), is not a literal sum of squares,
    # so round-off can make a near-zero value slightly negative.
    return np.sqrt(np.maximum(np.concatenate(squared), 0.0))


def jacobian_spectrum(encoder: Any, x: Any, batch_size: int = _DEFAULT_BATCH_SIZE) -> np.ndarray:
    """Returns the singular values of ``J_f(x)`` at every sample, largest first.

    Rifai et al. (ICML 2011, section 5.3, Fig. 2: CIFAR-bw) show that a CAE's spectrum
    drops sharply after a few large values (the local dimension of the data manifold)
    where an ordinary auto-encoder's decays slowly. The Jacobian is computed in float32
    by autodiff and decomposed in float64.

    Args:
        encoder: a Keras layer or model mapping ``(batch, *input_shape)`` to codes.
        x: inputs of shape ``(batch, *input_shape)``.
        batch_size: samples per autodiff call. Defaults to `256`.

    Returns:
        A float64 array of shape ``(batch, min(code_size, input_size))``, each row sorted
        in decreasing order. ``sqrt(sum(row**2))`` is ``‖J_f(x)‖_F``.

    Raises:
        ValueError: if `x` or `batch_size` is invalid.

    Example:

    >>> import keras, numpy as np
    >>> from keras_cae.studies.analysis import jacobian_spectrum
    >>> encoder = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, "tanh")])
    >>> jacobian_spectrum(encoder, np.zeros((3, 4))).shape
    (3, 2)
    """
    x = _check_inputs(x)
    batch_size = positive_int("batch_size", batch_size)
    values = [
        np.linalg.svd(_flat_jacobians(encoder, part), compute_uv=False)
        for part in _batches(x, batch_size)
    ]
    return np.concatenate(values)


def _check_radii(radii: Any) -> np.ndarray:
    try:
        array = np.asarray(radii, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"`radii` should be a non-empty sequence of positive finite numbers. "
            f"Received: radii={radii!r}"
        ) from None
    if array.ndim != 1 or array.size == 0 or not np.all(np.isfinite(array)) or np.any(array <= 0):
        raise ValueError(
            "`radii` should be a non-empty sequence of positive finite numbers. "
            f"Received: radii={radii!r}"
        )
    return array


def random_directions(shape: Sequence[int], num_directions: int, seed: int | None) -> np.ndarray:
    """Draws the unit directions `contraction_curve` uses.

    ``u = z / ‖z‖`` with ``z ~ N(0, I)`` is uniform on the unit sphere of the input
    space (isotropic). Drawn in float64 by ``np.random.default_rng(seed)`` as one
    array of shape ``(num_directions, *shape)``, so that a caller can reproduce them.

    Args:
        shape: ``(batch, *input_shape)``; each sample gets its own directions.
        num_directions: directions per sample.
        seed: seed of the NumPy generator.

    Returns:
        A float64 array of shape ``(num_directions, *shape)``; every
        ``[i, b]`` slice has unit Euclidean norm.
    """
    num_directions = positive_int("num_directions", num_directions)
    z = np.random.default_rng(seed).standard_normal((num_directions, *shape))
    flat = z.reshape(num_directions, shape[0], -1)
    norms = np.linalg.norm(flat, axis=2, keepdims=True)
    return (flat / norms).reshape(z.shape)


def contraction_curve(
    encoder: Any,
    x: Any,
    radii: Sequence[float],
    num_directions: int = 8,
    seed: int | None = 0,
    batch_size: int = _DEFAULT_BATCH_SIZE,
) -> np.ndarray:
    """Returns the mean contraction ratio ``‖f(x + r·u) − f(x)‖ / r`` for every radius r.

    This is the "contraction ratio" of Rifai et al. (ICML 2011, defined in section 5.2,
    plotted in Figs. 1 and 3, discussed in section 5.3):
    the ratio of the distance between the codes of a point and of a point at input
    distance ``r`` from it, averaged over the samples of `x` and over
    `num_directions` isotropic unit directions ``u`` per sample (see
    `random_directions`). The same directions are used at every radius, so that
    curves are comparable across radii and across encoders given the same seed.
    For a linear encoder ``f(x) = Wᵀx + b`` the ratio is ``‖Wᵀu‖`` at every radius
    (a flat curve); for small ``r`` it tends to the mean of ``‖J_f(x) u‖``.

    Codes are computed in the encoder's precision (float32), so radii much below
    ``1e-3`` measure round-off rather than the encoder.

    Args:
        encoder: a Keras layer or model mapping ``(batch, *input_shape)`` to codes.
        x: inputs of shape ``(batch, *input_shape)``.
        radii: positive distances ``r`` in input space.
        num_directions: random directions per sample. Defaults to `8`.
        seed: seed of the directions. Defaults to `0`.
        batch_size: samples per encoder call. Defaults to `256`.

    Returns:
        A float64 array of shape ``(len(radii),)``: the mean ratio at every radius.

    Raises:
        ValueError: if `x`, `radii`, `num_directions` or `batch_size` is invalid.

    Example:

    >>> import keras, numpy as np
    >>> from keras_cae.studies.analysis import contraction_curve
    >>> encoder = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3, use_bias=False)])
    >>> encoder.set_weights([2.0 * np.eye(3)])
    >>> contraction_curve(encoder, np.zeros((4, 3)), [0.1, 1.0]).round(4).tolist()
    [2.0, 2.0]
    """
    x = _check_inputs(x)
    checked_radii = _check_radii(radii)
    num_directions = positive_int("num_directions", num_directions)
    batch_size = positive_int("batch_size", batch_size)
    directions = random_directions(x.shape, num_directions, seed)
    totals = np.zeros(len(checked_radii))
    for start in range(0, len(x), batch_size):
        part = x[start : start + batch_size]
        n = len(part)
        code = np.asarray(encoder(part, training=False), dtype=np.float64).reshape(n, -1)
        for i, radius in enumerate(checked_radii):
            # All directions of a batch go through the encoder in one call.
            step = radius * directions[:, start : start + n]
            moved = (part[np.newaxis] + step).astype(np.float32)
            moved_code = np.asarray(
                encoder(moved.reshape(num_directions * n, *part.shape[1:]), training=False),
                dtype=np.float64,
            ).reshape(num_directions, n, -1)
            distances = np.linalg.norm(moved_code - code[np.newaxis], axis=2)
            totals[i] += float(np.sum(distances)) / radius
    return totals / (len(x) * num_directions)


def tangent_directions(
    encoder: Any, x: Any, k: int, batch_size: int = _DEFAULT_BATCH_SIZE
) -> np.ndarray:
    """Returns the top-k right singular vectors of ``J_f(x)``, shaped like the input.

    With ``J_f(x) = U S Vᵀ``, the columns of ``V`` with the largest singular values are
    the input directions that move the code most: for a CAE, the estimated tangent
    plane of the data manifold at ``x`` (Rifai et al., ICML 2011, section 5.3, argue
    this from the singular values and show no singular vectors; Rifai et al., NIPS
    2011). For image inputs each direction is an image.

    Singular vectors are defined up to sign; each is returned with its largest-magnitude
    component positive, so results are deterministic.

    Args:
        encoder: a Keras layer or model mapping ``(batch, *input_shape)`` to codes.
        x: inputs of shape ``(batch, *input_shape)``.
        k: how many directions, at most ``min(code_size, input_size)``.
        batch_size: samples per autodiff call. Defaults to `256`.

    Returns:
        A float64 array of shape ``(batch, k, *input_shape)`` of unit vectors, ordered by
        decreasing singular value.

    Raises:
        ValueError: if `k` is not an integer in ``[1, min(code_size, input_size)]``, or
            `x` or `batch_size` is invalid.

    Example:

    >>> import keras, numpy as np
    >>> from keras_cae.studies.analysis import tangent_directions
    >>> encoder = keras.Sequential(
    ...     [keras.Input((8, 8)), keras.layers.Flatten(), keras.layers.Dense(4, "sigmoid")]
    ... )
    >>> tangent_directions(encoder, np.zeros((2, 8, 8)), k=3).shape
    (2, 3, 8, 8)
    """
    x = _check_inputs(x)
    k = positive_int("k", k)
    batch_size = positive_int("batch_size", batch_size)
    input_size = math.prod(x.shape[1:])
    result = []
    for part in _batches(x, batch_size):
        jac = _flat_jacobians(encoder, part)
        rank = min(jac.shape[1], input_size)
        if k > rank:
            raise ValueError(
                f"`k` should be at most min(code_size, input_size) = {rank}. Received: k={k}"
            )
        _, _, vt = np.linalg.svd(jac, full_matrices=False)
        top = vt[:, :k, :]
        # Fix the sign: largest-magnitude component positive.
        peak = np.take_along_axis(top, np.argmax(np.abs(top), axis=2)[..., np.newaxis], axis=2)
        result.append(top * np.where(peak < 0, -1.0, 1.0))
    return np.concatenate(result).reshape(len(x), k, *x.shape[1:])
