"""Row counts checked before TensorFlow loads: is there data left after each split?

`keras-cae train` holds out ``--test-fraction`` of the rows (scikit-learn's
`train_test_split`, which rounds the test part up), then Keras holds out
``--validation-split`` of the rest (rounding the training part down). With too few
rows one of the parts is empty, and scikit-learn or Keras say so after the
TensorFlow import, in their own words. These checks say it first, naming the flag.

Example:

>>> held_out_split(10, 0.2)
(8, 2)
>>> check_rows("x.npy", 1, [("--test-fraction", 0.2, "ceil")])
Traceback (most recent call last):
...
ValueError: --data 'x.npy' has 1 row: --test-fraction 0.2 leaves no training rows; \
give more rows or change --test-fraction
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["held_out_split", "check_rows", "load_data", "refuse_for_own_split"]


def held_out_split(num_rows: int, fraction: float, rounding: str = "ceil") -> tuple[int, int]:
    """Returns `(kept, held_out)` row counts for holding out `fraction` of `num_rows`.

    Args:
        num_rows: rows before the split.
        fraction: the share held out, in [0, 1).
        rounding: `"ceil"` rounds the held-out part up (scikit-learn's
            `train_test_split`); `"floor"` rounds the kept part down (Keras's
            `validation_split`). Defaults to `"ceil"`.

    Returns:
        The number of rows kept and held out; they sum to `num_rows`.
    """
    if rounding == "ceil":
        held = math.ceil(fraction * num_rows)
    else:
        held = num_rows - math.floor(num_rows * (1.0 - fraction))
    return num_rows - held, held


def check_rows(source: str | None, num_rows: int, splits: Sequence[tuple[str, float, str]]) -> None:
    """Raises `ValueError` if any of the successive `splits` leaves a part empty.

    Args:
        source: the `--data` value (`None` for the default), for the message.
        num_rows: rows in the data.
        splits: `(flag, fraction, rounding)` for each split, in order; each splits the
            rows the previous one kept. A fraction of 0 skips the split. A `flag` that
            is not an option (no leading `--`) names a fixed split the user cannot change.

    Raises:
        ValueError: naming the data, its rows, and the flag to change.
    """
    remaining = num_rows
    done: list[str] = []
    for flag, fraction, rounding in splits:
        if fraction == 0:
            continue
        kept, held = held_out_split(remaining, fraction, rounding)
        if kept < 1 or held < 1:
            empty = "training" if kept < 1 else ("validation" if "valid" in flag else "test")
            before = f"after {', '.join(done)}, " if done else ""
            of = f"of the remaining {remaining} " if done else ""
            fix = f"give more rows or change {flag}" if flag.startswith("--") else "give more rows"
            rows = f"{num_rows} row{'s' * (num_rows != 1)}"
            raise ValueError(
                f"--data {source!r} has {rows}: {before}{flag} {fraction:g} {of}"
                f"leaves no {empty} rows; {fix}"
            )
        done.append(f"{flag} {fraction:g} holds out {held}")
        remaining = kept


def load_data(
    path: str | None,
    splits: Sequence[tuple[str, float, str]],
    skip_for_own_split: Sequence[str] = (),
) -> Any:
    """Loads `--data` (default: the bundled digits; ``mnist``: Keras's MNIST) and
    checks it survives `splits`.

    A file with its own split (the Keras layout, `Dataset.x_test`) is checked on its
    training part, without the splits named in `skip_for_own_split` (`train` holds
    out x_test instead of a `--test-fraction`).

    Returns:
        The `keras_cae.data.Dataset`.

    Raises:
        ValueError: the file cannot be read, or `check_rows` refuses its row count.
    """
    from keras_cae import data

    if path is None:
        dataset = data.load_digits()
    elif path == "mnist":
        dataset = data.load_mnist()
    else:
        dataset = data.load_array(path)
    if dataset.has_split:
        splits = [split for split in splits if split[0] not in skip_for_own_split]
    check_rows(path, len(dataset.x), splits)
    return dataset


def refuse_for_own_split(dataset: Any, source: str | None, flag: str, given: bool) -> None:
    """Raises `ValueError` if option `flag` was `given` for data with its own test split.

    A file in the Keras layout (`Dataset.has_split`) holds out its own ``x_test``;
    `keras-cae train` and `keras-cae compare` measure on it, so a ``--test-fraction``
    would be silently ignored: it is refused instead.

    Args:
        dataset: the loaded `keras_cae.data.Dataset`.
        source: the `--data` value, for the message.
        flag: the option, e.g. ``"--test-fraction"``.
        given: whether the user set `flag`.

    Raises:
        ValueError: naming the flag, the data and what to do.
    """
    if given and dataset.has_split:
        raise ValueError(
            f"{flag} does not apply to --data {source!r}: it has its own test split "
            f"(x_test), which is held out; leave {flag} out"
        )
