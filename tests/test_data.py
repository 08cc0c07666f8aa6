"""Data loading: digits and user arrays."""

from __future__ import annotations

import numpy as np
import pytest

from keras_cae.data import load_array, load_digits


def test_digits_are_bundled_and_scaled():
    data = load_digits()
    assert data.x.shape == (1797, 64) and data.x.dtype == np.float32
    assert data.x.min() == 0.0 and data.x.max() == 1.0
    assert sorted(set(data.y.tolist())) == list(range(10))


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".csv"])
def test_arrays_load_from_every_format(tmp_path, rng, suffix):
    x = rng.random((7, 4)).astype("float32")
    path = tmp_path / f"data{suffix}"
    if suffix == ".npy":
        np.save(path, x)
    elif suffix == ".npz":
        np.savez(path, x=x, y=np.arange(7))
    else:
        np.savetxt(path, x, delimiter=",")
    data = load_array(path)
    np.testing.assert_allclose(data.x, x, rtol=1e-6)
    assert data.x.dtype == np.float32
    assert (data.y is not None) == (suffix == ".npz")


@pytest.mark.parametrize(
    "content, message",
    [
        (lambda p: np.save(p.with_suffix(".npy"), np.zeros(5)), "expected an array of shape"),
        (lambda p: np.save(p.with_suffix(".npy"), np.array(["a", "b"])), "expected real numbers"),
        (lambda p: p.with_suffix(".npy").write_bytes(b"garbage"), "cannot read"),
        (lambda p: p.with_suffix(".csv").write_text("1,2\n3\n"), "row 2 has 1 columns, expected 2"),
        (lambda p: p.with_suffix(".csv").write_text(""), "empty"),
        (
            lambda p: np.savez(p.with_suffix(".npz"), a=np.ones((2, 2)), b=np.ones((2, 2))),
            "named 'x'",
        ),
    ],
)
def test_bad_files_are_rejected_clearly(tmp_path, content, message):
    base = tmp_path / "data"
    content(base)
    path = next(tmp_path.iterdir())
    with pytest.raises(ValueError, match=message):
        load_array(path)
