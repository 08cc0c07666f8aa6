"""Data loading: the bundled scikit-learn digits, MNIST and user arrays (.npy, .npz, .csv).

The digits (1,797 real 8×8 handwritten digits, UCI) ship inside scikit-learn. A file
in the layout of Keras's ``mnist.npz`` (``x_train``, ``y_train``, ``x_test``,
``y_test``) keeps its own split: `Dataset.x` holds the training images and
`Dataset.x_test` the test images, never joined unless asked (`split_rows`). MNIST
itself (`load_mnist`) is read from Keras's cache, ``$KERAS_HOME/datasets/mnist.npz``;
only when that file is missing is Keras asked to download it. Nothing else here
imports TensorFlow.
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
    "load_mnist",
    "load_mnist_npz",
    "mnist_cache_path",
    "split_rows",
    "SPLITS",
    "MNIST_KEYS",
    "check_finite",
    "to_model_input",
    "check_output_range",
]

SUPPORTED_SUFFIXES = (".npy", ".npz", ".csv")


@dataclass(frozen=True)
class Dataset:
    """Inputs as float32, optional integer labels, a name and how inputs were scaled.

    Attributes:
        x: the inputs; for a file with its own split, its training images only.
        y: integer labels of `x`, or `None`.
        name: the file's base name (or ``"sklearn-digits"``, ``"mnist"``).
        scaling: how `x` was scaled from the stored values, e.g. ``"x / 255"``.
        x_test: the file's own test images (``x_test`` of the Keras layout), kept
            apart from `x`; `None` when the file has no split.
        y_test: labels of `x_test`, or `None`.
        no_labels: why `y` is `None` when the file has arrays but none named as
            labels (``"y"``, or ``"y_train"``/``"y_test"``); empty otherwise.
    """

    x: np.ndarray
    y: np.ndarray | None
    name: str
    scaling: str
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    no_labels: str = ""

    @property
    def has_split(self) -> bool:
        """Whether the file came with its own test part (`x_test`)."""
        return self.x_test is not None


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
    """Loads a 2-D or higher float array from `.npy`, `.npz` or `.csv`.

    An `.npz` file is read as the Keras MNIST layout when it holds ``x_train`` and
    ``x_test`` (`load_mnist_npz`: its own split is kept); otherwise its array ``x``
    (or its only array) holds the inputs and an optional ``y`` the labels. A `.csv`
    holds numbers only (one header row allowed). When there are no labels,
    `Dataset.no_labels` says why (a probe needs them).

    Args:
        path: the file to read.

    Returns:
        A `Dataset` with float32 inputs. Labels only from `.npz` files with a `y`
        array (or ``y_train``/``y_test`` in the Keras layout).

    Raises:
        ValueError: unknown suffix, unreadable file, text cells, fewer than 2 dims,
            or NaN/infinite values (the message says which).

    Example:

    >>> import numpy as np, tempfile, os
    >>> from keras_cae.data import load_array
    >>> path = os.path.join(tempfile.mkdtemp(), "x.npy")
    >>> np.save(path, np.zeros((4, 3)))
    >>> data = load_array(path)
    >>> data.x.shape, data.has_split, data.no_labels
    ((4, 3), False, 'a .npy file holds no labels')
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
    no_labels = f"a {suffix} file holds no labels"
    try:
        if suffix == ".npy":
            values = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                keys = list(archive.keys())
                if {"x_train", "x_test"} <= set(keys):
                    return load_mnist_npz(path)
                if "x" in archive:
                    values = archive["x"]
                elif len(keys) == 1:
                    values = archive[keys[0]]
                else:
                    raise ValueError(
                        f"{path}: expected an array named 'x' or a single array, or the "
                        f"Keras layout {list(MNIST_KEYS)}; found {keys}"
                    )
                labels = archive["y"] if "y" in archive else None
                others = [key for key in keys if key != "x"]
                no_labels = (
                    f"it has no array named 'y' (its arrays: {', '.join(keys)})"
                    if others
                    else "it holds no array named 'y'"
                )
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
    return Dataset(
        x=x, y=labels, name=name, scaling="none", no_labels="" if labels is not None else no_labels
    )


MNIST_KEYS = ("x_train", "y_train", "x_test", "y_test")


def load_mnist_npz(path: str | os.PathLike[str], name: str | None = None) -> Dataset:
    """Loads a file in the layout of Keras's ``mnist.npz``, keeping its own split.

    The file holds ``x_train`` and ``x_test`` (uint8 images in 0..255, divided by 255
    here: inputs in [0, 1], as in the CAE paper) and their labels ``y_train`` and
    ``y_test``. Train and test stay apart: `Dataset.x` and `Dataset.y` are the
    training part, `Dataset.x_test` and `Dataset.y_test` the test part (use
    `split_rows` for one of them or both joined). A file without both label arrays
    loads with no labels, and `Dataset.no_labels` says why. Nothing is downloaded.

    Args:
        path: the `.npz` file.
        name: the dataset's name. Defaults to the file's base name.

    Returns:
        A `Dataset` with ``x`` the training images (float32), ``x_test`` the test
        images, integer labels when the file has them, and scaling ``"x / 255"``.

    Raises:
        ValueError: if ``x_train`` or ``x_test`` is missing, the images are not
            uint8, or the labels do not match the images.

    Example:

    >>> import numpy as np, tempfile, os
    >>> from keras_cae.data import load_mnist_npz
    >>> path = os.path.join(tempfile.mkdtemp(), "mnist.npz")
    >>> images, labels = np.full((3, 4, 4), 255, np.uint8), np.arange(3)
    >>> np.savez(path, x_train=images, y_train=labels, x_test=images[:1], y_test=labels[:1])
    >>> data = load_mnist_npz(path)
    >>> data.x.shape, data.x_test.shape, float(data.x.max()), data.scaling
    ((3, 4, 4), (1, 4, 4), 1.0, 'x / 255')
    """
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.keys())
            missing = [key for key in ("x_train", "x_test") if key not in archive]
            if missing:
                raise ValueError(
                    f"{path}: the mnist.npz layout needs arrays {list(MNIST_KEYS)}; "
                    f"missing {missing}"
                )
            arrays = {key: archive[key] for key in MNIST_KEYS if key in archive}
    except (OSError, EOFError) as error:
        raise ValueError(f"{path}: cannot read the file ({error})") from None
    labelled = "y_train" in arrays and "y_test" in arrays
    for part in ("train", "test"):
        images = arrays[f"x_{part}"]
        if images.dtype != np.uint8:
            raise ValueError(
                f"{path}: 'x_{part}' should hold uint8 images (0..255) as in mnist.npz. "
                f"Received: dtype {images.dtype}"
            )
        if images.ndim < 2 or images.shape[0] == 0:
            raise ValueError(
                f"{path}: 'x_{part}' should hold images, shape (n, ...). "
                f"Received: shape {images.shape}"
            )
        if not labelled:
            continue
        labels = arrays[f"y_{part}"]
        if labels.shape != images.shape[:1]:
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
    no_labels = ""
    if not labelled:
        no_labels = f"it has no arrays named 'y_train' and 'y_test' (its arrays: {', '.join(keys)})"

    def scaled(images: np.ndarray) -> np.ndarray:
        values = images.astype(np.float32)
        values /= np.float32(255)  # In place: MNIST's training images are 188 MB as float32.
        return values

    def as_labels(key: str) -> np.ndarray | None:
        return arrays[key].astype(np.int64) if labelled else None

    return Dataset(
        x=scaled(arrays["x_train"]),
        y=as_labels("y_train"),
        name=name or os.path.basename(path),
        scaling="x / 255",
        x_test=scaled(arrays["x_test"]),
        y_test=as_labels("y_test"),
        no_labels=no_labels,
    )


def mnist_cache_path() -> str:
    """Where `keras.datasets.mnist.load_data()` keeps MNIST: ``KERAS_HOME/datasets/mnist.npz``.

    Keras's rule: ``$KERAS_HOME`` if set, else ``~/.keras`` (``/tmp/.keras`` when the
    home directory or that folder is not writable). Computed without importing Keras.

    Returns:
        The path of the cached file (which may not exist).

    Example:

    >>> import os
    >>> mnist_cache_path().endswith(os.path.join("datasets", "mnist.npz"))
    True
    """
    if "KERAS_HOME" in os.environ:
        base = os.environ["KERAS_HOME"]
    else:
        home = os.path.expanduser("~")
        base = os.path.join(home if os.access(home, os.W_OK) else "/tmp", ".keras")
    base = os.path.expanduser(base)
    if os.path.isdir(base) and not os.access(base, os.W_OK):
        base = os.path.join("/tmp", ".keras")  # Keras's `get_file` does the same.
    return os.path.join(base, "datasets", "mnist.npz")


def load_mnist() -> Dataset:
    """Loads MNIST as `keras.datasets.mnist.load_data()` does, keeping its split.

    The file in Keras's cache (`mnist_cache_path`, ``~/.keras/datasets/mnist.npz``)
    is read as it is, without importing TensorFlow and without Keras's checksum (a
    copy of the same images made elsewhere reads the same). Only when it is missing
    is `keras.datasets.mnist.load_data()` called, which downloads it (internet
    needed) into that cache.

    Returns:
        `load_mnist_npz` of the cached file, named ``"mnist"``: 60,000 training
        images in `Dataset.x` and the 10,000 test images in `Dataset.x_test`.

    Raises:
        ValueError: the file is missing and the download failed, or it is not in the
            mnist.npz layout.
    """
    path = mnist_cache_path()
    if not os.path.isfile(path):
        try:
            from keras.datasets import mnist

            mnist.load_data()
        except Exception as error:  # noqa: BLE001 - any failure is the same fix.
            raise ValueError(
                f"--data mnist: {path} does not exist and Keras could not download it "
                f"({type(error).__name__}: {error}); copy an mnist.npz there or pass "
                "--data PATH.npz"
            ) from None
    return load_mnist_npz(path, name="mnist")


SPLITS = ("train", "test", "all")


def split_rows(dataset: Dataset, split: str | None) -> tuple[np.ndarray, str]:
    """The rows of one part of `dataset`: the one rule `train` and `encode` share.

    A file with its own split (the Keras layout) has a training part and a test part;
    `split` picks ``"train"``, ``"test"`` or ``"all"`` (train then test, joined only
    when asked). `None` means ``"test"`` for such a file. A file without a split has
    one part, its rows, and only `None` or ``"all"`` apply.

    Args:
        dataset: a loaded `Dataset`.
        split: ``"train"``, ``"test"``, ``"all"`` or `None`.

    Returns:
        The rows and a phrase saying which they are, e.g. ``"x_test (10000 rows)"``.

    Raises:
        ValueError: `split` is not one of `SPLITS`, or names a part the data lacks.

    Example:

    >>> import numpy as np
    >>> data = Dataset(np.zeros((6, 2)), None, "m.npz", "x / 255", x_test=np.ones((2, 2)))
    >>> rows, which = split_rows(data, None)
    >>> rows.shape, which
    ((2, 2), 'x_test of m.npz (2 rows; the default --split test)')
    >>> split_rows(data, "all")[0].shape
    (8, 2)
    """
    if split is not None and split not in SPLITS:
        raise ValueError(
            f"`split` should be one of {list(SPLITS)} or None. Received: split={split!r}"
        )
    if not dataset.has_split:
        if split in ("train", "test"):
            raise ValueError(
                f"--split {split}: {dataset.name} has no train/test split (only the Keras "
                f"layout {list(MNIST_KEYS)} has); leave --split out to use all its rows"
            )
        return dataset.x, f"{dataset.name} ({len(dataset.x)} rows)"
    assert dataset.x_test is not None
    if split == "train":
        return dataset.x, f"x_train of {dataset.name} ({len(dataset.x)} rows; --split train)"
    if split == "all":
        rows = np.concatenate([dataset.x, dataset.x_test])
        return rows, (
            f"x_train then x_test of {dataset.name} ({len(dataset.x)} + "
            f"{len(dataset.x_test)} = {len(rows)} rows; --split all)"
        )
    default = "the default --split test" if split is None else "--split test"
    return dataset.x_test, f"x_test of {dataset.name} ({len(dataset.x_test)} rows; {default})"
