"""Where a `keras-cae` job writes: its default `--out`, and the check made before any work.

Example:

>>> default_out("train").startswith("runs/train-")
True
"""

from __future__ import annotations

import datetime
import os

from keras_cae import _io

__all__ = ["check_out", "default_out"]


def default_out(command: str) -> str:
    """`runs/<command>-<timestamp>`, the default output directory of a job."""
    return os.path.join("runs", f"{command}-{datetime.datetime.now():%Y%m%d-%H%M%S}")


def check_out(out: str, overwrite: bool) -> None:
    """Refuses an `--out` directory that is taken (without `--overwrite`) or unwritable.

    Raises:
        ValueError: `--out` is a file, a non-empty directory without `overwrite`, or
            lies where this process cannot create it (a read-only directory, a path
            under a regular file).
    """
    _io.check_output_dir(out, overwrite, "--out", overwrite_hint="--overwrite")
    _io.check_writable(out, "--out")
