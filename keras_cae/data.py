"""Data loading: the bundled scikit-learn digits and user arrays (.npy, .npz, .csv).

Nothing here downloads: the digits (1,797 real 8×8 handwritten digits, UCI) ship
inside scikit-learn. This module imports no TensorFlow.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Dataset",
    "load_digits",
    "load_array",
    "load_mnist_npz",
    "MNIST_KEYS",
    "check_finite",
    "to_model_input",
    "check_output_range",
]

SUPPORTED_SUFFIXES = (".npy", ".npz", ".csv")


@dataclass(frozen=True)
class Dataset:
    """Inputs as float32, optional integer labels, a name and how inputs were scaled."""

    x: np.ndarray
    y: np.ndarray | None
    name: str
    scaling: str


def load_digits() -> Dataset:
    """Loads scikit-learn's bundled handwritten digits, scaled to [0, 1].

    Returns:
        A `Dataset` with ``x`` of shape ``(1797, 64)`` (pixel intensities 0..16 divided
        by 16) and the digit labels ``y``.

    Example:

    >>> from keras_cae.data import load_digits
    >>> data = load_digits()
    >>> data.x.shape, float(data.x.max())
    ((1797, 64), 1.0)
    """
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    return Dataset(x=x, y=bunch.target.astype(np.int64), name="sklearn-digits", scaling="x / 16")


def check_finite(x: np.ndarray, name: str = "x") -> None:
    """Raises `ValueError` if any row of `x` holds NaN or an infinity, counting the rows."""
    if x.size == 0:
        return
    finite = np.isfinite(x.reshape(x.shape[0], -1)).all(axis=1)
    bad = int(x.shape[0] - finite.sum())
    if bad:
        first = int(np.flatnonzero(~finite)[0])
        raise ValueError(
            f"`{name}` contains NaN or infinite values in {bad} of {x.shape[0]} rows "
            f"(first bad row: {first}). Remove or impute them first."
        )


def to_model_input(
    x: np.ndarray, input_shape: tuple[int | None, ...], name: str = "x"
) -> np.ndarray:
    """Gives data to a model whose input has `input_shape`: the one data contract.

    The data's sample shape is used as it is when it matches the model's (images in,
    images out: a conv encoder gets its ``(n, 28, 28, 1)`` images untouched). A model
    with a flat input ``(None, features)`` gets each sample flattened when the sample
    holds exactly `features` values (``(n, 28, 28)`` into ``(None, 784)``). Anything
    else is refused; nothing is padded, cropped or given a new axis. `keras-cae train`
    (a flat Dense model) and `keras-cae encode` both go through this function.

    Args:
        x: the data, shape ``(n, *sample_shape)``.
        input_shape: the model's input shape, ``(None, *features)``.
        name: what `x` is called in the error. Defaults to `"x"`.

    Returns:
        `x`, or a flattened view of it.

    Raises:
        ValueError: the sample shape neither matches nor flattens to the model's.

    Example:

    >>> import numpy as np
    >>> from keras_cae.data import to_model_input
    >>> to_model_input(np.zeros((5, 28, 28)), (None, 784)).shape
    (5, 784)
    >>> to_model_input(np.zeros((5, 28, 28, 1)), (None, 28, 28, 1)).shape
    (5, 28, 28, 1)
    """
    sample, expected = tuple(x.shape[1:]), tuple(input_shape[1:])
    if len(sample) == len(expected) and all(e is None or e == s for e, s in zip(expected, sample)):
        return x
    if len(expected) == 1 and expected[0] == int(np.prod(sample)):
        return x.reshape(x.shape[0], -1)
    wanted = ", ".join(str(d) for d in expected)
    raise ValueError(
        f"`{name}` should have samples of shape ({wanted}), or of any shape with "
        f"{wanted} values when the model's input is flat. Received: {name}.shape={x.shape} "
        f"for a model with input shape {tuple(input_shape)}."
    )


# The values each output activation can produce; inputs far outside them cannot be
# reconstructed, so training on them only fits the bias (MSE 21,495 on raw uint8).
_OUTPUT_RANGES = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0), "softmax": (0.0, 1.0)}


def check_output_range(x: np.ndarray, output_activation: str, name: str = "x") -> None:
    """Raises `ValueError` when `x` lies outside what the decoder's activation produces.

    A sigmoid decoder outputs values in (0, 1) and a tanh decoder in (-1, 1); inputs
    beyond that range (raw 0–255 pixels, say) cannot be reconstructed, and training on
    them quietly ends with a huge error and a vanishing penalty. The message gives the
    fix. A margin of 1 % of the range allows for rounding in stored data.

    Args:
        x: the training inputs.
        output_activation: the decoder's output activation; only `"sigmoid"`,
            `"softmax"` and `"tanh"` are bounded, so other names pass.
        name: what `x` is called in the error. Defaults to `"x"`.

    Raises:
        ValueError: `x` has values outside the activation's range.

    Example:

    >>> import numpy as np
    >>> from keras_cae.data import check_output_range
    >>> check_output_range(np.array([[0.0, 0.5, 1.0]]), "sigmoid")
    >>> check_output_range(np.array([[0.0, 255.0]]), "linear")
    """
    bounds = _OUTPUT_RANGES.get(output_activation)
    if bounds is None or x.size == 0:
        return
    low, high = bounds
    margin = 0.01 * (high - low)
    found_low, found_high = float(np.min(x)), float(np.max(x))
    if found_low >= low - margin and found_high <= high + margin:
        return
    if found_low >= 0 and found_high <= 255 and found_high > 1:
        fix = f"for 8-bit pixels divide by 255 (x / 255), else rescale to [{low:g}, {high:g}]"
    else:
        fix = f"rescale it to [{low:g}, {high:g}], e.g. (x - x.min()) / (x.max() - x.min())"
    raise ValueError(
        f"`{name}` has values in [{found_low:g}, {found_high:g}], but the decoder's output "
        f"activation {output_activation!r} only produces values in [{low:g}, {high:g}], so "
        f"it cannot reconstruct them: {fix}; or use output_activation='linear' "
        "(--output-activation linear)."
    )


def _read_csv(path: str) -> np.ndarray:
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    rows = [row for row in rows if row and any(cell.strip() for cell in row)]
    if not rows:
        raise ValueError(f"{path}: the CSV file is empty")
    try:
        [float(cell) for cell in rows[0]]
    except ValueError:
        rows = rows[1:]  # A header row.
    width = len(rows[0]) if rows else 0
    values = np.empty((len(rows), width), dtype=np.float64)
    for index, row in enumerate(rows):
        if len(row) != width:
            raise ValueError(f"{path}: row {index + 1} has {len(row)} columns, expected {width}")
        for column, cell in enumerate(row):
            try:
                values[index, column] = float(cell)
            except ValueError:
                raise ValueError(
                    f"{path}: row {index + 1}, column {column + 1} is not a number: {cell!r}"
                ) from None
    return values


def load_array(path: str | os.PathLike[str]) -> Dataset:
    """Loads a 2-D or higher float array from `.npy`, `.npz` (key `x`, or its only
    array; an optional `y` holds labels) or `.csv` (numbers only; one header row allowed).

    Args:
        path: the file to read.

    Returns:
        A `Dataset` with float32 inputs. Labels only from `.npz` files with a `y` array.

    Raises:
        ValueError: unknown suffix, unreadable file, text cells, fewer than 2 dims,
            or NaN/infinite values (the message says which).

    Example:

    >>> import numpy as np, tempfile, os
    >>> from keras_cae.data import load_array
    >>> path = os.path.join(tempfile.mkdtemp(), "x.npy")
    >>> np.save(path, np.zeros((4, 3)))
    >>> load_array(path).x.shape
    (4, 3)
    """
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ValueError(
            f"Unrecognized data file {path!r}. Supported suffixes are: {list(SUPPORTED_SUFFIXES)}."
        )
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    labels = None
    try:
        if suffix == ".npy":
            values = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                keys = list(archive.keys())
                if set(MNIST_KEYS) <= set(keys):
                    return load_mnist_npz(path)
                if "x" in archive:
                    values = archive["x"]
                elif len(keys) == 1:
                    values = archive[keys[0]]
                else:
                    raise ValueError(
                        f"{path}: expected an array named 'x' or a single array, found {keys}"
                    )
                labels = archive["y"] if "y" in archive else None
        else:
            values = _read_csv(path)
    except (OSError, EOFError) as error:
        raise ValueError(f"{path}: cannot read the file ({error})") from None
    except ValueError as error:
        if str(error).startswith(path):
            raise
        raise ValueError(f"{path}: cannot read the file ({error})") from None
    if not np.issubdtype(values.dtype, np.number) or np.issubdtype(
        values.dtype, np.complexfloating
    ):
        raise ValueError(f"{path}: expected real numbers, found dtype {values.dtype}")
    if values.ndim < 2 or values.shape[0] == 0:
        raise ValueError(
            f"{path}: expected an array of shape (samples, features...), found shape {values.shape}"
        )
    x = values.astype(np.float32)
    check_finite(x, path)
    if labels is not None and labels.shape[:1] != x.shape[:1]:
        raise ValueError(f"{path}: 'y' has {labels.shape[0]} rows but 'x' has {x.shape[0]}")
    name = os.path.basename(path)
    return Dataset(x=x, y=labels, name=name, scaling="none")


MNIST_KEYS = ("x_train", "y_train", "x_test", "y_test")


def load_mnist_npz(path: str | os.PathLike[str]) -> Dataset:
    """Loads a file in the layout of Keras's ``mnist.npz``, scaled as Rifai et al. did.

    The file holds ``x_train``, ``y_train``, ``x_test`` and ``y_test``; the images are
    uint8 in 0..255 and are divided by 255 (inputs in [0, 1], as in the CAE paper).
    Train and test are concatenated in that order: the studies make their own
    stratified split. `load_array` calls this for any `.npz` with these four keys.
    Nothing is downloaded: the file must be on disk already.

    Args:
        path: the `.npz` file.

    Returns:
        A `Dataset` with ``x`` of shape ``(n_train + n_test, *image_shape)`` (float32),
        integer labels ``y`` and scaling ``"x / 255"``.

    Raises:
        ValueError: if a key is missing, the images are not uint8, or the labels do
            not match the images.

    Example:

    >>> import numpy as np, tempfile, os
    >>> from keras_cae.data import load_mnist_npz
    >>> path = os.path.join(tempfile.mkdtemp(), "mnist.npz")
    >>> images, labels = np.full((3, 4, 4), 255, np.uint8), np.arange(3)
    >>> np.savez(path, x_train=images, y_train=labels, x_test=images[:1], y_test=labels[:1])
    >>> data = load_mnist_npz(path)
    >>> data.x.shape, float(data.x.max()), data.scaling
    ((4, 4, 4), 1.0, 'x / 255')
    """
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in MNIST_KEYS if key not in archive]
            if missing:
                raise ValueError(
                    f"{path}: the mnist.npz layout needs arrays {list(MNIST_KEYS)}; "
                    f"missing {missing}"
                )
            arrays = {key: archive[key] for key in MNIST_KEYS}
    except (OSError, EOFError) as error:
        raise ValueError(f"{path}: cannot read the file ({error})") from None
    for part in ("train", "test"):
        images, labels = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if images.dtype != np.uint8:
            raise ValueError(
                f"{path}: 'x_{part}' should hold uint8 images (0..255) as in mnist.npz. "
                f"Received: dtype {images.dtype}"
            )
        if images.ndim < 2 or labels.shape != images.shape[:1]:
            raise ValueError(
                f"{path}: 'y_{part}' should have one label per image of 'x_{part}'. "
                f"Received: shapes {labels.shape} and {images.shape}"
            )
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"{path}: 'y_{part}' should hold integers, found {labels.dtype}")
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise ValueError(
            f"{path}: 'x_train' and 'x_test' images differ in shape: "
            f"{arrays['x_train'].shape[1:]} and {arrays['x_test'].shape[1:]}"
        )
    x = np.concatenate([arrays["x_train"], arrays["x_test"]]).astype(np.float32) / 255.0
    y = np.concatenate([arrays["y_train"], arrays["y_test"]]).astype(np.int64)
    return Dataset(x=x, y=y, name=os.path.basename(path), scaling="x / 255")
