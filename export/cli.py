"""The `keras-cae export` and `keras-cae encode` subcommands.

`keras_cae.cli` registers the two parser builders below. `keras-cae encode` runs the
onnxruntime `OnnxEncoder` and imports no TensorFlow; `keras-cae export` loads the
Keras model and imports TensorFlow only when it runs.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

# Argument types shared with the other subcommands (keras_cae.cli imports no TensorFlow).
from keras_cae.cli import _positive_float, _positive_int

__all__ = ["add_export_parser", "add_encode_parser", "run_export", "run_encode"]


# ------------------------------------------------------------------------------------------
# keras-cae export


def add_export_parser(subparsers: Any) -> None:
    """Adds `keras-cae export MODEL.keras --out DIR ...`."""
    from export.onnx import DEFAULT_OPSET, SUPPORTED_OPSETS

    parser = subparsers.add_parser(
        "export",
        help="export a trained model's encoder to ONNX and SavedModel, verified",
        description="Export the encoder of a saved model (.keras) to ONNX and a TensorFlow "
        "SavedModel, check both against Keras, and print the parity figures. Reads the "
        "training data name and scaling from metrics.json beside the model, when present.",
    )
    parser.add_argument("model", help="a model saved by `keras-cae train` or `model.save`")
    parser.add_argument("--out", required=True, help="output directory (new or empty)")
    parser.add_argument(
        "--format",
        nargs="+",
        choices=["onnx", "saved_model"],
        default=["onnx", "saved_model"],
        help="formats to write (default: onnx saved_model)",
    )
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=["encoder", "decoder", "autoencoder"],
        default=["encoder"],
        help="what to export (default: encoder)",
    )
    parser.add_argument(
        "--opset",
        type=int,
        choices=list(SUPPORTED_OPSETS),
        default=None,
        metavar="N",
        help=f"ONNX opset, {SUPPORTED_OPSETS[0]} to {SUPPORTED_OPSETS[-1]} "
        f"(default: {DEFAULT_OPSET})",
    )
    parser.add_argument(
        "--tolerance",
        type=_positive_float,
        default=None,
        help="largest allowed max |keras - exported|, times max(1, max |keras|) "
        "(default: 1e-4; 2**-9 for float16 models)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    parser.set_defaults(run=run_export)


def _training_metadata(model_path: str) -> tuple[dict[str, str], str | None]:
    """Reads the data name and scaling from `metrics.json` beside the model, if any."""
    path = os.path.join(os.path.dirname(os.path.abspath(model_path)), "metrics.json")
    if not os.path.isfile(path):
        return {}, None
    try:
        with open(path) as stream:
            metrics = json.load(stream)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: cannot read the training metrics ({error})") from None
    metadata = {}
    if isinstance(metrics, dict):
        for source, target in (("data", "training_data"), ("scaling", "input_scaling")):
            if isinstance(metrics.get(source), str):
                metadata[target] = metrics[source]
    return metadata, metadata.get("training_data")


def run_export(args: argparse.Namespace) -> int:
    """Runs `keras-cae export`; prints the parity table."""
    from keras_cae import _io
    from keras_cae.cli import CliError

    if not os.path.isfile(args.model):
        raise CliError(f"keras-cae export: model file not found: {args.model!r}")
    _io.check_output_dir(args.out, args.overwrite, "--out")
    metadata, data_name = _training_metadata(args.model)
    probe = None
    if data_name == "sklearn-digits":
        # Verify on real inputs when we can rebuild them exactly (they ship with sklearn).
        from keras_cae.data import load_digits

        probe = load_digits().x[:64]

    import keras  # Imports TensorFlow.

    import keras_cae
    from export import _export

    keras_cae.ContractiveAutoencoder  # noqa: B018 - registers the serializable classes.
    try:
        model = keras.models.load_model(args.model)
    except Exception as error:  # Keras raises many types for unreadable files.
        message = " ".join(str(error).split())[:300]
        raise CliError(
            f"keras-cae export: cannot load {args.model!r} as a Keras model: "
            f"{type(error).__name__}: {message}"
        ) from error
    if probe is not None:
        try:
            expected = tuple(getattr(model, "encoder", model).input_shape[1:])
        except (AttributeError, ValueError):  # A layer or subclassed model: no input_shape.
            expected = None
        if probe.shape[1:] != expected:
            probe = None
    try:
        result = _export.export_encoder(
            model,
            args.out,
            formats=args.format,
            opset=args.opset,
            overwrite=args.overwrite,
            parts=args.parts,
            metadata=metadata,
            probe=probe,
            tolerance=args.tolerance,
        )
    except _export.ExportError as error:
        raise CliError(f"keras-cae export: {error}") from error
    print(result.summary())
    print(f"wrote {_export._display_path(result.manifest)}")
    return 0


# ------------------------------------------------------------------------------------------
# keras-cae encode


def add_encode_parser(subparsers: Any) -> None:
    """Adds `keras-cae encode ENCODER.onnx INPUT --out CODES.npy ...`."""
    parser = subparsers.add_parser(
        "encode",
        help="encode an array with an exported ONNX encoder (no TensorFlow)",
        description="Encode the rows of a .npy, .npz (array 'x') or .csv file with an ONNX "
        "encoder in onnxruntime and write the codes as a .npy file.",
    )
    parser.add_argument("encoder", help="an .onnx file written by `keras-cae export`")
    parser.add_argument("input", help="a .npy, .npz or .csv file of inputs, one row per sample")
    parser.add_argument("--out", required=True, help="the .npy file to write the codes to")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument(
        "--batch-size", type=_positive_int, default=1024, help="rows per onnxruntime call"
    )
    parser.add_argument(
        "--threads", type=_positive_int, default=None, help="onnxruntime intra-op threads"
    )
    parser.set_defaults(run=run_encode)


def run_encode(args: argparse.Namespace) -> int:
    """Runs `keras-cae encode`; imports no TensorFlow."""
    from export.runtime import OnnxEncoder
    from keras_cae import _io
    from keras_cae.cli import CliError
    from keras_cae.data import load_array, to_model_input

    out = args.out
    if not out.endswith(".npy"):
        raise CliError(f"keras-cae encode: --out should be a .npy file, got {out!r}")
    if os.path.isdir(out):
        raise CliError(f"keras-cae encode: --out {out!r} is a directory")
    if os.path.exists(out) and not args.overwrite:
        raise CliError(
            f"keras-cae encode: --out {out!r} exists; choose another file or pass --overwrite"
        )
    if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        raise CliError(f"keras-cae encode: the directory of --out {out!r} does not exist")
    encoder = OnnxEncoder(
        args.encoder, intra_op_num_threads=args.threads, batch_size=args.batch_size
    )
    dataset = load_array(args.input)  # Rejects NaN and infinities itself.
    try:
        codes = encoder.encode(to_model_input(dataset.x, encoder.input_shape, args.input))
    except ValueError as error:
        raise CliError(f"keras-cae encode: {args.input}: {error}") from None
    _io.atomic_save_npy(out, codes)
    print(f"wrote codes of shape {codes.shape} ({codes.dtype}) to {out}")
    return 0
