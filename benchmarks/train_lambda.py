"""MNIST: held-out reconstruction error after N epochs, plain auto-encoder against CAEs.

The measurement behind `keras-cae train`'s λ for 28×28 images in the Keras layout
(`keras_cae.train_config.MNIST_CONTRACTIVE_WEIGHT`): a Dense 784 → 64 sigmoid
auto-encoder (Adam 3e-3, batch 32, seed 0, the CLI's settings) is fit on the first
50,000 training images for `--epochs`, once per λ; the MSE and mean ‖J_f(x)‖²_F
(closed form) are measured on the 10,000 official test images.

Usage::

    nice -n 10 python benchmarks/train_lambda.py --epochs 10 --weights 0,0.001,0.003
"""

from __future__ import annotations

import argparse
import json
import os
import time

import keras
import numpy as np

import keras_cae
from keras_cae.data import load_mnist_npz
from keras_cae.penalties import contractive_penalty

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "mnist.npz"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--weights", default="0,0.001,0.003")
    parser.add_argument(
        "--out", default=os.path.join(ROOT, "benchmarks", "results", "train_lambda.json")
    )
    args = parser.parse_args()
    data = load_mnist_npz(args.data)
    x_fit = data.x[:50_000].reshape(50_000, -1)
    x_test = data.x_test.reshape(len(data.x_test), -1)
    rows = []
    for weight in (float(w) for w in args.weights.split(",")):
        keras.utils.set_random_seed(0)
        started = time.perf_counter()
        model = keras_cae.dense_autoencoder(
            784, hidden_units=64, contractive_weight=weight, learning_rate=3e-3, seed=0
        )
        model.fit(x_fit, epochs=args.epochs, batch_size=32, verbose=0)
        mse = float(np.mean((model.predict(x_test, batch_size=512, verbose=0) - x_test) ** 2))
        squared = np.concatenate(
            [
                np.asarray(
                    contractive_penalty(model.encoder, x_test[i : i + 1000], method="closed_form")
                )
                for i in range(0, len(x_test), 1000)
            ]
        )
        rows.append(
            {
                "lambda": weight,
                "test_mse": round(mse, 5),
                "test_mean_jacobian_frobenius_sq": round(float(squared.mean()), 3),
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    plain = next((r["test_mse"] for r in rows if r["lambda"] == 0), None)
    print(f"\n{'λ':>7} {'test MSE':>9} {'× AE':>6} {'‖J‖²_F':>8}")
    for row in rows:
        ratio = f"{row['test_mse'] / plain:6.2f}" if plain else "     -"
        print(
            f"{row['lambda']:>7g} {row['test_mse']:>9.5f} {ratio} "
            f"{row['test_mean_jacobian_frobenius_sq']:>8.3f}"
        )
    report = {"benchmark": "train_lambda", "epochs": args.epochs, "train_rows": 50_000,
              "test_rows": int(len(x_test)), "results": rows}  # fmt: skip
    with open(args.out + ".tmp", "w") as handle:
        json.dump(report, handle, indent=2)
    os.replace(args.out + ".tmp", args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
