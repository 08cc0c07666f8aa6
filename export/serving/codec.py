"""JSON in and out, and JSON arrays of numbers turned into numpy arrays at numpy speed.

orjson parses and writes large JSON batches ~10x faster than the standard library
(see ``benchmarks/serve.py``); where it refuses input that Python's parser accepts
(NaN literals, integers beyond 64 bits), the standard library decides, so that both
read the same requests. Every problem is an `InvalidRequest` that names what was wrong.

`json_numbers` is where tensor data is type-checked. Its fast path is one numpy
conversion and a proof that the result holds exactly the JSON numbers of the request:

- ``np.asarray`` on the parsed list infers a numeric dtype (kind ``f``, ``i`` or
  ``u``) only when every element is an int or a float and the nesting is
  rectangular: a string makes a ``U`` array, a null, an object or an integer beyond
  64 bits an ``object`` array, and ragged or mixed nesting raises.
- Booleans are the one JSON value it folds into numbers (``[0.5, true]`` becomes
  ``[0.5, 1.0]``). A JSON boolean is spelled ``true`` or ``false`` and nothing else,
  so a document whose bytes hold neither word holds no boolean (the caller says so
  with ``may_hold_booleans``); otherwise a boolean can only have become a 0 or a 1,
  and where the array holds neither there is none either.

When the fast path cannot decide, the element-wise scan that was the only path
before (`_scan`) decides and words the error; both give the same array or the same
message (``tests/export/serving/test_serve_codec.py`` checks it with hypothesis).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
import orjson
from pydantic import BaseModel, ValidationError

from keras_cae.export.serving.errors import InvalidRequest, echo

__all__ = [
    "dumps", "loads", "parse_json", "validate", "describe_validation_error", "json_numbers",
    "flag", "shape_text", "parse_length", "may_hold_booleans", "FAST_PATH_MIN_BYTES",
]  # fmt: skip

Model = TypeVar("Model", bound=BaseModel)
# JSON numbers arrive as these Python types; `bool` is a separate type and rejected.
_NUMBER_TYPES = frozenset({int, float})
_NUMERIC_KINDS = frozenset("fiu")
_JSON_TYPE_NAMES = {bool: "boolean", str: "string", type(None): "null", dict: "object"}
# A byte count in a header: ASCII digits only (`str.isdigit` also accepts "²"), and few
# enough of them that `int` never meets its 4,300-digit limit.
_LENGTH = re.compile(rb"[0-9]{1,18}")
# `may_hold_booleans`: beyond this many candidate letters, checking each in Python
# costs more than CPython's substring search.
_SCAN_MAX_LETTERS = 64
#: Documents smaller than this are not searched for booleans: their tensors are
#: checked element by element (`json_numbers` with ``may_hold_booleans=None``), which
#: costs about what the search and the fast path together cost at this size (a few
#: dozen values). A row of 784 values takes 21 µs element by element, 14 µs with the
#: search and the fast path (``benchmarks/dataplane.py``).
FAST_PATH_MIN_BYTES = 1024


def dumps(content: Any) -> bytes:
    """JSON bytes; floats as their shortest round-tripping repr, so float32 codes (exact
    in float64) parse back bit-identical. Callers never pass NaN or infinities.

    Example:

    >>> dumps({"data": [0.5, 1.0]})
    b'{"data":[0.5,1.0]}'
    """
    return orjson.dumps(content)


def loads(body: bytes) -> Any:
    """Parses JSON like Python's parser (which explains what is wrong), fast.

    Example:

    >>> loads(b'[NaN, 1]')
    [nan, 1]
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        # NaN/Infinity literals, integers beyond 64 bits, lone surrogates, very deep
        # nesting or invalid JSON: Python's parser accepts the first three (NaN is then
        # rejected with a precise message, a lone surrogate where it is echoed) and
        # says what is wrong with the rest.
        return json.loads(body)


def parse_json(body: bytes, what: str) -> dict[str, Any]:
    """The request body as a JSON object, or an `InvalidRequest` that says why not."""
    if not body:
        raise InvalidRequest(f"The request body is empty; expected a JSON object ({what}).")
    try:
        value = loads(body)
    except (ValueError, RecursionError) as error:
        raise InvalidRequest(f"The request body is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise InvalidRequest(
            f"Expected a JSON object ({what}); received a JSON {_json_type(value)}."
        )
    return value


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "number"
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def describe_validation_error(error: Any) -> str:
    """The first three problems of a failed validation (pydantic's, or FastAPI's, which
    has the same ``errors()``), in one line."""
    errors = error.errors()
    parts = []
    for item in errors[:3]:
        location = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
        parts.append(f"{location or 'body'}: {item.get('msg', 'invalid')}")
    more = len(errors) - 3
    return "Invalid request: " + "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def validate(schema: type[Model], value: dict[str, Any]) -> Model:
    """`value` checked against a request schema, or an `InvalidRequest` naming the first
    problems."""
    try:
        return schema.model_validate(value)
    except ValidationError as error:
        raise InvalidRequest(describe_validation_error(error)) from None


def may_hold_booleans(document: bytes) -> bool:
    """Whether a JSON document's bytes hold ``true`` or ``false``: exactly
    ``b"true" in document or b"false" in document``, at memory speed.

    CPython's substring search steps a few bytes at a time; its search for one byte is
    ``memchr``, which runs at memory speed. Every ``true`` has a ``u`` two bytes in,
    and every ``false`` an ``l``; a JSON number has neither, so in a tensor request the
    letters are few (in keys and strings) and each is checked in place (0.6 µs for a
    row of 784 values, against 5 µs for the substring search).

    Example:

    >>> may_hold_booleans(b'{"data": [0.5, 1.0]}'), may_hold_booleans(b'{"b": false}')
    (False, True)
    """
    find, starts = document.find, document.startswith
    for letter, word in ((b"u", b"true"), (b"l", b"false")):
        place, seen = find(letter, 2), 0
        while place != -1:
            if starts(word, place - 2):
                return True
            seen += 1
            if seen > _SCAN_MAX_LETTERS:  # Text, not numbers: let CPython search.
                if word in document:
                    return True
                break
            place = find(letter, place + 1)
    return False


def json_numbers(
    data: list[Any], depth: int, where: str, may_hold_booleans: bool | None = True
) -> np.ndarray:
    """The numbers of a (possibly nested) JSON array, as an array of its nesting's shape.

    Args:
        data: the parsed JSON array.
        depth: the most nesting levels accepted.
        where: what `data` is called in errors.
        may_hold_booleans: whether the JSON document's bytes hold ``true`` or
            ``false`` anywhere; `False` lets the fast path skip its boolean check, and
            `None` (not searched: a small document) goes to the element-wise scan,
            which costs no more than the fast path for a few thousand values.
            Defaults to `True`.

    Returns:
        A float64 array of `data`'s shape.

    Raises:
        InvalidRequest: an element is not a JSON number (booleans, strings, nulls and
            objects are refused: numpy would read ``true`` as 1.0), the nesting is
            deeper than `depth`, mixed or ragged.

    Example:

    >>> json_numbers([[1, 2], [3, 4.5]], depth=2, where="data")
    array([[1. , 2. ],
           [3. , 4.5]])
    """
    if may_hold_booleans is None:
        return _scan(data, depth, where)
    try:
        x = np.asarray(data)
    except (ValueError, TypeError, OverflowError):
        return _scan(data, depth, where)
    if x.dtype.kind not in _NUMERIC_KINDS or x.ndim > depth or x.size == 0:
        return _scan(data, depth, where)
    if may_hold_booleans and ((x == 0) | (x == 1)).any():
        return _scan(data, depth, where)  # A 0 or a 1 may have been a boolean.
    # Integers as Python's `float` reads them (one rounding), as `_scan` gives them.
    return x if x.dtype.kind == "f" else x.astype(np.float64)


def _scan(data: list[Any], depth: int, where: str) -> np.ndarray:
    """`json_numbers` element by element: the reference, and the words of its errors."""
    _check_numbers(data, depth, where)
    try:
        return np.asarray(data, dtype=np.float64)
    except (ValueError, TypeError, OverflowError) as error:
        message = str(error).split("\n")[0]
        raise InvalidRequest(f"{where} is not a rectangular numeric array: {message}") from None


def _check_numbers(data: list[Any], depth: int, where: str) -> None:
    if not data:
        return
    types = set(map(type, data))  # One C-level pass; nearly always {float} or {int, float}.
    if types <= _NUMBER_TYPES:
        return
    if types == {list}:
        if depth <= 1:
            raise InvalidRequest(f"{where} is nested deeper than the tensor's rank.")
        for item in data:
            _check_numbers(item, depth - 1, where)
        return
    if list in types:
        raise InvalidRequest(f"{where} mixes numbers and arrays at the same level.")
    bad = _JSON_TYPE_NAMES.get(next(t for t in types if t not in _NUMBER_TYPES), "value")
    article = "an" if bad[0] in "aeiou" else "a"
    raise InvalidRequest(f"{where} must hold JSON numbers; found {article} {bad}.")


def flag(parameters: dict[str, Any] | None, key: str, default: bool, where: str) -> bool:
    """A boolean request parameter. Only JSON booleans count: the string "false" is
    not false.

    Example:

    >>> flag({"binary_data": True}, "binary_data", False, "parameters")
    True
    """
    value = (parameters or {}).get(key, default)
    if not isinstance(value, bool):
        raise InvalidRequest(
            f"{where}.{key} must be true or false (a JSON boolean); received {echo(value)}."
        )
    return value


def shape_text(shape: Sequence[int | None]) -> str:
    """A shape as in the protocols' metadata, -1 for a variable dimension.

    Example:

    >>> shape_text((None, 64))
    '[-1, 64]'
    """
    return "[" + ", ".join("-1" if d is None else str(d) for d in shape) + "]"


def parse_length(value: bytes | None, what: str, limit: int | None = None) -> int | None:
    """A byte count from an HTTP header, or an `InvalidRequest` naming the header.

    Example:

    >>> parse_length(b"120", "Content-Length header")
    120
    """
    if value is None:
        return None
    if not _LENGTH.fullmatch(value) or (limit is not None and int(value) > limit):
        text = value[:40].decode("latin-1")
        bound = f" for a body of {limit} bytes" if limit is not None else ""
        raise InvalidRequest(f"Invalid {what} {text!r}{bound}: expected a decimal number of bytes.")
    return int(value)
