"""PNG figures for the analyses in `keras_cae.studies.analysis`.

Needs matplotlib (``pip install 'keras-cae[plot]'``), imported on first use. Figures
are drawn on the non-interactive Agg canvas without touching pyplot's global state, so
they work on headless machines and inside other applications. Every function writes
one PNG atomically (a temporary file renamed into place), refuses to replace an
existing file unless ``overwrite=True``, and returns the path written. Imports no
TensorFlow.

Example:

>>> import numpy as np, tempfile, os
>>> from keras_cae.studies import plots
>>> radii = [0.1, 0.5, 1.0]
>>> path = os.path.join(tempfile.mkdtemp(), "contraction.png")
>>> plots.plot_contraction_curves(radii, {"AE": [2.0, 1.8, 1.5]}, path) == path
True
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from keras_cae import _io

__all__ = [
    "plot_spectra",
    "plot_contraction_curves",
    "plot_tangents",
    "plot_reconstructions",
    "infer_image_shape",
    "require_matplotlib",
]

_INSTALL_HINT = "pip install 'keras-cae[plot]'"


def require_matplotlib() -> None:
    """Raises `ImportError` saying how to install matplotlib, if it is missing.

    Call it before long work whose result is a figure, so that a missing optional
    dependency is reported in a second rather than after the training run.

    Raises:
        ImportError: matplotlib cannot be imported; the message names the extra.

    Example:

    >>> require_matplotlib()  # Returns None when matplotlib is installed.
    """
    try:  # The parts `_new_figure` uses, not only the top-level package.
        import matplotlib.backends.backend_agg  # noqa: F401
        import matplotlib.figure  # noqa: F401
    except ImportError as error:
        raise ImportError(
            f"keras_cae.studies.plots needs matplotlib, which is not installed: {_INSTALL_HINT}"
        ) from error


def _new_figure(width: float, height: float) -> Any:
    """Returns a matplotlib Figure attached to an Agg canvas (no pyplot, no global backend)."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _check_path(path: str | os.PathLike[str], overwrite: bool) -> str:
    path = os.fspath(path)
    if not path.lower().endswith(".png"):
        raise ValueError(f"`path` should end with .png. Received: path={path!r}")
    if os.path.isdir(path):
        raise ValueError(f"`path` {path!r} is a directory; give a .png file path")
    if os.path.exists(path) and not overwrite:
        raise ValueError(f"`path` {path!r} exists; choose another file or pass overwrite=True")
    return path


def _save(figure: Any, path: str) -> str:
    """Writes the figure to a temporary PNG beside `path`, then renames it into place."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    _io._atomic_write(path, ".png", lambda stream: figure.savefig(stream, format="png"))
    return path


def _check_named_arrays(name: str, values: Mapping[str, Any], ndim: Sequence[int]) -> dict:
    if not isinstance(values, Mapping) or not values:
        raise ValueError(
            f"`{name}` should be a non-empty mapping from a model name to an array. "
            f"Received: {name}={values!r}"
        )
    arrays = {}
    for label, value in values.items():
        array = np.asarray(value, dtype=np.float64)
        if array.ndim not in ndim or array.size == 0 or not np.all(np.isfinite(array)):
            raise ValueError(
                f"`{name}[{label!r}]` should be a finite array with {' or '.join(map(str, ndim))} "
                f"dimensions. Received: shape {array.shape}"
            )
        arrays[str(label)] = array
    return arrays


def infer_image_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    """Returns the image shape to draw an input of shape `input_shape` with.

    ``(h, w)`` and ``(h, w, 1 or 3)`` are images as they are; a flat vector whose size is
    a perfect square (64 for the digits) is drawn as a square image.

    Args:
        input_shape: the shape of one input (without the batch axis).

    Returns:
        ``(h, w)`` or ``(h, w, c)``.

    Raises:
        ValueError: if the shape is neither an image nor a square number of features;
            pass `image_shape` to the plot function then.
    """
    shape = tuple(int(n) for n in input_shape)
    if len(shape) == 2 or (len(shape) == 3 and shape[-1] in (1, 3)):
        return shape if len(shape) == 2 or shape[-1] == 3 else shape[:2]
    if len(shape) == 1:
        side = math.isqrt(shape[0])
        if side * side == shape[0]:
            return (side, side)
    raise ValueError(
        f"Cannot draw inputs of shape {shape} as images: pass `image_shape`, e.g. (28, 28)."
    )


def _as_images(
    name: str, array: np.ndarray, lead: int, image_shape: Sequence[int] | None
) -> np.ndarray:
    """Reshapes `array` of shape ``(*lead_axes, *input_shape)`` to ``(*lead_axes, *image)``."""
    lead_shape, input_shape = array.shape[:lead], array.shape[lead:]
    shape = infer_image_shape(input_shape) if image_shape is None else tuple(image_shape)
    if math.prod(shape) != math.prod(input_shape):
        raise ValueError(
            f"`image_shape` {shape} does not match the {math.prod(input_shape)} values of each "
            f"input in `{name}` (shape {tuple(input_shape)})"
        )
    return array.reshape(*lead_shape, *shape)


def plot_spectra(
    spectra: Mapping[str, Any],
    path: str | os.PathLike[str],
    *,
    title: str = "Singular values of the encoder Jacobian (held-out data)",
    overwrite: bool = False,
) -> str:
    """Plots Jacobian singular-value spectra, one curve per model.

    Each curve is the mean over samples of the k-th largest singular value, with a band
    from the 10th to the 90th percentile, on a log scale. Rifai et al. (ICML 2011,
    Fig. 2) plot the average spectrum on linear axes.

    Args:
        spectra: model name → array ``(samples, rank)`` from
            `keras_cae.studies.analysis.jacobian_spectrum` (or a single spectrum ``(rank,)``).
        path: the PNG to write.
        title: the figure title.
        overwrite: replace an existing file. Defaults to `False`.

    Returns:
        `path`.

    Raises:
        ValueError: for an empty mapping, a non-finite or wrongly shaped array, a path
            that is not a new .png file (unless `overwrite`).
        ImportError: if matplotlib is not installed.
    """
    path = _check_path(path, overwrite)
    arrays = _check_named_arrays("spectra", spectra, (1, 2))
    figure = _new_figure(6.0, 4.0)
    axes = figure.add_subplot()
    for label, array in arrays.items():
        array = np.atleast_2d(array)
        index = np.arange(1, array.shape[1] + 1)
        # Exact zeros cannot be drawn on a log axis; floor them far below any real value.
        floor = 1e-12
        (line,) = axes.plot(index, np.maximum(array.mean(axis=0), floor), marker=".", label=label)
        if len(array) > 1:
            low, high = np.percentile(array, [10, 90], axis=0)
            axes.fill_between(
                index,
                np.maximum(low, floor),
                np.maximum(high, floor),
                color=line.get_color(),
                alpha=0.2,
            )
    axes.set_yscale("log")
    axes.set_xlabel("singular value index k (largest first)")
    axes.set_ylabel("singular value of J_f(x)")
    axes.set_title(title, fontsize=10)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    return _save(figure, path)


def plot_contraction_curves(
    radii: Sequence[float] | np.ndarray,
    curves: Mapping[str, Any],
    path: str | os.PathLike[str],
    *,
    title: str = "Contraction ratio ||f(x + r u) - f(x)|| / r (held-out data)",
    overwrite: bool = False,
) -> str:
    """Plots contraction ratio against input distance, one curve per model.

    As Rifai et al. (ICML 2011, Fig. 1: one curve per model; Fig. 3: per depth), but
    with a log distance axis where theirs is linear. A curve may hold several runs
    (e.g. seeds), drawn as their mean with a ±1 standard deviation band.

    Args:
        radii: the distances r, as given to `keras_cae.studies.analysis.contraction_curve`.
        curves: model name → ratios ``(len(radii),)`` or ``(runs, len(radii))``.
        path: the PNG to write.
        title: the figure title.
        overwrite: replace an existing file. Defaults to `False`.

    Returns:
        `path`.

    Raises:
        ValueError: for mismatched lengths, non-positive radii, non-finite values, or a
            path that is not a new .png file (unless `overwrite`).
        ImportError: if matplotlib is not installed.
    """
    path = _check_path(path, overwrite)
    radii = np.asarray(radii, dtype=np.float64)
    if radii.ndim != 1 or radii.size == 0 or not np.all(np.isfinite(radii)) or np.any(radii <= 0):
        raise ValueError(
            f"`radii` should be a non-empty sequence of positive numbers. Received: {radii!r}"
        )
    arrays = _check_named_arrays("curves", curves, (1, 2))
    figure = _new_figure(6.0, 4.0)
    axes = figure.add_subplot()
    for label, array in arrays.items():
        array = np.atleast_2d(array)
        if array.shape[1] != len(radii):
            raise ValueError(
                f"`curves[{label!r}]` has {array.shape[1]} values per run but there are "
                f"{len(radii)} radii"
            )
        mean = array.mean(axis=0)
        (line,) = axes.plot(radii, mean, marker="o", markersize=3, label=label)
        if len(array) > 1:
            std = array.std(axis=0)
            axes.fill_between(radii, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    axes.set_xscale("log")
    axes.set_xlabel("distance r in input space")
    axes.set_ylabel("contraction ratio")
    axes.set_ylim(bottom=0)
    axes.set_title(title, fontsize=10)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    return _save(figure, path)


def _image_axes(axes: Any, image: np.ndarray, **kwargs: Any) -> None:
    axes.imshow(image, interpolation="nearest", **kwargs)
    axes.set_xticks([])
    axes.set_yticks([])


def plot_tangents(
    x: Any,
    tangents: Any,
    path: str | os.PathLike[str],
    *,
    image_shape: Sequence[int] | None = None,
    singular_values: Any = None,
    title: str = "Leading tangent directions of the encoder (right singular vectors of J_f(x))",
    overwrite: bool = False,
) -> str:
    """Draws each input next to its tangent directions, one row per input.

    Tangents come from `keras_cae.studies.analysis.tangent_directions`; they are signed, so they
    are drawn with a diverging colour map centred on 0 (red positive, blue negative).

    Args:
        x: inputs ``(n, *input_shape)``.
        tangents: ``(n, k, *input_shape)``.
        path: the PNG to write.
        image_shape: how to draw one input; default: inferred (see `infer_image_shape`).
        singular_values: optional ``(n, ≥k)`` spectrum, to label each tangent with its
            singular value.
        title: the figure title.
        overwrite: replace an existing file. Defaults to `False`.

    Returns:
        `path`.

    Raises:
        ValueError: for mismatched shapes or a path that is not a new .png file.
        ImportError: if matplotlib is not installed.
    """
    path = _check_path(path, overwrite)
    x = np.asarray(x, dtype=np.float64)
    tangents = np.asarray(tangents, dtype=np.float64)
    if (
        x.ndim < 2
        or tangents.ndim != x.ndim + 1
        or tangents.shape[0] != x.shape[0]
        or (tangents.shape[2:] != x.shape[1:])
    ):
        raise ValueError(
            "`tangents` should have shape (n, k, *input_shape) for `x` of shape "
            f"(n, *input_shape). Received: x {x.shape}, tangents {tangents.shape}"
        )
    images = _as_images("x", x, 1, image_shape)
    tangent_images = _as_images("tangents", tangents, 2, image_shape)
    n, k = tangents.shape[:2]
    if singular_values is not None:
        singular_values = np.asarray(singular_values, dtype=np.float64)
        shape = singular_values.shape
        if singular_values.ndim != 2 or shape[0] != n or shape[1] < k:
            raise ValueError(
                f"`singular_values` should have shape (n, >= k) = ({n}, >= {k}). "
                f"Received: {singular_values.shape}"
            )
    figure = _new_figure(1.2 * (k + 1) + 0.5, 1.25 * n + 0.5)
    grid = figure.subplots(n, k + 1, squeeze=False)
    for row in range(n):
        _image_axes(grid[row, 0], images[row], cmap="gray_r")
        if row == 0:
            grid[row, 0].set_title("input", fontsize=8)
        for col in range(k):
            image = tangent_images[row, col]
            bound = float(np.max(np.abs(image))) or 1.0
            if image.ndim == 3:
                # Colour images cannot use a colour map: map [-bound, bound] to [0, 1].
                _image_axes(grid[row, col + 1], 0.5 + 0.5 * image / bound)
            else:
                _image_axes(grid[row, col + 1], image, cmap="RdBu_r", vmin=-bound, vmax=bound)
            label = f"t{col + 1}"
            if singular_values is not None:
                label += f" (s={singular_values[row, col]:.2g})"
            grid[row, col + 1].set_title(label, fontsize=7)
    figure.suptitle(title, fontsize=9)
    return _save(figure, path)


def plot_reconstructions(
    x: Any,
    reconstructions: Mapping[str, Any],
    path: str | os.PathLike[str],
    *,
    image_shape: Sequence[int] | None = None,
    title: str = "Held-out inputs and their reconstructions",
    overwrite: bool = False,
) -> str:
    """Draws inputs (top row) and each model's reconstructions (one row per model).

    Args:
        x: inputs ``(n, *input_shape)``.
        reconstructions: model name → reconstructions of `x`, same shape as `x`.
        path: the PNG to write.
        image_shape: how to draw one input; default: inferred (see `infer_image_shape`).
        title: the figure title.
        overwrite: replace an existing file. Defaults to `False`.

    Returns:
        `path`.

    Raises:
        ValueError: for mismatched shapes or a path that is not a new .png file.
        ImportError: if matplotlib is not installed.
    """
    path = _check_path(path, overwrite)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"`x` should have shape (n, *input_shape). Received: {x.shape}")
    arrays = _check_named_arrays("reconstructions", reconstructions, (x.ndim,))
    for label, array in arrays.items():
        if array.shape != x.shape:
            raise ValueError(
                f"`reconstructions[{label!r}]` should have the shape of `x` {x.shape}. "
                f"Received: {array.shape}"
            )
    rows = {"input": x, **arrays}
    # Inputs and reconstructions share one grey scale so that contrast is comparable.
    low = min(float(a.min()) for a in rows.values())
    high = max(float(a.max()) for a in rows.values())
    n = len(x)
    figure = _new_figure(0.9 * n + 1.2, 0.95 * len(rows) + 0.5)
    grid = figure.subplots(len(rows), n, squeeze=False)
    for r, (label, array) in enumerate(rows.items()):
        images = _as_images(label, array, 1, image_shape)
        for c in range(n):
            _image_axes(grid[r, c], images[c], cmap="gray_r", vmin=low, vmax=high)
        grid[r, 0].set_ylabel(label, fontsize=8)
    figure.suptitle(title, fontsize=9)
    return _save(figure, path)
