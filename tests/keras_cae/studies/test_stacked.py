"""`keras_cae.stacked_encoder`: greedy layer-wise pre-training of a stacked CAE."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_cae import dense_autoencoder, penalties
from keras_cae.studies.stacked import layer_seed, stacked_encoder


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).random((64, 12)).astype(np.float32)


def _alone(inputs, units, weight, seed):
    """A one-layer CAE trained alone, as a user would."""
    keras.utils.set_random_seed(seed)
    model = dense_autoencoder(
        inputs.shape[1], units, contractive_weight=weight, learning_rate=3e-3, seed=seed
    )
    model.fit(inputs, epochs=2, batch_size=16, shuffle=True, verbose=0)
    return model


def test_each_layer_is_the_one_layer_cae_trained_alone_on_the_codes_below(x):
    encoder = stacked_encoder(x, [6, 3], [1e-3, 2e-3], epochs=2, batch_size=16, seed=7)
    assert encoder.output_shape == (None, 3)
    first = _alone(x, 6, 1e-3, 7)
    for got, want in zip(encoder.layers[0].get_weights(), first.encoder.get_weights()):
        np.testing.assert_array_equal(got, want)
    codes = np.asarray(first.encoder(x))
    second = _alone(codes, 3, 2e-3, layer_seed(7, 1))
    for got, want in zip(encoder.layers[1].get_weights(), second.encoder.get_weights()):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(
        np.asarray(encoder(x)), np.asarray(second.encoder(codes)), rtol=1e-6, atol=1e-7
    )


def test_every_layer_is_trained_with_the_closed_form_penalty(x, monkeypatch):
    methods = []
    original = penalties.code_and_penalty

    def recording(encoder, inputs, method, **kwargs):
        methods.append((int(inputs.shape[-1]), method))
        return original(encoder, inputs, method, **kwargs)

    monkeypatch.setattr(penalties, "code_and_penalty", recording)
    _, histories = stacked_encoder(x, [5, 4], 1e-3, epochs=1, return_history=True)
    assert {m for _, m in methods} == {"closed_form"}
    assert {width for width, _ in methods} == {12, 5}  # One traced step per layer.
    assert all(h["contractive_loss"][0] > 0 for h in histories)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"layer_sizes": []}, "layer_sizes"),
        ({"layer_sizes": [4, 0]}, "layer_sizes"),
        ({"layer_sizes": [4, 2], "contractive_weight": [0.1]}, "one per layer"),
        ({"layer_sizes": [4], "contractive_weight": -1.0}, "contractive_weight"),
    ],
)
def test_bad_arguments_raise_value_error(x, kwargs, match):
    with pytest.raises(ValueError, match=match):
        stacked_encoder(x, **kwargs)
