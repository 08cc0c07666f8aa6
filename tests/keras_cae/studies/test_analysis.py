"""Tests of keras_cae.studies.analysis and keras_cae.studies.plots against independent references.

References: NumPy float64 SVDs of the weight matrix (linear encoders), the closed form
``J = diag(σ′(Wᵀx + b)) Wᵀ`` of one Dense layer, and float64 NumPy evaluations of the
encoder function for the contraction ratio.
"""

from __future__ import annotations

import os
import stat
import sys

import keras
import numpy as np
import pytest

from keras_cae import dense_autoencoder
from keras_cae.studies import analysis, plots

RNG = np.random.default_rng(1234)


def dense_encoder(
    kernel: np.ndarray,
    bias: np.ndarray | None = None,
    activation: str = "linear",
    input_shape: tuple[int, ...] | None = None,
) -> keras.Sequential:
    """One Dense layer with the given weights (optionally after a Flatten of image inputs)."""
    d, k = kernel.shape
    layers: list = [keras.Input(input_shape or (d,))]
    if input_shape is not None:
        layers.append(keras.layers.Flatten())
    dense = keras.layers.Dense(k, activation=activation, use_bias=bias is not None)
    encoder = keras.Sequential([*layers, dense])
    dense.set_weights(
        [kernel.astype("float32")] + ([bias.astype("float32")] if bias is not None else [])
    )
    return encoder


def sigmoid(a: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-a))


# ------------------------------------------------------------------------------------------
# Jacobian and spectrum.


def test_linear_spectrum_is_the_singular_values_of_the_kernel():
    kernel = RNG.normal(size=(7, 4))
    encoder = dense_encoder(kernel, bias=RNG.normal(size=4))
    x = RNG.random((5, 7))
    spectrum = analysis.jacobian_spectrum(encoder, x)
    expected = np.linalg.svd(kernel.astype("float32").astype(np.float64), compute_uv=False)
    assert spectrum.shape == (5, 4)
    # The Jacobian of a linear layer is its float32 kernel, copied exactly by autodiff.
    np.testing.assert_allclose(spectrum, np.tile(expected, (5, 1)), rtol=1e-10)


def test_sigmoid_jacobian_and_spectrum_match_the_closed_form():
    kernel, bias = RNG.normal(size=(6, 3)), RNG.normal(size=3)
    encoder = dense_encoder(kernel, bias, activation="sigmoid")
    x = RNG.random((9, 6)).astype("float32")
    k32, b32 = (
        kernel.astype("float32").astype(np.float64),
        bias.astype("float32").astype(np.float64),
    )
    s = sigmoid(x.astype(np.float64) @ k32 + b32)
    expected = (s * (1 - s))[:, :, None] * k32.T[None]  # J = diag(σ′) Wᵀ, (batch, 3, 6)
    # float32 forward pass: relative error a few float32 ulps.
    np.testing.assert_allclose(analysis.jacobian(encoder, x), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        analysis.jacobian_spectrum(encoder, x, batch_size=4),
        np.linalg.svd(expected, compute_uv=False),
        rtol=1e-5,
    )
    # ‖J‖_F two ways: the closed-form penalty and the SVD of the autodiff Jacobian.
    np.testing.assert_allclose(
        analysis.jacobian_norm(encoder, x, batch_size=2),
        np.sqrt((np.linalg.svd(expected, compute_uv=False) ** 2).sum(axis=1)),
        rtol=1e-5,
    )


def test_spectrum_of_a_non_dense_encoder_uses_autodiff():
    # A Conv encoder has no closed form; its Jacobian must still match ‖J‖_F from the penalty.
    encoder = keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Conv2D(2, 3, activation="tanh"),
            keras.layers.Flatten(),
        ]
    )
    x = RNG.random((3, 6, 6, 1))
    spectrum = analysis.jacobian_spectrum(encoder, x)
    assert spectrum.shape == (3, 32)
    assert np.all(np.diff(spectrum, axis=1) <= 0)
    np.testing.assert_allclose(
        np.sqrt((spectrum**2).sum(axis=1)), analysis.jacobian_norm(encoder, x), rtol=1e-5
    )


# ------------------------------------------------------------------------------------------
# Contraction curve.


def test_scaled_orthogonal_encoder_has_a_flat_curve_at_its_scale():
    q, _ = np.linalg.qr(RNG.normal(size=(5, 5)))
    encoder = dense_encoder(2.5 * q, bias=RNG.normal(size=5))
    x = RNG.random((6, 5))
    curve = analysis.contraction_curve(encoder, x, [1e-2, 1.0, 100.0], num_directions=3)
    # ‖2.5 Qᵀu‖ = 2.5 for every unit u. float32 codes of size ~3 differ by ~2.5 r, so the
    # relative round-off is ~1e-7·3 / (2.5·1e-2) ≈ 1e-5 at the smallest radius.
    np.testing.assert_allclose(curve, 2.5, rtol=1e-4)


def test_linear_encoder_curve_is_flat_and_equals_mean_norm_of_kernel_times_direction():
    kernel = RNG.normal(size=(8, 3))
    encoder = dense_encoder(kernel)
    x = RNG.random((4, 8))
    radii = [0.05, 0.5, 5.0]
    curve = analysis.contraction_curve(encoder, x, radii, num_directions=5, seed=7)
    u = analysis.random_directions(x.shape, 5, seed=7)
    expected = np.linalg.norm(u @ kernel.astype("float32"), axis=-1).mean()
    np.testing.assert_allclose(curve, expected, rtol=1e-4)
    assert np.ptp(curve) < 1e-4 * expected


def test_nonlinear_curve_matches_float64_evaluation():
    kernel, bias = RNG.normal(size=(6, 4)), RNG.normal(size=4)
    encoder = dense_encoder(kernel, bias, activation="tanh")
    x = RNG.random((10, 6)).astype("float32")
    radii = np.array([0.01, 0.1, 1.0, 10.0])
    curve = analysis.contraction_curve(encoder, x, radii, num_directions=4, seed=3, batch_size=3)
    u = analysis.random_directions(x.shape, 4, seed=3)
    k32, b32 = (
        kernel.astype("float32").astype(np.float64),
        bias.astype("float32").astype(np.float64),
    )
    code = np.tanh(x @ k32 + b32)
    expected = [
        np.linalg.norm(np.tanh((x + r * u) @ k32 + b32) - code, axis=-1).mean() / r for r in radii
    ]
    np.testing.assert_allclose(curve, expected, rtol=1e-4)
    # A saturating encoder contracts far away: tanh codes move by at most 2 per unit.
    assert curve[-1] <= 2 * np.sqrt(4) / radii[-1]
    assert curve[-1] < curve[0]


def test_random_directions_are_unit_and_reproducible():
    u = analysis.random_directions((3, 4, 4), 2, seed=0)
    assert u.shape == (2, 3, 4, 4)
    np.testing.assert_allclose(np.linalg.norm(u.reshape(2, 3, -1), axis=-1), 1.0)
    np.testing.assert_array_equal(u, analysis.random_directions((3, 4, 4), 2, seed=0))


# ------------------------------------------------------------------------------------------
# Tangents.


def test_linear_tangents_are_the_right_singular_vectors_reshaped_to_images():
    kernel = RNG.normal(size=(16, 5))
    encoder = dense_encoder(kernel, input_shape=(4, 4))
    x = RNG.random((3, 4, 4))
    tangents = analysis.tangent_directions(encoder, x, k=3)
    assert tangents.shape == (3, 3, 4, 4)
    # J = Wᵀ; its right singular vectors are the left singular vectors of W.
    left, values, _ = np.linalg.svd(kernel.astype("float32").astype(np.float64))
    assert len(set(np.round(values, 6))) == len(values)  # Distinct: vectors are unique up to sign.
    flat = tangents.reshape(3, 3, 16)
    for sample in range(3):
        for i in range(3):
            np.testing.assert_allclose(abs(flat[sample, i] @ left[:, i]), 1.0, rtol=1e-6)
            # Sign convention: the largest-magnitude component is positive.
            assert flat[sample, i, np.argmax(np.abs(flat[sample, i]))] > 0


def test_tangent_of_a_nonlinear_encoder_maximises_the_jacobian_response():
    kernel, bias = RNG.normal(size=(6, 3)), RNG.normal(size=3)
    encoder = dense_encoder(kernel, bias, activation="sigmoid")
    x = RNG.random((4, 6))
    tangent = analysis.tangent_directions(encoder, x, k=1)[:, 0]
    jac = analysis.jacobian(encoder, x)
    spectrum = analysis.jacobian_spectrum(encoder, x)
    # ‖J v₁‖ = s₁, the largest singular value.
    np.testing.assert_allclose(
        np.linalg.norm(np.einsum("bki,bi->bk", jac, tangent), axis=1), spectrum[:, 0], rtol=1e-8
    )


# ------------------------------------------------------------------------------------------
# A trained CAE is more contractive than the same AE.


def test_cae_mean_jacobian_norm_is_below_the_same_autoencoders():
    # Points on a 2-D manifold embedded in 16 dimensions.
    z = RNG.normal(size=(320, 2))
    x = sigmoid(z @ RNG.normal(size=(2, 16))).astype("float32")
    train, test = x[:256], x[256:]
    norms = {}
    curves = {}
    for weight in (0.0, 0.1):
        model = dense_autoencoder(16, 8, contractive_weight=weight, learning_rate=1e-2, seed=0)
        model.fit(train, epochs=5, batch_size=32, verbose=0)
        norms[weight] = analysis.jacobian_norm(model.encoder, test).mean()
        curves[weight] = analysis.contraction_curve(model.encoder, test, [0.1, 1.0])
    assert norms[0.1] < 0.5 * norms[0.0], norms
    assert np.all(curves[0.1] < curves[0.0]), curves


# ------------------------------------------------------------------------------------------
# Bad input.


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda e: analysis.jacobian_spectrum(e, np.zeros(4)), "shape"),
        (lambda e: analysis.jacobian_spectrum(e, np.zeros((0, 4))), "at least one sample"),
        (lambda e: analysis.jacobian_spectrum(e, np.full((2, 4), np.nan)), "NaN"),
        (lambda e: analysis.jacobian_spectrum(e, np.zeros((2, 4)), batch_size=0), "batch_size=0"),
        (lambda e: analysis.contraction_curve(e, np.zeros((2, 4)), []), "radii"),
        (lambda e: analysis.contraction_curve(e, np.zeros((2, 4)), [0.1, -1.0]), "radii"),
        (
            lambda e: analysis.contraction_curve(e, np.zeros((2, 4)), [1], num_directions=0),
            "num_directions=0",
        ),
        (
            lambda e: analysis.tangent_directions(e, np.zeros((2, 4)), k=3),
            "at most .* = 2. Received: k=3",
        ),
        (lambda e: analysis.tangent_directions(e, np.zeros((2, 4)), k=1.5), "k=1.5"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(call, match):
    encoder = dense_encoder(RNG.normal(size=(4, 2)))
    with pytest.raises(ValueError, match=match):
        call(encoder)


# ------------------------------------------------------------------------------------------
# Plots.


def read_png(path):
    from matplotlib.image import imread

    with open(path, "rb") as stream:
        assert stream.read(8) == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50
    assert image.std() > 0.01  # Something was drawn.
    return image


def test_plots_write_pngs(tmp_path):
    spectra = {"AE": RNG.random((5, 4)), "CAE": np.hstack([RNG.random((5, 2)), np.zeros((5, 2))])}
    read_png(plots.plot_spectra(spectra, tmp_path / "spectra.png"))
    curves = {"AE": RNG.random((3, 4)), "CAE": RNG.random(4)}
    read_png(plots.plot_contraction_curves([0.1, 0.2, 0.5, 1.0], curves, tmp_path / "c.png"))
    x = RNG.random((3, 64))
    tangents = RNG.normal(size=(3, 2, 64))
    read_png(
        plots.plot_tangents(x, tangents, tmp_path / "t.png", singular_values=RNG.random((3, 5)))
    )
    read_png(
        plots.plot_tangents(
            x.reshape(3, 8, 8, 1), tangents.reshape(3, 2, 8, 8, 1), tmp_path / "t1.png"
        )
    )
    read_png(plots.plot_reconstructions(x, {"AE": x * 0.9, "CAE": x * 0.5}, tmp_path / "r.png"))
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(tmp_path / "c.png").st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "c.png",
        "r.png",
        "spectra.png",
        "t.png",
        "t1.png",
    ]


def test_plots_refuse_to_overwrite_and_check_shapes(tmp_path):
    path = tmp_path / "c.png"
    plots.plot_contraction_curves([0.1, 1.0], {"AE": [1.0, 0.5]}, path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="exists"):
        plots.plot_contraction_curves([0.1, 1.0], {"AE": [2.0, 0.5]}, path)
    assert path.read_bytes() == before
    plots.plot_contraction_curves([0.1, 1.0], {"AE": [2.0, 0.5]}, path, overwrite=True)
    assert path.read_bytes() != before
    with pytest.raises(ValueError, match="3 values per run but there are 2 radii"):
        plots.plot_contraction_curves([0.1, 1.0], {"AE": [1.0, 0.5, 0.2]}, tmp_path / "d.png")
    with pytest.raises(ValueError, match="image_shape"):
        plots.plot_reconstructions(np.zeros((2, 10)), {"AE": np.zeros((2, 10))}, tmp_path / "e.png")
    plots.plot_reconstructions(
        np.zeros((2, 10)), {"AE": np.ones((2, 10))}, tmp_path / "e.png", image_shape=(2, 5)
    )
    with pytest.raises(ValueError, match="should have the shape of `x`"):
        plots.plot_reconstructions(np.zeros((2, 64)), {"AE": np.zeros((3, 64))}, tmp_path / "f.png")
    with pytest.raises(ValueError, match=r"\.png"):
        plots.plot_spectra({"AE": np.ones(3)}, tmp_path / "g.jpg")
    with pytest.raises(ValueError, match="non-empty mapping"):
        plots.plot_spectra({}, tmp_path / "h.png")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_plots_without_matplotlib_name_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(ImportError, match=r"pip install 'keras-cae\[plot\]'"):
        plots.plot_spectra({"AE": np.ones(3)}, tmp_path / "a.png")
