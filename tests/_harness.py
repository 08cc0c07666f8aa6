"""Reusable checks for every model variant: config and `.keras` round trips."""

from __future__ import annotations

import json
import os
from typing import Any

import keras
import numpy as np


def assert_config_round_trip(model: keras.Model) -> None:
    """config → object → config gives the same JSON."""
    config = model.get_config()
    clone = type(model).from_config(config)
    assert json.dumps(clone.get_config(), sort_keys=True, default=str) == json.dumps(
        config, sort_keys=True, default=str
    )


def assert_saved_model_round_trip(
    model: keras.Model, x: np.ndarray, directory: str, continue_training: bool = True
) -> keras.Model:
    """`.keras` save → load gives identical outputs, codes and penalty settings."""
    path = os.path.join(directory, "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(
        np.asarray(model.predict(x, verbose=0)), np.asarray(loaded.predict(x, verbose=0))
    )
    np.testing.assert_array_equal(np.asarray(model.encode(x)), np.asarray(loaded.encode(x)))
    for key in ("contractive_weight", "penalty", "hessian_weight", "corruption"):
        assert getattr(loaded, key) == getattr(model, key)
    if continue_training:
        before = [np.array(w) for w in loaded.get_weights()]
        history = loaded.fit(x, epochs=1, batch_size=len(x), verbose=0)
        assert np.isfinite(history.history["loss"][0])
        after = loaded.get_weights()
        assert any(not np.array_equal(a, b) for a, b in zip(before, after))
    return loaded


def tiny_conv_autoencoder(**kwargs: Any) -> keras.Model:
    """A small conv auto-encoder on 8×8×1 images."""
    from keras_cae import ContractiveAutoencoder

    layers = keras.layers
    encoder = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            layers.Conv2D(4, 3, strides=2, padding="same", activation="tanh"),
            layers.Flatten(),
            layers.Dense(6, activation="sigmoid"),
        ],
        name="encoder",
    )
    decoder = keras.Sequential(
        [
            keras.Input((6,)),
            layers.Dense(4 * 4 * 4, activation="relu"),
            layers.Reshape((4, 4, 4)),
            layers.Conv2DTranspose(1, 3, strides=2, padding="same", activation="sigmoid"),
        ],
        name="decoder",
    )
    model = ContractiveAutoencoder(encoder, decoder, **kwargs)
    model.build((None, 8, 8, 1))
    return model
