"""Mixed precision: penalties in float32, loss scaling, and training without NaN.

Every mixed-precision result is compared with the same model in float32 (same
weights). Tolerances: float16 keeps 11 significant bits (relative error 2**-11 ≈ 5e-4
per rounding), bfloat16 8 bits (2**-8 ≈ 4e-3); a few roundings through a layer or two
stay within 1e-2 and 3e-2 respectively.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_cae import contractive_penalty, dense_autoencoder

TOLERANCE = {"mixed_float16": 1e-2, "mixed_bfloat16": 3e-2}


@pytest.fixture
def policy(request: pytest.FixtureRequest):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(request.param)
    try:
        yield request.param
    finally:
        keras.config.set_dtype_policy(previous)


def _pair(units, activation="sigmoid", scale=1.0, **kwargs):
    """A model under the current (mixed) policy and a float32 twin with its weights."""
    model = dense_autoencoder(16, units, activation=activation, seed=0, **kwargs)
    weights = [w * scale if w.ndim == 2 else w for w in model.get_weights()]
    model.set_weights(weights)
    reference = dense_autoencoder(
        16, units, activation=activation, seed=0, dtype="float32", **kwargs
    )
    reference.set_weights(weights)
    return model, reference


def _x(rows=32):
    return np.random.default_rng(1).random((rows, 16)).astype("float32")


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"], indirect=True)
@pytest.mark.parametrize("method", ["closed_form", "batch_jacobian", "hutchinson"])
def test_penalty_matches_float32(policy: str, method: str) -> None:
    model, reference = _pair([8, 4])
    assert model.encoder.compute_dtype != "float32"
    x = _x()
    mixed = contractive_penalty(model.encoder, x, method=method, seed=3)
    exact = contractive_penalty(reference.encoder, x, method=method, seed=3)
    assert mixed.dtype == tf.float32
    np.testing.assert_allclose(mixed, exact, rtol=TOLERANCE[policy])


@pytest.mark.parametrize("policy", ["mixed_float16"], indirect=True)
@pytest.mark.parametrize("method", ["closed_form", "batch_jacobian"])
@pytest.mark.parametrize("scale", [2e-4, 300.0])
def test_float16_penalty_does_not_underflow_or_overflow(
    policy: str, method: str, scale: float
) -> None:
    """Jacobian entries ~1e-4 square to ~1e-8, below float16's smallest subnormal (6e-8);
    entries ~300 square to ~9e4, above its largest value (65504). The penalty squares
    in float32, so it still matches the float32 model."""
    model, reference = _pair([4], activation="linear", scale=scale)
    x = _x(8)
    mixed = contractive_penalty(model.encoder, x, method=method)
    exact = contractive_penalty(reference.encoder, x, method=method)
    np.testing.assert_allclose(mixed, exact, rtol=TOLERANCE[policy])
    # Control: squaring the same Jacobian in float16 is wrong (0 or inf), so the check
    # above is a real one.
    jacobian = reference.encoder.layers[-1].kernel.numpy().T  # Linear: J = Wᵀ.
    with np.errstate(over="ignore"):
        naive = np.sum(np.square(jacobian.astype(np.float16)), dtype=np.float16)
    assert naive == 0 or not np.isfinite(naive) or abs(naive - exact[0]) > 0.1 * exact[0]


@pytest.mark.parametrize("policy", ["mixed_float16"], indirect=True)
def test_loss_scaling_gives_the_float32_update(policy: str) -> None:
    """One SGD step: with dynamic loss scaling (2**15) undone, the weight change equals
    the float32 one; without unscaling it would be 32768 times larger."""
    model, reference = _pair([8], hessian_weight=0.5)
    for m in (model, reference):
        m.compile(optimizer=keras.optimizers.SGD(0.1))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert float(model.optimizer.scale_loss(1.0)) == 2.0**15
    before = reference.get_weights()
    x = _x()
    model.fit(x, batch_size=32, epochs=1, shuffle=False, verbose=0)
    reference.fit(x, batch_size=32, epochs=1, shuffle=False, verbose=0)
    for start, mixed, exact in zip(
        before, model.get_weights(), reference.get_weights(), strict=True
    ):
        assert mixed.dtype == np.float32  # Master weights stay float32.
        np.testing.assert_allclose(mixed - start, exact - start, rtol=0.05, atol=1e-5)
    assert float(model.optimizer.scale_loss(1.0)) == 2.0**15  # No overflow, no skipped step.


CAE_H = {"penalty": "closed_form", "hessian_weight": 0.5}
DAE = {"contractive_weight": 0.0, "corruption": "masking", "corruption_level": 0.2}


@pytest.mark.parametrize(
    "policy, kwargs",
    [
        ("mixed_float16", CAE_H),
        ("mixed_float16", {"penalty": "hutchinson"}),
        ("mixed_bfloat16", {"penalty": "batch_jacobian"}),
        pytest.param("mixed_float16", {"penalty": "batch_jacobian"}, marks=pytest.mark.slow),
        pytest.param("mixed_float16", DAE, marks=pytest.mark.slow),
        pytest.param("mixed_bfloat16", CAE_H, marks=pytest.mark.slow),
    ],
    indirect=["policy"],
)
def test_training_is_finite_and_tracks_float32(policy: str, kwargs: dict) -> None:
    model, reference = _pair([8], **kwargs)
    x = _x(64)
    # Two epochs of four steps; loss scaling's first steps included.
    mixed = model.fit(x, batch_size=16, epochs=2, shuffle=False, verbose=0).history
    exact = reference.fit(x, batch_size=16, epochs=2, shuffle=False, verbose=0).history
    assert all(np.isfinite(w).all() for w in model.get_weights())
    for name, values in exact.items():
        assert np.isfinite(mixed[name]).all(), name
        np.testing.assert_allclose(mixed[name], values, rtol=5 * TOLERANCE[policy], err_msg=name)
