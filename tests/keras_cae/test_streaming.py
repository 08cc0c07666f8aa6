"""Streaming sharded .npy / TFRecord data through tf.data, and `keras-cae train` on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_cae import cli, dense_autoencoder, streaming


def _rows(count: int, width: int = 6, seed: int = 0) -> np.ndarray:
    # Column 0 is the row id, so every row can be traced through the stream.
    x = np.random.default_rng(seed).random((count, width)).astype("float32")
    x[:, 0] = np.arange(count)
    return x


@pytest.fixture
def npy_shards(tmp_path) -> tuple[str, np.ndarray]:
    x = _rows(203)
    folder = tmp_path / "npy"
    folder.mkdir()
    for index, part in enumerate(np.array_split(x, 5)):  # Uneven shards: 41, 41, 41, 40, 40.
        np.save(folder / f"part-{index}.npy", part)
    (folder / "README.txt").write_text("not a shard")  # Ignored in a directory.
    return str(folder), x


@pytest.fixture
def tfrecord_shards(tmp_path) -> tuple[str, np.ndarray]:
    x = _rows(90)
    folder = tmp_path / "tfrecord"
    folder.mkdir()
    for index, part in enumerate(np.array_split(x, 3)):
        streaming.write_tfrecord(folder / f"part-{index}.tfrecord", part)
    return str(folder), x


def _epoch(dataset: tf.data.Dataset) -> np.ndarray:
    return np.concatenate([batch.numpy() for batch in dataset])


def test_open_shards_directory_and_glob(npy_shards) -> None:
    folder, x = npy_shards
    source = streaming.open_shards(folder)
    assert source.kind == "npy" and source.num_rows == len(x) and source.row_shape == (6,)
    assert [os.path.basename(p) for p in source.paths] == [f"part-{i}.npy" for i in range(5)]
    subset = streaming.open_shards(os.path.join(folder, "part-[01].npy"))
    assert len(subset.paths) == 2 and subset.num_rows == 82
    assert streaming.is_shard_spec(folder) and streaming.is_shard_spec("data/*.npy")
    assert not streaming.is_shard_spec(os.path.join(folder, "part-0.npy"))


@pytest.mark.parametrize("kind", ["npy", "tfrecord"])
def test_every_row_once_per_epoch_reshuffled(kind, npy_shards, tfrecord_shards) -> None:
    folder, x = npy_shards if kind == "npy" else tfrecord_shards
    dataset = streaming.shard_dataset(
        folder, batch_size=16, seed=7, shuffle_buffer=32, block_rows=8
    )
    first, second = _epoch(dataset), _epoch(dataset)
    for epoch in (first, second):
        assert epoch.dtype == np.float32 and epoch.shape == x.shape
        order = np.argsort(epoch[:, 0])
        np.testing.assert_array_equal(epoch[order], x)  # Each row exactly once, intact.
    assert not np.array_equal(first[:, 0], second[:, 0])  # Reshuffled every epoch.
    assert not np.array_equal(first[:, 0], x[:, 0])
    again = streaming.shard_dataset(folder, batch_size=16, seed=7, shuffle_buffer=32, block_rows=8)
    np.testing.assert_array_equal(_epoch(again), first)  # Reproducible from the seed.


@pytest.mark.parametrize("kind", ["npy", "tfrecord"])
def test_without_shuffle_rows_come_in_file_order(kind, npy_shards, tfrecord_shards) -> None:
    folder, x = npy_shards if kind == "npy" else tfrecord_shards
    dataset = streaming.shard_dataset(folder, batch_size=32, shuffle=False)
    np.testing.assert_array_equal(_epoch(dataset), x)
    sizes = [int(batch.shape[0]) for batch in dataset]
    assert sizes == [32] * (len(x) // 32) + ([len(x) % 32] if len(x) % 32 else [])
    if kind == "npy":
        assert int(dataset.cardinality()) == len(sizes)


def test_image_shaped_rows_flatten(tmp_path) -> None:
    x = np.random.default_rng(0).random((20, 4, 4)).astype("float32")
    for index in range(2):
        np.save(tmp_path / f"s{index}.npy", x[index * 10 : (index + 1) * 10])
    source = streaming.open_shards(str(tmp_path))
    assert source.row_shape == (4, 4)
    flat = _epoch(streaming.shard_dataset(source, 8, shuffle=False, flatten=True))
    np.testing.assert_array_equal(flat, x.reshape(20, 16))


def test_streamed_fit_equals_in_memory_fit(npy_shards) -> None:
    """Same batches (no shuffle) and same initial weights: the same model."""
    folder, x = npy_shards
    streamed, in_memory = (dense_autoencoder(6, 3, seed=2) for _ in range(2))
    in_memory.set_weights(streamed.get_weights())
    history = streamed.fit(
        streaming.shard_dataset(folder, 32, shuffle=False), epochs=2, shuffle=False, verbose=0
    ).history
    reference = in_memory.fit(x, batch_size=32, epochs=2, shuffle=False, verbose=0).history
    np.testing.assert_allclose(history["loss"], reference["loss"], rtol=1e-6)
    for a, b in zip(streamed.get_weights(), in_memory.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "setup, match",
    [
        (lambda d: None, "No data shards found"),
        (
            lambda d: (
                np.save(d / "a.npy", np.ones((2, 3))),
                streaming.write_tfrecord(d / "b.tfrecord", np.ones((2, 3))),
            ),
            "should all be .npy or all .tfrecord",
        ),
        (
            lambda d: (
                np.save(d / "a.npy", np.ones((2, 3))),
                np.save(d / "b.npy", np.ones((2, 4))),
            ),
            "different row shapes",
        ),
        (lambda d: np.save(d / "a.npy", np.ones(5)), r"shape \(rows, features"),
        (lambda d: np.save(d / "a.npy", np.asfortranarray(np.ones((3, 4)))), "Fortran order"),
        (lambda d: np.save(d / "a.npy", np.array([["a", "b"]])), "expected real numbers"),
        (lambda d: (d / "a.npy").write_bytes(b"garbage"), "cannot read the .npy"),
    ],
)
def test_bad_shards_raise_value_error(tmp_path, setup, match) -> None:
    setup(tmp_path)
    with pytest.raises(ValueError, match=match):
        streaming.open_shards(str(tmp_path))


def test_bad_arguments_and_nan_rows(npy_shards, tmp_path) -> None:
    folder, _ = npy_shards
    with pytest.raises(ValueError, match="batch_size=0"):
        streaming.shard_dataset(folder, 0)
    x = _rows(30)
    x[17, 2] = np.nan
    np.save(tmp_path / "bad.npy", x)
    with pytest.raises(ValueError, match=r"bad.npy: row 17 contains NaN"):
        with streaming.data_errors():
            _epoch(streaming.shard_dataset(str(tmp_path / "bad.npy"), 8))


def test_cli_trains_on_a_shard_directory(npy_shards, tmp_path, capsys) -> None:
    folder, x = npy_shards
    out = tmp_path / "run"
    code = cli.main(
        [
            "train",
            "--data",
            folder,
            "--out",
            str(out),
            "--epochs",
            "2",
            "--hidden-units",
            "3",
            "--batch-size",
            "32",
            "--quiet",
        ]
    )
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data_format"] == "npy shards (streamed)"
    assert len(metrics["test_shards"]) == 1 and metrics["train_shards"] == 4
    assert metrics["num_train"] + metrics["num_test"] == len(x)
    assert len(metrics["history"]["loss"]) == 2
    assert np.isfinite(metrics["test_reconstruction_mse"])
    model = keras.models.load_model(out / "model.keras")
    assert model.encoder.output_shape == (None, 3)


def test_cli_trains_on_a_tfrecord_glob_with_steps(tfrecord_shards, tmp_path) -> None:
    folder, _ = tfrecord_shards
    out = tmp_path / "run"
    code = cli.main(
        [
            "train",
            "--data",
            os.path.join(folder, "*.tfrecord"),
            "--out",
            str(out),
            "--epochs",
            "2",
            "--steps-per-epoch",
            "3",
            "--hidden-units",
            "3",
            "--quiet",
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_train"] is None and metrics["num_test"] == 30  # One of 3 shards.
    assert metrics["config"]["steps_per_epoch"] == 3


@pytest.mark.parametrize(
    "arguments, match",
    [
        (["--data", "{missing}/*.npy"], "No data shards found"),
        (["--data", "{one}"], "at least 2 shards"),
        (["--data", "{folder}", "--cpu-devices", "2"], "--cpu-devices only applies"),
        (["--steps-per-epoch", "3"], "--steps-per-epoch only applies"),
        (["--data", "{folder}", "--strategy", "multi-worker"], "TF_CONFIG"),
    ],
)
def test_cli_errors_are_one_line(
    arguments, match, npy_shards, tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
    folder, _ = npy_shards
    one = tmp_path / "one"
    one.mkdir()
    np.save(one / "only.npy", np.ones((4, 6), np.float32))
    values = {"folder": folder, "one": str(one), "missing": str(tmp_path / "nothing")}
    arguments = [a.format(**values) for a in arguments]
    code = cli.main(["train", "--out", str(tmp_path / "out"), "--quiet", *arguments])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and match in err, err


@pytest.mark.slow  # About 8 s on 2 idle cores (--durations).
def test_cli_mirrored_streaming_with_backup(npy_shards, tmp_path) -> None:
    """--strategy mirrored on two logical CPUs (a fresh process: devices are split
    before TensorFlow starts), streamed shards, and a backup directory."""
    folder, _ = npy_shards
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "keras_cae.cli",
        "train",
        "--data",
        folder,
        "--out",
        str(out),
        "--epochs",
        "2",
        "--hidden-units",
        "3",
        "--batch-size",
        "32",
        "--quiet",
        "--strategy",
        "mirrored",
        "--cpu-devices",
        "2",
        "--backup-dir",
        str(tmp_path / "backup"),
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["replicas"] == 2
    assert np.isfinite(metrics["history"]["loss"]).all()


@pytest.mark.slow
def test_cli_mirrored_batch_size_must_split_over_replicas(npy_shards, tmp_path) -> None:
    folder, _ = npy_shards
    command = [
        sys.executable, "-m", "keras_cae.cli", "train", "--data", folder, "--quiet",
        "--out", str(tmp_path / "odd"), "--batch-size", "33",
        "--strategy", "mirrored", "--cpu-devices", "2",
    ]  # fmt: skip
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    odd = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert odd.returncode == 2
    last = odd.stderr.strip().splitlines()[-1]
    assert last.startswith("keras-cae train: error: --batch-size 33")
    assert "multiple of the 2" in last
