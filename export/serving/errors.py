"""The dataplane's errors: what was wrong with a request, in no transport's terms.

Each transport maps them once: HTTP to a status code (`keras_cae.export.serving.rest`,
``HTTP_STATUS``), gRPC to a status code (`keras_cae.export.serving.kserve_v2_grpc`,
``GRPC_CODES``). Every message says what was received and what is accepted; client
text in a message goes through `echo`, which bounds it, so that an error is never
larger than a few hundred bytes whatever the request held.

This module imports no web or RPC framework.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

__all__ = [
    "ServingError", "InvalidRequest", "NotFound", "TooLarge", "ClientClosed", "echo",
    "echo_list", "shape_echo",
]  # fmt: skip

# How much client text an error message repeats: enough to recognise it.
_ECHO_CHARS = 64
_ECHO_ITEMS = 8


class ServingError(Exception):
    """A request the server refuses; `message` says why, for the client.

    Example:

    >>> str(InvalidRequest("The batch has 5 rows; ..."))
    'The batch has 5 rows; ...'
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(ServingError):
    """The request is malformed or does not fit the model (HTTP 400, gRPC INVALID_ARGUMENT)."""


class NotFound(ServingError):
    """No such model or version (HTTP 404, gRPC NOT_FOUND)."""


class TooLarge(ServingError):
    """The request is larger than the server accepts (HTTP 413)."""


class ClientClosed(ServingError):
    """The client went away before its request was read (counted as 499, as nginx does)."""


def echo(value: Any, limit: int = _ECHO_CHARS) -> str:
    """Client text (or a JSON value) for an error message: quoted like ``repr``, with
    non-printable characters and lone surrogates escaped, and cut after `limit`
    characters; arrays and objects are named, not written out.

    Args:
        value: what the client sent.
        limit: the most characters repeated. Defaults to `64`.

    Returns:
        Text that is always valid UTF-8 and at most about `limit` + 40 characters.

    Example:

    >>> echo("nope")
    "'nope'"
    >>> echo("a" * 100, limit=3)
    "'aaa'... (100 characters)"
    >>> echo("\\ud800")
    "'\\\\ud800'"
    """
    if isinstance(value, str):
        text = repr(value[:limit]).encode("ascii", "backslashreplace").decode("ascii")
        return text if len(value) <= limit else f"{text}... ({len(value)} characters)"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int) and value.bit_length() > 4 * limit:  # `repr` has a limit.
        return f"an integer of {value.bit_length()} bits"
    if isinstance(value, (int, float)):
        text = repr(value)
        return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} digits)"
    if isinstance(value, list):
        return f"a JSON array of {len(value)} items"
    if isinstance(value, dict):
        return f"a JSON object of {len(value)} keys"
    return type(value).__name__


def echo_list(values: Sequence[Any], limit: int = _ECHO_ITEMS) -> str:
    """A list of client values for an error message, each `echo`ed, at most `limit` of them.

    Example:

    >>> echo_list(["y"])
    "['y']"
    >>> echo_list(list("abcdefghij"), limit=2)
    "['a', 'b', ... (10 in all)]"
    """
    items = ", ".join(echo(value) for value in values[:limit])
    more = f", ... ({len(values)} in all)" if len(values) > limit else ""
    return f"[{items}{more}]"


def shape_echo(shape: Sequence[int], limit: int = _ECHO_ITEMS) -> str:
    """A client's shape for an error message, cut after `limit` dimensions.

    Example:

    >>> shape_echo([2, 8])
    '[2, 8]'
    >>> shape_echo([1] * 10, limit=3)
    '[1, 1, 1, ... (10 dimensions)]'
    """
    dims = ", ".join(echo(d) for d in shape[:limit])
    more = f", ... ({len(shape)} dimensions)" if len(shape) > limit else ""
    return f"[{dims}{more}]"
