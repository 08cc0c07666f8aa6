"""Parity checking: does an exported artifact reproduce the Keras model?

An artifact is run on a probe batch at batch size 1 and at the full probe batch
(which also proves that its batch axis is dynamic), and fails the export when
``max |keras - exported| > tolerance * max(1, max |keras|)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from keras_cae.export.errors import ParityError

__all__ = [
    "DEFAULT_PROBE_SIZE",
    "DEFAULT_TOLERANCE",
    "HALF_PRECISION_TOLERANCE",
    "default_tolerance",
    "allowed_difference",
    "check_parity",
    "check_tolerance",
    "keras_outputs",
    "probe_batch",
    "to_numpy",
]

#: An export fails when ``max |keras - exported| > tolerance * max(1, max |keras|)``:
#: float32 kernels that reorder sums differ by a few ulps (measured ~1e-7 on
#: sigmoid codes), far below this; a wrong graph differs by orders of magnitude more.
DEFAULT_TOLERANCE = 1e-4
#: The default for models that compute in 16-bit floats (mixed precision): TensorFlow
#: and onnxruntime round each float16 layer output on their own, so they differ by an
#: ulp or two, 2**-11 to 2**-10 near 1 (measured 4.9e-4 on sigmoid codes); 8 bits for
#: bfloat16. Twice the ulp at 1 still tells a wrong graph apart.
HALF_PRECISION_TOLERANCE = {"float16": 2 * 2.0**-10, "bfloat16": 2 * 2.0**-7}
#: Rows in the default probe batch (uniform in the training input range, else [0, 1)).
DEFAULT_PROBE_SIZE = 32


def default_tolerance(model: Any) -> float:
    """`DEFAULT_TOLERANCE`, or the half-precision one if any layer computes in 16 bits."""
    dtypes, pending = set(), [model]
    while pending:
        layer = pending.pop()
        dtypes.add(str(getattr(layer, "compute_dtype", "float32")))
        pending.extend(getattr(layer, "layers", []))
        pending.extend(
            getattr(layer, name) for name in ("encoder", "decoder") if hasattr(layer, name)
        )
    half = [HALF_PRECISION_TOLERANCE[d] for d in dtypes if d in HALF_PRECISION_TOLERANCE]
    return max(half, default=DEFAULT_TOLERANCE)


def check_tolerance(tolerance: Any) -> float:
    """Returns `tolerance` as a float; raises `ValueError` unless positive and finite."""
    if (
        isinstance(tolerance, bool)
        or not isinstance(tolerance, (int, float))
        or not (math.isfinite(tolerance) and tolerance > 0)
    ):
        raise ValueError(
            f"`tolerance` should be a positive finite number. Received: tolerance={tolerance!r}"
        )
    return float(tolerance)


def probe_batch(
    probe: Any, sample_shape: Sequence[int], value_range: tuple[float, float] | None = None
) -> np.ndarray:
    """The float32 probe batch: `probe` checked, or `DEFAULT_PROBE_SIZE` seeded uniform
    samples in `value_range` (the model's training input range; [0, 1) when None) for
    `probe=None`.

    Raises:
        ValueError: `probe` is not ``(n, *sample_shape)`` with n ≥ 2, or is not finite.
    """
    sample_shape = tuple(sample_shape)
    if probe is None:
        rng = np.random.default_rng(0)
        low, high = (0.0, 1.0) if value_range is None else value_range
        uniform = rng.random((DEFAULT_PROBE_SIZE, *sample_shape), dtype=np.float32)
        return (low + (high - low) * uniform).astype(np.float32)
    probe_x = np.asarray(probe, dtype=np.float32)
    if probe_x.shape[1:] != sample_shape or probe_x.shape[0] < 2:
        raise ValueError(
            f"`probe` should have shape (n, {', '.join(map(str, sample_shape))}) "
            f"with n >= 2. Received: probe of shape {probe_x.shape}"
        )
    if not np.isfinite(probe_x).all():
        raise ValueError("`probe` contains NaN or infinite values.")
    return probe_x


def to_numpy(value: Any) -> np.ndarray:
    """A Keras output as a float32 array; raises `ValueError` for several outputs."""
    import keras

    if isinstance(value, (dict, list, tuple)):
        raise ValueError(
            "Only single-output models can be exported; the model returned a "
            f"{type(value).__name__}."
        )
    return np.asarray(keras.ops.convert_to_numpy(value), dtype=np.float32)


def keras_outputs(
    layer: Any, part: str, x: np.ndarray, sizes: Sequence[int]
) -> dict[int, np.ndarray]:
    """Keras's own outputs on the first `size` rows of `x`, for each size, run as the
    artifacts will be; raises `ValueError` if they are not finite."""
    outputs = {size: to_numpy(layer(x[:size], training=False)) for size in sizes}
    if not all(np.isfinite(output).all() for output in outputs.values()):
        raise ValueError(
            f"the Keras {part} returns NaN or infinite values on the probe batch "
            "(diverged weights?); there is nothing meaningful to export"
        )
    return outputs


def allowed_difference(tolerance: float, reference: np.ndarray) -> float:
    """``tolerance * max(1, max |reference|)``: the bound on ``max |keras - exported|``."""
    return float(tolerance) * max(1.0, float(np.abs(reference).max(initial=0.0)))


def check_parity(
    run: Callable[[np.ndarray], Any],
    x: np.ndarray,
    references: dict[int, np.ndarray],
    bound: float,
    tolerance: float,
    description: str,
) -> dict[int, float]:
    """Runs an artifact on ``x[:size]`` for each size of `references`.

    Args:
        run: the loaded artifact, ``x -> outputs``.
        x: the probe batch.
        references: Keras's outputs per batch size (see `keras_outputs`).
        bound: the largest difference allowed (see `allowed_difference`).
        tolerance: the tolerance `bound` came from, for the message.
        description: names the artifact in messages, e.g. ``"onnx encoder"``.

    Returns:
        ``max |keras - exported|`` per batch size.

    Raises:
        ParityError: a shape differs, or a difference exceeds `bound` (or is NaN).
    """
    diffs = {}
    for size, reference in references.items():
        got = np.asarray(run(x[:size]), dtype=np.float32)
        if got.shape != reference.shape:
            raise ParityError(
                f"The {description} returned shape {got.shape} for a batch "
                f"of {size}; Keras returns {reference.shape}."
            )
        diffs[size] = float(np.abs(got - reference).max(initial=0.0))
    worst = max(diffs.values())
    if not worst <= bound:  # Also catches NaN.
        raise ParityError(
            f"The {description} differs from Keras by max |Δ| = {worst:.3g} "
            f"(per batch size: {diffs}), more than the allowed {bound:.3g} "
            f"(tolerance={tolerance:g} × max(1, max |keras output|)). Nothing "
            "was written."
        )
    return diffs
