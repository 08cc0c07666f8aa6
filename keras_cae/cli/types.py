"""Argument types for the `keras-cae` command line: numbers within bounds, and lists.

One factory, `number`, builds every numeric type, so that each option states its
bounds where it is declared and every refusal reads the same way.

Example:

>>> import argparse
>>> port = number(0, 65535, integer=True)
>>> port("8000")
8000
>>> try:
...     port("70000")
... except argparse.ArgumentTypeError as error:
...     print(error)
expected an integer in [0, 65535], got '70000'
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = [
    "number",
    "number_list",
    "POSITIVE_INT",
    "NON_NEGATIVE",
    "FRACTION",
    "UNITS",
]

Number = int | float


def _describe(
    minimum: Number | None, maximum: Number | None, integer: bool, closed: tuple[bool, bool]
) -> str:
    """Words for the allowed values, e.g. "a positive integer" or "a number in [0, 1)"."""
    kind = "integer" if integer else "number"
    article = "an" if integer else "a"
    finite = "" if integer else " finite"
    if maximum is not None:
        low = "(-∞" if minimum is None else ("[" if closed[0] else "(") + f"{minimum:g}"
        return f"{article} {kind} in {low}, {maximum:g}{']' if closed[1] else ')'}"
    if minimum is None:
        return f"a{finite} {kind}" if finite else f"an {kind}"
    if minimum == 0 and closed[0]:
        return f"a non-negative{finite} {kind}"
    if (minimum == 0 and not closed[0]) or (integer and minimum == 1 and closed[0]):
        return f"a positive{finite} {kind}"
    return f"{article} {kind} {'>=' if closed[0] else '>'} {minimum:g}"


def number(
    minimum: Number | None = None,
    maximum: Number | None = None,
    inclusive: bool | tuple[bool, bool] = True,
    *,
    integer: bool = False,
) -> Callable[[str], Number]:
    """Returns an argparse `type` that parses a finite number within bounds.

    Args:
        minimum: the smallest allowed value, or `None` for no lower bound.
            Defaults to `None`.
        maximum: the largest allowed value, or `None` for no upper bound.
            Defaults to `None`.
        inclusive: whether the bounds are allowed values; one flag for both, or a
            `(lower, upper)` pair. Defaults to `True`.
        integer: parse an `int` instead of a `float`. Defaults to `False`.

    Returns:
        A function from the option's text to its value that raises
        `argparse.ArgumentTypeError` naming the allowed range and the text received.

    Example:

    >>> number(0, 1, (True, False))("0.25")
    0.25
    """
    closed = (inclusive, inclusive) if isinstance(inclusive, bool) else inclusive
    description = _describe(minimum, maximum, integer, closed)

    def parse(text: str) -> Number:
        try:
            value: Number = int(text) if integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}") from None
        in_range = math.isfinite(value)
        if minimum is not None:
            in_range &= value >= minimum if closed[0] else value > minimum
        if maximum is not None:
            in_range &= value <= maximum if closed[1] else value < maximum
        if not in_range:
            raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}")
        return value

    parse.__name__ = "integer" if integer else "number"  # argparse names the type in errors.
    return parse


def number_list(
    minimum: Number | None = None,
    maximum: Number | None = None,
    inclusive: bool | tuple[bool, bool] = True,
    *,
    integer: bool = False,
    example: str = "1,2",
) -> Callable[[str], list[Number]]:
    """Returns an argparse `type` for comma-separated numbers, each checked by `number`.

    Args:
        minimum: as for `number`. Defaults to `None`.
        maximum: as for `number`. Defaults to `None`.
        inclusive: as for `number`. Defaults to `True`.
        integer: as for `number`. Defaults to `False`.
        example: a valid value, quoted in the error message. Defaults to `"1,2"`.

    Returns:
        A function from the option's text to a non-empty list of values.

    Example:

    >>> number_list(1, integer=True, example="64,16")("128,32")
    [128, 32]
    """
    item = number(minimum, maximum, inclusive, integer=integer)
    closed = (inclusive, inclusive) if isinstance(inclusive, bool) else inclusive
    plural = "integers" if integer else "numbers"
    each = _describe(minimum, maximum, integer, closed)

    def parse(text: str) -> list[Number]:
        try:
            return [item(part) for part in text.split(",")]
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {plural} such as {example}, each {each}, got {text!r}"
            ) from None

    parse.__name__ = "list"
    return parse


# The types several subcommands share.
POSITIVE_INT = number(1, integer=True)
NON_NEGATIVE = number(0)
FRACTION = number(0, 1, (True, False))
UNITS = number_list(1, integer=True, example="32 or 64,16")
