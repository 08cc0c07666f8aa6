"""The parts every study shares: the split, the search, progress lines, statistics, Markdown.

`compare_protocol` (AE / DAE / CAE / CAE+H) and `finetune_protocol` (pre-train, then
fine-tune) run on these, so that both split the data, search their hyper-parameters,
number their progress lines and summarise their seeds the same way. Imports no
TensorFlow at module level.

Example:

>>> from keras_cae.studies import _engine
>>> _engine.summary([0.5, 0.7])
{'mean': 0.6, 'std': 0.14142135623730948}
>>> print(_engine.markdown_table(["model", "acc."], [["AE", "0.91"]], align="lr"))
| model | acc. |
|---|---:|
| AE | 0.91 |
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from keras_cae.data import Dataset
from keras_cae.studies.compare import (
    SEARCH_GRIDS,
    SEARCHED_ARGUMENT,
    SPLIT_SEED,
    VALIDATION_FRACTION,
)

__all__ = [
    "Split",
    "split",
    "image_shape",
    "check_grids",
    "search_grid",
    "search",
    "Progress",
    "noisy_inputs",
    "batched",
    "summary",
    "markdown_table",
    "markdown_document",
]

C = TypeVar("C")


@dataclass(frozen=True)
class Split:
    """The study's parts, each flattened to float32 rows: train = fit + validation; test.

    The search trains on `fit` and scores on `validation`; the final runs train on
    `train` and are measured on `test`. Labels are None for unlabelled data.
    """

    x_train: np.ndarray
    x_test: np.ndarray
    x_fit: np.ndarray
    x_val: np.ndarray
    y_train: np.ndarray | None
    y_test: np.ndarray | None
    y_fit: np.ndarray | None
    y_val: np.ndarray | None


def split(dataset: Dataset, test_fraction: float) -> Split:
    """Splits `dataset` into train and test, and train into fit and validation.

    Both splits are seeded with `SPLIT_SEED` (stratified when labelled, see
    `keras_cae.training.split`); the validation part is `VALIDATION_FRACTION` of train.
    Imports TensorFlow (through `keras_cae.training`).
    """
    from keras_cae.training import split as split_once

    x_train, x_test, y_train, y_test = split_once(dataset, test_fraction, SPLIT_SEED)
    x_fit, x_val, y_fit, y_val = split_once(
        Dataset(x_train, y_train, dataset.name, dataset.scaling), VALIDATION_FRACTION, SPLIT_SEED
    )

    def flat(part: np.ndarray) -> np.ndarray:
        return part.reshape(len(part), -1).astype(np.float32)

    return Split(
        flat(x_train), flat(x_test), flat(x_fit), flat(x_val), y_train, y_test, y_fit, y_val
    )


def image_shape(input_shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """The shape to draw one input as an image, or None when it is not an image."""
    from keras_cae.studies.plots import infer_image_shape

    try:
        return infer_image_shape(input_shape)
    except ValueError:
        return None


def check_grids(
    grids: Mapping[str, Sequence[float]] | None, dae_corruption: str
) -> dict[str, tuple[float, ...]]:
    """Returns the search values of DAE, CAE and CAE+H, or raises `ValueError`.

    Models missing from `grids` get `keras_cae.studies.compare.SEARCH_GRIDS`.

    Example:

    >>> from keras_cae.studies._engine import check_grids
    >>> check_grids({"CAE": [0.5]}, "gaussian")["CAE"]
    (0.5,)
    """
    defaults = {
        "DAE": SEARCH_GRIDS[f"DAE/{dae_corruption}"],
        "CAE": SEARCH_GRIDS["CAE"],
        "CAE+H": SEARCH_GRIDS["CAE+H"],
    }
    grids = dict(grids or {})
    unknown = sorted(set(grids) - set(defaults))
    if unknown:
        raise ValueError(
            f"`grids` has values for {unknown}; only {list(defaults)} are searched "
            "(the AE has no hyper-parameter)"
        )
    result = {}
    for name, default in defaults.items():
        values = grids.get(name, default)
        try:
            array = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            array = np.asarray([np.nan])
        upper = 1.0 if name == "DAE" and dae_corruption == "masking" else np.inf
        if array.ndim != 1 or array.size == 0 or not np.all((array >= 0) & (array < upper)):
            allowed = "probabilities in [0, 1)" if upper == 1.0 else "non-negative finite numbers"
            raise ValueError(
                f"`grids[{name!r}]` should be a non-empty sequence of {allowed}. "
                f"Received: {values!r}"
            )
        result[name] = tuple(float(v) for v in array)
    return result


def search_grid(name: str, values: Mapping[str, Sequence[float]]) -> list[dict[str, float]]:
    """The search parameters of model `name`: one dict per value, ``[{}]`` if unsearched."""
    if name not in values:
        return [{}]
    return [{SEARCHED_ARGUMENT[name]: v} for v in values[name]]


def search(
    models: Iterable[str],
    values: Mapping[str, Sequence[float]],
    evaluate: Callable[[str, dict[str, float]], C],
    score: Callable[[C], float],
    selected: Callable[[str, dict[str, float]], None] | None = None,
) -> dict[str, tuple[list[C], dict[str, float]]]:
    """The validation search: each model's candidates, scored, and the best one chosen.

    Models are searched in the order given. A model's grid is `search_grid`; CAE+H's
    candidates carry the CAE's selected λ (so the CAE must come first). A grid of one
    value is not searched. The highest `score` wins; of equal scores the first (the
    weakest regularisation).

    Args:
        models: the models to search, in order.
        values: the values to search by model (from `check_grids`).
        evaluate: trains and scores one candidate: ``evaluate(model, params)``, where
            `params` are the search parameters (e.g. ``{"contractive_weight": 1e-3}``).
        score: the criterion to maximise over `evaluate`'s results.
        selected: called with ``(model, params)`` after each searched model's choice.

    Returns:
        Per model, ``(candidates, selected parameters)``; no candidates when the model's
        grid had one value.
    """
    result: dict[str, tuple[list[C], dict[str, float]]] = {}
    for name in models:
        grid = search_grid(name, values)
        if name == "CAE+H":
            cae_weight = result["CAE"][1]["contractive_weight"]
            grid = [{"contractive_weight": cae_weight, **candidate} for candidate in grid]
        if len(grid) == 1:
            result[name] = ([], grid[0])
            continue
        candidates = [evaluate(name, params) for params in grid]
        best = int(np.argmax([score(c) for c in candidates]))  # First of equals: weakest.
        result[name] = (candidates, grid[best])
        if selected is not None:
            selected(name, grid[best])
    return result


class Progress:
    """The progress lines of a study: numbered steps and plain lines, with elapsed time.

    Args:
        say: called with each line.
        total: the number of steps `step` counts towards; None: steps are not numbered.
        started: the `time.perf_counter` the elapsed time counts from. Defaults to now.
    """

    def __init__(
        self, say: Callable[[str], None], total: int | None = None, started: float | None = None
    ) -> None:
        self.say, self.total, self.count = say, total, 0
        self.started = time.perf_counter() if started is None else started

    def elapsed(self) -> str:
        return f"({time.perf_counter() - self.started:.0f} s elapsed)"

    def log(self, text: str) -> None:
        """Says ``text (elapsed)``."""
        self.say(f"{text} {self.elapsed()}")

    def step(self, text: str) -> None:
        """Says ``[k/total] text (elapsed)``, counting the steps."""
        self.count += 1
        self.log(f"[{self.count}/{self.total}] {text}" if self.total else text)


def noisy_inputs(
    x: np.ndarray, levels: Sequence[float], rng: np.random.Generator
) -> dict[float, np.ndarray]:
    """``x + σ·z``, ``z ~ N(0, I)``, one draw per level in order (shared by every model)."""
    return {s: (x + s * rng.standard_normal(x.shape)).astype(np.float32) for s in levels}


def batched(function: Callable[[np.ndarray], Any], x: np.ndarray, batch_size: int) -> np.ndarray:
    """`function` applied to `x` in batches of `batch_size` rows, results concatenated."""
    parts = [np.asarray(function(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
    return np.concatenate(parts)


def summary(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof=1; 0 for one value) over seeds."""
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return {"mean": float(array.mean()) if len(array) else math.nan, "std": std}


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str) -> str:
    """A Markdown table; `align` holds one letter per column, ``l`` or ``r``."""
    if len(align) != len(header):
        raise ValueError(f"`align` should have {len(header)} letters. Received: {align!r}")
    rule = "|" + "".join("---|" if a == "l" else "---:|" for a in align)
    lines = ["| " + " | ".join(header) + " |", rule]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_document(
    title: str, body: Sequence[str], command: str | None, total_seconds: float
) -> str:
    """A study's report.md: title, the command that generated it, `body`, wall time."""
    lines = [f"# {title}", ""]
    if command:
        lines += ["Generated by:", "", "```", command, "```", ""]
    body = list(body)
    while body and not body[-1]:
        body.pop()
    lines += [*body, "", f"Total wall time: {total_seconds:.0f} s."]
    return "\n".join(lines) + "\n"
