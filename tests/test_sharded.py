"""`keras_cae.export.sharded` and `keras-cae encode` on shards: codes, manifest, resume, refusals.

Encoders are small ONNX graphs built with `onnx.helper` (no TensorFlow); codes are
compared bit for bit with `OnnxEncoder.encode` on the same rows held in memory, and
to a float64 numpy reference.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from keras_cae import cli
from keras_cae.export.runtime import OnnxEncoder
from keras_cae.export.sharded import MANIFEST, encode_shards
from tests.test_runtime import _dense_sigmoid_model, _reference

FEATURES, CODE = 6, 3


def _write_shards(folder, sizes, row_shape=(FEATURES,), seed=0) -> np.ndarray:
    """Writes float32 shards `part-<i>.npy` of `sizes` rows; returns all rows in order."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    parts = [rng.normal(size=(rows, *row_shape)).astype(np.float32) for rows in sizes]
    for index, part in enumerate(parts):
        np.save(os.path.join(folder, f"part-{index}.npy"), part)
    return np.concatenate(parts)


def _read_codes(out) -> np.ndarray:
    with open(os.path.join(out, MANIFEST)) as stream:
        manifest = json.load(stream)
    return np.concatenate([np.load(os.path.join(out, s["output"])) for s in manifest["shards"]])


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_codes_and_manifest(tmp_path, model_path, weights) -> None:
    x = _write_shards(tmp_path / "data", [10, 0, 7, 12])
    out = tmp_path / "codes"
    # Blocks of 4 rows: shards are read in several blocks, one with a short tail.
    result = encode_shards(OnnxEncoder(model_path), str(tmp_path / "data"), out, block_rows=4)
    assert (result.num_shards, result.num_encoded, result.num_skipped) == (4, 4, 0)
    assert (result.num_rows, result.code_shape) == (29, (CODE,))
    codes = _read_codes(out)
    np.testing.assert_array_equal(codes, OnnxEncoder(model_path).encode(x))
    np.testing.assert_allclose(codes, _reference(x, weights), rtol=1e-5, atol=1e-6)
    manifest = json.loads((out / MANIFEST).read_text())
    with open(model_path, "rb") as stream:
        sha256 = hashlib.sha256(stream.read()).hexdigest()
    assert manifest["complete"] is True and manifest["num_rows"] == 29
    assert manifest["encoder"] == {"path": os.path.abspath(model_path), "sha256": sha256}
    assert [(s["input"], s["output"], s["rows"], s["input_bytes"]) for s in manifest["shards"]] == [
        (
            str(tmp_path / "data" / f"part-{i}.npy"),
            f"part-{i}.npy",
            rows,
            os.path.getsize(tmp_path / "data" / f"part-{i}.npy"),
        )
        for i, rows in enumerate([10, 0, 7, 12])
    ]
    assert sorted(os.listdir(out)) == [MANIFEST] + [f"part-{i}.npy" for i in range(4)]

    # Run again: nothing to do. Then change one shard (same rows): only it is redone.
    again = encode_shards(OnnxEncoder(model_path), str(tmp_path / "data"), out)
    assert (again.num_encoded, again.num_skipped) == (0, 4)
    changed = np.ones((7, FEATURES), np.float32)
    np.save(tmp_path / "data" / "part-2.npy", changed)
    os.utime(tmp_path / "data" / "part-2.npy", ns=(1, 1))  # Another mtime, whatever the clock.
    again = encode_shards(OnnxEncoder(model_path), str(tmp_path / "data"), out)
    assert (again.num_encoded, again.num_skipped) == (1, 3)
    np.testing.assert_array_equal(
        np.load(out / "part-2.npy"), OnnxEncoder(model_path).encode(changed)
    )


def test_image_rows_are_flattened_for_a_flat_encoder(tmp_path, model_path) -> None:
    x = _write_shards(tmp_path / "data", [5, 4], row_shape=(2, 3))
    encode_shards(OnnxEncoder(model_path), str(tmp_path / "data" / "*.npy"), tmp_path / "out")
    expected = OnnxEncoder(model_path).encode(x.reshape(len(x), FEATURES))
    np.testing.assert_array_equal(_read_codes(tmp_path / "out"), expected)


@pytest.mark.slow
def test_tfrecord_shards_give_the_same_codes(tmp_path, model_path) -> None:
    from keras_cae.streaming import write_tfrecord

    x = _write_shards(tmp_path / "npy", [9, 6])
    (tmp_path / "tfr").mkdir()
    for index, part in enumerate(np.split(x, [9])):
        write_tfrecord(tmp_path / "tfr" / f"part-{index}.tfrecord", part)
    encode_shards(OnnxEncoder(model_path), str(tmp_path / "tfr"), tmp_path / "out", block_rows=4)
    np.testing.assert_array_equal(_read_codes(tmp_path / "out"), OnnxEncoder(model_path).encode(x))


def test_cli_on_shards_imports_no_tensorflow(tmp_path, model_path) -> None:
    x = _write_shards(tmp_path / "data", [8, 3])
    out = tmp_path / "codes"
    script = (
        "import sys; from keras_cae.cli import main; "
        f"rc = main(['encode', {model_path!r}, {str(tmp_path / 'data')!r}, '--out', "
        f"{str(out)!r}]); "
        "assert not [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')]; "
        "sys.exit(rc)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "wrote codes of 11 rows, shape (3,), in 2 shards" in done.stdout
    np.testing.assert_array_equal(_read_codes(out), OnnxEncoder(model_path).encode(x))


def test_killed_run_resumes_to_the_same_codes(tmp_path) -> None:
    """SIGKILL a real `keras-cae encode` once its first codes shard exists; the rerun
    keeps the finished shards, encodes the rest, and matches an uninterrupted run bit
    for bit. The shards are large enough (20 of 2000 x 256, a 256 x 256 encoder on one
    thread) that the run is far from done when the first one appears."""
    rng = np.random.default_rng(5)
    model = str(tmp_path / "wide.onnx")
    _dense_sigmoid_model(model, rng.normal(size=(256, 256)) / 16, rng.normal(size=256))
    _write_shards(tmp_path / "data", [2000] * 20, row_shape=(256,))
    command = [sys.executable, "-m", "keras_cae.cli", "encode", model, str(tmp_path / "data")]
    options = ["--threads", "1", "--batch-size", "256"]

    whole = tmp_path / "whole"
    done = subprocess.run([*command, "--out", str(whole), *options], capture_output=True)
    assert done.returncode == 0, done.stderr

    out = tmp_path / "resumed"
    child = subprocess.Popen([*command, "--out", str(out), *options], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "part-0.npy").exists():
        assert child.poll() is None and time.monotonic() < deadline, "no first shard"
        time.sleep(0.001)
    child.send_signal(signal.SIGKILL)
    child.wait()
    finished = sorted(name for name in os.listdir(out) if name.startswith("part-"))
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["complete"] is False and 1 <= len(finished) < 20, finished

    rerun = subprocess.run([*command, "--out", str(out), *options], capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    lines = [line.split()[0] for line in rerun.stdout.splitlines()]
    kept, encoded = lines.count("kept"), lines.count("encoded")
    assert len(manifest["shards"]) <= kept < 20 and encoded == 20 - kept, lines
    assert sorted(os.listdir(out)) == sorted(os.listdir(whole))  # No staging left behind.
    for name in os.listdir(whole):
        assert (out / name).read_bytes() == (whole / name).read_bytes(), name

    again = subprocess.run(
        [*command, "--out", str(out), *options, "--overwrite"], capture_output=True, text=True
    )
    lines = [line.split()[0] for line in again.stdout.splitlines()]
    assert again.returncode == 0 and lines.count("encoded") == 20, again.stderr
    np.testing.assert_array_equal(_read_codes(out), _read_codes(whole))


def _refused(capsys, argv, match) -> str:
    assert cli.main(argv) == 2
    err = _one_line_error(capsys)
    assert match in err, err
    return err


def test_refusals_are_one_line_and_write_nothing(tmp_path, model_path, capsys) -> None:
    data = tmp_path / "data"
    _write_shards(data, [4, 4])
    out = tmp_path / "codes"

    (tmp_path / "afile").write_text("keep")
    _refused(capsys, ["encode", model_path, str(data), "--out", str(tmp_path / "afile")], "file")
    assert (tmp_path / "afile").read_text() == "keep"

    np.save(data / "part-2.npy", np.ones((3, FEATURES + 1), np.float32))
    _refused(capsys, ["encode", model_path, str(data), "--out", str(out)], "different row shapes")
    assert not out.exists()

    (data / "part-2.npy").write_bytes(b"not a numpy file")
    _refused(
        capsys, ["encode", model_path, str(data), "--out", str(out)], "part-2.npy: cannot read"
    )
    assert not out.exists()

    os.remove(data / "part-2.npy")
    wide = tmp_path / "wide"
    _write_shards(wide, [3], row_shape=(FEATURES + 2,))
    _refused(capsys, ["encode", model_path, str(wide), "--out", str(out)], "do not fit")
    assert not out.exists()

    bad = np.ones((6, FEATURES), np.float32)
    bad[4, 1] = np.nan
    np.save(data / "part-1.npy", bad)
    err = _refused(capsys, ["encode", model_path, str(data), "--out", str(out)], "part-1.npy")
    assert "row 4 contains NaN" in err
    # The shard before it is whole and recorded; nothing of the bad one was written.
    assert sorted(os.listdir(out)) == [MANIFEST, "part-0.npy"]
    assert json.loads((out / MANIFEST).read_text())["complete"] is False

    other = tmp_path / "other.onnx"
    _dense_sigmoid_model(str(other), np.ones((FEATURES, CODE)), np.zeros(CODE))
    _refused(capsys, ["encode", str(other), str(data), "--out", str(out)], "another encoder")

    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    _refused(capsys, ["encode", model_path, str(data), "--out", str(stranger)], "--overwrite")
    assert os.listdir(stranger) == ["notes.txt"]

    _refused(capsys, ["encode", model_path, str(data), "--out", str(data)], "holds the input")
