"""The contractive penalty against independent references."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_cae import contractive_penalty, hessian_penalty
from keras_cae._closed_form import _functional_chain
from keras_cae.penalties import resolve_method
from tests._variants import user_conv


def dense_encoder(sizes, activation="sigmoid", dtype="float32", seed=0):
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


def relative_error(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(actual - expected) / np.maximum(np.abs(expected), 1e-30)))


def finite_difference_norm(encoder, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
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


def test_single_sigmoid_layer_matches_paper_closed_form(rng):
    # Rifai et al. (2011), eq. 4: ‖J‖² = Σ_k (h_k(1−h_k))² Σ_j W_jk², computed in NumPy.
    encoder = dense_encoder([12, 5])
    x = rng.random((7, 12)).astype("float32")
    kernel, bias = (np.asarray(w, np.float64) for w in encoder.layers[-1].get_weights())
    h = 1 / (1 + np.exp(-(x.astype(np.float64) @ kernel + bias)))
    expected = np.sum((h * (1 - h)) ** 2 * np.sum(kernel**2, axis=0), axis=1)
    for method in ("batch_jacobian", "closed_form", "auto"):
        assert relative_error(contractive_penalty(encoder, x, method=method), expected) < 1e-5


@pytest.mark.parametrize(
    "build, shape",
    [
        (lambda: dense_encoder([6, 5, 3], "tanh", "float64"), (4, 6)),
        (lambda: dense_encoder([5, 7], "softplus", "float64"), (3, 5)),
        (
            lambda: keras.Sequential(
                [
                    keras.Input((5, 5, 2), dtype="float64"),
                    keras.layers.Conv2D(3, 3, activation="tanh", dtype="float64"),
                    keras.layers.Flatten(dtype="float64"),
                    keras.layers.Dense(4, activation="sigmoid", dtype="float64"),
                ]
            ),
            (2, 5, 5, 2),
        ),
        (
            # Image-shaped code: the norm sums over every non-batch axis of the code too.
            lambda: keras.Sequential(
                [
                    keras.Input((6, 6, 1), dtype="float64"),
                    keras.layers.Conv2D(
                        2, 3, strides=2, padding="same", activation="elu", dtype="float64"
                    ),
                ]
            ),
            (3, 6, 6, 1),
        ),
    ],
    ids=["dense-tanh-2", "dense-softplus", "conv-dense", "conv-image-code"],
)
def test_batch_jacobian_matches_float64_finite_differences(build, shape, rng):
    keras.utils.set_random_seed(3)
    encoder = build()
    x = rng.random(shape)
    expected = finite_difference_norm(encoder, x)
    actual = contractive_penalty(encoder, x, method="batch_jacobian")
    assert actual.shape == (shape[0],)
    # Central differences in float64 with eps=1e-6 are accurate to about 1e-8 here.
    assert relative_error(actual, expected) < 1e-6


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


def test_unknown_method_is_rejected():
    encoder = dense_encoder([4, 2])
    with pytest.raises(ValueError, match=r"method='jacobian'.*\['auto', 'batch_jacobian'"):
        contractive_penalty(encoder, np.zeros((1, 4), "float32"), method="jacobian")


@pytest.mark.parametrize(
    "argument, value", [("num_projections", 0), ("probe_distribution", "uniform")]
)
def test_bad_hutchinson_arguments_are_rejected(argument, value):
    encoder = dense_encoder([4, 2])
    with pytest.raises(ValueError, match=argument):
        contractive_penalty(encoder, np.zeros((1, 4), "float32"), "hutchinson", **{argument: value})


def rademacher_variance(jacobian: np.ndarray) -> np.ndarray:
    """Per-sample variance of one Rademacher probe's ‖Jv‖²: 2(‖A‖²_F − Σ A_jj²), A = JᵀJ."""
    gram = np.einsum("bkj,bki->bji", jacobian, jacobian)
    return 2 * (
        np.sum(gram**2, axis=(1, 2)) - np.sum(np.diagonal(gram, axis1=1, axis2=2) ** 2, axis=1)
    )


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_hutchinson_is_unbiased_with_the_predicted_variance(kind, rng):
    if kind == "dense":
        encoder = dense_encoder([10, 6, 4], "tanh")
        x = rng.normal(size=(3, 10)).astype("float32")
    else:
        encoder = user_conv().encoder
        x = rng.random((3, 8, 8, 1)).astype("float32")
    flat_shape = [x.shape[0], -1, int(np.prod(x.shape[1:]))]
    code_jacobian = tf.reshape(_jacobian(encoder, x), flat_shape).numpy().astype(np.float64)
    exact = np.sum(code_jacobian**2, axis=(1, 2))
    variance = rademacher_variance(code_jacobian)
    num_draws, num_projections = 200, 4
    draws = np.stack(
        [
            contractive_penalty(
                encoder, x, "hutchinson", num_projections=num_projections, seed=seed
            ).numpy()
            for seed in range(num_draws)
        ]
    )
    # The mean of 200 independent estimates has standard error sqrt(Var/P/200); a
    # 5-sigma bound fails by chance with probability < 1e-6 per sample.
    standard_error = np.sqrt(variance / num_projections / num_draws)
    assert np.all(np.abs(draws.mean(axis=0) - exact) <= 5 * standard_error + 1e-6 * exact)
    # The sample variance matches the closed-form variance of the estimator within
    # chi-square bounds (200 draws: the ratio lies in [0.7, 1.35] with probability > 0.999).
    ratio = draws.var(axis=0, ddof=1) / (variance / num_projections)
    assert np.all((ratio > 0.7) & (ratio < 1.35)), ratio


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_hutchinson_in_a_graph_equals_eager_for_the_same_probes(kind, rng):
    # Graphs batch the probes with vectorized_map, eager code tiles the input.
    if kind == "dense":
        encoder, x = dense_encoder([10, 6, 4], "tanh"), rng.normal(size=(3, 10))
    else:
        encoder, x = user_conv().encoder, rng.random((3, 8, 8, 1))
    x = tf.constant(x.astype("float32"))
    for method in ("contractive", "hessian"):
        function = contractive_penalty if method == "contractive" else hessian_penalty
        eager = function(encoder, x, "hutchinson", num_projections=3, seed=5)
        graph = tf.function(
            lambda x, f=function: f(encoder, x, "hutchinson", num_projections=3, seed=5)
        )(x)
        np.testing.assert_allclose(graph, eager, rtol=1e-5)


def _jvp_cases():
    dense = dense_encoder([10, 6, 4], "tanh")
    conv = user_conv().encoder
    inputs = keras.Input((6, 6, 2))
    h = keras.layers.Conv1D(3, 2, activation="softplus")(keras.layers.Reshape((12, 6))(inputs))
    h = keras.layers.Activation("sigmoid")(keras.layers.Flatten()(h))
    chain = keras.Model(inputs, keras.layers.Dense(4, activation="elu")(h))
    branch_in = keras.Input((5,))
    branches = keras.layers.Concatenate()(
        [keras.layers.Dense(2, activation="tanh")(branch_in), keras.layers.Dense(2)(branch_in)]
    )
    branched = keras.Model(branch_in, branches)  # Not a chain: the generic path.
    return {
        "dense": (dense, (3, 10)),
        "conv": (conv, (3, 8, 8, 1)),
        "conv1d-reshape-activation": (chain, (3, 6, 6, 2)),
        "branched": (branched, (3, 5)),
    }


@pytest.mark.parametrize("case", ["dense", "conv", "conv1d-reshape-activation", "branched"])
@pytest.mark.parametrize("mode", ["eager", "graph"])
def test_stacked_jvp_equals_jacobian_times_probes(case, mode, rng):
    from keras_cae.penalties import _layerwise_jvp, _stacked_jvp

    encoder, shape = _jvp_cases()[case]
    x = tf.constant(rng.normal(size=shape).astype("float32"))
    probes = tf.constant(rng.normal(size=(3, *shape)).astype("float32"))
    function = _stacked_jvp if mode == "eager" else tf.function(_stacked_jvp, autograph=False)
    code, jvp = function(encoder, x, probes, False)
    jacobian = tf.reshape(_jacobian(encoder, x), [shape[0], -1, int(np.prod(shape[1:]))])
    flat_probes = tf.reshape(probes, [3, shape[0], -1])
    expected = tf.einsum("bkj,pbj->pbk", jacobian, flat_probes)
    np.testing.assert_allclose(jvp, expected, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(code, encoder(x), rtol=1e-6, atol=1e-7)
    layerwise = _layerwise_jvp(encoder, x, tf.reshape(probes, (-1, *shape[1:])), 3, False)
    assert (layerwise is None) == (case == "branched")


def _jacobian(encoder, x):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        code = encoder(x)
    return tape.batch_jacobian(code, x)


@pytest.mark.parametrize("method", ["batch_jacobian", "closed_form", "hutchinson"])
def test_hessian_penalty_matches_direct_computation(method, rng):
    encoder = dense_encoder([9, 7, 4], "sigmoid")
    x = rng.random((5, 9)).astype("float32")
    noise_stddev, num_samples, seed = 0.3, 3, 11
    noise = keras.random.normal((num_samples, 5, 9), stddev=noise_stddev, seed=seed).numpy()
    clean = _jacobian(encoder, x).numpy().astype(np.float64)
    differences = [clean - _jacobian(encoder, x + noise[s]).numpy() for s in range(num_samples)]
    expected = np.mean([np.sum(d**2, axis=(1, 2)) for d in differences], axis=0)
    kwargs = dict(noise_stddev=noise_stddev, num_samples=num_samples, seed=seed)
    if method != "hutchinson":
        actual = hessian_penalty(encoder, x, method, **kwargs)
        assert actual.shape == (5,)
        # The difference of two Jacobians loses about 3 digits to cancellation in float32.
        assert relative_error(actual, expected) < 1e-4
    else:
        draws = np.stack(
            [
                hessian_penalty(
                    encoder, x, method, num_projections=64, **{**kwargs, "seed": s}
                ).numpy()
                for s in range(40)
            ]
        )
        # Different seeds change ε too, so compare with the mean over the same ε draws.
        reference = np.stack(
            [
                hessian_penalty(encoder, x, "closed_form", **{**kwargs, "seed": s}).numpy()
                for s in range(40)
            ]
        )
        spread = np.std(draws - reference, axis=0, ddof=1) / np.sqrt(40)
        assert np.all(np.abs(draws.mean(0) - reference.mean(0)) <= 5 * spread + 1e-7)


def test_hessian_penalty_of_a_linear_encoder_is_zero(rng):
    encoder = dense_encoder([6, 3], "linear")
    x = rng.random((4, 6)).astype("float32")
    for method in ("closed_form", "batch_jacobian"):
        np.testing.assert_allclose(hessian_penalty(encoder, x, method, seed=1), 0.0, atol=1e-10)


@pytest.mark.parametrize(
    "kwargs, argument",
    [({"noise_stddev": 0.0}, "hessian_noise_stddev"), ({"num_samples": 0}, "hessian_samples")],
)
def test_bad_hessian_arguments_are_rejected(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        hessian_penalty(dense_encoder([4, 2]), np.zeros((1, 4), "float32"), **kwargs)


# --------------------------------------------------------------------------------------
# The closed form of one convolution layer.


def conv_encoder(shape, layers, dtype="float64", seed=0):
    """A Sequential encoder of `layers(dtype)` with random (non-zero) biases."""
    keras.utils.set_random_seed(seed)
    encoder = keras.Sequential([keras.Input(shape, dtype=dtype), *layers(dtype)])
    bias_rng = np.random.default_rng(seed)
    for layer in encoder.layers:
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(bias_rng.normal(scale=0.3, size=layer.bias.shape))
    return encoder


def batched_finite_difference_norm(encoder, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """As `finite_difference_norm`, with every perturbed input in one call."""
    batch, size = x.shape[0], int(np.prod(x.shape[1:]))
    steps = np.eye(size).reshape(size, 1, *x.shape[1:]) * eps
    perturbed = np.concatenate([x[np.newaxis] + steps, x[np.newaxis] - steps])
    codes = np.asarray(encoder(perturbed.reshape(-1, *x.shape[1:]))).reshape(2, size, batch, -1)
    return np.sum(((codes[0] - codes[1]) / (2 * eps)) ** 2, axis=(0, 2))


def _conv(rank, filters, kernel, activation, dtype, **kwargs):
    kind = {1: keras.layers.Conv1D, 2: keras.layers.Conv2D, 3: keras.layers.Conv3D}[rank]
    return kind(filters, kernel, activation=activation, dtype=dtype, **kwargs)


FIRST = {"data_format": "channels_first"}
# (input shape, layers for a dtype): every padding, strides, dilation, groups and data
# format, each with another activation. On CPU, TensorFlow runs channels_first float64
# convolutions only through XLA, which Keras uses for grouped ones: the channels_first
# cases are grouped. "quirk" has as many filters as its last spatial size (see
# `keras_cae._closed_form._add_bias`).
CONV_CASES = {
    "1d-valid": ((7, 2), lambda d: [_conv(1, 3, 3, "tanh", d)]),
    "1d-same-stride-groups": (
        (9, 4),
        lambda d: [_conv(1, 4, 3, "sigmoid", d, padding="same", strides=2, groups=2)],
    ),
    "1d-causal-dilated": (
        (8, 2),
        lambda d: [_conv(1, 3, 3, "relu", d, padding="causal", dilation_rate=2)],
    ),
    "1d-causal-stride-first": (
        (2, 9),
        lambda d: [_conv(1, 4, 2, "elu", d, padding="causal", strides=2, groups=2, **FIRST)],
    ),
    "1d-same-dilated-first-linear": (
        (4, 7),
        lambda d: [_conv(1, 2, 3, "linear", d, padding="same", dilation_rate=2, groups=2, **FIRST)],
    ),
    "2d-valid-rect-dilated": (
        (6, 5, 1),
        lambda d: [_conv(2, 3, (3, 2), "sigmoid", d, dilation_rate=(1, 2))],
    ),
    "2d-same-stride-groups": (
        (5, 5, 4),
        lambda d: [_conv(2, 4, 3, "tanh", d, padding="same", strides=2, groups=2)],
    ),
    "2d-first-rect-stride": (
        (2, 6, 5),
        lambda d: [
            _conv(2, 4, 2, "softplus", d, padding="same", strides=(2, 1), groups=2, **FIRST)
        ],
    ),
    "2d-first-quirk": (
        (2, 7, 7),
        lambda d: [_conv(2, 4, 3, "gelu", d, padding="same", strides=2, groups=2, **FIRST)],
    ),
    "3d-same-stride": (
        (4, 3, 4, 1),
        lambda d: [_conv(3, 2, 2, "tanh", d, padding="same", strides=2)],
    ),
    "reshape-conv-flatten-activation-dropout": (
        (12,),
        lambda d: [
            keras.layers.Reshape((4, 3, 1), dtype=d),
            _conv(2, 2, 2, "linear", d, padding="same"),
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
        (6, 2), lambda d: [_conv(1, 3, 3, "sigmoid", d, padding="same", strides=2)]
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


def test_conv_hessian_penalty_matches_direct_computation(rng):
    # CAE+H: E_ε ‖J(x) − J(x + ε)‖², with the same ε as hessian_penalty draws.
    encoder = conv_encoder(
        (7, 7, 2), lambda d: [_conv(2, 4, 3, "tanh", d, padding="same", strides=2)]
    )
    x = rng.normal(size=(3, 7, 7, 2))
    noise = keras.random.normal((2, 3, 7, 7, 2), stddev=0.3, seed=5).numpy()
    clean = _jacobian(encoder, x).numpy()
    expected = np.mean(
        [
            np.sum((clean - _jacobian(encoder, x + n).numpy()) ** 2, axis=(1, 2, 3, 4, 5, 6))
            for n in noise
        ],
        axis=0,
    )
    actual = hessian_penalty(encoder, x, "closed_form", noise_stddev=0.3, num_samples=2, seed=5)
    assert relative_error(actual, expected) < 1e-4


def test_causal_conv1d_hutchinson_propagates_the_probes_exactly(rng):
    from keras_cae.penalties import _stacked_jvp

    encoder = conv_encoder(
        (8, 2), lambda d: [_conv(1, 3, 3, "tanh", d, padding="causal", dilation_rate=2)]
    )
    x = tf.constant(rng.normal(size=(2, 8, 2)))
    probes = tf.constant(rng.normal(size=(3, 2, 8, 2)))
    code, jvp = _stacked_jvp(encoder, x, probes, False)
    jacobian = tf.reshape(_jacobian(encoder, x), [2, -1, 16])
    expected = tf.einsum("bkj,pbj->pbk", jacobian, tf.reshape(probes, [3, 2, -1]))
    np.testing.assert_allclose(jvp, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(code, encoder(x), rtol=1e-12)


@pytest.mark.parametrize(
    "layers, training, reason",
    [
        (
            lambda d: [_conv(2, 2, 3, "tanh", d), keras.layers.Flatten(), keras.layers.Dense(3)],
            False,
            r"layer 'dense\w*' \(Dense\) follows the Conv2D layer",
        ),
        (
            lambda d: [_conv(2, 2, 3, "relu", d), _conv(2, 2, 2, "tanh", d)],
            False,
            r"\(Conv2D\) follows the Conv2D layer",
        ),
        (lambda d: [_conv(2, 2, 3, "softmax", d)], False, "not element-wise"),
        (
            lambda d: [_conv(2, 2, 3, "tanh", d), keras.layers.Dropout(0.2)],
            True,
            "random in training",
        ),
        (
            lambda d: [_conv(2, 2, 3, "tanh", d), keras.layers.BatchNormalization()],
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
