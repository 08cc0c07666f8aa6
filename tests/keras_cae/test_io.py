"""Atomic writes: all or nothing, never over existing output, default permissions."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pytest

from keras_cae import _io


def umask() -> int:
    value = os.umask(0)
    os.umask(value)
    return value


def test_directory_appears_whole_with_default_permissions(tmp_path):
    target = tmp_path / "out"
    with _io.atomic_directory(target) as staging:
        (open(os.path.join(staging, "a.txt"), "w")).close()
        assert not target.exists()
    assert os.listdir(target) == ["a.txt"]
    assert os.stat(target).st_mode & 0o777 == 0o777 & ~umask()
    assert os.listdir(tmp_path) == ["out"]


def test_failure_leaves_nothing_and_keeps_the_old_directory(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with _io.atomic_directory(target, overwrite=True) as staging:
            (open(os.path.join(staging, "new.txt"), "w")).close()
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == ["out"] and os.listdir(target) == ["old.txt"]


def test_non_empty_target_is_refused_without_overwrite(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="exists and is not empty"):
        with _io.atomic_directory(tmp_path):
            pass
    with pytest.raises(ValueError, match="existing file"):
        _io.check_output_dir(tmp_path / "keep.txt", overwrite=True)


def test_files_are_written_atomically_with_default_permissions(tmp_path):
    _io.atomic_write_json(tmp_path / "m.json", {"b": 1, "a": [1.5]})
    _io.atomic_save_npy(tmp_path / "c.npy", np.arange(3.0))
    assert (tmp_path / "m.json").read_text() == '{\n  "a": [\n    1.5\n  ],\n  "b": 1\n}\n'
    np.testing.assert_array_equal(np.load(tmp_path / "c.npy"), np.arange(3.0))
    for name in ("m.json", "c.npy"):
        assert os.stat(tmp_path / name).st_mode & 0o777 == 0o666 & ~umask()
    with pytest.raises(TypeError):
        _io.atomic_write_json(tmp_path / "bad.json", {"x": object()})
    assert sorted(os.listdir(tmp_path)) == ["c.npy", "m.json"]


# --------------------------------------------------------------------------------------
# Staging left behind by killed processes.

# Stages `out` beside it, says where, writes half a file and waits to be killed.
_OWNER = """
import sys, time
from keras_cae import _io
with _io.atomic_directory(sys.argv[1]) as staging:
    with open(staging + "/half.onnx", "wb") as stream:
        stream.write(b"partial")
    print(staging, flush=True)
    time.sleep(600)
"""


def _start_owner(target: os.PathLike[str]) -> tuple[subprocess.Popen[str], str]:
    """Starts a real process that holds a staging directory for `target`."""
    owner = subprocess.Popen(
        [sys.executable, "-c", _OWNER, os.fspath(target)], stdout=subprocess.PIPE, text=True
    )
    staging = owner.stdout.readline().strip()  # Blocks until the staging exists.
    assert os.path.isfile(os.path.join(staging, "half.onnx")), staging
    return owner, staging


def _wait_until(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_staging_of_a_killed_process_is_removed_by_the_next_write(tmp_path):
    owner, staging = _start_owner(tmp_path / "out")
    assert os.path.basename(staging).startswith(f".out.tmp-{owner.pid}-")
    owner.kill()
    # Killed but not yet reaped: a zombie, which counts as gone.
    _wait_until(lambda: _io._process_start(owner.pid) is None)
    assert os.path.isdir(staging)
    with _io.atomic_directory(tmp_path / "other") as new:
        assert not os.path.exists(staging)
        (open(os.path.join(new, "a.txt"), "w")).close()
    owner.wait()
    assert os.listdir(tmp_path) == ["other"]
    # A file write into the same parent cleans too.
    owner, staging = _start_owner(tmp_path / "out")
    owner.kill()
    owner.wait()
    _io.atomic_write_json(tmp_path / "m.json", {})
    assert sorted(os.listdir(tmp_path)) == ["m.json", "other"]


def test_staging_of_a_live_process_is_kept(tmp_path):
    owner, staging = _start_owner(tmp_path / "out")
    try:
        assert _io.remove_stale_staging(tmp_path) == []
        with _io.atomic_directory(tmp_path / "other"):
            pass
        _io.atomic_write_json(tmp_path / "m.json", {})
        assert os.path.isfile(os.path.join(staging, "half.onnx"))
    finally:
        owner.kill()
        owner.wait()
    assert _io.remove_stale_staging(tmp_path) == [staging]
    assert sorted(os.listdir(tmp_path)) == ["m.json", "other"]


def test_only_proven_orphans_are_removed(tmp_path):
    pid, start, host = os.getpid(), _io._process_start(os.getpid()), _io._host_token()
    assert start and start > 0  # Read from /proc on Linux.
    names = {
        # Ours and running: kept.
        f".a.tmp-{pid}-{start}-{host}-abcd1234": True,
        # Same PID, another start time: the PID was reused, the owner has gone.
        f".b.tmp-{pid}-{start + 1}-{host}-abcd1234": False,
        # Start time unknown and the PID is running: kept.
        f".c.tmp-{pid}-0-{host}-abcd1234": True,
        # Another host or PID namespace: its PIDs mean nothing here.
        f".d.tmp-999999999-1-{'0' * 8 if host != '0' * 8 else '1' * 8}-abcd1234": True,
        # Old output moved aside whose replacement is in place: removed.
        f".present.old-999999999-1-{host}-abcd1234": False,
        # A staged file.
        f".m.json.tmp-999999999-1-{host}-abcd1234.json": False,
        # Not a name we write.
        ".e.tmp-abcd1234": True,
        f"f.tmp-999999999-1-{host}-abcd1234": True,
    }
    (tmp_path / "present").mkdir()
    # Old output moved aside whose target is missing: the only copy, put back.
    (tmp_path / f".gone.old-999999999-1-{host}-abcd1234").mkdir()
    (tmp_path / f".gone.old-999999999-1-{host}-abcd1234" / "x").write_text("old")
    for name in names:
        if name.endswith(".json"):
            (tmp_path / name).write_text("{")
        else:
            (tmp_path / name).mkdir()
            (tmp_path / name / "x").write_text("x")
    removed = _io.remove_stale_staging(tmp_path)
    assert sorted(removed) == sorted(str(tmp_path / n) for n, kept in names.items() if not kept)
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["present", "gone", *(n for n, kept in names.items() if kept)]
    )
    assert (tmp_path / "gone" / "x").read_text() == "old"
