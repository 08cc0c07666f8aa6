"""Reloading saved models, whatever the order of `import keras` and `import keras_cae`."""

from __future__ import annotations

import os
from typing import Any

import keras

__all__ = ["load_model"]


def load_model(path: str | os.PathLike[str], **kwargs: Any) -> keras.Model:
    """Loads a `.keras` file saved from a keras-cae model, as `keras.models.load_model`.

    `keras.models.load_model` finds `ContractiveAutoencoder` and `TiedDecoder` once
    their modules have registered them with Keras; ``import keras_cae`` arranges that
    for when Keras is imported, without importing TensorFlow itself. This function
    registers them first, explicitly, so it needs no import hook and works in every
    import order.

    Args:
        path: the `.keras` file.
        **kwargs: passed to `keras.models.load_model` (`custom_objects`, `compile`,
            `safe_mode`).

    Returns:
        The model, compiled and with its optimizer state when it was saved so.

    Example:

    >>> import os, tempfile
    >>> import keras_cae
    >>> path = os.path.join(tempfile.mkdtemp(), "model.keras")
    >>> keras_cae.dense_autoencoder(8, 2).save(path)
    >>> type(keras_cae.load_model(path)).__name__
    'ContractiveAutoencoder'
    """
    import keras_cae

    keras_cae._load_training_modules()
    return keras.models.load_model(path, **kwargs)
