"""The `keras-cae` command line: one module per subcommand, `main` dispatches.

``keras-cae train | export | encode | serve | compare``. Each subcommand's module adds
its parser and runs it. Building the parsers imports numpy and onnxruntime at most;
TensorFlow is imported only by the commands that train or export, after their checks,
so `keras-cae encode` and `keras-cae serve` never import it. Errors are one line on
stderr, ``keras-cae <command>: error: <message>``, with exit code 2.

Example:

>>> from keras_cae.cli import main
>>> main(["--version"])  # doctest: +ELLIPSIS
keras-cae ...
0
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from keras_cae import __version__
from keras_cae.cli import compare, encode, export, serve, train
from keras_cae.cli.errors import EXIT_USAGE, CliError, Parser

__all__ = ["main", "CliError"]

_SUBCOMMANDS = (train, export, encode, serve, compare)


def _build_parser() -> Parser:
    parser = Parser(
        prog="keras-cae",
        description="Contractive auto-encoders for Keras: train, export to ONNX, encode "
        "and serve without TensorFlow, compare with other auto-encoders.",
        epilog="Run `keras-cae COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"keras-cae {__version__}")
    subparsers = parser.add_subparsers(
        dest="command",
        required=True,
        parser_class=Parser,
        metavar="COMMAND",
        title="commands",
        help="one of:",
    )
    for module in _SUBCOMMANDS:
        module.add_parser(subparsers)
    return parser


def _missing_package(prog: str, error: ModuleNotFoundError) -> str:
    """What to install when a command's dependency is missing."""
    if prog == "keras-cae serve":
        fix = "pip install 'keras-cae[serve]'"
    else:  # train, export, compare need the training stack; encode needs the base install.
        fix = "the full install (pip install keras-cae) has it"
    module = (error.name or "?").partition(".")[0]
    return f"this command needs the module {module!r}, which is not installed: {fix}"


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the `keras-cae` command line; returns the exit code.

    Args:
        argv: the arguments after `keras-cae`. Defaults to `sys.argv[1:]`.

    Returns:
        0 on success, 2 for an error the user can fix (printed as one line on
        stderr), 130 when interrupted.
    """
    parser = _build_parser()
    prog = "keras-cae"
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as done:  # --help and --version print, then exit.
            return int(done.code or 0)
        prog = f"keras-cae {args.command}"
        return int(args.run(args) or 0)
    except CliError as error:
        print(error.line(prog), file=sys.stderr)
    except (ValueError, FileNotFoundError, PermissionError) as error:
        print(CliError(str(error)).line(prog), file=sys.stderr)
    except ModuleNotFoundError as error:  # e.g. `train` in the TensorFlow-free service install.
        print(CliError(_missing_package(prog, error)).line(prog), file=sys.stderr)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return EXIT_USAGE
