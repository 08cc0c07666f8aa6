"""Ready-made contractive auto-encoders."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from keras_cae._checks import positive_int
from keras_cae.layers import TiedDecoder
from keras_cae.model import ContractiveAutoencoder

__all__ = ["dense_autoencoder"]


def dense_autoencoder(
    input_dim: int,
    hidden_units: int | Sequence[int] = 64,
    activation: str = "sigmoid",
    output_activation: str = "sigmoid",
    tied_weights: bool = False,
    contractive_weight: float = 0.1,
    penalty: str = "auto",
    learning_rate: float = 1e-3,
    loss: Any = "mean_squared_error",
    seed: int | None = None,
    **model_kwargs: Any,
) -> ContractiveAutoencoder:
    """Builds and compiles the Dense contractive auto-encoder of Rifai et al. (2011).

    The encoder is ``input_dim → hidden_units[0] → … → hidden_units[-1]`` with
    `activation` on every layer; the decoder mirrors it and ends with
    `output_activation`. The model is built and compiled with Adam, so `fit` works
    at once; call `compile` again to change the optimizer or loss.

    Args:
        input_dim: number of input features.
        hidden_units: code size, or the sizes of several encoder layers (the last is the
            code). Defaults to `64`.
        activation: activation of the encoder layers and hidden decoder layers.
            Defaults to `"sigmoid"`, as in the paper.
        output_activation: activation of the reconstruction. Defaults to `"sigmoid"`,
            for inputs scaled to [0, 1].
        tied_weights: use the transposed encoder kernels in the decoder (``W′ = Wᵀ``).
            Defaults to `False`.
        contractive_weight: λ. Defaults to `0.1`.
        penalty: the penalty method. Defaults to `"auto"` (the exact closed form here).
        learning_rate: Adam's learning rate. Defaults to `1e-3`.
        loss: the reconstruction loss. Defaults to `"mean_squared_error"`.
        seed: seed for the weight initialisers and the model's noise. Defaults to `None`.
        **model_kwargs: passed to `ContractiveAutoencoder` (e.g. `hessian_weight`).

    Returns:
        A built, compiled `ContractiveAutoencoder`.

    Example:

    >>> from keras_cae import dense_autoencoder
    >>> model = dense_autoencoder(64, [32, 16], tied_weights=True)
    >>> model.encoder.output_shape
    (None, 16)
    """
    positive_int("input_dim", input_dim)
    units = [hidden_units] if isinstance(hidden_units, int) else list(hidden_units)
    if not units:
        raise ValueError(
            f"`hidden_units` should be a positive integer or a non-empty list of them. "
            f"Received: hidden_units={hidden_units!r}"
        )
    for size in units:
        positive_int("hidden_units", size)
    for name, value in (("activation", activation), ("output_activation", output_activation)):
        try:
            keras.activations.get(value)
        except ValueError:
            raise ValueError(
                f"`{name}` should name a Keras activation. Received: {name}={value!r}"
            ) from None

    def initializer(offset: int) -> keras.initializers.Initializer:
        return keras.initializers.GlorotUniform(seed=None if seed is None else seed + offset)

    encoder = keras.Sequential(
        [keras.Input((input_dim,))]
        + [
            keras.layers.Dense(
                n, activation, kernel_initializer=initializer(i), name=f"encoder_{i}"
            )
            for i, n in enumerate(units)
        ],
        name="encoder",
    )
    decoder_activations = [activation] * (len(units) - 1) + [output_activation]
    if tied_weights:
        decoder: keras.layers.Layer = TiedDecoder(decoder_activations, name="decoder")
    else:
        sizes = units[-2::-1] + [input_dim]
        decoder = keras.Sequential(
            [keras.Input((units[-1],))]
            + [
                keras.layers.Dense(
                    n, act, kernel_initializer=initializer(100 + i), name=f"decoder_{i}"
                )
                for i, (n, act) in enumerate(zip(sizes, decoder_activations))
            ],
            name="decoder",
        )
    model = ContractiveAutoencoder(
        encoder,
        decoder,
        contractive_weight=contractive_weight,
        penalty=penalty,
        seed=seed,
        **model_kwargs,
    )
    model.build((None, input_dim))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)
    return model
