"""`keras_cae.data`: the mnist.npz layout (its own split kept), `--data mnist` from
Keras's cache, and `split_rows`, from small generated files (nothing is downloaded)."""

from __future__ import annotations

import numpy as np
import pytest

from keras_cae import data as data_module
from keras_cae.data import Dataset, load_array, load_mnist, load_mnist_npz, split_rows


def _write(path, **overrides):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, 12).astype(np.uint8),
        "x_test": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, 5).astype(np.uint8),
    }
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return arrays


def test_mnist_layout_is_scaled_by_255_and_keeps_train_and_test_apart(tmp_path):
    path = tmp_path / "mnist.npz"
    arrays = _write(path)
    for data in (load_mnist_npz(path), load_array(path)):
        assert data.has_split
        assert data.x.shape == (12, 28, 28) and data.x.dtype == np.float32
        assert data.x_test.shape == (5, 28, 28) and data.x_test.dtype == np.float32
        for got, key in ((data.x, "x_train"), (data.x_test, "x_test")):
            expected = arrays[key].astype(np.float64) / 255.0
            np.testing.assert_allclose(got, expected, rtol=1e-6)
        assert data.y.dtype == np.int64 and data.y.tolist() == arrays["y_train"].tolist()
        assert data.y_test.tolist() == arrays["y_test"].tolist()
        assert data.scaling == "x / 255" and data.name == "mnist.npz" and data.no_labels == ""
    assert float(load_mnist_npz(path).x.max()) <= 1.0


def test_split_rows_joins_only_when_asked_and_says_which(tmp_path):
    path = tmp_path / "mnist.npz"
    arrays = _write(path)
    data = load_array(path)
    rows, which = split_rows(data, None)
    assert rows.shape == (5, 28, 28) and "x_test" in which and "default --split test" in which
    assert split_rows(data, "train")[0].shape == (12, 28, 28)
    joined, which = split_rows(data, "all")
    assert joined.shape == (17, 28, 28) and "12 + 5 = 17 rows" in which
    np.testing.assert_allclose(joined[12:], arrays["x_test"] / 255.0, rtol=1e-6)
    flat = Dataset(np.zeros((4, 3), np.float32), None, "x.npy", "none")
    assert split_rows(flat, None)[0].shape == (4, 3) and split_rows(flat, "all")[0].shape == (4, 3)
    with pytest.raises(ValueError, match=r"--split test: x.npy has no train/test split"):
        split_rows(flat, "test")
    with pytest.raises(ValueError, match=r"split=.valid."):
        split_rows(data, "valid")


def test_labels_under_other_names_load_without_labels_and_say_why(tmp_path):
    path = tmp_path / "renamed.npz"
    _write(path, y_train=None, y_test=None)
    with np.load(path) as archive:
        arrays = dict(archive)
    np.savez(path, **arrays, train_labels=np.zeros(12, np.int64))
    data = load_array(path)
    assert data.y is None and data.y_test is None and data.x_test.shape == (5, 28, 28)
    assert "no arrays named 'y_train' and 'y_test'" in data.no_labels
    assert "train_labels" in data.no_labels
    other = tmp_path / "xl.npz"
    np.savez(other, x=np.zeros((4, 3)), labels=np.arange(4))
    assert load_array(other).no_labels == "it has no array named 'y' (its arrays: x, labels)"


def test_mnist_is_read_from_keras_cache_without_downloading(tmp_path, monkeypatch):
    home = tmp_path / "keras-home"
    (home / "datasets").mkdir(parents=True)
    arrays = _write(home / "datasets" / "mnist.npz")
    monkeypatch.setenv("KERAS_HOME", str(home))
    assert data_module.mnist_cache_path() == str(home / "datasets" / "mnist.npz")
    data = load_mnist()
    assert data.name == "mnist" and data.x.shape == (12, 28, 28) and data.x_test.shape[0] == 5
    assert data.y.tolist() == arrays["y_train"].tolist()


def test_a_missing_mnist_cache_asks_keras_and_a_failed_download_is_one_message(
    tmp_path, monkeypatch
):
    import keras

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty"))
    calls = []

    def offline(*args, **kwargs):
        calls.append(args)
        raise OSError("no internet")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    with pytest.raises(ValueError, match=r"--data mnist: .*mnist.npz does not exist and Keras"):
        load_mnist()
    assert calls == [()]


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"x_train": np.zeros((12, 28, 28), np.float32)}, r"uint8.*float32"),
        ({"y_test": np.zeros(4, np.int64)}, r"one label per image of 'x_test'"),
        ({"y_train": np.zeros(12, np.float32)}, "should hold integers"),
        ({"x_test": np.zeros((5, 8, 8), np.uint8)}, "differ in shape"),
    ],
)
def test_bad_mnist_files_raise_value_error(tmp_path, overrides, match):
    path = tmp_path / "bad.npz"
    _write(path, **overrides)
    with pytest.raises(ValueError, match=match):
        load_mnist_npz(path)


def test_a_missing_key_is_named(tmp_path):
    path = tmp_path / "partial.npz"
    _write(path, x_test=None)
    with pytest.raises(ValueError, match=r"missing \['x_test'\]"):
        load_mnist_npz(path)
