"""`keras-cae compare`: the command-line wiring of the studies in
`keras_cae.studies.compare_protocol` (``--protocol models``) and
`keras_cae.studies.finetune_protocol` (``--protocol finetune``).

Parses the options, checks `--out`, matplotlib and the data before TensorFlow is
imported, runs the study, writes the report and prints a short table.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from keras_cae._choices import CORRUPTIONS
from keras_cae.cli.errors import CliError
from keras_cae.cli.output import check_out, default_out
from keras_cae.cli.quiet import import_tensorflow
from keras_cae.cli.sizes import load_data, refuse_for_own_split
from keras_cae.cli.types import FRACTION, POSITIVE_INT, UNITS, number, number_list
from keras_cae.studies import compare, compare_protocol, compare_report, plots

__all__ = ["add_parser", "run"]

GRID = number_list(0, example="0.001,0.01")
PROTOCOLS = ("models", "finetune")
_LABELS_PER_CLASS = number(1, integer=True)
DEFAULT_TEST_FRACTION = 0.2


def _label_budgets(text: str) -> list[int | None]:
    """``10,30,all`` -> ``[10, 30, None]``: labelled images per class, None for all."""
    try:
        return [None if part == "all" else int(_LABELS_PER_CLASS(part)) for part in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected positive integers or 'all', such as 10,100,all, got {text!r}"
        ) from None


# Searched model -> the option that overrides its grid.
_GRID_OPTIONS = (("DAE", "dae_levels"), ("CAE", "cae_weights"), ("CAE+H", "hessian_weights"))


def add_parser(subparsers: Any) -> None:
    """Adds `keras-cae compare` to the subcommands (imports no TensorFlow)."""
    parser = subparsers.add_parser(
        "compare",
        help="train AE, DAE, CAE and CAE+H on equal footing and report how they compare",
        description="Train AE, DAE, CAE and CAE+H with identical architecture, data, seeds "
        "and budget (hyper-parameters from a small validation search), then write "
        "report.md, report.json and PNG figures into --out.",
    )
    add = parser.add_argument
    add("--data", help="'mnist' (Keras's MNIST), a .npz in the Keras layout (x_train, "
        "y_train, x_test, y_test: x_test is the test set, --test-fraction does not apply), "
        "or a .npy, .npz (x, optional y) or .csv file, split by --test-fraction; "
        "default: bundled digits")  # fmt: skip
    add("--out", help="output directory (new or empty unless --overwrite); "
        "default: runs/compare-<timestamp>")  # fmt: skip
    add("--overwrite", action="store_true", help="replace a non-empty --out")
    add("--protocol", choices=PROTOCOLS, default="models",
        help="models: AE/DAE/CAE/CAE+H codes and probes; finetune: pre-train, then fine-tune "
        "with --label-budgets labels per class (docs/results-finetune.md) "
        "(default: models)")  # fmt: skip
    add("--seeds", type=POSITIVE_INT, help="final runs per model (default: 3; finetune: 5)")
    add("--epochs", type=POSITIVE_INT, default=60, help="epochs of every run (default: 60)")
    add("--batch-size", type=POSITIVE_INT, default=32, help="default: 32")
    add("--hidden-units", type=UNITS, default=[32], help="code size(s) (default: 32)")
    add("--learning-rate", type=number(0, inclusive=False), default=3e-3,
        help="Adam (default: 0.003)")  # fmt: skip
    add("--test-fraction", type=FRACTION, default=None,
        help="held out (default: 0.2; a file with its own x_test holds that out "
        "instead)")  # fmt: skip
    add("--dae-corruption", choices=CORRUPTIONS, default="gaussian",
        help="the DAE's training noise (default: gaussian)")  # fmt: skip
    add("--selection", choices=compare.SELECTIONS,
        help="search criterion (default: probe with labels, else reconstruction)")  # fmt: skip
    add("--dae-levels", type=GRID, metavar="V,V,...",
        help="DAE noise levels to search "
        "(default: 0.1,0.2,0.4 gaussian; 0.1,0.25,0.5 masking)")  # fmt: skip
    add("--cae-weights", type=GRID, metavar="V,V,...",
        help="CAE λ values to search (default: 0.0003,0.001,0.003)")  # fmt: skip
    add("--hessian-weights", type=GRID, metavar="V,V,...",
        help="CAE+H γ values to search, λ from the CAE (default: 0.01,0.1,1)")  # fmt: skip
    add("--label-budgets", type=_label_budgets, default=[10, 30, 100, None], metavar="K,K,...",
        help="finetune: labelled images per class, 'all' for every one "
        "(default: 10,30,100,all)")  # fmt: skip
    add("--finetune-steps", type=POSITIVE_INT, default=2000,
        help="finetune: most fine-tuning steps (default: 2000)")  # fmt: skip
    add("--lambda-grid", type=GRID, metavar="V,V,...",
        help="finetune: CAE λ values of the λ sweep "
        "(default: 0,1e-4,3e-4,1e-3,3e-3,1e-2)")  # fmt: skip
    add("--quiet", action="store_true", help="no progress lines")
    add("--verbose", action="store_true", help="show TensorFlow's own log lines")
    parser.set_defaults(run=run)


def _command_line(args: argparse.Namespace, out: str) -> str:
    """The canonical command line, every option explicit, for the report."""
    parts = ["keras-cae", "compare"]
    if args.protocol != "models":
        parts += ["--protocol", args.protocol]
    if args.data:
        parts += ["--data", args.data]
    parts += [
        "--seeds", str(args.seeds), "--epochs", str(args.epochs),
        "--batch-size", str(args.batch_size),
        "--hidden-units", ",".join(map(str, args.hidden_units)),
        "--learning-rate", f"{args.learning_rate:g}",
    ]  # fmt: skip
    if args.test_fraction is not None:
        parts += ["--test-fraction", f"{args.test_fraction:g}"]
    parts += ["--dae-corruption", args.dae_corruption]
    if args.selection:
        parts += ["--selection", args.selection]
    for _, option in _GRID_OPTIONS:
        if getattr(args, option):
            flag = "--" + option.replace("_", "-")
            parts += [flag, ",".join(f"{v:g}" for v in getattr(args, option))]
    if args.protocol == "finetune":
        budgets = ",".join("all" if b is None else str(b) for b in args.label_budgets)
        parts += ["--label-budgets", budgets, "--finetune-steps", str(args.finetune_steps)]
        if args.lambda_grid is not None:
            parts += ["--lambda-grid", ",".join(f"{v:g}" for v in args.lambda_grid)]
    parts += ["--out", out]
    return " ".join(shlex.quote(p) for p in parts)


def run(args: argparse.Namespace) -> int:
    """Runs `keras-cae compare` with parsed arguments; returns the exit code."""
    out = args.out or default_out("compare")
    check_out(out, args.overwrite)
    finetuning = args.protocol == "finetune"
    args.seeds = args.seeds or (5 if finetuning else 3)
    if finetuning and args.selection:
        raise CliError("--selection applies to --protocol models; finetune selects by probe")
    if finetuning and len(args.hidden_units) != 1:
        raise CliError("--protocol finetune takes one --hidden-units size (CAE-2 stacks two)")
    if args.test_fraction is not None and args.test_fraction <= 0:
        raise CliError("--test-fraction must be > 0: the comparison is measured on held-out data")
    test_fraction = DEFAULT_TEST_FRACTION if args.test_fraction is None else args.test_fraction
    try:
        plots.require_matplotlib()  # Fail before training, not after.
    except ImportError as error:
        raise CliError(f"keras-cae compare writes PNG figures: {error}") from None
    dataset = load_data(
        args.data,
        [
            ("--test-fraction", test_fraction, "ceil"),
            ("the validation search", compare.VALIDATION_FRACTION, "ceil"),
        ],
        skip_for_own_split=["--test-fraction"],
    )
    refuse_for_own_split(dataset, args.data, "--test-fraction", args.test_fraction is not None)
    if not dataset.has_split:
        args.test_fraction = test_fraction  # Recorded in the report's command line.

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if finetuning and dataset.y is None:
        raise CliError(f"--protocol finetune needs labels, and {dataset.name} has none")
    import_tensorflow(args.verbose)
    if finetuning:
        return _run_finetune(args, dataset, out, None if args.quiet else progress)
    result = compare_protocol.compare_models(
        dataset,
        seeds=args.seeds,
        epochs=args.epochs,
        batch_size=args.batch_size,
        hidden_units=args.hidden_units,
        learning_rate=args.learning_rate,
        test_fraction=test_fraction,
        dae_corruption=args.dae_corruption,
        selection=args.selection,
        grids={
            name: getattr(args, option) for name, option in _GRID_OPTIONS if getattr(args, option)
        },
        progress=None if args.quiet else progress,
    )
    command = _command_line(args, out)
    files = compare_report.write_report(result, out, overwrite=args.overwrite, command=command)
    print(compare_report.console_summary(result))
    print(f"wrote {', '.join(files)} into {out}")
    return 0


def _run_finetune(args: argparse.Namespace, dataset: Any, out: str, progress: Any) -> int:
    """`keras-cae compare --protocol finetune`: `studies.finetune_protocol.finetune_study`."""
    from keras_cae.studies import finetune, finetune_protocol, finetune_report

    try:
        config = finetune.FinetuneConfig(
            seeds=tuple(range(args.seeds)), label_budgets=tuple(args.label_budgets),
            epochs=args.epochs, finetune_steps=args.finetune_steps, batch_size=args.batch_size,
            hidden_units=args.hidden_units[0], learning_rate=args.learning_rate,
            test_fraction=args.test_fraction or DEFAULT_TEST_FRACTION,
            dae_corruption=args.dae_corruption,
            grids={n: tuple(getattr(args, o)) for n, o in _GRID_OPTIONS if getattr(args, o)},
            lambda_grid=finetune.LAMBDA_GRID if args.lambda_grid is None
            else tuple(args.lambda_grid),
        )  # fmt: skip
        study = finetune_protocol.finetune_study(dataset, config, progress=progress)
    except ValueError as error:
        raise CliError(str(error)) from None
    files = finetune_report.write_report(
        study, out, overwrite=args.overwrite, command=_command_line(args, out)
    )
    print(finetune_report.console_summary(study))
    print(f"wrote {', '.join(files)} into {out}")
    return 0
