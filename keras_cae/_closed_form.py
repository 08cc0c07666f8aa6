"""The closed form of ‖J_f(x)‖²_F for Dense chains and for one convolution layer.

For ``h = σ_L(⋯σ_1(x W_1 + b_1)⋯ W_L + b_L)`` with element-wise activations,
``J = D_L W_Lᵀ ⋯ D_1 W_1ᵀ`` with ``D_l = diag(σ_l′(a_l))``; one layer reduces to
``Σ_k σ′(a_k)² ‖W_{:,k}‖²`` (Rifai et al., ICML 2011).

For one convolution ``h = σ(a)``, ``a = conv(x, W) + b`` (Conv1D/2D/3D, any padding,
strides, dilation, groups and data format), output unit ``(p, c)`` is
``σ(a_{p,c})`` and its row of ``J`` is ``σ′(a_{p,c})`` times the kernel taps that reach
position ``p`` from inside the input. So
``‖J‖²_F = Σ_{p,c} σ′(a_{p,c})² S_{p,c}``, where ``S_{p,c}`` is the sum of ``W²`` over
those taps and over the input channels of ``c``'s group: the squared kernel applied,
as the same convolution, to an all-ones input of the layer's input shape (the zero
padding drops the taps that fall outside it). ``S`` does not depend on the batch.
Flatten/Reshape layers before or after, inference-mode Dropout and element-wise
Activation layers after the convolution leave the formula exact; a second weighted
layer (a conv stack, conv → Dense) does not, and the closed form refuses it.

`keras_cae.penalties` dispatches ``method="closed_form"`` here; this module also reads
an encoder's layers (`_flatten_layers`), which the forward-mode path of
`keras_cae._hutchinson` reuses.

Example:

>>> import keras
>>> from keras_cae._closed_form import closed_form_error
>>> encoder = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, "sigmoid")])
>>> closed_form_error(encoder) is None
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf

__all__ = ["closed_form_error"]


# Keras activations that are not element-wise, so their Jacobian is not diagonal.
_NON_ELEMENTWISE_ACTIVATIONS = frozenset({"softmax", "log_softmax", "glu", "sparsemax"})
_SHAPE_ONLY_LAYERS = (keras.layers.InputLayer, keras.layers.Flatten)
_RESHAPE_LAYERS = (keras.layers.Flatten, keras.layers.Reshape)
_CONV_LAYERS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)


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
    `tests/keras_cae/test_closed_form.py::test_private_keras_api_for_functional_graphs` fails,
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


def _is_linear_activation(layer: Any, activation: Any) -> bool:
    """Whether an element-wise activation is the identity; raises if not element-wise."""
    name = _activation_name(activation)
    if name is None:
        raise ValueError(
            f"layer {layer.name!r} uses the custom activation {activation!r}, which "
            "cannot be proven element-wise"
        )
    if name in _NON_ELEMENTWISE_ACTIVATIONS:
        raise ValueError(f"layer {layer.name!r} uses {name!r}, which is not element-wise")
    return name == "linear"


def _check_weighted_layer(layer: Any) -> None:
    """Raises if a Dense or Conv layer computes more than its documented formula."""
    if layer.activity_regularizer is not None:
        raise ValueError(f"layer {layer.name!r} has an activity regularizer")
    if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
        raise ValueError(f"layer {layer.name!r} is LoRA-enabled or quantized")
    if not layer.built:
        raise ValueError(f"layer {layer.name!r} is not built yet")


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
            _check_weighted_layer(layer)
            activation = layer.activation
        else:
            raise ValueError(
                f"layer {layer.name!r} ({type(layer).__name__}) is not Dense, Activation, "
                "Dropout, Flatten or InputLayer"
            )
        is_linear = _is_linear_activation(layer, activation)
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


@dataclass(frozen=True)
class _ConvChain:
    """One convolution, with the shape-only and element-wise layers around it."""

    conv: Any  # keras.layers.Conv1D, Conv2D or Conv3D
    # Layers before the convolution that only reshape the input (Reshape).
    before: tuple[Any, ...]
    # Element-wise activations after the convolution, in order: (callable, dtype).
    activations: tuple[tuple[Any, str], ...]
    # Layers after the convolution that only reshape its output (Flatten, Reshape).
    after: tuple[Any, ...]


def _conv_chain(encoder: Any, training: bool) -> _ConvChain:
    """Parses `encoder` into one convolution layer, or raises `ValueError` saying why not."""
    conv = None
    before: list[Any] = []
    activations: list[tuple[Any, str]] = []
    after: list[Any] = []
    for layer in _flatten_layers(encoder):
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.layers.Dropout):
            if training and layer.rate > 0:
                raise ValueError(f"layer {layer.name!r} is Dropout, which is random in training")
            continue
        if isinstance(layer, _RESHAPE_LAYERS):
            (after if conv is not None else before).append(layer)
            continue
        if conv is not None:
            if isinstance(layer, keras.layers.Activation):
                if not _is_linear_activation(layer, layer.activation):
                    activations.append((layer.activation, layer.compute_dtype))
                continue
            raise ValueError(
                f"layer {layer.name!r} ({type(layer).__name__}) follows the "
                f"{type(conv).__name__} layer {conv.name!r}; the closed form is exact for "
                "one convolution followed only by element-wise activations and "
                "Flatten/Reshape"
            )
        if type(layer) not in _CONV_LAYERS:
            raise ValueError(
                f"layer {layer.name!r} ({type(layer).__name__}) is not Conv1D, Conv2D, "
                "Conv3D, Activation, Dropout, Flatten, Reshape or InputLayer"
            )
        _check_weighted_layer(layer)
        conv = layer
        if not _is_linear_activation(layer, layer.activation):
            activations.append((layer.activation, layer.compute_dtype))
    if conv is None:
        raise ValueError("the encoder has no Dense or convolution layer")
    return _ConvChain(conv, tuple(before), tuple(activations), tuple(after))


def _first_weighted_layer(encoder: Any) -> Any:
    for layer in _flatten_layers(encoder):
        if type(layer) is keras.layers.Dense or type(layer) in _CONV_LAYERS:
            return layer
    return None


def _chain(encoder: Any, training: bool) -> _DenseChain | _ConvChain:
    """Parses `encoder` for the closed form, or raises `ValueError` saying why not.

    The reason given is the Dense chain's, unless the first weighted layer is a
    convolution: then it is the convolution's.
    """
    if type(_first_weighted_layer(encoder)) in _CONV_LAYERS:
        return _conv_chain(encoder, training)
    return _dense_chain(encoder, training)


def closed_form_error(encoder: Any, training: bool = False) -> str | None:
    """Returns why `"closed_form"` cannot handle `encoder`, or None if it can."""
    try:
        _chain(encoder, training)
    except ValueError as error:
        return str(error)
    return None


def _closed_form_unsupported(encoder: Any, reason: str) -> ValueError:
    return ValueError(
        f"method='closed_form' cannot compute the penalty of encoder "
        f"{getattr(encoder, 'name', encoder)!r}: {reason}. The closed form is exact only "
        "for chains of Dense layers with element-wise activations, and for one "
        "Conv1D/Conv2D/Conv3D layer with element-wise activations (Flatten/Reshape "
        "around it allowed). Use method='batch_jacobian' (exact, any encoder) or "
        "method='hutchinson' (stochastic, any encoder) instead."
    )


def _activation_and_derivative(activation: Any, pre: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Returns σ(a) and σ′(a) for an element-wise activation, by forward-mode autodiff."""
    with tf.autodiff.ForwardAccumulator(pre, tf.ones_like(pre)) as accumulator:
        out = activation(pre)
    derivative = accumulator.jvp(out, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return out, derivative


def _chain_forward(
    chain: _DenseChain, x: tf.Tensor
) -> tuple[tf.Tensor, list[tf.Tensor], list[tf.Tensor | None]]:
    """Runs the Dense chain; returns the code, the kernels and the σ′ of each step.

    The code is computed exactly as ``Dense.call`` computes it, so it can replace the
    encoder's own output. Derivatives and kernels are float32 for the penalty.
    """
    h = x
    if chain.flatten_input:
        h = tf.reshape(h, [tf.shape(h)[0], -1])
    kernels: list[tf.Tensor] = []
    derivatives: list[tf.Tensor | None] = []
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
) -> tuple[tf.Tensor, tf.Tensor | None, Callable[[tf.Tensor | None], tf.Tensor]]:
    """Returns the code, the factor T of ``J`` and the norm ``T ↦ ‖J‖²_F`` per sample.

    For a Dense chain, ``J = T · W_1ᵀ``; for one convolution, ``J = diag(T) · C`` with
    ``C`` the convolution's linear map, T shaped like the convolution's output. None
    stands for a T that does not depend on ``x`` (a linear encoder), which the norm
    takes too. The CAE+H term applies the norm to differences of T.
    """
    try:
        chain = _chain(encoder, training)
    except ValueError as error:
        raise _closed_form_unsupported(encoder, str(error)) from None
    if isinstance(chain, _ConvChain):
        code, derivative, reach = _conv_forward(chain, x)
        return code, derivative, lambda factor: _conv_norm(factor, reach)
    code, kernels, derivatives = _chain_forward(chain, x)
    kernels, derivatives = _merge_linear_steps(kernels, derivatives)
    first = kernels[0]
    factor = _left_factor(kernels, derivatives)
    return code, factor, lambda factor: _norm_with_first_kernel(factor, first)


def _conv_op(conv: Any, z: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """Applies a Conv layer's convolution (no bias) with `kernel`, as its `call` does.

    ``BaseConv.convolution_op`` passes ``padding="causal"`` to ``ops.conv``, which
    refuses it; ``Conv1D.call`` pads the input on the left instead, as here.
    """
    padding = conv.padding
    if padding == "causal":
        left = conv.dilation_rate[0] * (conv.kernel_size[0] - 1)
        steps_axis = 1 if conv.data_format == "channels_last" else 2
        pads = [[0, 0], [0, 0], [0, 0]]
        pads[steps_axis] = [left, 0]
        z = tf.pad(z, pads)
        padding = "valid"
    return keras.ops.conv(
        z,
        kernel,
        strides=list(conv.strides),
        padding=padding,
        dilation_rate=conv.dilation_rate,
        data_format=conv.data_format,
    )


def _add_bias(layer: Any, pre: tf.Tensor) -> tf.Tensor:
    """Adds the bias exactly as `Dense.call` / `BaseConv.call` do, with `keras.ops.add`.

    Not ``+``: on TensorFlow, ``keras.ops.add`` turns a bias-shaped add into
    ``tf.nn.bias_add`` and picks NHWC whenever the last axis has as many entries as
    the bias, so a channels_first convolution whose last spatial size equals its
    filter count gets its bias along the last axis (Keras 3.15). The penalty must
    differentiate what the layer computes, so this reproduces that too.
    """
    if getattr(layer, "bias", None) is None:
        return pre
    bias = tf.cast(layer.bias, pre.dtype)
    if type(layer) in _CONV_LAYERS:
        rank = layer.rank
        shape = (
            (1,) * (rank + 1) + (-1,)
            if layer.data_format == "channels_last"
            else (1, -1) + (1,) * rank
        )
        bias = keras.ops.reshape(bias, shape)
    return keras.ops.add(pre, bias)


def _conv_forward(chain: _ConvChain, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor | None, tf.Tensor]:
    """Runs the convolution chain; returns the code, σ′(a) and S.

    The code is computed as the layers compute it, so it can replace the encoder's own
    output. σ′(a) (float32, the convolution's output shape, the derivative of all the
    activations together; None if they are all linear) and
    ``S = conv(ones, W²)`` (float32, shape ``(1, *conv output shape)``).
    """
    h = x
    for layer in chain.before:
        h = layer(h)
    conv = chain.conv
    dtype = conv.compute_dtype
    h = tf.cast(h, dtype)
    pre = _add_bias(conv, _conv_op(conv, h, tf.cast(conv.kernel, dtype)))
    ones = tf.ensure_shape(tf.ones(tf.concat([[1], tf.shape(h)[1:]], 0)), [1, *h.shape[1:]])
    reach = _conv_op(conv, ones, tf.square(tf.cast(conv.kernel, tf.float32)))
    derivative = None
    code = pre
    if chain.activations:

        def activate(a: tf.Tensor) -> tf.Tensor:
            for activation, activation_dtype in chain.activations:
                a = activation(tf.cast(a, activation_dtype))
            return a

        code, derivative = _activation_and_derivative(activate, pre)
        derivative = tf.cast(derivative, tf.float32)
    for layer in chain.after:
        code = layer(code)
    return code, derivative, reach


def _conv_norm(factor: tf.Tensor | None, reach: tf.Tensor) -> tf.Tensor:
    """Returns ``Σ_{p,c} T_{p,c}² S_{p,c}`` per sample (``Σ S`` once if T is None)."""
    if factor is None:
        return tf.reduce_sum(reach)[tf.newaxis]
    weighted = tf.square(factor) * reach
    return tf.reduce_sum(tf.reshape(weighted, [tf.shape(factor)[0], -1]), axis=1)
