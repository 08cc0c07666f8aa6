"""A custom convolutional encoder on image-shaped data (the digits as 8×8×1 images).

`penalty="auto"` picks the exact `batch_jacobian` method for a conv encoder; the
penalty sums the squared Jacobian over every image axis. `"hutchinson"` is the
cheaper stochastic alternative for larger images.

    python examples/conv_encoder.py --epochs 20
"""

from __future__ import annotations

import argparse

import keras

from keras_cae import ContractiveAutoencoder
from keras_cae.data import load_digits


def build(code_size: int = 16, penalty: str = "auto") -> ContractiveAutoencoder:
    layers = keras.layers
    encoder = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            layers.Conv2D(8, 3, strides=2, padding="same", activation="relu"),
            layers.Flatten(),
            layers.Dense(code_size, activation="sigmoid"),
        ],
        name="encoder",
    )
    decoder = keras.Sequential(
        [
            keras.Input((code_size,)),
            layers.Dense(4 * 4 * 8, activation="relu"),
            layers.Reshape((4, 4, 8)),
            layers.Conv2DTranspose(1, 3, strides=2, padding="same", activation="sigmoid"),
        ],
        name="decoder",
    )
    return ContractiveAutoencoder(encoder, decoder, contractive_weight=0.003, penalty=penalty)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--penalty", default="auto")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    images = load_digits().x.reshape(-1, 8, 8, 1)
    model = build(penalty=args.penalty)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy")
    print(f"penalty method: {model.penalty_method if model.built else '(resolved at build)'}")
    model.fit(images[:1500], epochs=args.epochs, batch_size=64, validation_split=0.1, verbose=2)
    logs = model.evaluate(images[1500:], verbose=0, return_dict=True)
    print(f"held-out: {logs}; penalty method: {model.penalty_method}")
    return logs


if __name__ == "__main__":
    main()
