"""Data loading: digits and user arrays."""

from __future__ import annotations

import numpy as np
import pytest

from keras_cae.data import check_output_range, load_array, load_digits, to_model_input


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


@pytest.mark.parametrize(
    "shape, input_shape, expected",
    [
        ((5, 3, 4), (None, 3, 4), (5, 3, 4)),  # Images into an image model: as they are.
        ((5, 3, 4), (None, 12), (5, 12)),  # Into a flat model with 12 inputs: flattened.
        ((5, 12), (None, 12), (5, 12)),
        ((5, 3, 4, 1), (None, None, None, 1), (5, 3, 4, 1)),  # Dynamic image sizes.
    ],
)
def test_data_is_given_to_the_model_as_it_is_or_flattened(shape, input_shape, expected):
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    got = to_model_input(x, input_shape)
    assert got.shape == expected
    np.testing.assert_array_equal(got.ravel(), x.ravel())  # Row-major: no reordering.


@pytest.mark.parametrize(
    "shape, input_shape",
    [((5, 12), (None, 3, 4)), ((5, 3, 4), (None, 4, 3)), ((5, 3, 4), (None, 11))],
)
def test_data_that_neither_matches_nor_flattens_is_refused(shape, input_shape):
    with pytest.raises(ValueError, match=r"Received: images.shape=\(5, .*input shape"):
        to_model_input(np.zeros(shape, np.float32), input_shape, "images")


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "linear", "relu"])
def test_data_in_range_passes(activation):
    check_output_range(np.linspace(0.0, 1.0, 12).reshape(3, 4), activation)
    check_output_range(np.array([[-0.005, 1.005]]), "sigmoid")  # Within the 1 % margin.


@pytest.mark.parametrize(
    "x, activation, fix",
    [
        (np.array([[0.0, 255.0]]), "sigmoid", "divide by 255"),
        (np.array([[0.0, 2.0]]), "tanh", "divide by 255"),
        (np.array([[-3.0, 0.5]]), "sigmoid", "(x - x.min()) / (x.max() - x.min())"),
        (np.array([[-1.0, 1.0]]), "sigmoid", "rescale it to [0, 1]"),
    ],
)
def test_data_outside_the_output_activation_is_refused_with_the_fix(x, activation, fix):
    with pytest.raises(ValueError) as error:
        check_output_range(x, activation, "pixels.npy")
    message = str(error.value)
    assert f"`pixels.npy` has values in [{x.min():g}, {x.max():g}]" in message
    assert activation in message and fix in message and "linear" in message
