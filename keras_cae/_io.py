"""Atomic writes: build output in a temporary sibling, then rename into place.

Imports no TensorFlow, so the runtime and the CLI can use it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

__all__ = ["atomic_directory", "atomic_write_json", "check_output_dir"]


def check_output_dir(path: str | os.PathLike[str], overwrite: bool, argument: str = "out") -> None:
    """Raises `ValueError` if `path` is a file, or a non-empty directory without `overwrite`."""
    path = os.fspath(path)
    if os.path.isfile(path):
        raise ValueError(f"`{argument}` {path!r} is an existing file; give a directory path")
    if os.path.isdir(path) and os.listdir(path) and not overwrite:
        raise ValueError(
            f"`{argument}` {path!r} exists and is not empty; choose another directory or "
            "pass overwrite=True (--overwrite)"
        )


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[str]:
    """Yields a temporary directory that replaces `path` only if the block succeeds.

    The temporary directory is created beside `path` (same file system, so the final
    rename is atomic). On any exception it is removed and `path` is left untouched.
    An existing `path` is refused unless `overwrite`; with `overwrite`, the old
    directory is moved aside first and deleted only after the new one is in place.
    """
    path = os.path.abspath(os.fspath(path))
    check_output_dir(path, overwrite)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    try:
        yield staging
        check_output_dir(path, overwrite)
        backup = None
        if os.path.exists(path):
            backup = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old-", dir=parent)
            os.rmdir(backup)
            os.rename(path, backup)
        try:
            os.rename(staging, path)
        except BaseException:
            if backup is not None:
                os.rename(backup, path)
            raise
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging, ignore_errors=True)


def atomic_write_json(path: str | os.PathLike[str], payload: Any) -> None:
    """Writes `payload` as indented JSON to `path` via a temporary file and a rename."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    handle, staging = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=directory)
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(payload, stream, indent=2, sort_keys=True)
            stream.write("\n")
        os.replace(staging, path)
    except BaseException:
        if os.path.exists(staging):
            os.unlink(staging)
        raise
