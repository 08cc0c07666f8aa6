"""Forward-mode Jacobian-vector products for the Hutchinson estimate ``E_v ‖J v‖²``.

`keras_cae.penalties` draws the probes ``v`` and dispatches ``method="hutchinson"``
here: `_stacked_jvp` returns ``J(x) v`` for every probe at once.

Example:

>>> import keras, tensorflow as tf
>>> from keras_cae._hutchinson import _stacked_jvp
>>> encoder = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, "tanh")])
>>> x, probes = tf.zeros((4, 3)), tf.ones((5, 4, 3))
>>> code, jvp = _stacked_jvp(encoder, x, probes, training=False)
>>> tuple(code.shape), tuple(jvp.shape)
((4, 2), (5, 4, 2))
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from keras_cae._closed_form import (
    _CONV_LAYERS,
    _NON_ELEMENTWISE_ACTIVATIONS,
    _activation_and_derivative,
    _activation_name,
    _add_bias,
    _conv_op,
    _flatten_layers,
)

__all__: list[str] = []


def _linear_map(layer: Any) -> Any:
    """Returns ``z ↦ (linear part of layer)(z)`` for Dense and Conv layers, else None."""
    if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
        return None
    if type(layer) is keras.layers.Dense:
        return lambda z: tf.matmul(z, tf.cast(layer.kernel, layer.compute_dtype))
    if type(layer) in _CONV_LAYERS:
        return lambda z: _conv_op(layer, z, tf.cast(layer.kernel, layer.compute_dtype))
    return None


def _layerwise_jvp(
    encoder: Any, x: tf.Tensor, tangents: tf.Tensor, num_projections: tf.Tensor, training: bool
) -> tuple[tf.Tensor, tf.Tensor] | None:
    """Propagates stacked tangents through a chain of Dense/Conv/Activation/Flatten layers.

    Linear maps are applied to the ``num_projections × batch`` tangents as one batch,
    exactly as to the primal; element-wise activations multiply by ``σ′(a)``. This is
    forward-mode autodiff done per layer: ``tf.autodiff.ForwardAccumulator`` computes a
    conv's JVP by transposing its gradient, measured 2.4× the cost of the conv itself.

    Returns:
        The code and the tangents ``(num_projections · batch, *code_shape)``, or None if
        a layer is not one of these (the caller then uses the generic path).
    """
    try:
        layers = _flatten_layers(encoder)
    except ValueError:
        return None
    plan = []
    for layer in layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, (keras.layers.Flatten, keras.layers.Reshape)):
            plan.append(("shape", layer, None))
            continue
        if isinstance(layer, keras.layers.Dropout) and not (training and layer.rate > 0):
            continue
        linear = None
        if not isinstance(layer, keras.layers.Activation):
            linear = _linear_map(layer)
            if linear is None or getattr(layer, "activity_regularizer", None) is not None:
                return None
        name = _activation_name(layer.activation)
        if name is None or name in _NON_ELEMENTWISE_ACTIVATIONS:
            return None
        plan.append(("linear" if linear else "activation", layer, linear))
    h, t = x, tangents
    for kind, layer, linear in plan:
        if kind == "shape":
            h, t = layer(h), layer(t)
            continue
        dtype = layer.compute_dtype
        h, t = tf.cast(h, dtype), tf.cast(t, dtype)
        if linear is not None:
            h, t = _add_bias(layer, linear(h)), linear(t)
        if _activation_name(layer.activation) != "linear":
            h, derivative = _activation_and_derivative(layer.activation, h)
            grouped = tf.reshape(t, tf.concat([[num_projections], tf.shape(h)], 0))
            t = tf.reshape(grouped * derivative, tf.shape(t))
    return h, t


def _stacked_jvp(
    encoder: Any, x: tf.Tensor, probes: tf.Tensor, training: bool
) -> tuple[tf.Tensor, tf.Tensor]:
    """Returns ``f(x)`` and ``J(x) v`` for every probe ``v``, all probes at once.

    Chains of Dense/Conv/Activation/Flatten layers propagate all probes' tangents as
    one stacked batch beside a single primal pass (:func:`_layerwise_jvp`). Other
    encoders use ``tf.autodiff.ForwardAccumulator``: in a graph under
    ``tf.vectorized_map`` over the probes, so the primal pass (which does not depend
    on the probe) runs once (8.7 ms against 16.0 ms for tiling the input per probe,
    784→256→64, batch 128, 4 probes); eagerly, where ``vectorized_map`` would trace a
    new graph at every call, on the input tiled once per probe. All paths give the
    same values for the same probes.

    Args:
        x: inputs of shape ``(batch, *input_shape)``.
        probes: tangents of shape ``(num_projections, batch, *input_shape)``.

    Returns:
        The code for ``x`` and the JVPs, shape ``(num_projections, batch, code_size)``.
    """
    num_projections, batch = tf.shape(probes)[0], tf.shape(x)[0]
    stacked = tf.reshape(probes, tf.concat([[-1], tf.shape(x)[1:]], 0))
    layerwise = _layerwise_jvp(encoder, x, stacked, num_projections, training)
    if layerwise is not None:
        code, tangents = layerwise
    elif tf.executing_eagerly():
        multiples = tf.concat([[num_projections], tf.ones_like(tf.shape(x))], axis=0)
        tiled = tf.reshape(tf.tile(x[tf.newaxis], multiples), tf.shape(stacked))
        with tf.autodiff.ForwardAccumulator(tiled, stacked) as accumulator:
            code = encoder(tiled, training=training)
        tangents = accumulator.jvp(code, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        code = code[:batch]
    else:

        def jvp(probe: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            with tf.autodiff.ForwardAccumulator(x, probe) as accumulator:
                code = encoder(x, training=training)
            tangent = accumulator.jvp(code, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return code, tangent

        codes, tangents = tf.vectorized_map(jvp, probes)
        code = codes[0]
    return code, tf.reshape(tf.cast(tangents, tf.float32), [num_projections, batch, -1])
