"""Atomic writes: all or nothing, never over existing output, default permissions."""

from __future__ import annotations

import os

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
