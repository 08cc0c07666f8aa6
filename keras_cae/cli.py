"""The `keras-cae` command line.

Each subcommand imports what it needs when it runs: `keras-cae encode` and
`keras-cae serve` never import TensorFlow. Errors are one line on stderr and exit
code 2.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

__all__ = ["main", "CliError"]

EXIT_USAGE = 2


class CliError(Exception):
    """An error to report as one line with exit code 2."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, without the usage block."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{self.prog}: {message}")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a non-negative finite number, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _fraction(text: str) -> float:
    value = _non_negative_float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text!r}")
    return value


def _units(text: str) -> list[int]:
    try:
        units = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers such as 32 or 64,16, got {text!r}"
        ) from None
    if not units or min(units) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return units


# ------------------------------------------------------------------------------------------
# keras-cae train


def _add_train_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a contractive auto-encoder (default data: scikit-learn's digits)",
        description="Train a Dense contractive auto-encoder and write model.keras and "
        "metrics.json into --out.",
    )
    parser.add_argument(
        "--data",
        help="a .npy, .npz (array 'x', optional labels 'y') or .csv file, or a directory "
        "or quoted glob of .npy or .tfrecord shards to stream from disk; "
        "default: the bundled scikit-learn digits scaled to [0, 1]",
    )
    parser.add_argument(
        "--out",
        help="output directory (must be new or empty unless --overwrite); "
        "default: runs/train-<timestamp>",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    parser.add_argument(
        "--hidden-units",
        type=_units,
        default=[64],
        help="code size or sizes, e.g. 64 or 128,32 (default: 64)",
    )
    parser.add_argument(
        "--activation", default="sigmoid", help="encoder activation (default: sigmoid)"
    )
    parser.add_argument(
        "--output-activation",
        default="sigmoid",
        help="reconstruction activation (default: sigmoid)",
    )
    parser.add_argument(
        "--tied-weights", action="store_true", help="decoder uses the transposed encoder kernels"
    )
    parser.add_argument("--epochs", type=_positive_int, default=60, help="default: 60")
    parser.add_argument("--batch-size", type=_positive_int, default=32, help="default: 32")
    parser.add_argument(
        "--contractive-weight", type=_non_negative_float, default=0.003, help="λ (default: 0.003)"
    )
    parser.add_argument(
        "--penalty",
        default="auto",
        choices=["auto", "batch_jacobian", "closed_form", "hutchinson"],
        help="how ‖J‖² is computed (default: auto, exact)",
    )
    parser.add_argument(
        "--learning-rate", type=_non_negative_float, default=3e-3, help="Adam (default: 0.003)"
    )
    parser.add_argument("--seed", type=int, default=0, help="default: 0")
    parser.add_argument(
        "--validation-split",
        type=_fraction,
        default=0.1,
        help="of the training part (default: 0.1)",
    )
    parser.add_argument(
        "--test-fraction",
        type=_fraction,
        default=0.2,
        help="held out for the summary (default: 0.2)",
    )
    parser.add_argument("--quiet", action="store_true", help="no Keras progress bar")
    scale = parser.add_argument_group("scale (see docs: multi-worker, streaming)")
    scale.add_argument(
        "--strategy",
        default="default",
        choices=["default", "mirrored", "multi-worker"],
        help="tf.distribute strategy: one device, all local devices, or the workers "
        "of TF_CONFIG (default: default)",
    )
    scale.add_argument(
        "--cpu-devices",
        type=_positive_int,
        help="with --strategy mirrored: split the CPU into this many replicas",
    )
    scale.add_argument(
        "--backup-dir",
        help="keras.callbacks.BackupAndRestore directory: a killed run started again "
        "with the same arguments resumes from its last finished epoch",
    )
    scale.add_argument(
        "--steps-per-epoch", type=_positive_int, help="streamed data: batches per epoch"
    )
    scale.add_argument(
        "--shuffle-buffer",
        type=_positive_int,
        default=10_000,
        help="streamed data: rows in the shuffle buffer (default: 10000)",
    )
    parser.set_defaults(run=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from keras_cae import _io, data

    out = args.out or os.path.join(
        "runs", "train-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    )
    _io.check_output_dir(out, args.overwrite, "--out")
    if args.cpu_devices is not None and args.strategy != "mirrored":
        raise CliError("--cpu-devices only applies to --strategy mirrored")
    if args.test_fraction <= 0:
        raise CliError("--test-fraction must be > 0: the summary is measured on held-out data")
    streamed = args.data is not None and (
        os.path.isdir(args.data) or any(char in args.data for char in "*?[")
    )
    if not streamed and args.steps_per_epoch is not None:
        raise CliError("--steps-per-epoch only applies to streamed --data (a directory or glob)")
    if not streamed:
        dataset = data.load_digits() if args.data is None else data.load_array(args.data)

    from keras_cae import distribute, training  # Imports TensorFlow.

    # Logical CPU devices must exist before TensorFlow initialises.
    try:
        devices = None if args.cpu_devices is None else distribute.split_cpu(args.cpu_devices)
    except RuntimeError as error:
        raise CliError(f"--cpu-devices: {error}") from None
    strategy = distribute.get_strategy(args.strategy, devices)
    replicas = strategy.num_replicas_in_sync
    if args.batch_size % replicas:
        raise CliError(
            f"--batch-size {args.batch_size} is the global batch and should be a multiple "
            f"of the {replicas} replicas of --strategy {args.strategy}"
        )
    chief = distribute.is_chief()
    callbacks = []
    if args.backup_dir:
        import keras

        backup = args.backup_dir
        if args.strategy == "multi-worker":
            # Workers hold identical weights; each keeps its own copy, so no shared
            # file system is needed and no two processes write one file.
            backup = os.path.join(backup, f"worker-{distribute.tf_config()['task']['index']}")
        callbacks.append(keras.callbacks.BackupAndRestore(backup, double_checkpoint=True))
    common = {
        "hidden_units": args.hidden_units,
        "activation": args.activation,
        "output_activation": args.output_activation,
        "tied_weights": args.tied_weights,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "contractive_weight": args.contractive_weight,
        "penalty": args.penalty,
        "learning_rate": args.learning_rate,
        "seed": args.seed,
        "test_fraction": args.test_fraction,
        "verbose": 0 if args.quiet else 2,
        "strategy": strategy,
        "callbacks": callbacks,
    }
    if streamed:
        from keras_cae import streaming

        result = training.train_stream(
            streaming.open_shards(args.data),
            steps_per_epoch=args.steps_per_epoch,
            shuffle_buffer=args.shuffle_buffer,
            **common,
        )
    else:
        result = training.train(dataset, validation_split=args.validation_split, **common)
    if not chief:
        # Only the chief writes --out; the other workers hold the same weights.
        print(f"worker {distribute.tf_config()['task']['index']}: done, the chief writes {out}")
        return 0
    with _io.atomic_directory(out, overwrite=args.overwrite) as staging:
        result.model.save(os.path.join(staging, "model.keras"))
        _io.atomic_write_json(os.path.join(staging, "metrics.json"), result.metrics)
    print(training.format_summary(result.metrics, out))
    return 0


# ------------------------------------------------------------------------------------------
# Entry point.

_PARSER_BUILDERS: list[Callable[[Any], None]] = [_add_train_parser]


def _add_export_parsers(subparsers: Any) -> None:
    """`keras-cae export` and `keras-cae encode`, defined in `export.cli`."""
    from export.cli import add_encode_parser, add_export_parser

    add_export_parser(subparsers)
    add_encode_parser(subparsers)


_PARSER_BUILDERS.append(_add_export_parsers)


def _add_serve_parser(subparsers: Any) -> None:
    """`keras-cae serve`: the HTTP inference service in `export.serve` (no TensorFlow)."""
    parser = subparsers.add_parser(
        "serve",
        help="serve an exported encoder over HTTP (KServe v2, TF Serving REST, /metrics)",
        description="Serve ENCODER.onnx with onnxruntime: Open Inference Protocol (KServe "
        "v2) at /v2, TensorFlow Serving REST at /v1, Prometheus /metrics, OpenAPI /docs. "
        "Needs: pip install 'keras-cae[serve]'.",
    )
    add = parser.add_argument
    add("encoder", metavar="ENCODER.onnx", help="an encoder written by keras-cae export")
    add("--host", default="127.0.0.1", help="default: 127.0.0.1 (loopback only)")
    add("--port", type=int, default=8000, help="default: 8000")
    add("--name", help="model name in URLs (default: the file name, e.g. encoder)")
    add("--max-batch", type=_positive_int, default=1024, help="rows per request (default: 1024)")
    add("--workers", type=_positive_int, default=1, help="processes (default: 1)")
    add("--threads", type=_positive_int, default=1, help="onnxruntime threads/worker (default: 1)")
    add("--max-body-bytes", type=_positive_int, help="default: fits --max-batch rows of JSON")
    add("--shutdown-timeout", type=_positive_int, default=30,
        help="seconds to finish in-flight requests on SIGTERM (default: 30)")  # fmt: skip
    add("--access-log", action="store_true", help="log every request")
    add("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
        help="the server's log level: startup, shutdown and errors; with --access-log, "
        "requests at info (default: info)")  # fmt: skip
    parser.set_defaults(run=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise CliError(f"keras-cae serve: error: --port must be in 0..65535, got {args.port}")
    try:
        from export.serve import serve  # FastAPI, uvicorn, onnxruntime; never TensorFlow.
    except ImportError as error:
        raise CliError(f"keras-cae serve: error: {error}") from None

    serve(
        args.encoder, host=args.host, port=args.port, name=args.name, max_batch=args.max_batch,
        workers=args.workers, threads=args.threads, max_body_bytes=args.max_body_bytes,
        shutdown_timeout=args.shutdown_timeout, access_log=args.access_log,
        log_level=args.log_level,
    )  # fmt: skip
    return 0


_PARSER_BUILDERS.append(_add_serve_parser)


def _add_compare_parser(subparsers: Any) -> None:
    """`keras-cae compare`, defined in `keras_cae.compare` (TensorFlow only when it runs)."""
    from keras_cae.compare import add_parser

    add_parser(subparsers)


_PARSER_BUILDERS.append(_add_compare_parser)


def _build_parser() -> _Parser:
    parser = _Parser(
        prog="keras-cae",
        description="Contractive auto-encoders for Keras: train, export, encode, serve.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in _PARSER_BUILDERS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the `keras-cae` command line; returns the exit code."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
        return int(args.run(args) or 0)
    except (CliError, ValueError, FileNotFoundError, PermissionError) as error:
        message = " ".join(str(error).split())
        prefix = "" if message.startswith("keras-cae") else "keras-cae: error: "
        print(f"{prefix}{message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("keras-cae: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
