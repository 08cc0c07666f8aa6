"""What a `ContractiveAutoencoder` train step costs relative to a plain step, estimated.

`ContractiveAutoencoder` says once, before training, what ``penalty="auto"`` will cost
when it has to fall back to ``"batch_jacobian"`` (`auto_fallback_notice`). The estimate
counts multiply-adds (MACs) per sample of the forward pass of the Dense and
convolution layers (`forward_macs`; element-wise layers count as free) and models a
step as:

* a plain step: the forward pass and its backward pass, about ``3 (E + D)`` for an
  encoder of ``E`` and a decoder of ``D`` MACs;
* ``"batch_jacobian"``: reverse mode, so it pays the *output* dimension: one
  vector-Jacobian product through the encoder per code unit (``m E``), and the
  gradient of the penalty differentiates through each of them again (about
  ``2 m E``): ``3 (E + D) + 3 m E``;
* ``"hutchinson"`` with ``k`` probes: ``k`` forward-mode products and their backward
  passes, ``3 (E + D) + 3 k E``.

So the ratio to a plain step is ``1 + m E / (E + D)``, or ``1 + k E / (E + D)``. It
ignores the framework's per-op overhead, which dominates tiny models, and how well
the vectorised Jacobian uses the hardware: `benchmarks/train_step.py` prints the
estimate beside the measured ratio (on a 2-core CPU, measured 45× for an estimated
129× with a 784 → 256 encoder, 27× for 33× with a conv encoder); read it as an
order of magnitude.

Example:

>>> import keras
>>> from keras_cae._step_cost import forward_macs
>>> encoder = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, "sigmoid")])
>>> forward_macs(encoder, (None, 8))
32
"""

from __future__ import annotations

import math
from typing import Any

import keras

from keras_cae._closed_form import _flatten_layers

__all__ = ["auto_fallback_notice", "forward_macs", "step_cost_ratio"]

_CONV = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_CONV_TRANSPOSE = (
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
)
# Layers with weights whose cost is per element, negligible beside a Dense or a conv.
_ELEMENTWISE_WITH_WEIGHTS = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
)


def _layer_macs(layer: Any, input_shape: tuple, output_shape: tuple) -> int | None:
    if type(layer) is keras.layers.Dense or isinstance(layer, _CONV):
        # A kernel (..., in, out): each output element takes prod(kernel[:-1]) MACs
        # (a conv kernel is (*kernel_size, in_channels / groups, filters)).
        return math.prod(output_shape[1:]) * math.prod(layer.kernel.shape[:-1])
    if isinstance(layer, _CONV_TRANSPOSE):
        # The kernel (*kernel_size, filters, in_channels) scatters each input element.
        return math.prod(input_shape[1:]) * math.prod(layer.kernel.shape[:-1])
    if not layer.weights or isinstance(layer, _ELEMENTWISE_WITH_WEIGHTS):
        return 0
    return None


def forward_macs(model: Any, input_shape: tuple[int | None, ...]) -> int | None:
    """Multiply-adds per sample of one forward pass of a chain of layers.

    Counts Dense, Conv1D/2D/3D (strides, padding and groups included) and their
    transposes; layers without weights and normalisation layers count as 0.

    Args:
        model: a layer, a Sequential model or a Functional model that is one chain.
        input_shape: the input shape, batch axis first (any value there).

    Returns:
        The count, or None where it is unknown: a model that is not one chain of
        layers, a layer with weights of another kind, or a shape that does not
        propagate.

    Example:

    >>> import keras
    >>> conv = keras.Sequential(
    ...     [keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, strides=2, padding="same")]
    ... )
    >>> forward_macs(conv, (None, 8, 8, 1))  # 4·4 positions × 4 filters × 3·3 taps
    576
    """
    try:
        layers = _flatten_layers(model)
    except ValueError:
        return None
    shape = (None, *tuple(input_shape)[1:])
    total = 0
    for layer in layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            output_shape = tuple(layer.compute_output_shape(shape))
        except Exception:  # Keras raises many kinds here (NotImplementedError, ...).
            return None
        if any(d is None for d in output_shape[1:]):
            return None
        macs = _layer_macs(layer, shape, output_shape)
        if macs is None:
            return None
        total += macs
        shape = output_shape
    return total


def _code_shape(encoder: Any, input_shape: tuple[int | None, ...]) -> tuple[int, ...] | None:
    """The code's shape without the batch axis, or None if unknown."""
    try:
        shape = tuple(encoder.compute_output_shape((None, *tuple(input_shape)[1:])))
    except Exception:  # As in forward_macs.
        return None
    if any(d is None for d in shape[1:]):
        return None
    return shape[1:]


def step_cost_ratio(
    encoder: Any,
    decoder: Any,
    input_shape: tuple[int | None, ...],
    method: str,
    num_projections: int = 4,
) -> float | None:
    """Estimated time of a train step with `method` over a plain step's.

    See the module docstring for the model of a step.

    Args:
        encoder: the encoder.
        decoder: the decoder.
        input_shape: the encoder's input shape, batch axis first.
        method: `"batch_jacobian"` or `"hutchinson"`.
        num_projections: probes for `"hutchinson"`. Defaults to `4`.

    Returns:
        ``1 + n E / (E + D)`` with ``n`` the code size (batch_jacobian) or
        `num_projections` (hutchinson), or None where a count is unknown.

    Raises:
        ValueError: `method` is neither of the two.

    Example:

    >>> import keras
    >>> encoder = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    >>> decoder = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8)])
    >>> step_cost_ratio(encoder, decoder, (None, 8), "batch_jacobian")  # 1 + 4·32/64
    3.0
    """
    if method not in ("batch_jacobian", "hutchinson"):
        raise ValueError(
            f"Unrecognized method={method!r}. Supported methods are: "
            "['batch_jacobian', 'hutchinson']."
        )
    encoder_macs = forward_macs(encoder, input_shape)
    code_shape = _code_shape(encoder, input_shape)
    if encoder_macs is None or code_shape is None:
        return None
    decoder_macs = forward_macs(decoder, (None, *code_shape))
    if decoder_macs is None or encoder_macs + decoder_macs == 0:
        return None
    passes = math.prod(code_shape) if method == "batch_jacobian" else num_projections
    return 1 + passes * encoder_macs / (encoder_macs + decoder_macs)


def _times(ratio: float) -> str:
    return f"{ratio:.0f}×" if ratio >= 10 else f"{ratio:.1f}×"


def auto_fallback_notice(
    encoder: Any,
    decoder: Any,
    input_shape: tuple[int | None, ...] | None,
    reason: str,
    num_projections: int = 4,
) -> str:
    """The one line `penalty="auto"` logs when only `"batch_jacobian"` is exact.

    Args:
        encoder: the encoder.
        decoder: the decoder.
        input_shape: the encoder's input shape, batch axis first, or None if unknown.
        reason: why the closed form does not apply.
        num_projections: the model's probes for `"hutchinson"`. Defaults to `4`.

    Returns:
        The line: the method, why, the estimated cost of a step relative to a plain
        step, and the `"hutchinson"` alternative with its estimated cost.
    """
    head = (
        f"keras_cae: penalty='auto' uses the exact 'batch_jacobian' for encoder "
        f"{getattr(encoder, 'name', encoder)!r} (the closed form does not apply: {reason})."
    )
    exact = hutchinson = code_size = None
    if input_shape is not None:
        exact = step_cost_ratio(encoder, decoder, input_shape, "batch_jacobian")
        hutchinson = step_cost_ratio(encoder, decoder, input_shape, "hutchinson", num_projections)
        code_shape = _code_shape(encoder, input_shape)
        code_size = None if code_shape is None else math.prod(code_shape)
    units = f" ({code_size})" if code_size is not None else ""
    if exact is None or hutchinson is None:
        cost = (
            f" It pays one backward pass per code unit{units}, so a train step can cost "
            "many times a plain step."
        )
        alternative = f"{num_projections} forward-mode probes instead"
    else:
        cost = (
            f" It pays one backward pass per code unit{units}: a train step will cost "
            f"about {_times(exact)} a plain step (estimated from multiply-adds)."
        )
        alternative = f"{num_projections} probes, about {_times(hutchinson)} a plain step"
    return (
        f"{head}{cost} penalty='hutchinson' is an unbiased stochastic estimate of the "
        f"same penalty ({alternative})."
    )
