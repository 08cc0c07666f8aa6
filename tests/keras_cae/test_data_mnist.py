"""`keras_cae.data.load_mnist_npz`: the mnist.npz layout, from a small generated file."""

from __future__ import annotations

import numpy as np
import pytest

from keras_cae.data import load_array, load_mnist_npz


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


def test_mnist_layout_is_scaled_by_255_and_concatenated_train_then_test(tmp_path):
    path = tmp_path / "mnist.npz"
    arrays = _write(path)
    for data in (load_mnist_npz(path), load_array(path)):
        assert data.x.shape == (17, 28, 28) and data.x.dtype == np.float32
        expected = np.concatenate([arrays["x_train"], arrays["x_test"]]) / np.float32(255)
        np.testing.assert_array_equal(data.x, expected.astype(np.float32))
        assert data.y.dtype == np.int64
        assert data.y.tolist() == [*arrays["y_train"].tolist(), *arrays["y_test"].tolist()]
        assert data.scaling == "x / 255" and data.name == "mnist.npz"
    assert float(load_mnist_npz(path).x.max()) <= 1.0


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
    _write(path, y_test=None)
    with pytest.raises(ValueError, match=r"missing \['y_test'\]"):
        load_mnist_npz(path)
