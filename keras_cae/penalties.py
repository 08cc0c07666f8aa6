"""How the contractive penalty ‖J_f(x)‖²_F is computed.

The contractive auto-encoder (Rifai et al., "Contractive Auto-Encoders: Explicit
Invariance During Feature Extraction", ICML 2011) penalises the squared Frobenius
norm of the encoder Jacobian ``J_f(x)[k, j] = ∂h_k / ∂x_j``. This module holds
every way of computing it:

* ``"batch_jacobian"`` — the general exact reference: ``tf.GradientTape.batch_jacobian``
  of the code w.r.t. the input, squared and summed over every non-batch axis.
  Works for any encoder, costs one backward pass per code unit.
* ``"closed_form"`` — exact and cheap for encoders that are a chain of ``Dense``
  layers with element-wise activations: ``J = D_L W_Lᵀ ⋯ D_1 W_1ᵀ`` with
  ``D_l = diag(σ_l′(a_l))``. One layer reduces to ``Σ_k σ′(a_k)² ‖W_{:,k}‖²``.
* ``"hutchinson"`` — the unbiased stochastic estimate ``E_v ‖J v‖²`` with
  Rademacher or Gaussian probes ``v`` (``E[v vᵀ] = I``), computed in forward mode
  for all probes as one stacked batch. Works for any encoder, including conv.
* ``"auto"`` — ``"closed_form"`` where it applies, else ``"batch_jacobian"``.
  Always exact; it never picks the stochastic method on its own.

The second-order term of CAE+H (Rifai et al., "Higher Order Contractive
Auto-Encoder", ECML PKDD 2011), ``E_ε ‖J(x) − J(x + ε)‖²_F``, is computed with the
same machinery by :func:`hessian_penalty`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf

from keras_cae._choices import PENALTY_METHODS
from keras_cae.distribute import replica_random

__all__ = [
    "PENALTY_METHODS",
    "contractive_penalty",
    "hessian_penalty",
    "resolve_method",
]

logger = logging.getLogger("keras_cae")

PROBE_DISTRIBUTIONS = ("rademacher", "gaussian")

# Keras activations that are not element-wise, so their Jacobian is not diagonal.
_NON_ELEMENTWISE_ACTIVATIONS = frozenset({"softmax", "log_softmax", "glu", "sparsemax"})
_SHAPE_ONLY_LAYERS = (keras.layers.InputLayer, keras.layers.Flatten)


def check_method(method: str, argument: str = "method") -> str:
    """Returns `method` if it names a penalty method, else raises `ValueError`."""
    if method not in PENALTY_METHODS:
        raise ValueError(
            f"Unrecognized {argument}={method!r}. Supported methods are: {list(PENALTY_METHODS)}."
        )
    return method


# --------------------------------------------------------------------------------------
# Closed form for chains of Dense layers.


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
    `tests/test_penalties.py::test_private_keras_api_for_functional_graphs` fails,
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


# --------------------------------------------------------------------------------------
# General methods.


def _flat_jacobian_norm(jacobian: tf.Tensor) -> tf.Tensor:
    batch = tf.shape(jacobian)[0]
    return tf.reduce_sum(tf.square(tf.reshape(jacobian, [batch, -1])), axis=1)


def _batch_jacobian(encoder: Any, x: tf.Tensor, training: bool) -> tuple[tf.Tensor, tf.Tensor]:
    """Returns the code and the Jacobian, shape ``(batch, *code_shape, *input_shape)``."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        code = encoder(x, training=training)
        code32 = tf.cast(code, tf.float32)
    return code, tape.batch_jacobian(code32, x)


def _probes(
    shape: tf.Tensor, num_projections: int, distribution: str, seed: Any, dtype: tf.DType
) -> tf.Tensor:
    full_shape = tf.concat([[num_projections], shape], axis=0)
    # Under tf.distribute, each replica takes its rows of the global batch's probes.
    if distribution == "gaussian":
        return tf.cast(
            replica_random(lambda s: keras.random.normal(s, seed=seed), full_shape, 1), dtype
        )
    signs = replica_random(lambda s: keras.random.randint(s, 0, 2, seed=seed), full_shape, 1)
    return tf.cast(2 * signs - 1, dtype)


_CONV_LAYERS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)


def _linear_map(layer: Any) -> Any:
    """Returns ``z ↦ (linear part of layer)(z)`` for Dense and Conv layers, else None."""
    if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
        return None
    if type(layer) is keras.layers.Dense:
        return lambda z: tf.matmul(z, tf.cast(layer.kernel, layer.compute_dtype))
    if type(layer) in _CONV_LAYERS:
        return lambda z: layer.convolution_op(z, tf.cast(layer.kernel, layer.compute_dtype))
    return None


def _add_bias(layer: Any, pre: tf.Tensor) -> tf.Tensor:
    """Adds the bias exactly as `Dense.call` / `BaseConv.call` do."""
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
        bias = tf.reshape(bias, shape)
    return pre + bias


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


# --------------------------------------------------------------------------------------
# Public API.


def resolve_method(encoder: Any, method: str, training: bool = False) -> str:
    """Resolves `"auto"` to the exact method used for `encoder`.

    Args:
        encoder: the encoder (a Keras layer or model).
        method: one of :data:`PENALTY_METHODS`.
        training: whether the penalty is computed in training mode (Dropout active).

    Returns:
        `"closed_form"` if `method="auto"` and the encoder is a Dense chain,
        `"batch_jacobian"` if `method="auto"` otherwise, else `method` itself.
    """
    check_method(method)
    if method != "auto":
        return method
    return "closed_form" if closed_form_error(encoder, training) is None else "batch_jacobian"


def code_and_penalty(
    encoder: Any,
    x: Any,
    method: str = "batch_jacobian",
    *,
    training: bool = False,
    num_projections: int = 4,
    probe_distribution: str = "rademacher",
    seed: Any = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Returns the code ``f(x)`` and the per-sample penalty ``‖J_f(x)‖²_F``.

    The model's train step uses this to compute the encoder forward pass once; see
    :func:`contractive_penalty` for the arguments.
    """
    method = resolve_method(encoder, method, training)
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        x = tf.cast(x, keras.backend.floatx())
    if method == "closed_form":
        code, factor, kernel = _closed_form_factor(encoder, x, training)
        return code, _broadcast_batch(_norm_with_first_kernel(factor, kernel), x)
    if method == "batch_jacobian":
        code, jacobian = _batch_jacobian(encoder, x, training)
        return code, _flat_jacobian_norm(jacobian)
    _check_hutchinson_args(num_projections, probe_distribution)
    probes = _probes(tf.shape(x), num_projections, probe_distribution, seed, x.dtype)
    code, jvp = _stacked_jvp(encoder, x, probes, training)
    return code, tf.reduce_mean(tf.reduce_sum(tf.square(jvp), axis=2), axis=0)


def _check_hutchinson_args(num_projections: int, probe_distribution: str) -> None:
    if (
        not isinstance(num_projections, int)
        or isinstance(num_projections, bool)
        or num_projections < 1
    ):
        raise ValueError(
            f"`num_projections` should be a positive integer. Received: "
            f"num_projections={num_projections!r}"
        )
    if probe_distribution not in PROBE_DISTRIBUTIONS:
        raise ValueError(
            f"Unrecognized probe_distribution={probe_distribution!r}. Supported "
            f"distributions are: {list(PROBE_DISTRIBUTIONS)}."
        )


def contractive_penalty(
    encoder: Any,
    x: Any,
    method: str = "batch_jacobian",
    *,
    training: bool = False,
    num_projections: int = 4,
    probe_distribution: str = "rademacher",
    seed: Any = None,
) -> tf.Tensor:
    """Computes the per-sample squared Frobenius norm of the encoder Jacobian.

    ``‖J_f(x)‖²_F = Σ_k Σ_j (∂h_k/∂x_j)²``, summed over every non-batch axis of the
    code and of the input, so image-shaped inputs and conv encoders work (Rifai et
    al., ICML 2011, eq. 2). The result is float32 whatever the compute dtype.

    Args:
        encoder: a Keras layer or model mapping ``x`` to the code ``h``. Samples must
            be independent (no batch statistics across samples).
        x: a batch of inputs, shape ``(batch, *input_shape)``.
        method: `"batch_jacobian"` (exact, any encoder), `"closed_form"` (exact, chains
            of `Dense` layers with element-wise activations), `"hutchinson"`
            (unbiased stochastic estimate, any encoder) or `"auto"` (`"closed_form"`
            where it applies, else `"batch_jacobian"`). Defaults to `"batch_jacobian"`.
        training: call the encoder in training mode. Defaults to `False`.
        num_projections: number of probe vectors per sample for `"hutchinson"`. The
            estimate's variance falls as ``1/num_projections``; with Rademacher probes
            it is ``2 (‖JᵀJ‖²_F − Σ_j (JᵀJ)_jj²) / num_projections`` per sample. Defaults
            to `4`.
        probe_distribution: `"rademacher"` (lower variance) or `"gaussian"` probes for
            `"hutchinson"`. Defaults to `"rademacher"`.
        seed: seed for the probes: an int, a `keras.random.SeedGenerator` or None.
            Defaults to `None`.

    Returns:
        A float32 tensor of shape ``(batch,)``.

    Raises:
        ValueError: for an unknown `method`, or `"closed_form"` on an encoder that is
            not a Dense chain (the message says why and which method to use).

    Example:

    >>> import keras, numpy as np
    >>> from keras_cae import contractive_penalty
    >>> encoder = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, "sigmoid")])
    >>> x = np.random.default_rng(0).random((3, 8)).astype("float32")
    >>> exact = contractive_penalty(encoder, x, method="batch_jacobian")
    >>> fast = contractive_penalty(encoder, x, method="closed_form")
    >>> bool(np.allclose(exact, fast, rtol=1e-5))
    True
    """
    return code_and_penalty(
        encoder,
        x,
        method,
        training=training,
        num_projections=num_projections,
        probe_distribution=probe_distribution,
        seed=seed,
    )[1]


def _check_hessian_args(noise_stddev: float, num_samples: int) -> None:
    if (
        not isinstance(noise_stddev, (int, float))
        or not math.isfinite(noise_stddev)
        or noise_stddev <= 0
    ):
        raise ValueError(
            f"`hessian_noise_stddev` should be a positive finite number. Received: "
            f"hessian_noise_stddev={noise_stddev!r}"
        )
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
        raise ValueError(
            f"`hessian_samples` should be a positive integer. Received: "
            f"hessian_samples={num_samples!r}"
        )


def hessian_penalty(
    encoder: Any,
    x: Any,
    method: str = "batch_jacobian",
    *,
    noise_stddev: float = 0.1,
    num_samples: int = 1,
    training: bool = False,
    num_projections: int = 4,
    probe_distribution: str = "rademacher",
    seed: Any = None,
) -> tf.Tensor:
    """Computes the CAE+H term ``E_ε ‖J(x) − J(x + ε)‖²_F`` per sample.

    Rifai et al., "Higher Order Contractive Auto-Encoder" (ECML PKDD 2011), eq. 6:
    penalising how much the Jacobian changes in a small neighbourhood of ``x``
    approximately penalises the Hessian, without computing it. ``ε ~ N(0, σ² I)``.

    Args:
        encoder: the encoder, as for :func:`contractive_penalty`.
        x: a batch of inputs, shape ``(batch, *input_shape)``.
        method: as for :func:`contractive_penalty`. With `"hutchinson"` the same
            probes are applied to ``J(x)`` and ``J(x + ε)``, so the estimate of the
            difference stays unbiased. Defaults to `"batch_jacobian"`.
        noise_stddev: σ of the Gaussian corruption ε. Defaults to `0.1`.
        num_samples: corrupted copies of each sample averaged over. Defaults to `1`.
        training: call the encoder in training mode. Defaults to `False`.
        num_projections: probes for `"hutchinson"`. Defaults to `4`.
        probe_distribution: probe distribution for `"hutchinson"`. Defaults to
            `"rademacher"`.
        seed: an int, a `keras.random.SeedGenerator` or None. Defaults to `None`.

    Returns:
        A float32 tensor of shape ``(batch,)``, the Monte-Carlo mean over
        `num_samples` draws of ε.

    Example:

    >>> import keras, numpy as np
    >>> from keras_cae import hessian_penalty
    >>> encoder = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, "tanh")])
    >>> x = np.zeros((2, 8), "float32")
    >>> hessian_penalty(encoder, x, noise_stddev=0.1, seed=1).shape
    TensorShape([2])
    """
    _check_hessian_args(noise_stddev, num_samples)
    method = resolve_method(encoder, method, training)
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        x = tf.cast(x, keras.backend.floatx())
    batch = tf.shape(x)[0]
    noise_shape = tf.concat([[num_samples], tf.shape(x)], axis=0)
    noise = replica_random(
        lambda s: keras.random.normal(s, stddev=noise_stddev, seed=seed), noise_shape, 1
    )
    noise = tf.cast(noise, x.dtype)
    corrupted = tf.reshape(x[tf.newaxis] + noise, tf.concat([[-1], tf.shape(x)[1:]], 0))
    # Row s * batch + b of `stacked` is x_b for s = 0 and x_b + ε_{s,b} after.
    stacked = tf.concat([x, corrupted], axis=0)
    if method == "closed_form":
        _, factor, kernel = _closed_form_factor(encoder, stacked, training)
        if factor is None:  # J does not depend on x.
            return tf.zeros([batch], tf.float32)
        rest = tf.shape(factor)[1:]
        grouped = tf.reshape(factor, tf.concat([[num_samples + 1, batch], rest], 0))
        difference = grouped[:1] - grouped[1:]
        flat = tf.reshape(difference, tf.concat([[-1], rest], 0))
        norms = _norm_with_first_kernel(flat, kernel)
    elif method == "batch_jacobian":
        _, jacobian = _batch_jacobian(encoder, stacked, training)
        rest = tf.shape(jacobian)[1:]
        grouped = tf.reshape(jacobian, tf.concat([[num_samples + 1, batch], rest], 0))
        norms = _flat_jacobian_norm(
            tf.reshape(grouped[:1] - grouped[1:], tf.concat([[-1], rest], 0))
        )
    else:
        _check_hutchinson_args(num_projections, probe_distribution)
        probes = _probes(tf.shape(x), num_projections, probe_distribution, seed, x.dtype)
        shared = tf.tile(
            probes, tf.concat([[1, num_samples + 1], tf.ones_like(tf.shape(x)[1:])], 0)
        )
        _, jvp = _stacked_jvp(encoder, stacked, shared, training)
        grouped = tf.reshape(jvp, [num_projections, num_samples + 1, batch, -1])
        difference = grouped[:, :1] - grouped[:, 1:]
        norms = tf.reduce_mean(tf.reduce_sum(tf.square(difference), axis=-1), axis=0)
    return tf.reduce_mean(tf.reshape(norms, [num_samples, batch]), axis=0)
