"""JSON in and out, and turning request JSON into checked numpy batches.

orjson parses and writes large JSON batches ~10x faster than the standard library
(see ``benchmarks/serve.py``); where it refuses input that Python's parser accepts
(NaN literals, integers beyond 64 bits), the standard library decides, so that both
read the same requests. Every problem is a `ClientError` that names what was wrong.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
import orjson
from pydantic import BaseModel, ValidationError

from keras_cae.export.serving.errors import ClientError, describe_validation_error

__all__ = [
    "dumps", "loads", "parse_json", "validate", "flatten_numbers", "to_float64", "flag",
    "shape_text",
]  # fmt: skip

Model = TypeVar("Model", bound=BaseModel)
# JSON numbers arrive as these Python types; `bool` is a separate type and rejected.
_NUMBER_TYPES = frozenset({int, float})
_JSON_TYPE_NAMES = {bool: "boolean", str: "string", type(None): "null", dict: "object"}


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
        # NaN/Infinity literals, integers beyond 64 bits, very deep nesting or invalid
        # JSON: Python's parser accepts the first two (NaN is then rejected with a
        # precise message) and says what is wrong with the rest.
        return json.loads(body)


def parse_json(body: bytes, what: str) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 that says why not."""
    if not body:
        raise ClientError(400, f"The request body is empty; expected a JSON object ({what}).")
    try:
        value = loads(body)
    except (ValueError, RecursionError) as error:
        raise ClientError(400, f"The request body is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise ClientError(
            400, f"Expected a JSON object ({what}); received a JSON {_json_type(value)}."
        )
    return value


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "number"
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def validate(schema: type[Model], value: dict[str, Any]) -> Model:
    """`value` checked against a request schema, or a 400 naming the first problems."""
    try:
        return schema.model_validate(value)
    except ValidationError as error:
        raise ClientError(400, describe_validation_error(error)) from None


def flatten_numbers(data: list[Any], depth: int, where: str) -> list[Any]:
    """Returns the numbers of a (possibly nested) JSON array in row-major order.

    Returns `data` itself when it is already flat. Raises `ClientError` for booleans,
    strings, nulls or objects (JSON `true` is not a number, and numpy would silently
    read it as 1.0) and for nesting deeper than `depth`.

    Example:

    >>> flatten_numbers([[1, 2], [3, 4.5]], depth=2, where="data")
    [1, 2, 3, 4.5]
    """
    if not data:
        return data
    types = set(map(type, data))  # One C-level pass; nearly always {float} or {int, float}.
    if types <= _NUMBER_TYPES:
        return data
    if types == {list}:
        if depth <= 1:
            raise ClientError(400, f"{where} is nested deeper than the tensor's rank.")
        flat: list[Any] = []
        for item in data:
            flat.extend(flatten_numbers(item, depth - 1, where))
        return flat
    if list in types:
        raise ClientError(400, f"{where} mixes numbers and arrays at the same level.")
    bad = _JSON_TYPE_NAMES.get(next(t for t in types if t not in _NUMBER_TYPES), "value")
    article = "an" if bad[0] in "aeiou" else "a"
    raise ClientError(400, f"{where} must hold JSON numbers; found {article} {bad}.")


def to_float64(values: list[Any], where: str) -> np.ndarray:
    """JSON numbers (already type-checked) as a float64 array, or a 400 if ragged."""
    try:
        return np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError, OverflowError) as error:
        message = str(error).split("\n")[0]
        raise ClientError(400, f"{where} is not a rectangular numeric array: {message}") from None


def flag(parameters: dict[str, Any] | None, key: str, default: bool, where: str) -> bool:
    """A boolean request parameter. Only JSON booleans count: the string "false" is
    not false.

    Example:

    >>> flag({"binary_data": True}, "binary_data", False, "parameters")
    True
    """
    value = (parameters or {}).get(key, default)
    if not isinstance(value, bool):
        raise ClientError(
            400, f"{where}.{key} must be true or false (a JSON boolean); received "
            f"{dumps(value)[:40].decode(errors='replace')}.",
        )  # fmt: skip
    return value


def shape_text(shape: Sequence[int | None]) -> str:
    """A shape as in the protocols' metadata, -1 for a variable dimension.

    Example:

    >>> shape_text((None, 64))
    '[-1, 64]'
    """
    return "[" + ", ".join("-1" if d is None else str(d) for d in shape) + "]"
