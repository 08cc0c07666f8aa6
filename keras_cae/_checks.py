"""The argument checks written once: positive integers and booleans.

Each raises `ValueError` naming the argument, the received value and what is allowed,
in the package's one wording (``"`name` should be ... Received: name=value"``).
Imports nothing heavy, so the TensorFlow-free parts of the package can use it.

Example:

>>> from keras_cae._checks import check_bool, positive_int
>>> positive_int("epochs", 3)
3
>>> positive_int("epochs", True)
Traceback (most recent call last):
...
ValueError: `epochs` should be a positive integer. Received: epochs=True
>>> positive_int("lambda_seeds", 0, minimum=0)
0
>>> check_bool("overwrite", "yes")
Traceback (most recent call last):
...
ValueError: `overwrite` should be True or False. Received: overwrite='yes'
"""

from __future__ import annotations

import numbers
from typing import Any

__all__ = ["positive_int", "check_bool"]


def positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """Returns `value` as an `int` if it is an integer ``>= minimum``, or raises.

    Python and NumPy integers are accepted; `bool` (an `int` subclass) and floats,
    even whole ones, are not.

    Args:
        name: the argument's name, for the message.
        value: the value to check.
        minimum: the smallest value allowed. Defaults to `1`.

    Returns:
        `value` as a Python `int`.

    Raises:
        ValueError: if `value` is not an integer ``>= minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        allowed = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"`{name}` should be {allowed}. Received: {name}={value!r}")
    return int(value)


def check_bool(name: str, value: Any) -> bool:
    """Returns `value` if it is `True` or `False` (not 0, 1 or a string), or raises.

    Args:
        name: the argument's name, for the message.
        value: the value to check.

    Returns:
        `value`.

    Raises:
        ValueError: if `value` is not a `bool`.
    """
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` should be True or False. Received: {name}={value!r}")
    return value
