"""`keras_cae._hutchinson` and ``method="hutchinson"``: the estimate of ‖J_f(x)‖²_F is
unbiased with the variance the Rademacher probes predict, the same in a graph as in eager
code, and its Jacobian-vector products equal the Jacobian times the probes.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_cae import contractive_penalty, hessian_penalty
from tests._jacobians import conv_encoder, conv_layer, dense_encoder, tape_jacobian
from tests._variants import user_conv


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
    code_jacobian = tf.reshape(tape_jacobian(encoder, x), flat_shape).numpy().astype(np.float64)
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
    jacobian = tf.reshape(tape_jacobian(encoder, x), [shape[0], -1, int(np.prod(shape[1:]))])
    flat_probes = tf.reshape(probes, [3, shape[0], -1])
    expected = tf.einsum("bkj,pbj->pbk", jacobian, flat_probes)
    np.testing.assert_allclose(jvp, expected, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(code, encoder(x), rtol=1e-6, atol=1e-7)
    layerwise = _layerwise_jvp(encoder, x, tf.reshape(probes, (-1, *shape[1:])), 3, False)
    assert (layerwise is None) == (case == "branched")


def test_causal_conv1d_hutchinson_propagates_the_probes_exactly(rng):
    from keras_cae.penalties import _stacked_jvp

    encoder = conv_encoder(
        (8, 2), lambda d: [conv_layer(1, 3, 3, "tanh", d, padding="causal", dilation_rate=2)]
    )
    x = tf.constant(rng.normal(size=(2, 8, 2)))
    probes = tf.constant(rng.normal(size=(3, 2, 8, 2)))
    code, jvp = _stacked_jvp(encoder, x, probes, False)
    jacobian = tf.reshape(tape_jacobian(encoder, x), [2, -1, 16])
    expected = tf.einsum("bkj,pbj->pbk", jacobian, tf.reshape(probes, [3, 2, -1]))
    np.testing.assert_allclose(jvp, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(code, encoder(x), rtol=1e-12)
