"""The parts every study shares: the split, the search, progress lines, a store of
finished records, statistics, Markdown.

`compare_protocol` (AE / DAE / CAE / CAE+H), `finetune_protocol` (pre-train, then
fine-tune) and `mnist` (the paper's MNIST protocol) run on these, so that they split
the data, search their hyper-parameters, number their progress lines, summarise and
test their seeds and write their tables the same way. Imports no TensorFlow at module
level.

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

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from keras_cae import _io
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
    "own_split_note",
    "image_shape",
    "check_grids",
    "search_grid",
    "search",
    "Progress",
    "TimeLeft",
    "RecordStore",
    "noisy_inputs",
    "batched",
    "summary",
    "paired_test",
    "paired_comparison",
    "holm",
    "verdict",
    "markdown_table",
    "markdown_document",
]

C = TypeVar("C")


@dataclass(frozen=True)
class Split:
    """The study's parts, each flattened to float32 rows: train = fit + validation; test.

    The search trains on `fit` and scores on `validation`; the final runs train on
    `train` and are measured on `test`. Labels are None for unlabelled data.
    `own_test_split` is True when `test` is the file's own test part (``x_test`` of
    the Keras layout), False when it was drawn from the rows at random.
    """

    x_train: np.ndarray
    x_test: np.ndarray
    x_fit: np.ndarray
    x_val: np.ndarray
    y_train: np.ndarray | None
    y_test: np.ndarray | None
    y_fit: np.ndarray | None
    y_val: np.ndarray | None
    own_test_split: bool = False


def split(dataset: Dataset, test_fraction: float) -> Split:
    """Splits `dataset` into train and test, and train into fit and validation.

    A dataset with its own split (the Keras layout, `Dataset.has_split`) keeps it, as
    `keras-cae train` does: its training images are train, its test images (``x_test``,
    ``y_test``) are test, and `test_fraction` is not used. Otherwise test is
    `test_fraction` of the rows. Both splits are seeded with `SPLIT_SEED` (stratified
    when labelled, see `keras_cae.training.split`); the validation part is
    `VALIDATION_FRACTION` of train. Imports TensorFlow (through `keras_cae.training`).
    """
    from keras_cae.training import split as split_once

    if dataset.x_test is not None:  # The file's own test split (`Dataset.has_split`).
        x_train, x_test = dataset.x, dataset.x_test
        y_train, y_test = dataset.y, dataset.y_test
    else:
        x_train, x_test, y_train, y_test = split_once(dataset, test_fraction, SPLIT_SEED)
    x_fit, x_val, y_fit, y_val = split_once(
        Dataset(x_train, y_train, dataset.name, dataset.scaling), VALIDATION_FRACTION, SPLIT_SEED
    )

    def flat(part: np.ndarray) -> np.ndarray:
        return part.reshape(len(part), -1).astype(np.float32)

    parts = (flat(x_train), flat(x_test), flat(x_fit), flat(x_val))
    return Split(*parts, y_train, y_test, y_fit, y_val, own_test_split=dataset.has_split)


def own_split_note(own_test_split: bool) -> str:
    """What a report adds after its number of test samples: where they came from.

    Example:

    >>> from keras_cae.studies._engine import own_split_note
    >>> own_split_note(True), own_split_note(False)
    (" (the file's own x_test; the test fraction is not used)", '')
    """
    return " (the file's own x_test; the test fraction is not used)" if own_test_split else ""


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

    def elapsed(self, left_seconds: float | None = None) -> str:
        """``(N s elapsed)``, or ``(N s elapsed, about M min left)`` with `left_seconds`."""
        left = "" if left_seconds is None else f", about {left_seconds / 60:.0f} min left"
        return f"({time.perf_counter() - self.started:.0f} s elapsed{left})"

    def log(self, text: str) -> None:
        """Says ``text (elapsed)``."""
        self.say(f"{text} {self.elapsed()}")

    def step(self, text: str, left_seconds: float | None = None) -> None:
        """Says ``[k/total] text (elapsed)``, counting the steps.

        With `left_seconds` (an estimate of the time the remaining steps need, e.g.
        from `TimeLeft`), the line ends ``(N s elapsed, about M min left)``.
        """
        self.count += 1
        line = f"[{self.count}/{self.total}] {text}" if self.total else text
        self.say(f"{line} {self.elapsed(left_seconds)}")


class TimeLeft:
    """An estimate of the time a list of jobs has left, from the jobs done so far.

    Each job has a kind; a kind's time is the mean of its measured seconds, or its
    `guesses` entry before the first of its kind is measured.

    Args:
        guesses: seconds per job of each kind, before any is measured.

    Example:

    >>> from keras_cae.studies._engine import TimeLeft
    >>> left = TimeLeft({"fit": 10.0, "test": 1.0})
    >>> left.record("fit", 4.0)
    >>> left.seconds(["fit", "fit", "test"]), left.last("fit")
    (9.0, 4.0)
    """

    def __init__(self, guesses: Mapping[str, float]) -> None:
        self.guesses = dict(guesses)
        self.measured: dict[str, list[float]] = {}

    def record(self, kind: str, seconds: float) -> None:
        """Adds one measured job of `kind`."""
        self.measured.setdefault(kind, []).append(seconds)

    def last(self, kind: str) -> float:
        """The seconds of the last measured job of `kind`."""
        return self.measured[kind][-1]

    def seconds(self, kinds: Iterable[str]) -> float:
        """The estimated seconds of jobs of these kinds (one entry per job)."""
        return sum(
            float(np.mean(self.measured[k])) if k in self.measured else self.guesses[k]
            for k in kinds
        )


class RecordStore:
    """Finished records on disk: ``<root>/<folder>/<key>.json``, with weights beside.

    Each record is written atomically (`keras_cae._io`: a temporary sibling, then a
    rename), so an interrupted run leaves either a whole record or none, and a study
    that reads the store resumes where it stopped. Weights (``<key>.npz``, arrays
    ``w0``, ``w1``, ...) are written before their record, so a record with weights
    implies them.

    Args:
        root: the folder of the store.

    Example:

    >>> import tempfile
    >>> from keras_cae.studies._engine import RecordStore
    >>> store = RecordStore(tempfile.mkdtemp())
    >>> store.save("runs", "a-1f", {"error": 0.1})
    >>> store.has("runs", "a-1f"), store.load("runs", "a-1f")
    (True, {'error': 0.1})
    """

    def __init__(self, root: str) -> None:
        self.root = root

    def path(self, folder: str, key: str, suffix: str = ".json") -> str:
        """The file of record `key` in `folder` (``.json``), or of its weights (``.npz``)."""
        return os.path.join(self.root, folder, key + suffix)

    def has(self, folder: str, key: str, weights: bool = False) -> bool:
        """Whether record `key` is stored (and its weights, if `weights`)."""
        if not os.path.exists(self.path(folder, key)):
            return False
        return not weights or os.path.exists(self.path(folder, key, ".npz"))

    def load(self, folder: str, key: str) -> dict[str, Any]:
        """The stored record `key`."""
        with open(self.path(folder, key)) as stream:
            return json.load(stream)

    def weights(self, folder: str, key: str) -> list[np.ndarray]:
        """The stored weights of record `key`, in order."""
        with np.load(self.path(folder, key, ".npz")) as archive:
            return [archive[f"w{i}"] for i in range(len(archive.files))]

    def save(
        self,
        folder: str,
        key: str,
        record: Mapping[str, Any],
        weights: Sequence[np.ndarray] | None = None,
    ) -> None:
        """Stores `record` (JSON, indented by 1, keys sorted) and `weights` if given."""
        os.makedirs(os.path.join(self.root, folder), exist_ok=True)
        if weights is not None:
            arrays = {f"w{i}": np.asarray(w) for i, w in enumerate(weights)}
            _io.atomic_save_npz(self.path(folder, key, ".npz"), arrays)
        text = json.dumps(record, indent=1, sort_keys=True)
        _io.atomic_write_text(self.path(folder, key), text)


def noisy_inputs(
    x: np.ndarray, levels: Sequence[float], rng: np.random.Generator
) -> dict[float, np.ndarray]:
    """``x + σ·z``, ``z ~ N(0, I)``, one draw per level in order (shared by every model)."""
    return {s: (x + s * rng.standard_normal(x.shape)).astype(np.float32) for s in levels}


def batched(function: Callable[[np.ndarray], Any], x: np.ndarray, batch_size: int) -> np.ndarray:
    """`function` applied to `x` in batches of `batch_size` rows, results concatenated."""
    parts = [np.asarray(function(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
    return np.concatenate(parts)


def summary(values: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Mean and sample standard deviation (ddof=1; 0 for one value) over seeds."""
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return {"mean": float(array.mean()) if len(array) else math.nan, "std": std}


def paired_test(a: Sequence[float], b: Sequence[float]) -> tuple[float | None, float | None]:
    """p-values of the paired t-test and the exact two-sided Wilcoxon signed-rank test.

    None where a test is undefined: fewer than 2 pairs, or every difference zero.
    """
    from scipy import stats

    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if len(diff) < 2 or not np.any(diff):
        return None, None
    t_p = float(stats.ttest_rel(a, b).pvalue) if np.std(diff) > 0 else None
    w_p = float(stats.wilcoxon(a, b, zero_method="wilcox", alternative="two-sided").pvalue)
    return t_p, w_p


def paired_comparison(a: Sequence[float], b: Sequence[float], margin: float) -> dict[str, Any]:
    """Paired t-test of errors ``a − b`` and the equivalence (TOST) at ±`margin`.

    ``equivalent`` is True when the 90% confidence interval of the mean difference lies
    inside ±margin (the two one-sided tests at 5%); None with fewer than 2 pairs.
    """
    from scipy import stats

    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    out: dict[str, Any] = {
        "n": len(diff),
        "mean_difference": float(diff.mean()) if len(diff) else None,
    }
    out.update({"p": None, "ci90": None, "equivalent": None, "margin": margin})
    if len(diff) < 2:
        return out
    sd = float(diff.std(ddof=1))
    if sd == 0:
        out["p"] = 1.0 if diff.mean() == 0 else 0.0
        out["ci90"] = [float(diff.mean())] * 2
    else:
        out["p"] = float(stats.ttest_rel(a, b).pvalue)
        half = float(stats.t.ppf(0.95, len(diff) - 1)) * sd / math.sqrt(len(diff))
        out["ci90"] = [float(diff.mean()) - half, float(diff.mean()) + half]
    out["equivalent"] = bool(-margin < out["ci90"][0] and out["ci90"][1] < margin)
    return out


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (None stays None and is not counted).

    Example:

    >>> from keras_cae.studies._engine import holm
    >>> [round(p, 3) for p in holm([0.01, 0.04, 0.03])]
    [0.03, 0.06, 0.06]
    """
    present = [(p, i) for i, p in enumerate(pvalues) if p is not None]
    present.sort()
    m = len(present)
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(present):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def verdict(test: Mapping[str, Any], alpha: float = 0.05) -> str:
    """ "a better" / "a worse" (Holm-adjusted p < alpha), "equivalent", or "inconclusive".

    `test` is a `paired_comparison` with its Holm-adjusted p-value as ``p_holm``.
    """
    p = test.get("p_holm")
    if p is not None and p < alpha:
        return "a better" if test["mean_difference"] < 0 else "a worse"
    if test.get("equivalent"):
        return "equivalent"
    return "inconclusive"


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
