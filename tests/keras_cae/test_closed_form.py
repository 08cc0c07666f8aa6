"""`keras_cae._closed_form`: the exact closed form of ‖J_f(x)‖²_F for Dense chains and for
one convolution layer, against `batch_jacobian` (values and gradients), float64 central
differences and explicit sums, and the encoders it refuses, naming the alternatives.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_cae import contractive_penalty
from keras_cae._closed_form import _functional_chain
from keras_cae.penalties import resolve_method
from tests._jacobians import (
    batched_finite_difference_norm,
    conv_encoder,
    conv_layer,
    dense_encoder,
    relative_error,
)
from tests._variants import user_conv

ENCODER_CASES = [
    ([20, 8], "sigmoid", 5),
    ([8, 20], "tanh", 3),
    ([30, 16, 4], "sigmoid", 6),
    ([10, 24, 6], "relu", 4),
    ([12, 9, 7, 5], "gelu", 2),
    ([16, 12, 10], "softplus", 1),
    ([9, 12, 3], "linear", 5),
    ([40, 30, 6], "elu", 3),
]


@pytest.mark.parametrize("sizes, activation, batch", ENCODER_CASES)
def test_closed_form_equals_batch_jacobian_with_gradients(sizes, activation, batch, rng):
    encoder = dense_encoder(sizes, activation, seed=len(sizes) + batch)
    x = tf.constant(rng.normal(size=(batch, sizes[0])).astype("float32"))
    weights = encoder.trainable_weights
    results = {}
    for method in ("batch_jacobian", "closed_form"):
        with tf.GradientTape() as tape:
            penalty = contractive_penalty(encoder, x, method=method)
            objective = tf.reduce_sum(penalty * tf.linspace(1.0, 2.0, batch))
        grads = tape.gradient(objective, weights)
        # A linear chain has no gradient w.r.t. its biases: None stands for zero.
        grads = [tf.zeros_like(w) if g is None else g for g, w in zip(grads, weights)]
        results[method] = (penalty.numpy(), grads)
    reference, reference_grads = results["batch_jacobian"]
    value, grads = results["closed_form"]
    assert value.shape == (batch,)
    assert relative_error(value, reference) < 1e-5
    for grad, reference_grad in zip(grads, reference_grads):
        grad, reference_grad = np.asarray(grad), np.asarray(reference_grad)
        scale = np.linalg.norm(reference_grad)
        if scale == 0:
            assert np.linalg.norm(grad) == 0
        else:
            assert np.linalg.norm(grad - reference_grad) / scale < 1e-5


def test_closed_form_handles_functional_chains_activation_layers_and_dropout(rng):
    inputs = keras.Input((3, 4))
    h = keras.layers.Flatten()(inputs)
    h = keras.layers.Dense(6)(h)
    h = keras.layers.Activation("tanh")(h)
    h = keras.layers.Dropout(0.5)(h)
    h = keras.layers.Dense(3, activation="sigmoid")(h)
    encoder = keras.Model(inputs, h)
    x = rng.random((4, 3, 4)).astype("float32")
    exact = contractive_penalty(encoder, x, method="batch_jacobian")
    assert relative_error(contractive_penalty(encoder, x, method="closed_form"), exact) < 1e-5
    assert resolve_method(encoder, "auto") == "closed_form"
    # In training, Dropout is random: the closed form refuses and auto falls back.
    assert resolve_method(encoder, "auto", training=True) == "batch_jacobian"


def test_private_keras_api_for_functional_graphs():
    """Keras exports no public API to walk a Functional graph; the one function that
    reads its internals is `keras_cae._closed_form._functional_chain`. If this test fails
    after a Keras upgrade, update that function."""
    where = (
        f"Keras {keras.__version__} changed a private API that "
        "keras_cae._closed_form._functional_chain reads; update that function:"
    )
    try:
        from keras.src.models.functional import Functional
    except ImportError as error:
        pytest.fail(f"{where} {error}")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Dense(5)(inputs)))
    assert type(model) is Functional, f"{where} keras.Model(inputs, outputs) is a {type(model)}"
    for op in model.operations:
        nodes = getattr(op, "_inbound_nodes", None)
        assert isinstance(nodes, list) and len(nodes) == 1, f"{where} {op.name}._inbound_nodes"
        assert isinstance(getattr(nodes[0], "input_tensors", None), (list, tuple)), (
            f"{where} {op.name}._inbound_nodes[0].input_tensors"
        )
    assert _functional_chain(model) == model.operations
    shared = keras.layers.Dense(4)  # Called twice: not one chain.
    with pytest.raises(ValueError, match="not part of a single linear chain"):
        _functional_chain(keras.Model(inputs, shared(shared(inputs))))
    assert _functional_chain(keras.Sequential([inputs, keras.layers.Dense(3)])) is None


@pytest.mark.parametrize(
    "encoder, reason",
    [
        (lambda: user_conv().encoder, "Conv2D"),
        (
            lambda: keras.Sequential(
                [keras.Input((4,)), keras.layers.Dense(3), keras.layers.BatchNormalization()]
            ),
            "BatchNormalization",
        ),
        (lambda: dense_encoder([4, 3], "softmax"), "not element-wise"),
        (lambda: dense_encoder([4, 3], lambda a: a * a), "custom activation"),
    ],
    ids=["conv", "batchnorm", "softmax", "custom-activation"],
)
def test_closed_form_refuses_other_encoders_and_names_alternatives(encoder, reason):
    encoder = encoder()
    shape = (2, *encoder.input_shape[1:])
    with pytest.raises(ValueError, match=reason) as error:
        contractive_penalty(encoder, np.zeros(shape, "float32"), method="closed_form")
    assert "batch_jacobian" in str(error.value) and "hutchinson" in str(error.value)
    assert resolve_method(encoder, "auto") == "batch_jacobian"


# --------------------------------------------------------------------------------------
# The closed form of one convolution layer.


FIRST = {"data_format": "channels_first"}
# (input shape, layers for a dtype): every padding, strides, dilation, groups and data
# format, each with another activation. On CPU, TensorFlow runs channels_first float64
# convolutions only through XLA, which Keras uses for grouped ones: the channels_first
# cases are grouped. "quirk" has as many filters as its last spatial size (see
# `keras_cae._closed_form._add_bias`).
CONV_CASES = {
    "1d-valid": ((7, 2), lambda d: [conv_layer(1, 3, 3, "tanh", d)]),
    "1d-same-stride-groups": (
        (9, 4),
        lambda d: [conv_layer(1, 4, 3, "sigmoid", d, padding="same", strides=2, groups=2)],
    ),
    "1d-causal-dilated": (
        (8, 2),
        lambda d: [conv_layer(1, 3, 3, "relu", d, padding="causal", dilation_rate=2)],
    ),
    "1d-causal-stride-first": (
        (2, 9),
        lambda d: [conv_layer(1, 4, 2, "elu", d, padding="causal", strides=2, groups=2, **FIRST)],
    ),
    "1d-same-dilated-first-linear": (
        (4, 7),
        lambda d: [
            conv_layer(1, 2, 3, "linear", d, padding="same", dilation_rate=2, groups=2, **FIRST)
        ],
    ),
    "2d-valid-rect-dilated": (
        (6, 5, 1),
        lambda d: [conv_layer(2, 3, (3, 2), "sigmoid", d, dilation_rate=(1, 2))],
    ),
    "2d-same-stride-groups": (
        (5, 5, 4),
        lambda d: [conv_layer(2, 4, 3, "tanh", d, padding="same", strides=2, groups=2)],
    ),
    "2d-first-rect-stride": (
        (2, 6, 5),
        lambda d: [
            conv_layer(2, 4, 2, "softplus", d, padding="same", strides=(2, 1), groups=2, **FIRST)
        ],
    ),
    "2d-first-quirk": (
        (2, 7, 7),
        lambda d: [conv_layer(2, 4, 3, "gelu", d, padding="same", strides=2, groups=2, **FIRST)],
    ),
    "3d-same-stride": (
        (4, 3, 4, 1),
        lambda d: [conv_layer(3, 2, 2, "tanh", d, padding="same", strides=2)],
    ),
    "reshape-conv-flatten-activation-dropout": (
        (12,),
        lambda d: [
            keras.layers.Reshape((4, 3, 1), dtype=d),
            conv_layer(2, 2, 2, "linear", d, padding="same"),
            keras.layers.Flatten(dtype=d),
            keras.layers.Activation("tanh", dtype=d),
            keras.layers.Dropout(0.5, dtype=d),
            keras.layers.Activation("sigmoid", dtype=d),
        ],
    ),
}
# Slow: XLA compiles (channels_first), many input coordinates, or five layers to trace.
SLOW_CONV_CASES = {
    "1d-causal-stride-first",
    "1d-same-dilated-first-linear",
    "2d-valid-rect-dilated",
    "2d-first-rect-stride",
    "3d-same-stride",
}


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(name, marks=[pytest.mark.slow] if name in SLOW_CONV_CASES else [])
        for name in CONV_CASES
    ],
)
def test_conv_closed_form_matches_finite_differences_and_batch_jacobian(case, rng):
    shape, layers = CONV_CASES[case]
    encoder = conv_encoder(shape, layers)
    assert resolve_method(encoder, "auto") == "closed_form"
    x = rng.normal(size=(3, *shape))
    closed_form = contractive_penalty(encoder, x, method="closed_form")
    assert closed_form.shape == (3,)
    # The independent reference: float64 central differences (accurate to ~1e-8 here);
    # the closed form computes in float32.
    assert relative_error(closed_form, batched_finite_difference_norm(encoder, x)) < 1e-5
    # Values and gradients against batch_jacobian, in float32 (TensorFlow's CPU kernels
    # for the Jacobian of a grouped float64 convolution are missing).
    encoder32 = conv_encoder(shape, layers, "float32")
    encoder32.set_weights([w.astype("float32") for w in encoder.get_weights()])
    x32 = tf.constant(x.astype("float32"))
    results = {}
    for method in ("batch_jacobian", "closed_form"):
        with tf.GradientTape() as tape:
            penalty = contractive_penalty(encoder32, x32, method=method)
            objective = tf.reduce_sum(penalty * tf.linspace(1.0, 2.0, 3))
        grads = tape.gradient(objective, encoder32.trainable_weights)
        grads = [tf.zeros_like(w) if g is None else g for g, w in zip(grads, encoder32.weights)]
        results[method] = (penalty.numpy(), [np.asarray(g) for g in grads])
    assert relative_error(results["closed_form"][0], results["batch_jacobian"][0]) < 1e-5
    for grad, reference in zip(results["closed_form"][1], results["batch_jacobian"][1]):
        # Zero where σ′² has no slope (relu's bias) or the encoder is linear.
        assert np.linalg.norm(grad - reference) <= 1e-5 * np.linalg.norm(reference)


def test_conv_closed_form_matches_an_explicit_sum_over_kernel_taps(rng):
    # ‖J‖² = Σ_{p,c} σ′(a_pc)² Σ_{taps of p inside the input, c_in} W², written as loops.
    encoder = conv_encoder(
        (6, 2), lambda d: [conv_layer(1, 3, 3, "sigmoid", d, padding="same", strides=2)]
    )
    kernel, bias = (np.asarray(w, np.float64) for w in encoder.layers[0].get_weights())
    x = rng.normal(size=(2, 6, 2))
    expected = np.zeros(2)
    # Output length ceil(6 / 2) = 3; "same" pads (3 − 1)·2 + 3 − 6 = 1 zero, on the right.
    for position in range(3):
        for channel in range(3):
            taps = [t for t in range(3) if 2 * position + t < 6]
            pre = bias[channel] + sum(x[:, 2 * position + t] @ kernel[t, :, channel] for t in taps)
            slope = (1 / (1 + np.exp(-pre))) * (1 - 1 / (1 + np.exp(-pre)))
            expected += slope**2 * sum(np.sum(kernel[t, :, channel] ** 2) for t in taps)
    assert relative_error(contractive_penalty(encoder, x, method="closed_form"), expected) < 1e-5


@pytest.mark.parametrize(
    "layers, training, reason",
    [
        (
            lambda d: [
                conv_layer(2, 2, 3, "tanh", d),
                keras.layers.Flatten(),
                keras.layers.Dense(3),
            ],
            False,
            r"layer 'dense\w*' \(Dense\) follows the Conv2D layer",
        ),
        (
            lambda d: [conv_layer(2, 2, 3, "relu", d), conv_layer(2, 2, 2, "tanh", d)],
            False,
            r"\(Conv2D\) follows the Conv2D layer",
        ),
        (lambda d: [conv_layer(2, 2, 3, "softmax", d)], False, "not element-wise"),
        (
            lambda d: [conv_layer(2, 2, 3, "tanh", d), keras.layers.Dropout(0.2)],
            True,
            "random in training",
        ),
        (
            lambda d: [conv_layer(2, 2, 3, "tanh", d), keras.layers.BatchNormalization()],
            False,
            r"\(BatchNormalization\) follows",
        ),
    ],
    ids=["conv-dense", "conv-stack", "softmax", "dropout-training", "conv-batchnorm"],
)
def test_conv_closed_form_refuses_what_it_cannot_make_exact(layers, training, reason):
    encoder = conv_encoder((5, 5, 1), layers, "float32")
    with pytest.raises(ValueError, match=reason) as error:
        contractive_penalty(
            encoder, np.zeros((2, 5, 5, 1)), method="closed_form", training=training
        )
    assert "batch_jacobian" in str(error.value) and "hutchinson" in str(error.value)
    assert resolve_method(encoder, "auto", training=training) == "batch_jacobian"
