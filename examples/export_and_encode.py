"""Train on the digits, export the encoder (ONNX + SavedModel), encode with onnxruntime.

    python examples/export_and_encode.py --epochs 20 --out exported/digits

The export checks itself against Keras (and fails if they disagree); this script then
encodes the held-out digits with `OnnxEncoder`, the TensorFlow-free runtime a service
would use, and compares the codes with `model.encoder` once more.
"""

from __future__ import annotations

import argparse
import tempfile

import keras
import numpy as np

import keras_cae
from keras_cae import export
from keras_cae.data import load_digits


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", default=None, help="export directory (default: a temp dir)")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    data = load_digits()  # (1797, 64), pixels scaled to [0, 1]
    x_train, x_test = data.x[:1500], data.x[1500:]
    model = keras_cae.dense_autoencoder(64, 32, contractive_weight=0.01, learning_rate=3e-3, seed=0)
    model.fit(x_train, epochs=args.epochs, batch_size=32, verbose=0)

    out = args.out or tempfile.mkdtemp(prefix="keras-cae-export-") + "/digits"
    result = export.export_encoder(
        model,
        out,
        formats=("onnx", "saved_model"),
        overwrite=args.overwrite,
        metadata={"training_data": data.name, "input_scaling": data.scaling},
        probe=x_test[:64],  # Verify on real inputs.
    )
    print(result.summary())

    encoder = export.OnnxEncoder(result.path("onnx"))
    print(f"input {encoder.input_name!r} {encoder.input_shape} -> "
          f"output {encoder.output_name!r} {encoder.output_shape}")  # fmt: skip
    print("metadata:", {k: v for k, v in encoder.metadata.items() if "version" not in k})
    codes = encoder.encode(x_test)
    diff = float(np.abs(codes - model.encoder(x_test).numpy()).max())
    print(f"codes {codes.shape}, max |onnxruntime - keras| = {diff:.2e}")
    return diff


if __name__ == "__main__":
    main()
