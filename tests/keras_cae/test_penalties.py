"""`keras_cae.penalties`: the contractive penalty computed exactly (``batch_jacobian``,
and ``auto``) against the paper's formula in NumPy and float64 central differences, the
method names it accepts, and the CAE+H penalty (`hessian_penalty`) against a direct
computation. The closed form has its own tests in `test_closed_form.py`, the Hutchinson
estimate in `test_hutchinson.py`.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_cae import contractive_penalty, hessian_penalty
from tests._jacobians import (
    conv_encoder,
    conv_layer,
    dense_encoder,
    finite_difference_norm,
    relative_error,
    tape_jacobian,
)


def test_single_sigmoid_layer_matches_paper_closed_form(rng):
    # Rifai et al. (ICML 2011), section 4 (unnumbered):
    # ‖J‖² = Σ_k (h_k(1−h_k))² Σ_j W_jk², computed in NumPy.
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


def test_unknown_method_is_rejected():
    encoder = dense_encoder([4, 2])
    with pytest.raises(ValueError, match=r"method='jacobian'.*\['auto', 'batch_jacobian'"):
        contractive_penalty(encoder, np.zeros((1, 4), "float32"), method="jacobian")


# --------------------------------------------------------------------------------------
# CAE+H: the penalty on the change of the Jacobian, E_ε ‖J(x) − J(x + ε)‖².


@pytest.mark.parametrize("method", ["batch_jacobian", "closed_form", "hutchinson"])
def test_hessian_penalty_matches_direct_computation(method, rng):
    encoder = dense_encoder([9, 7, 4], "sigmoid")
    x = rng.random((5, 9)).astype("float32")
    noise_stddev, num_samples, seed = 0.3, 3, 11
    noise = keras.random.normal((num_samples, 5, 9), stddev=noise_stddev, seed=seed).numpy()
    clean = tape_jacobian(encoder, x).numpy().astype(np.float64)
    differences = [clean - tape_jacobian(encoder, x + noise[s]).numpy() for s in range(num_samples)]
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


def test_conv_hessian_penalty_matches_direct_computation(rng):
    # CAE+H: E_ε ‖J(x) − J(x + ε)‖², with the same ε as hessian_penalty draws.
    encoder = conv_encoder(
        (7, 7, 2), lambda d: [conv_layer(2, 4, 3, "tanh", d, padding="same", strides=2)]
    )
    x = rng.normal(size=(3, 7, 7, 2))
    noise = keras.random.normal((2, 3, 7, 7, 2), stddev=0.3, seed=5).numpy()
    clean = tape_jacobian(encoder, x).numpy()
    expected = np.mean(
        [
            np.sum((clean - tape_jacobian(encoder, x + n).numpy()) ** 2, axis=(1, 2, 3, 4, 5, 6))
            for n in noise
        ],
        axis=0,
    )
    actual = hessian_penalty(encoder, x, "closed_form", noise_stddev=0.3, num_samples=2, seed=5)
    assert relative_error(actual, expected) < 1e-4
