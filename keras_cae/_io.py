"""Atomic writes: build output in a temporary sibling, then rename into place.

Every staging file or directory is named after the process that owns it:
``.<target>.tmp-<pid>-<start>-<host>-<random>``, where ``<start>`` is the owner's
start time (Linux: clock ticks since boot, from ``/proc/<pid>/stat``; 0 where it
cannot be read) and ``<host>`` hashes the host name and PID namespace. A process
killed outright (SIGKILL, out-of-memory killer, power loss) cannot remove its
staging; the next atomic write into the same parent directory does, once it has
proved the owner gone: same host and PID namespace, and no live process with that
PID and start time (a zombie counts as gone). A staging entry of a live process,
of another host (a shared network file system) or with a name we do not recognise
is never touched.

Imports no TensorFlow, so the runtime and the CLI can use it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from typing import Any

from keras_cae import _lock

__all__ = [
    "atomic_directory",
    "atomic_save_npy",
    "atomic_save_npz",
    "atomic_write_json",
    "atomic_write_text",
    "check_output_dir",
    "check_writable",
    "remove_stale_staging",
]

logger = logging.getLogger("keras_cae")

# `<pid>-<start>-<host>-` then tempfile's 8 random characters, as `_staging_prefix`
# writes it; "tmp" is a staging copy, "old" an existing target moved aside.
_STAGING_NAME = re.compile(
    r"^\.(?P<target>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)-(?P<start>\d+)-"
    r"(?P<host>[0-9a-f]{8})-[a-z0-9_]{8}(?:\.[a-z]+)?$"
)


def _process_start(pid: int) -> int | None:
    """The start time of process `pid` in clock ticks since boot; 0 if it runs but its
    start time cannot be read (no ``/proc``, or hidden by ``hidepid``); None if no
    such process runs (a zombie does not run)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stream:
            stat = stream.read()
    except OSError:
        pass
    else:
        # "pid (comm) state ... starttime ...": comm may hold spaces and ")".
        fields = stat[stat.rindex(b")") + 2 :].split()
        return None if fields[0] == b"Z" else int(fields[19])
    try:
        os.kill(pid, 0)  # Signal 0 only asks whether the process exists.
    except ProcessLookupError:
        return None
    except PermissionError:  # It exists and belongs to another user.
        pass
    return 0


def _host_token() -> str:
    """Eight hex digits naming this host and PID namespace, in which PIDs mean the
    same process."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    digest = hashlib.sha256(f"{socket.gethostname()}|{namespace}".encode()).hexdigest()
    return digest[:8]


def _staging_prefix(target: str, kind: str = "tmp") -> str:
    """``.<target>.<kind>-<pid>-<start>-<host>-`` for a staging entry of this process."""
    pid = os.getpid()
    # Within NAME_MAX (255) with the 35 characters that follow.
    name = os.path.basename(target)[:200]
    return f".{name}.{kind}-{pid}-{_process_start(pid) or 0}-{_host_token()}-"


def _owner_gone(match: re.Match[str]) -> bool:
    """Whether the process that named a staging entry is proved to have ended."""
    if os.name != "posix" or match["host"] != _host_token():
        return False
    start = _process_start(int(match["pid"]))
    return start is None or (start != 0 and int(match["start"]) not in (0, start))


def remove_stale_staging(parent: str | os.PathLike[str]) -> list[str]:
    """Removes the staging entries in `parent` whose owner process has ended.

    Lock files that no process holds (`keras_cae._lock.remove_stale_locks`) go too,
    unreported.

    A moved-aside old target (``.<target>.old-...``) is removed only when `<target>`
    exists again. When `<target>` is missing, its owner was killed between moving the
    old output aside and renaming the new one into place (an ``--overwrite``): the old
    output is the only copy, and it is renamed back to `<target>` (with a warning), as
    if the interrupted run had never started.

    Args:
        parent: the directory to clean.

    Returns:
        The paths removed.

    Example:

    >>> remove_stale_staging("exported-models")                     # doctest: +SKIP
    ['/home/me/exported-models/.encoder.tmp-4242-90211-1f2e3d4c-k2j4h5g6']
    """
    parent = os.fspath(parent)
    _lock.remove_stale_locks(parent)
    removed: list[str] = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in names:
        match = _STAGING_NAME.match(name)
        if match is None or not _owner_gone(match):
            continue
        path = os.path.join(parent, name)
        target = os.path.join(parent, match["target"])
        if match["kind"] == "old" and not os.path.lexists(target):
            # A target name of 200 characters may have been cut (`_staging_prefix`).
            if len(match["target"]) < 200:
                with contextlib.suppress(OSError):
                    os.rename(path, target)
                    logger.warning(
                        "Restored %s from %s, where process %s had moved it aside before it "
                        "was killed (its new output never replaced it).",
                        target,
                        name,
                        match["pid"],
                    )
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)
        if not os.path.lexists(path):
            logger.info("Removed %s, left behind by process %s that has ended.", path, match["pid"])
            removed.append(path)
    return removed


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
def atomic_directory(
    path: str | os.PathLike[str],
    overwrite: bool = False,
    argument: str = "out",
    overwrite_hint: str = "overwrite=True",
) -> Iterator[str]:
    """Yields a temporary directory that replaces `path` only if the block succeeds.

    The temporary directory is created beside `path` (same file system, so the final
    rename is atomic). On any exception it is removed and `path` is left untouched.
    An existing `path` is refused unless `overwrite`; with `overwrite`, the old
    directory is moved aside first and deleted only after the new one is in place.
    `path` is locked for the block (`keras_cae._lock.output_lock`): another process
    writing it is refused at once. Staging left in the parent by killed processes is
    removed first, and an old directory that such a process had moved aside is put
    back (`remove_stale_staging`). `argument` and `overwrite_hint` name the setting
    in the caller's spelling (see `check_output_dir`).
    """
    path = os.path.abspath(os.fspath(path))
    check_output_dir(path, overwrite, argument, overwrite_hint)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    with _lock.output_lock(path, f"`{argument}`"):
        remove_stale_staging(parent)
        check_output_dir(path, overwrite, argument, overwrite_hint)  # Perhaps restored.
        staging = tempfile.mkdtemp(prefix=_staging_prefix(path), dir=parent)
        os.chmod(staging, _default_mode(directory=True))
        try:
            yield staging
            check_output_dir(path, overwrite, argument, overwrite_hint)
            backup = None
            if os.path.exists(path):
                backup = tempfile.mkdtemp(prefix=_staging_prefix(path, "old"), dir=parent)
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
    remove_stale_staging(directory)
    handle, staging = tempfile.mkstemp(prefix=_staging_prefix(path), suffix=suffix, dir=directory)
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


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Writes `text` (UTF-8) to `path` via a temporary file and a rename."""
    suffix = os.path.splitext(os.fspath(path))[1] or ".txt"
    _atomic_write(path, suffix, lambda stream: stream.write(text.encode()))


class _WriteOnly:
    """A stream's `write` alone. Given a real file, `numpy.save` writes the data with C
    stdio (`ndarray.tofile`), and a short write (a disk that fills up mid-file) raises
    an `OSError` without an errno ("N requested and M written"); given this, it writes
    through Python's file object, whose `OSError` says ENOSPC, EDQUOT or EFBIG."""

    def __init__(self, stream: Any) -> None:
        self.write = stream.write


def atomic_save_npy(path: str | os.PathLike[str], array: Any) -> None:
    """Saves `array` with `numpy.save` to `path` via a temporary file and a rename."""
    import numpy as np

    _atomic_write(
        path, ".npy", lambda stream: np.save(_WriteOnly(stream), array, allow_pickle=False)
    )


def atomic_save_npz(path: str | os.PathLike[str], arrays: dict[str, Any]) -> None:
    """Saves `arrays` with `numpy.savez` to `path` via a temporary file and a rename."""
    import numpy as np

    _atomic_write(path, ".npz", lambda stream: np.savez(stream, **arrays))
