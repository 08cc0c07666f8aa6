"""How the `keras-cae` command line fails: one line on stderr, exit code 2.

Every error reads ``keras-cae <command>: error: <message>``, argparse's own form, so
a refused option and a refused file look alike.

Example:

>>> error = CliError("--out 'x' is a file", prog="keras-cae train")
>>> print(error.line())
keras-cae train: error: --out 'x' is a file
"""

from __future__ import annotations

import argparse
from typing import NoReturn

__all__ = ["EXIT_USAGE", "CliError", "Parser"]

EXIT_USAGE = 2


class CliError(Exception):
    """An error to report as one line with exit code 2.

    Args:
        message: what is wrong and how to fix it, without a prefix.
        prog: the command that failed, e.g. `"keras-cae train"`; `main` fills it in
            when `None`. Defaults to `None`.
    """

    def __init__(self, message: str, prog: str | None = None) -> None:
        super().__init__(message)
        self.prog = prog

    def line(self, prog: str = "keras-cae") -> str:
        """The one line to print: `"<prog>: error: <message>"`, whitespace collapsed."""
        message = " ".join(str(self).split())
        return f"{self.prog or prog}: error: {message}"


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, without the usage block."""

    def error(self, message: str) -> NoReturn:
        raise CliError(message, prog=self.prog)
