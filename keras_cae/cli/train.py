"""`keras-cae train`: train a Dense contractive auto-encoder, write model.keras and metrics.json.

Every check on the arguments, the data and `--out` runs before TensorFlow is imported,
so a mistake costs a second, not a training run.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any

from keras_cae import _io, shards
from keras_cae._choices import PENALTY_METHODS, STRATEGIES
from keras_cae._phases import PhaseClock
from keras_cae.cli.errors import CliError
from keras_cae.cli.export import HELD_OUT_FILE
from keras_cae.cli.output import check_out, default_out
from keras_cae.cli.quiet import import_tensorflow
from keras_cae.cli.sizes import load_data, refuse_for_own_split
from keras_cae.cli.types import FRACTION, NON_NEGATIVE, POSITIVE_INT, UNITS
from keras_cae.train_config import (
    DIGITS_CONTRACTIVE_WEIGHT,
    MNIST_CONTRACTIVE_WEIGHT,
    PROBES,
    TrainConfig,
    default_contractive_weight,
)

# `keras_cae.training.PROBE_ROWS`, repeated so that `--help` needs no TensorFlow;
# tests/cli/test_train_data.py checks that they agree.
PROBE_ROWS = 10_000

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Adds `keras-cae train` to the subcommands."""
    parser = subparsers.add_parser(
        "train",
        help="train a contractive auto-encoder (default data: scikit-learn's digits)",
        description="Train a Dense contractive auto-encoder and write model.keras and "
        "metrics.json into --out.",
    )
    add = parser.add_argument
    add("--data", help="'mnist' (Keras's MNIST: its cache ~/.keras/datasets/mnist.npz, "
        "downloaded by Keras if missing); a .npz in the Keras layout (x_train, y_train, "
        "x_test, y_test; uint8 images, divided by 255): its own split is kept, the last "
        "sixth of x_train validates, x_test is used only for the held-out figures and "
        "the probe; a .npy, .npz (array 'x', optional labels 'y') or .csv file, split "
        "at random by --test-fraction; or a directory or quoted glob of .npy or "
        ".tfrecord shards to stream from disk; default: the bundled scikit-learn "
        "digits scaled to [0, 1]")  # fmt: skip
    add("--out", help="output directory (must be new or empty unless --overwrite); "
        "default: runs/train-<timestamp>")  # fmt: skip
    add("--overwrite", action="store_true", help="replace a non-empty --out")
    add("--hidden-units", type=UNITS, default=[64],
        help="code size or sizes, e.g. 64 or 128,32 (default: 64)")  # fmt: skip
    add("--activation", default="sigmoid", help="encoder activation (default: sigmoid)")
    add("--output-activation", default="sigmoid",
        help="reconstruction activation (default: sigmoid)")  # fmt: skip
    add("--tied-weights", action="store_true",
        help="decoder uses the transposed encoder kernels")  # fmt: skip
    add("--epochs", type=POSITIVE_INT, default=60, help="default: 60")
    add("--batch-size", type=POSITIVE_INT, default=32, help="default: 32")
    add("--contractive-weight", type=NON_NEGATIVE, default=None,
        help=f"λ (default: from the data: {DIGITS_CONTRACTIVE_WEIGHT:g} for the bundled "
        f"digits, {MNIST_CONTRACTIVE_WEIGHT:g} for 28x28 images in the Keras MNIST "
        f"layout, {DIGITS_CONTRACTIVE_WEIGHT:g} otherwise; the run prints which and why; "
        "docs/penalties.md says how to choose it)")  # fmt: skip
    add("--penalty", default="auto", choices=PENALTY_METHODS,
        help="how ‖J‖² is computed (default: auto, exact)")  # fmt: skip
    add("--learning-rate", type=NON_NEGATIVE, default=3e-3, help="Adam (default: 0.003)")
    add("--seed", type=int, default=0, help="default: 0")
    add("--validation-split", type=FRACTION, default=None,
        help="the last rows of the training part (default: 0.1; the last sixth of "
        "x_train for a file with its own split, 10000 of MNIST's 60000)")  # fmt: skip
    add("--test-fraction", type=FRACTION, default=None,
        help="held out at random for the summary (default: 0.2; not for a file with "
        "its own split, whose x_test is held out)")  # fmt: skip
    add("--probe", default="logistic", choices=PROBES,
        help="with labels: a logistic-regression probe on codes and raw inputs, fit on "
        f"at most {PROBE_ROWS} training rows (default: logistic); none: skip it")  # fmt: skip
    add("--quiet", action="store_true", help="no Keras progress bar")
    add("--verbose", action="store_true", help="show TensorFlow's own log lines")
    scale = parser.add_argument_group("scale (see docs: multi-worker, streaming)")
    scale.add_argument("--strategy", default="default", choices=STRATEGIES,
        help="tf.distribute strategy: one device, all local devices, or the workers "
        "of TF_CONFIG (default: default)")  # fmt: skip
    scale.add_argument("--cpu-devices", type=POSITIVE_INT,
        help="with --strategy mirrored: split the CPU into this many replicas")  # fmt: skip
    scale.add_argument("--backup-dir",
        help="keras.callbacks.BackupAndRestore directory: a killed run started again "
        "with the same arguments resumes from its last finished epoch")  # fmt: skip
    scale.add_argument("--steps-per-epoch", type=POSITIVE_INT,
        help="streamed data: batches per epoch")  # fmt: skip
    scale.add_argument("--shuffle-buffer", type=POSITIVE_INT, default=10_000,
        help="streamed data: rows in the shuffle buffer (default: 10000)")  # fmt: skip
    parser.set_defaults(run=run)


def _config(args: argparse.Namespace) -> TrainConfig:
    """The job's settings from the options (checked here, before TensorFlow is imported)."""
    return TrainConfig(
        hidden_units=args.hidden_units,
        activation=args.activation,
        output_activation=args.output_activation,
        tied_weights=args.tied_weights,
        contractive_weight=0.0,  # Set from --contractive-weight or the data, below.
        penalty=args.penalty,
        learning_rate=args.learning_rate,
        seed=args.seed,
        epochs=args.epochs,
        batch_size=args.batch_size,
        test_fraction=0.2 if args.test_fraction is None else args.test_fraction,
        validation_split=args.validation_split,
        steps_per_epoch=args.steps_per_epoch,
        shuffle_buffer=args.shuffle_buffer,
        probe=args.probe,
    )


def _say(line: str) -> None:
    """Prints a progress line at once (Keras's own lines go to stdout too)."""
    print(line, flush=True)


def run(args: argparse.Namespace) -> int:
    """Runs `keras-cae train`; prints the summary."""
    out = args.out or default_out("train")
    check_out(out, args.overwrite)
    if args.cpu_devices is not None and args.strategy != "mirrored":
        raise CliError("--cpu-devices only applies to --strategy mirrored")
    config = _config(args)
    streamed = args.data is not None and shards.is_shard_spec(args.data)
    if not streamed and args.steps_per_epoch is not None:
        raise CliError("--steps-per-epoch only applies to streamed --data (a directory or glob)")
    clock = PhaseClock(_say)
    if not streamed:
        with clock("load", f"loading {args.data or 'the bundled digits'}"):
            dataset = load_data(
                args.data,
                [
                    ("--test-fraction", config.test_fraction, "ceil"),
                    (
                        "--validation-split",
                        0.1 if config.validation_split is None else config.validation_split,
                        "floor",
                    ),
                ],
                skip_for_own_split=["--test-fraction"],
            )
        refuse_for_own_split(dataset, args.data, "--test-fraction", args.test_fraction is not None)
    if args.contractive_weight is None:
        weight, reason = default_contractive_weight(None if streamed else dataset)
    elif args.contractive_weight == 0:
        weight, reason = 0.0, "given (--contractive-weight 0): a plain auto-encoder"
    else:
        weight, reason = args.contractive_weight, "given (--contractive-weight)"
    config = dataclasses.replace(config, contractive_weight=weight)
    _say(f"λ = {weight:g}: {reason}")

    with clock("tensorflow", "importing TensorFlow"):
        import_tensorflow(args.verbose)
        from keras_cae import distribute, training

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
    run_options = {
        "verbose": 0 if args.quiet else 2,
        "strategy": strategy,
        "callbacks": callbacks,
    }
    if streamed:
        from keras_cae import streaming

        result = training.train_stream(config, streaming.open_shards(args.data), **run_options)
    else:
        result = training.train(config, dataset, progress=_say, **run_options)
    result.metrics["contractive_weight_reason"] = reason
    if not chief:
        # Only the chief writes --out; the other workers hold the same weights.
        print(f"worker {distribute.tf_config()['task']['index']}: done, the chief writes {out}")
        return 0
    # metrics.json holds the phases up to the probe; the summary adds the writing.
    result.metrics["phase_seconds"] = {**clock.seconds, **result.metrics.get("phase_seconds", {})}
    with clock("save", f"writing {out}"):
        with _io.atomic_directory(out, args.overwrite, "--out", "--overwrite") as staging:
            result.model.save(os.path.join(staging, "model.keras"))
            _io.atomic_write_json(os.path.join(staging, "metrics.json"), result.metrics)
            if result.held_out is not None:  # `keras-cae export` checks parity on them.
                _io.atomic_save_npy(os.path.join(staging, HELD_OUT_FILE), result.held_out)
    result.metrics["phase_seconds"]["save"] = clock.seconds["save"]
    print(training.format_summary(result.metrics, out))
    return 0
