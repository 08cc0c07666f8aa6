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

__all__ = [
    "atomic_directory",
    "atomic_save_npy",
    "atomic_write_json",
    "check_output_dir",
    "check_writable",
]


def _default_mode(directory: bool) -> int:
    """The mode a plain `mkdir`/`open` would give under the current umask.

    `tempfile` creates private staging files (0600) and directories (0700); the
    renamed result must look like any other output, readable by a service that runs
    as another user where the umask allows it.
    """
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def check_output_dir(
    path: str | os.PathLike[str],
    overwrite: bool,
    argument: str = "out",
    overwrite_hint: str = "overwrite=True",
) -> None:
    """Raises `ValueError` if `path` is a file, or a non-empty directory without `overwrite`.

    `argument` and `overwrite_hint` name the setting in the caller's own spelling:
    `out` and `overwrite=True` for Python, `--out` and `--overwrite` for the CLI.
    """
    path = os.fspath(path)
    if os.path.isfile(path):
        raise ValueError(f"`{argument}` {path!r} is an existing file; give a directory path")
    if os.path.isdir(path) and os.listdir(path) and not overwrite:
        raise ValueError(
            f"`{argument}` {path!r} exists and is not empty; choose another directory or "
            f"pass {overwrite_hint}"
        )


def check_writable(path: str | os.PathLike[str], argument: str = "out") -> None:
    """Raises `ValueError` unless `path` could be created or replaced by this process.

    Its nearest existing ancestor must be a directory in which this process can create
    an entry (tried for real with an empty directory, removed at once, so that read-only
    file systems and permissions are both caught), so that a long job fails at once
    rather than when it writes its result.

    Args:
        path: the file or directory to be written.
        argument: the setting's name for the message. Defaults to `"out"`.

    Raises:
        ValueError: naming `path`, the ancestor that blocks it and why.

    Example:

    >>> import tempfile
    >>> check_writable(os.path.join(tempfile.gettempdir(), "new", "run"))
    """
    shown = os.fspath(path)
    ancestor = os.path.dirname(os.path.abspath(shown))
    while not os.path.lexists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise ValueError(
            f"`{argument}` {shown!r} cannot be created: {ancestor!r} is a file, not a directory"
        )
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".write-check-", dir=ancestor))
    except OSError as error:
        raise ValueError(
            f"`{argument}` {shown!r} cannot be created: cannot write in {ancestor!r} "
            f"({error.strerror})"
        ) from None


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
    os.chmod(staging, _default_mode(directory=True))
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


def _atomic_write(path: str | os.PathLike[str], suffix: str, write: Any) -> None:
    """Calls `write(binary_stream)` on a temporary sibling of `path`, then renames it."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    handle, staging = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
    os.chmod(staging, _default_mode(directory=False))
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
        os.replace(staging, path)
    except BaseException:
        if os.path.exists(staging):
            os.unlink(staging)
        raise


def atomic_write_json(path: str | os.PathLike[str], payload: Any) -> None:
    """Writes `payload` as indented JSON to `path` via a temporary file and a rename."""
    text = json.dumps(payload, indent=2, sort_keys=True) + "\n"
    _atomic_write(path, ".json", lambda stream: stream.write(text.encode()))


def atomic_save_npy(path: str | os.PathLike[str], array: Any) -> None:
    """Saves `array` with `numpy.save` to `path` via a temporary file and a rename."""
    import numpy as np

    _atomic_write(path, ".npy", lambda stream: np.save(stream, array, allow_pickle=False))
