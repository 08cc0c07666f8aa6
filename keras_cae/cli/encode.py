"""`keras-cae encode`: encode an array with an exported ONNX encoder, without TensorFlow.

This module and what it imports load numpy and onnxruntime only; a test runs it in a
fresh process and checks that no TensorFlow or Keras module was imported.
"""

from __future__ import annotations

import argparse
import errno
import os
from typing import Any

from keras_cae import _io, _lock
from keras_cae.cli.errors import CliError
from keras_cae.cli.types import POSITIVE_INT

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Adds `keras-cae encode ENCODER.onnx INPUT --out CODES.npy ...` to the subcommands."""
    parser = subparsers.add_parser(
        "encode",
        help="encode an array with an exported ONNX encoder (no TensorFlow)",
        description="Encode the rows of a .npy, .npz (array 'x') or .csv file with an ONNX "
        "encoder in onnxruntime and write the codes as a .npy file; or stream a directory "
        "or quoted glob of .npy/.tfrecord shards into one codes shard each in the --out "
        "directory, with a manifest (re-running resumes; see docs/batch-encoding.md).",
    )
    add = parser.add_argument
    add("encoder", help="an .onnx file written by `keras-cae export`")
    add(
        "input",
        help="a .npy, .npz or .csv file of inputs, one row per sample; or a directory or "
        "quoted glob of .npy or .tfrecord shards",
    )
    add("--out", required=True, help="the .npy file (the directory, for shards) to write to")
    add("--overwrite", action="store_true", help="replace an existing --out (shards: start over)")
    add("--batch-size", type=POSITIVE_INT, default=1024, help="rows per onnxruntime call")
    add("--threads", type=POSITIVE_INT, default=None, help="onnxruntime intra-op threads")
    add("--no-range-check", action="store_true",
        help="encode inputs even when they lie far outside the range the model was trained "
        "on (by default they are refused: raw 0-255 pixels for a model trained on "
        "pixels / 255 would give wrong codes; see docs/export.md)")  # fmt: skip
    add("--split", choices=("train", "test", "all"), default=None,
        help="for a .npz in the Keras layout (x_train, x_test): which images to encode "
        "(default: test; all = x_train then x_test); the command says which it used")  # fmt: skip
    parser.set_defaults(run=run)


def _check_out(out: str, overwrite: bool) -> None:
    """Refuses an `--out` that is not a new (or, with `overwrite`, existing) .npy file."""
    if not out.endswith(".npy"):
        raise CliError(f"--out should be a .npy file, got {out!r}")
    if os.path.isdir(out):
        raise CliError(f"--out {out!r} is a directory")
    if os.path.exists(out) and not overwrite:
        raise CliError(f"--out {out!r} exists; choose another file or pass --overwrite")
    _io.check_writable(out, "--out")
    if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        raise CliError(f"the directory of --out {out!r} does not exist")


# A write refused for lack of room: the disk, the user's quota, the file size limit.
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _disk_full(error: OSError, what: str) -> CliError:
    """The one line for a write that failed for lack of room (`_FULL`)."""
    return CliError(f"{os.strerror(error.errno or 0)} while writing {what}")


def _open_encoder(args: argparse.Namespace, check_finite: bool) -> Any:
    """The `OnnxEncoder` of the command, its range error naming `--no-range-check`."""
    from keras_cae.export.runtime import OnnxEncoder

    encoder = OnnxEncoder(
        args.encoder,
        intra_op_num_threads=args.threads,
        batch_size=args.batch_size,
        check_finite=check_finite,
        check_range=not args.no_range_check,
    )
    encoder.skip_range_hint = "pass --no-range-check"
    return encoder


def run(args: argparse.Namespace) -> int:
    """Runs `keras-cae encode`, one run per `--out` (an OS file lock, see
    `keras_cae._lock`); imports no TensorFlow. A full disk is one line, exit code 2.
    A Keras or TensorFlow model given as ENCODER is named, with the export command."""
    from keras_cae import shards
    from keras_cae.export.runtime import keras_model_kind, not_onnx_message

    kind = keras_model_kind(args.encoder)
    if kind is not None:
        raise CliError(not_onnx_message(args.encoder, kind))

    if shards.is_shard_spec(args.input):
        if args.split is not None:
            raise CliError("--split applies to a .npz file in the Keras layout, not to shards")
        return _run_sharded(args)  # `encode_shards` locks --out itself.
    _check_out(args.out, args.overwrite)  # First: a refused --out leaves nothing behind.
    with _lock.output_lock(args.out, "--out"):
        return _run_file(args)


def _run_file(args: argparse.Namespace) -> int:
    """Encodes one file into the `--out` .npy file, which this process has locked."""
    from keras_cae.data import load_array, split_rows, to_model_input

    _check_out(args.out, args.overwrite)  # Again, now that no other run can take it.
    encoder = _open_encoder(args, check_finite=True)
    dataset = load_array(args.input)  # Rejects NaN and infinities itself.
    try:
        rows, which = split_rows(dataset, args.split)
    except ValueError as error:
        raise CliError(str(error)) from None
    if dataset.has_split:
        print(f"encoding {which}", flush=True)
    try:
        codes = encoder.encode(to_model_input(rows, encoder.input_shape, "INPUT"))
    except ValueError as error:
        raise CliError(f"{args.input}: {error}") from None
    try:
        _io.atomic_save_npy(args.out, codes)
    except OSError as error:
        if error.errno not in _FULL:
            raise
        raise _disk_full(
            error, f"--out {args.out!r} ({codes.nbytes:,} bytes of codes); nothing was written"
        ) from None
    print(f"wrote codes of shape {codes.shape} ({codes.dtype}) to {args.out}")
    return 0


def _run_sharded(args: argparse.Namespace) -> int:
    """Encodes a directory or glob of shards into the `--out` directory (resumable)."""
    from keras_cae.export.sharded import encode_shards

    # The shard reader checks every row for NaN and infinities, naming shard and row.
    encoder = _open_encoder(args, check_finite=False)

    finished = []

    def report(source: str, target: str, rows: int, skipped: bool) -> None:
        finished.append(target)
        print(f"{'kept' if skipped else 'encoded'} {source} -> {target} ({rows} rows)", flush=True)

    try:
        result = encode_shards(encoder, args.input, args.out, args.overwrite, on_shard=report)
    except OSError as error:
        if error.errno not in _FULL:
            raise
        raise _disk_full(
            error,
            f"the codes in --out {args.out!r} ({len(finished)} finished "
            f"shard{'s' * (len(finished) != 1)} kept); free some space and run the same "
            "command again to resume",
        ) from None
    print(
        f"wrote codes of {result.num_rows} rows, shape {result.code_shape}, in "
        f"{result.num_shards} shards to {result.out} ({result.num_skipped} kept from an "
        f"earlier run); manifest {result.manifest}"
    )
    return 0
