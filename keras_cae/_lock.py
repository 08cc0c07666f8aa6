"""One writer per output: an OS file lock beside the output, released when its holder dies.

`output_lock(path)` takes an exclusive, non-blocking `fcntl.flock` on
``.<name>.keras-cae-lock`` in the parent directory of `path`; a second process that
asks for the same output is refused at once with a `ValueError` naming the holder's
PID. The kernel releases the lock when the holder exits, however it exits (SIGKILL,
the out-of-memory killer), so a killed run never blocks the next one. The lock file
is removed when the lock is released; one left by a killed holder is locked again by
the next run, or removed by `remove_stale_locks` (which `keras_cae._io` calls
wherever it cleans staging).

The lock lies beside the output rather than in it, so that deleting or renaming the
output (``--overwrite``, an atomic directory) never deletes the lock.
`keras_cae._io.atomic_directory` takes it for the directory it replaces, and
`keras-cae encode` and `keras-cae export` take it before any work, so that the loser
of two runs into one output fails at once rather than after doing the work. Taking
it again in the thread that holds it is allowed (the CLI takes it before the library
does); another thread of the same process is refused like another process.

Platforms without `fcntl` (Windows) take no lock: two runs into one output are then
not detected. On network file systems `flock` works where the client supports it
(Linux NFS clients emulate it with POSIX byte-range locks).

Example:

>>> import os, tempfile
>>> out = os.path.join(tempfile.mkdtemp(), "codes")
>>> with output_lock(out, "--out"):
...     os.path.exists(os.path.join(os.path.dirname(out), ".codes.keras-cae-lock"))
True
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Iterator

try:
    import fcntl
except ImportError:  # Windows.
    fcntl = None  # type: ignore[assignment]

__all__ = ["lock_path", "output_lock", "remove_stale_locks"]

_SUFFIX = ".keras-cae-lock"
_LOCK_NAME = re.compile(r"^\..+" + re.escape(_SUFFIX) + "$")
# A refused lock is asked again this many times, this far apart: a cleaner
# (`remove_stale_locks`) holds an unowned lock file for an instant.
_RETRIES, _RETRY_SECONDS = 3, 0.05

# Lock files held by this process: path -> (thread id, depth).
_held: dict[str, tuple[int, int]] = {}
_held_guard = threading.Lock()


def lock_path(path: str | os.PathLike[str]) -> str:
    """The lock file of output `path`: ``.<name>.keras-cae-lock`` beside it."""
    path = os.path.abspath(os.fspath(path)).rstrip(os.sep) or os.sep
    parent = os.path.realpath(os.path.dirname(path))
    return os.path.join(parent, f".{os.path.basename(path)[:200]}{_SUFFIX}")


def _refusal(path: str, argument: str, holder: str) -> ValueError:
    """The refusal; `holder` is the holder's PID as its lock file says, or a phrase."""
    who = f"process {holder}" if holder.isdigit() else holder or "another process"
    return ValueError(
        f"{argument} {path!r} is being written by another keras-cae run ({who}); wait for it "
        "to finish or choose another output"
    )


def _lock_file(target: str, create: bool) -> int | None:
    """Opens `target` and locks it without waiting; returns the descriptor, or `None`
    when the file was removed from `target` meanwhile. Raises `BlockingIOError`,
    whose text is the holder's PID, when another open file holds the lock."""
    flags = os.O_RDWR | getattr(os, "O_CLOEXEC", 0) | (os.O_CREAT if create else 0)
    fd = os.open(target, flags, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise BlockingIOError(holder) from None
    except BaseException:
        os.close(fd)
        raise
    # A holder removes the file before it unlocks: a lock won on a file that is no
    # longer at `target` locks nothing that anyone else will see.
    try:
        current = os.stat(target)
    except FileNotFoundError:
        current = None
    mine = os.fstat(fd)
    if current is None or (current.st_dev, current.st_ino) != (mine.st_dev, mine.st_ino):
        os.close(fd)
        return None
    return fd


def _acquire(target: str, argument: str, shown: str) -> int:
    """Creates and locks the lock file; returns its descriptor, or raises `ValueError`."""
    refusals = 0
    while True:
        try:
            fd = _lock_file(target, create=True)
        except BlockingIOError as held:
            refusals += 1
            if refusals > _RETRIES:
                raise _refusal(shown, argument, str(held)) from None
            time.sleep(_RETRY_SECONDS)
            continue
        if fd is not None:
            with contextlib.suppress(OSError):  # Only for the message; a full disk may refuse.
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd


@contextlib.contextmanager
def output_lock(path: str | os.PathLike[str], argument: str = "`out`") -> Iterator[None]:
    """Holds the exclusive lock on output `path` for the block; refuses a taken one.

    Creates the parent directory of `path` if needed.

    Args:
        path: the output file or directory (it need not exist).
        argument: how the caller names `path` in the message, e.g. `"--out"`.
            Defaults to ``"`out`"``.

    Raises:
        ValueError: another process (or thread) holds the lock; the message names
            `path` and the holder's PID.

    Example:

    >>> with output_lock("codes", "--out"):                            # doctest: +SKIP
    ...     encode_into("codes")
    """
    shown = os.fspath(path)
    target = lock_path(path)
    thread = threading.get_ident()
    with _held_guard:
        owner, depth = _held.get(target, (None, 0))
        if owner is not None and owner != thread:
            raise _refusal(shown, argument, "another thread of this process")
        if owner == thread:
            _held[target] = (thread, depth + 1)
    if owner == thread:  # Taken again by its holder: nothing more to lock.
        try:
            yield
        finally:
            with _held_guard:
                _held[target] = (thread, depth)
        return
    os.makedirs(os.path.dirname(target), exist_ok=True)
    fd = None if fcntl is None else _acquire(target, argument, shown)
    with _held_guard:
        _held[target] = (thread, 1)
    try:
        yield
    finally:
        with _held_guard:
            del _held[target]
        if fd is not None:
            # Removed while still locked: see `_lock_file`.
            with contextlib.suppress(OSError):
                os.unlink(target)
            os.close(fd)


def remove_stale_locks(parent: str | os.PathLike[str]) -> list[str]:
    """Removes the lock files in `parent` that no process holds (their holder was
    killed); returns their paths. A held lock file is never touched."""
    if fcntl is None:
        return []
    parent = os.fspath(parent)
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    removed = []
    for name in names:
        if _LOCK_NAME.match(name) is None:
            continue
        path = os.path.join(parent, name)
        try:
            fd = _lock_file(path, create=False)
        except OSError:  # Held (BlockingIOError), gone, or not ours to open.
            continue
        if fd is None:
            continue
        with contextlib.suppress(OSError):
            os.unlink(path)
            removed.append(path)
        os.close(fd)
    return removed
