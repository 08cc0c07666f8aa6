"""Train a contractive auto-encoder on the bundled digits with `fit` and callbacks.

python examples/train_digits.py --epochs 60 --out runs/example.keras
"""

from __future__ import annotations

import argparse

import keras
import numpy as np

import keras_cae
from keras_cae.data import load_digits


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--out", default=None, help="where to save the .keras model")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    x = load_digits().x  # (1797, 64), pixels scaled to [0, 1]
    x_train, x_test = x[:1500], x[1500:]

    model = keras_cae.dense_autoencoder(
        input_dim=64, hidden_units=64, contractive_weight=0.003, learning_rate=3e-3, seed=0
    )
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=5, restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=3),
    ]
    model.fit(
        x_train,
        validation_split=0.1,
        epochs=args.epochs,
        batch_size=32,
        callbacks=callbacks,
        verbose=2,
    )
    logs = model.evaluate(x_test, verbose=0, return_dict=True)
    codes = np.asarray(model.encode(x_test))
    print(f"held-out: {logs}; codes {codes.shape}")
    if args.out:
        model.save(args.out)
    return logs


if __name__ == "__main__":
    main()
