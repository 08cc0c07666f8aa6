"""`keras_cae._lock.output_lock`: one writer per output, across processes and threads;
a killed holder releases it; lock files nobody holds are cleaned."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from keras_cae import _io, _lock

# Holds the lock on argv[1] (with `atomic_directory` when argv[2] is "directory"), says
# so, and waits to be killed.
_HOLDER = """
import sys, time
from keras_cae import _io, _lock
held = (
    _io.atomic_directory(sys.argv[1]) if sys.argv[2] == "directory"
    else _lock.output_lock(sys.argv[1])
)
with held:
    print("held", flush=True)
    time.sleep(600)
"""


def _hold(path, how: str = "lock") -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, os.fspath(path), how], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


@pytest.mark.parametrize("how", ["lock", "directory"])
def test_another_process_is_refused_until_the_holder_is_killed(tmp_path, how):
    out = tmp_path / "out"
    holder = _hold(out, how)
    try:
        refusal = rf"--out '{out}' is being written .*\(process {holder.pid}\)"
        with pytest.raises(ValueError, match=refusal):
            with _lock.output_lock(out, "--out"):
                pass
        with pytest.raises(ValueError, match=f"`out` '{out}' is being written"):
            with _io.atomic_directory(out):
                pass
        # A held lock file is not stale.
        assert _lock.remove_stale_locks(tmp_path) == []
    finally:
        holder.kill()  # SIGKILL: no clean-up runs, the kernel drops the lock.
        holder.wait()
    left = os.path.basename(_lock.lock_path(out))
    assert left in os.listdir(tmp_path)  # The killed holder could not remove it...
    with _lock.output_lock(out, "--out"):  # ...and it does not block the next run,
        pass
    assert not os.path.exists(_lock.lock_path(out))  # which removes it when done.
    holder = _hold(out)
    holder.kill()
    holder.wait()
    assert _lock.remove_stale_locks(tmp_path) == [_lock.lock_path(out)]
    _io.remove_stale_staging(tmp_path)  # The directory holder's staging.
    assert os.listdir(tmp_path) == []


def test_the_holding_thread_may_take_it_again_another_thread_may_not(tmp_path):
    out = tmp_path / "out"
    errors = []

    def other() -> None:
        try:
            with _lock.output_lock(out):
                pass
        except ValueError as error:
            errors.append(str(error))

    with _lock.output_lock(out):
        with _lock.output_lock(out):  # The CLI holds it, then the library takes it.
            pass
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert os.path.exists(_lock.lock_path(out))  # Still held after the inner block.
    assert errors == [
        f"`out` '{out}' is being written by another keras-cae run (another thread of this "
        "process); wait for it to finish or choose another output"
    ]
    assert os.listdir(tmp_path) == []


def test_files_that_are_not_our_locks_are_left_alone(tmp_path):
    for name in (".out.lock", "out.keras-cae-lock", ".git.index.lock"):
        (tmp_path / name).write_text("123\n")
    assert _lock.remove_stale_locks(tmp_path) == []
    assert len(os.listdir(tmp_path)) == 3
