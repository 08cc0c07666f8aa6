"""The closed form of ‖J_f(x)‖²_F for encoders that are a chain of Dense layers.

For ``h = σ_L(⋯σ_1(x W_1 + b_1)⋯ W_L + b_L)`` with element-wise activations,
``J = D_L W_Lᵀ ⋯ D_1 W_1ᵀ`` with ``D_l = diag(σ_l′(a_l))``; one layer reduces to
``Σ_k σ′(a_k)² ‖W_{:,k}‖²`` (Rifai et al., ICML 2011). `keras_cae.penalties` dispatches
``method="closed_form"`` here; this module also reads an encoder's layers
(`_flatten_layers`), which the forward-mode path of `keras_cae._hutchinson` reuses.

Example:

>>> import keras
>>> from keras_cae._closed_form import closed_form_error
>>> encoder = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, "sigmoid")])
>>> closed_form_error(encoder) is None
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf

__all__ = ["closed_form_error"]


# Keras activations that are not element-wise, so their Jacobian is not diagonal.
_NON_ELEMENTWISE_ACTIVATIONS = frozenset({"softmax", "log_softmax", "glu", "sparsemax"})
_SHAPE_ONLY_LAYERS = (keras.layers.InputLayer, keras.layers.Flatten)


@dataclass(frozen=True)
class _DenseChain:
    """The layers of an encoder that the closed form can differentiate analytically."""

    # Each step is (dense layer, activation callable, is_linear).
    steps: tuple[tuple[keras.layers.Dense, Any, bool], ...]
    # Layers that run before the first Dense and only reshape (Flatten, InputLayer).
    flatten_input: bool


def _activation_name(activation: Any) -> str | None:
    """Returns the Keras name of a built-in activation, or None for custom callables."""
    name = getattr(activation, "__name__", None)
    if name is None:
        return None
    builtin = getattr(keras.activations, name, None)
    return name if builtin is activation else None


def _functional_chain(model: Any) -> list[Any] | None:
    """The operations of a plain Functional model, if they form one linear chain.

    This is the only place that reads Keras internals, because Keras exports no public
    API for either: the class of `keras.Model(inputs, outputs)`
    (`keras.src.models.functional.Functional`; only an exact instance, not a subclass
    with its own `call`, is a plain graph of layers) and how often, and on how many
    tensors, each layer was called (`Operation._inbound_nodes`).
    `tests/keras_cae/test_penalties.py::test_private_keras_api_for_functional_graphs` fails,
    naming the Keras version, if a release changes either.

    Returns:
        `model.operations` in call order, or None if `model` is not a plain
        Functional model.

    Raises:
        ValueError: a layer is called more than once or on several tensors.
    """
    from keras.src.models.functional import Functional

    if type(model) is not Functional:
        return None
    for op in model.operations:
        inbound = op._inbound_nodes
        if len(inbound) != 1 or len(inbound[0].input_tensors) > 1:
            raise ValueError(f"layer {op.name!r} is not part of a single linear chain of layers")
    return list(model.operations)


def _flatten_layers(encoder: Any) -> list[Any]:
    """Lists the layers of a Sequential, a linear Functional model, or a single layer."""
    if isinstance(encoder, keras.Sequential):
        layers = []
        for layer in encoder.layers:
            layers.extend(_flatten_layers(layer))
        return layers
    operations = _functional_chain(encoder)
    if operations is not None:
        layers = []
        for op in operations:
            layers.extend(_flatten_layers(op))
        return layers
    if isinstance(encoder, keras.Model):
        raise ValueError(f"subclassed model {type(encoder).__name__!r} has a custom call()")
    return [encoder]


def _dense_chain(encoder: Any, training: bool) -> _DenseChain:
    """Parses `encoder` into a Dense chain, or raises `ValueError` saying why not."""
    steps: list[tuple[keras.layers.Dense, Any, bool]] = []
    flatten_input = False
    for layer in _flatten_layers(encoder):
        if isinstance(layer, _SHAPE_ONLY_LAYERS):
            if steps and isinstance(layer, keras.layers.Flatten):
                raise ValueError(f"layer {layer.name!r} (Flatten) comes after a Dense layer")
            flatten_input = flatten_input or isinstance(layer, keras.layers.Flatten)
            continue
        if isinstance(layer, keras.layers.Dropout):
            if training and layer.rate > 0:
                raise ValueError(f"layer {layer.name!r} is Dropout, which is random in training")
            continue
        if isinstance(layer, keras.layers.Activation):
            activation = layer.activation
            if not steps:
                raise ValueError(f"layer {layer.name!r} (Activation) precedes every Dense layer")
        elif type(layer) is keras.layers.Dense:
            if layer.activity_regularizer is not None:
                raise ValueError(f"layer {layer.name!r} has an activity regularizer")
            if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
                raise ValueError(f"layer {layer.name!r} is LoRA-enabled or quantized")
            if not layer.built:
                raise ValueError(f"layer {layer.name!r} is not built yet")
            activation = layer.activation
        else:
            raise ValueError(
                f"layer {layer.name!r} ({type(layer).__name__}) is not Dense, Activation, "
                "Dropout, Flatten or InputLayer"
            )
        name = _activation_name(activation)
        if name is None:
            raise ValueError(
                f"layer {layer.name!r} uses the custom activation {activation!r}, which "
                "cannot be proven element-wise"
            )
        if name in _NON_ELEMENTWISE_ACTIVATIONS:
            raise ValueError(f"layer {layer.name!r} uses {name!r}, which is not element-wise")
        is_linear = name == "linear"
        if isinstance(layer, keras.layers.Activation):
            dense, previous, previous_linear = steps[-1]
            if not previous_linear:
                raise ValueError(
                    f"layer {layer.name!r} applies a second activation after {dense.name!r}"
                )
            steps[-1] = (dense, activation, is_linear)
        else:
            steps.append((layer, activation, is_linear))
    if not steps:
        raise ValueError("the encoder has no Dense layer")
    return _DenseChain(tuple(steps), flatten_input)


def closed_form_error(encoder: Any, training: bool = False) -> str | None:
    """Returns why `"closed_form"` cannot handle `encoder`, or None if it can."""
    try:
        _dense_chain(encoder, training)
    except ValueError as error:
        return str(error)
    return None


def _closed_form_unsupported(encoder: Any, reason: str) -> ValueError:
    return ValueError(
        f"method='closed_form' cannot compute the penalty of encoder "
        f"{getattr(encoder, 'name', encoder)!r}: {reason}. The closed form is exact only "
        "for chains of Dense layers with element-wise activations. Use "
        "method='batch_jacobian' (exact, any encoder) or method='hutchinson' "
        "(stochastic, any encoder) instead."
    )


def _activation_and_derivative(activation: Any, pre: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Returns σ(a) and σ′(a) for an element-wise activation, by forward-mode autodiff."""
    with tf.autodiff.ForwardAccumulator(pre, tf.ones_like(pre)) as accumulator:
        out = activation(pre)
    derivative = accumulator.jvp(out, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return out, derivative


def _chain_forward(
    chain: _DenseChain, x: tf.Tensor
) -> tuple[tf.Tensor, list[tf.Tensor], list[tf.Tensor]]:
    """Runs the Dense chain; returns the code, the kernels and the σ′ of each step.

    The code is computed exactly as ``Dense.call`` computes it, so it can replace the
    encoder's own output. Derivatives and kernels are float32 for the penalty.
    """
    h = x
    if chain.flatten_input:
        h = tf.reshape(h, [tf.shape(h)[0], -1])
    kernels, derivatives = [], []
    for dense, activation, is_linear in chain.steps:
        dtype = dense.compute_dtype
        kernel = tf.cast(dense.kernel, dtype)
        h = tf.matmul(tf.cast(h, dtype), kernel)
        if dense.use_bias:
            h = h + tf.cast(dense.bias, dtype)
        if is_linear:
            derivatives.append(None)
        else:
            h, derivative = _activation_and_derivative(activation, h)
            derivatives.append(tf.cast(derivative, tf.float32))
        kernels.append(tf.cast(dense.kernel, tf.float32))
    return h, kernels, derivatives


def _merge_linear_steps(
    kernels: list[tf.Tensor], derivatives: list[tf.Tensor | None]
) -> tuple[list[tf.Tensor], list[tf.Tensor | None]]:
    """Multiplies the kernels of consecutive steps separated only by a linear activation."""
    merged_kernels = [kernels[0]]
    merged_derivatives = [derivatives[0]]
    for kernel, derivative in zip(kernels[1:], derivatives[1:]):
        if merged_derivatives[-1] is None:
            merged_kernels[-1] = tf.matmul(merged_kernels[-1], kernel)
            merged_derivatives[-1] = derivative
        else:
            merged_kernels.append(kernel)
            merged_derivatives.append(derivative)
    return merged_kernels, merged_derivatives


def _left_factor(kernels: list[tf.Tensor], derivatives: list[tf.Tensor | None]) -> tf.Tensor | None:
    """Returns T with ``J = T · W_1ᵀ`` per sample.

    With kernels ``W_l`` of shape ``(m_{l-1}, m_l)`` and ``D_l = diag(d_l)``,
    ``J = D_L W_Lᵀ D_{L-1} ⋯ W_2ᵀ D_1 W_1ᵀ``. For one layer T is the diagonal
    ``D_1``, returned as the vector ``d_1`` of shape ``(batch, m_1)``; for deeper
    chains T has shape ``(batch, m_L, m_1)`` and is built from the code side, where
    the matrices are narrowest. None means T is the identity (a linear one-layer map).
    """
    left = derivatives[-1]  # (batch, m_L) or None
    if len(kernels) == 1:
        return left
    # (m_L, m_{L-1}) scaled row-wise by d_L: (batch, m_L, m_{L-1}).
    kernel_t = tf.transpose(kernels[-1])
    factor = kernel_t[tf.newaxis] if left is None else left[:, :, tf.newaxis] * kernel_t
    for level in range(len(kernels) - 2, -1, -1):
        derivative = derivatives[level]
        if derivative is not None:
            factor = factor * derivative[:, tf.newaxis, :]
        if level > 0:
            factor = tf.einsum("bkj,ij->bki", factor, kernels[level])
    return factor


@tf.custom_gradient
def _column_norms(kernel: tf.Tensor) -> Any:
    """Returns ``‖W_{:,k}‖²`` for each column; the gradient ``2 W diag(u)`` is one op."""

    def gradient(upstream: tf.Tensor) -> tf.Tensor:
        return kernel * (2.0 * upstream)

    return tf.reduce_sum(tf.square(kernel), axis=0), gradient


def _norm_with_first_kernel(factor: tf.Tensor | None, kernel: tf.Tensor) -> tf.Tensor:
    """Returns ``‖T · W_1ᵀ‖²_F`` per sample, in the cheapest association order."""
    if factor is None:
        return tf.reduce_sum(tf.square(kernel))[tf.newaxis]
    if factor.shape.rank == 2:
        # Diagonal T: Σ_k t_k² ‖W_{:,k}‖².
        column_norms = _column_norms(kernel)
        return tf.reduce_sum(tf.square(factor) * column_norms, axis=1)
    input_dim, width = kernel.shape
    if input_dim is not None and width is not None and input_dim < width:
        product = tf.einsum("bkj,ij->bki", factor, kernel)
        return tf.reduce_sum(tf.square(product), axis=[1, 2])
    # tr(T G Tᵀ) with the Gram matrix G = W_1ᵀ W_1 of shape (m_1, m_1).
    gram = tf.matmul(kernel, kernel, transpose_a=True)
    return _gram_quadratic_form(factor, gram)


@tf.custom_gradient
def _gram_quadratic_form(factor: tf.Tensor, gram: tf.Tensor) -> Any:
    """Returns ``tr(T_b G T_bᵀ)`` per sample for a symmetric ``G``.

    Autodiff would compute ``T G`` twice (forward, and ``T Gᵀ`` for the gradient of
    ``T``); with ``G`` symmetric, ``∂/∂T = 2 T G`` reuses the forward product, so the
    backward pass costs one batched product (for ``∂/∂G = Σ_b T_bᵀ T_b``) instead of
    two. Each product is one large matrix multiplication over ``batch × m_L`` rows.
    """
    rows = tf.reshape(factor, [-1, tf.shape(factor)[-1]])
    product = tf.matmul(rows, gram)
    values = tf.reduce_sum(tf.reshape(product * rows, tf.shape(factor)), axis=[1, 2])

    def gradient(upstream: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        weights = upstream[:, tf.newaxis, tf.newaxis]
        d_factor = 2.0 * weights * tf.reshape(product, tf.shape(factor))
        weighted_rows = tf.reshape(weights * factor, tf.shape(rows))
        d_gram = tf.matmul(weighted_rows, rows, transpose_a=True)
        return d_factor, d_gram

    return values, gradient


def _broadcast_batch(values: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
    return tf.broadcast_to(values, tf.shape(x)[:1])


def _closed_form_factor(
    encoder: Any, x: tf.Tensor, training: bool
) -> tuple[tf.Tensor, tf.Tensor | None, tf.Tensor]:
    """Returns the code, T and the (merged) first kernel of the closed form."""
    try:
        chain = _dense_chain(encoder, training)
    except ValueError as error:
        raise _closed_form_unsupported(encoder, str(error)) from None
    code, kernels, derivatives = _chain_forward(chain, x)
    kernels, derivatives = _merge_linear_steps(kernels, derivatives)
    return code, _left_factor(kernels, derivatives), kernels[0]
