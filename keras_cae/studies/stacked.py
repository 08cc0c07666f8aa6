"""Stacked contractive auto-encoders: greedy layer-wise pre-training (the paper's CAE-2).

Rifai et al. (ICML 2011) pre-train a two-layer encoder greedily: section 5 repeats the
one-layer procedure "to stack additional feature-extraction layers on top of the first
one", section 5.1's Table 2 compares CAE-1 with CAE-2 (on the benchmark of Larochelle et
al., 2007, not on full MNIST) and Fig. 3 shows the contraction by depth. Here a one-layer
CAE is trained on the inputs, then a second one-layer CAE on the codes of the first,
each with its own contractive penalty ``λ_k ‖∂h_k/∂h_{k-1}‖²_F``, computed in closed
form. The encoders are then stacked, and usually fine-tuned with labels
(`keras_cae.studies.finetune`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from keras_cae.builders import dense_autoencoder

__all__ = ["stacked_encoder", "layer_seed"]


def layer_seed(seed: int, index: int) -> int:
    """The seed of layer `index` of a stack seeded with `seed` (layer 0 gets `seed` itself)."""
    return seed + 1000 * index


def _per_layer(name: str, value: float | Sequence[float], count: int) -> list[float]:
    values = [value] * count if isinstance(value, (int, float)) else list(value)
    if len(values) != count or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and v >= 0
        for v in values
    ):
        raise ValueError(
            f"`{name}` should be a non-negative number or one per layer ({count}). "
            f"Received: {name}={value!r}"
        )
    return [float(v) for v in values]


def stacked_encoder(
    x: np.ndarray,
    layer_sizes: Sequence[int],
    contractive_weight: float | Sequence[float] = 3e-4,
    epochs: int = 60,
    batch_size: int = 32,
    learning_rate: float = 3e-3,
    activation: str = "sigmoid",
    seed: int = 0,
    return_history: bool = False,
) -> Any:
    """Pre-trains a stacked contractive encoder greedily, one layer at a time.

    Layer ``k`` is the encoder of ``keras_cae.dense_autoencoder(d_{k-1}, layer_sizes[k],
    contractive_weight=λ_k, penalty="closed_form", seed=layer_seed(seed, k))``,
    trained for `epochs` on the codes of layers ``0 .. k-1`` (on `x` for layer 0),
    with ``keras.utils.set_random_seed(layer_seed(seed, k))`` before its fit. So the
    first layer is exactly the one-layer CAE trained alone on `x` with `seed`. The
    reconstruction of layer ``k ≥ 1`` goes through a sigmoid, which fits codes of
    sigmoid layers (values in (0, 1)).

    Args:
        x: training inputs, shape ``(samples, features)``, float32.
        layer_sizes: the width of each encoder layer, e.g. ``[64, 32]``.
        contractive_weight: λ, one for all layers or one per layer. Defaults to `3e-4`.
        epochs: epochs per layer. Defaults to `60`.
        batch_size: Defaults to `32`.
        learning_rate: Adam's learning rate. Defaults to `3e-3`.
        activation: the encoder layers' activation. Defaults to `"sigmoid"`.
        seed: the base seed (see `layer_seed`). Defaults to `0`.
        return_history: also return each layer's `fit` history dict. Defaults to `False`.

    Returns:
        A built ``keras.Sequential`` encoder ``features → layer_sizes[-1]`` (new Dense
        layers holding the pre-trained weights), or ``(encoder, histories)``.

    Raises:
        ValueError: for an invalid argument.

    Example:

    >>> import numpy as np
    >>> from keras_cae.studies.stacked import stacked_encoder
    >>> x = np.random.default_rng(0).random((64, 16)).astype("float32")
    >>> encoder = stacked_encoder(x, [8, 4], epochs=1)
    >>> encoder.output_shape
    (None, 4)
    """
    x = np.asarray(x)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"`x` should have shape (samples, features). Received: shape {x.shape}")
    sizes = list(layer_sizes) if isinstance(layer_sizes, Sequence) else []
    if not sizes or not all(
        isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n > 0 for n in sizes
    ):
        raise ValueError(
            "`layer_sizes` should be a non-empty list of positive integers. "
            f"Received: layer_sizes={layer_sizes!r}"
        )
    weights = _per_layer("contractive_weight", contractive_weight, len(sizes))
    inputs = x.astype(np.float32)
    layers: list[keras.layers.Dense] = []
    histories: list[dict[str, list[float]]] = []
    for index, (size, weight) in enumerate(zip(sizes, weights, strict=True)):
        layer_seed_value = layer_seed(seed, index)
        keras.utils.set_random_seed(layer_seed_value)
        model = dense_autoencoder(
            inputs.shape[1], int(size), activation=activation, contractive_weight=weight,
            penalty="closed_form", learning_rate=learning_rate, seed=layer_seed_value,
        )  # fmt: skip
        history = model.fit(inputs, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0)
        histories.append(history.history)
        trained = model.encoder.layers[-1]
        layer = keras.layers.Dense(int(size), activation, name=f"encoder_{index}")
        layer.build((None, inputs.shape[1]))
        layer.set_weights(trained.get_weights())
        layers.append(layer)
        inputs = np.asarray(model.encoder(inputs, training=False))
    encoder = keras.Sequential([keras.Input((x.shape[1],)), *layers], name="stacked_encoder")
    return (encoder, histories) if return_history else encoder
