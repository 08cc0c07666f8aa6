"""`keras-cae export`: export a trained model's encoder to ONNX and SavedModel, verified.

The model path is checked before TensorFlow is imported: a run directory of
`keras-cae train` is read as its ``model.keras``, and a file that is not a Keras
archive (or legacy ``.h5`` file) is refused with that reason.

The parity check runs on real rows whenever the run has them: the held-out rows that
`keras-cae train` keeps beside the model (``held_out.npy``), else, for the bundled
digits, their first rows; otherwise on random rows in the model's training input
range. The output and the manifest (``"probe"``) say which.
"""

from __future__ import annotations

import argparse
import json
import os
import zipfile
from typing import Any

import numpy as np

from keras_cae import _io, _lock
from keras_cae.cli.errors import CliError
from keras_cae.cli.output import check_out
from keras_cae.cli.quiet import import_tensorflow
from keras_cae.cli.types import number
from keras_cae.export import DEFAULT_FORMATS, DEFAULT_TOLERANCE, FORMATS, PARTS
from keras_cae.export.onnx import DEFAULT_OPSET, SUPPORTED_OPSETS

__all__ = ["add_parser", "run", "resolve_model_path", "HELD_OUT_FILE", "MODEL_FILE"]

MODEL_FILE = "model.keras"  # What `keras-cae train` writes into its --out.
#: The first held-out rows that `keras-cae train` keeps beside the model (as the model
#: takes them), on which `keras-cae export` checks parity.
HELD_OUT_FILE = "held_out.npy"


def add_parser(subparsers: Any) -> None:
    """Adds `keras-cae export MODEL.keras --out DIR ...` to the subcommands."""
    parser = subparsers.add_parser(
        "export",
        help="export a trained model's encoder to ONNX and SavedModel, verified",
        description="Export the encoder of a saved model (.keras) to ONNX and a TensorFlow "
        "SavedModel, check both against Keras, and print the parity figures. Reads the "
        "training data name and scaling from metrics.json beside the model, when present.",
    )
    add = parser.add_argument
    add("model", help="a .keras file saved by `keras-cae train` or `model.save`, or the "
        "run directory of `keras-cae train` (its model.keras is used)")  # fmt: skip
    add("--out", required=True, help="output directory (new or empty unless --overwrite)")
    add("--format", nargs="+", choices=FORMATS, default=list(DEFAULT_FORMATS),
        help=f"formats to write (default: {' '.join(DEFAULT_FORMATS)})")  # fmt: skip
    add("--name", help="with --format triton: the encoder's model name (default: encoder)")
    add("--parts", nargs="+", choices=PARTS, default=["encoder"],
        help="what to export (default: encoder)")  # fmt: skip
    add("--opset", type=int, choices=list(SUPPORTED_OPSETS), default=None, metavar="N",
        help=f"ONNX opset, {SUPPORTED_OPSETS[0]} to {SUPPORTED_OPSETS[-1]} "
        f"(default: {DEFAULT_OPSET})")  # fmt: skip
    add("--tolerance", type=number(0, inclusive=False), default=None,
        help="largest allowed max |keras - exported|, times max(1, max |keras|) "
        f"(default: {DEFAULT_TOLERANCE:g}; 2**-9 for float16 models)")  # fmt: skip
    add("--overwrite", action="store_true", help="replace a non-empty --out")
    add("--verbose", action="store_true", help="show TensorFlow's own log lines")
    parser.set_defaults(run=run)


def resolve_model_path(path: str) -> str:
    """The model file to load for `path`: itself, or a run directory's `model.keras`.

    Raises:
        CliError: `path` does not exist, is a directory without `model.keras`, or is
            not a Keras archive (a zip file) or a legacy `.h5` file.
    """
    if os.path.isdir(path):
        inside = os.path.join(path, MODEL_FILE)
        if not os.path.isfile(inside):
            raise CliError(
                f"{path!r} is a directory without {MODEL_FILE}; give the .keras file that "
                "`keras-cae train` or `model.save` wrote (Keras 3 cannot load SavedModel "
                "directories)"
            )
        return inside
    if not os.path.isfile(path):
        raise CliError(f"model file not found: {path!r}")
    if path.endswith(".h5"):
        return path  # Legacy HDF5: Keras reads it and words its own errors.
    if not zipfile.is_zipfile(path):
        what = "a .keras file" if path.endswith(".keras") else "a model file"
        raise CliError(
            f"{path!r} is not a Keras archive: {what} is a zip archive written by "
            "`keras-cae train` or `model.save('name.keras')`"
        )
    return path


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


def _parity_probe(model_path: str, data_name: str | None) -> tuple[np.ndarray | None, str | None]:
    """The rows to check parity on and what they are: the run's held-out rows when it
    kept them, else the first digits for a digits model, else none (random rows)."""
    path = os.path.join(os.path.dirname(os.path.abspath(model_path)), HELD_OUT_FILE)
    data = data_name or "the training data"
    if os.path.isfile(path):
        try:
            rows = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise CliError(f"{path}: cannot read the held-out rows ({error})") from None
        return rows, (
            f"the first {len(rows)} held-out rows of {data} ({HELD_OUT_FILE}, kept by "
            "`keras-cae train`)"
        )
    if data_name == "sklearn-digits":
        # Real inputs that can be rebuilt exactly (they ship with scikit-learn).
        from keras_cae.data import load_digits

        return load_digits().x[:64], (
            f"the first 64 rows of sklearn-digits (training rows: this run kept no {HELD_OUT_FILE})"
        )
    return None, None


def run(args: argparse.Namespace) -> int:
    """Runs `keras-cae export`; prints the parity table.

    `--out` is locked before any work (`keras_cae._lock`): a second export into it is
    refused at once, in one line, rather than after converting and checking the model.
    """
    model_path = resolve_model_path(args.model)
    check_out(args.out, args.overwrite)
    with _lock.output_lock(args.out, "--out"):
        # An output that an interrupted --overwrite moved aside is put back first.
        _io.remove_stale_staging(os.path.dirname(os.path.abspath(args.out)))
        check_out(args.out, args.overwrite)  # Again, now that no other run can take it.
        return _export(args, model_path)


def _export(args: argparse.Namespace, model_path: str) -> int:
    """Exports the model once `--out` is locked."""
    metadata, data_name = _training_metadata(model_path)
    probe, probe_source = _parity_probe(model_path, data_name)

    import_tensorflow(args.verbose)
    import keras

    import keras_cae
    from keras_cae.export import ExportError, export_encoder

    keras_cae.ContractiveAutoencoder  # noqa: B018 - registers the serializable classes.
    try:
        model = keras.models.load_model(model_path)
    except Exception as error:  # Keras raises many types for unreadable files.
        raise CliError(
            f"cannot load {model_path!r} as a Keras model: {type(error).__name__}: {error}"
        ) from error
    if probe is not None:
        try:
            expected = tuple(getattr(model, "encoder", model).input_shape[1:])
        except (AttributeError, ValueError):  # A layer or subclassed model: no input_shape.
            expected = None
        if probe.ndim < 2 or len(probe) < 2 or probe.shape[1:] != expected:
            probe, probe_source = None, None
    try:
        result = export_encoder(
            model,
            args.out,
            formats=args.format,
            opset=args.opset,
            overwrite=args.overwrite,
            parts=args.parts,
            metadata=metadata,
            probe=probe,
            model_name=args.name,
            tolerance=args.tolerance,
            probe_source=probe_source,
        )
    except ExportError as error:
        raise CliError(str(error)) from error
    print(result.summary())
    print(f"wrote {os.path.join(args.out, os.path.basename(result.manifest))}")
    return 0
