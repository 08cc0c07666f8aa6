"""The serving codec and request/response types (`keras_cae.export.serving.codec`,
`.infer_types`): JSON numbers at numpy speed against the element-wise reference, the
fast envelope check against the schema's, gRPC contents read from their wire bytes,
the v2 response written byte for byte, and the JSON codec against the standard library.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from tests.export.serving._serving import exact

# ------------------------------------------------------------------------------------------
# JSON numbers at numpy speed: the same arrays and the same errors as the element-wise scan.


class _ReferenceError(Exception):
    pass


def _reference(data: list[Any], depth: int, where: str) -> np.ndarray:
    """The element-wise check that was the only path before (verbatim but for the error
    type): every element's type, then numpy's conversion."""
    number_types = frozenset({int, float})
    names = {bool: "boolean", str: "string", type(None): "null", dict: "object"}

    def flatten(data: list[Any], depth: int) -> None:
        if not data:
            return
        types = set(map(type, data))
        if types <= number_types:
            return
        if types == {list}:
            if depth <= 1:
                raise _ReferenceError(f"{where} is nested deeper than the tensor's rank.")
            for item in data:
                flatten(item, depth - 1)
            return
        if list in types:
            raise _ReferenceError(f"{where} mixes numbers and arrays at the same level.")
        bad = names.get(next(t for t in types if t not in number_types), "value")
        article = "an" if bad[0] in "aeiou" else "a"
        raise _ReferenceError(f"{where} must hold JSON numbers; found {article} {bad}.")

    flatten(data, depth)
    try:
        return np.asarray(data, dtype=np.float64)
    except (ValueError, TypeError, OverflowError) as error:
        message = str(error).split("\n")[0]
        raise _ReferenceError(f"{where} is not a rectangular numeric array: {message}") from None


def _outcome(call: Any) -> Any:
    from keras_cae.export.serving.errors import InvalidRequest

    try:
        return call()
    except (InvalidRequest, _ReferenceError) as error:
        return ("error", str(error))


def _leaves() -> Any:
    from hypothesis import strategies as st

    return (
        st.floats(allow_nan=False, allow_infinity=False)
        | st.sampled_from([0, 1, 0.0, 1.0, -0.0, 2**63, 2**64 - 1, 2**64, -(2**63) - 1, 10**30])
        | st.integers(-(2**70), 2**70)
        | st.booleans()
        | st.none()
        | st.text(max_size=3)
        | st.just({})
    )


def _tensors() -> Any:
    """Rectangular arrays of numbers as JSON lists, some with one element replaced by
    another leaf or list (a boolean among numbers, a ragged row, ...)."""
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp

    arrays = hnp.arrays(
        st.sampled_from([np.float64, np.int64]),
        hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=4),
        elements=st.integers(-3, 3),
    ).map(lambda a: a.tolist())

    def replace(data: Any, path: list[int], value: Any) -> Any:
        node = data
        for step in path[:-1]:
            if not isinstance(node, list) or not node or not isinstance(node[0], list):
                break
            node = node[step % len(node)]
        if isinstance(node, list) and node:
            node[path[-1] % len(node)] = value
        return data

    mutated = st.builds(
        replace, arrays, st.lists(st.integers(0, 7), min_size=1, max_size=3),
        _leaves() | st.lists(_leaves(), max_size=3),
    )  # fmt: skip
    nested = st.recursive(_leaves(), lambda inner: st.lists(inner, max_size=3), max_leaves=10)
    return arrays | mutated | st.lists(nested, max_size=4)


def test_json_numbers_fast_path_equals_the_element_wise_scan() -> None:
    """Property: for any JSON array as the server parses it, `json_numbers` returns the
    reference's array (same values, shape and float64 dtype) or raises its message."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from keras_cae.export.serving import codec

    @settings(max_examples=300, deadline=None, derandomize=True, database=None)
    @given(data=_tensors(), depth=st.integers(1, 4))
    def check(data: list[Any], depth: int) -> None:
        text = json.dumps(data).encode()  # The wire, then the server's own parser.
        parsed = codec.loads(text)
        booleans = b"true" in text or b"false" in text
        padded = text + b" " * 5000  # Past the size where numpy searches the bytes.
        assert codec.may_hold_booleans(text) == booleans == codec.may_hold_booleans(padded)
        fast = _outcome(lambda: codec.json_numbers(parsed, depth, "data", booleans))
        reference = _outcome(lambda: _reference(parsed, depth, "data"))
        if isinstance(reference, tuple):
            assert fast == reference
        else:
            assert isinstance(fast, np.ndarray), fast
            assert fast.dtype == np.float64 and fast.shape == reference.shape
            np.testing.assert_array_equal(fast, reference)

    check()


def test_the_hand_written_envelope_check_accepts_only_what_the_schema_accepts() -> None:
    """Property: where `_plain_envelope` (the fast check of a well-formed v2 request)
    accepts a document, the schema's path (`_validated_envelope`) accepts it too and
    returns the same envelope; everything else goes to the schema's path."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from keras_cae.export.serving import infer_types

    odd = st.none() | st.booleans() | st.integers(-3, 3) | st.floats(0, 3) | st.text(max_size=3)
    unusual = odd | st.sampled_from([2.0, 2.5, "2", 2**70, [1] * 33, [1, 2.0], [True], "fp32", {}])
    parameters = st.none() | st.dictionaries(st.sampled_from(["binary_data_size", "p"]), odd)
    tensor = st.fixed_dictionaries(
        {"name": st.just("x"), "shape": st.lists(st.integers(-2, 4), max_size=3),
         "datatype": st.sampled_from(["FP32", "FP64"])},
        optional={"data": st.lists(st.floats(0, 1), max_size=2), "parameters": parameters,
                  "extra": odd},
    )  # fmt: skip
    output = st.fixed_dictionaries({"name": st.just("code")}, optional={"parameters": parameters})
    well_formed = st.fixed_dictionaries(
        {"inputs": st.lists(tensor, min_size=1, max_size=2)},
        optional={"id": st.none() | st.text(max_size=3), "parameters": parameters,
                  "outputs": st.none() | st.lists(output, max_size=2)},
    )  # fmt: skip
    # At most one field replaced by an unusual value (a path that does not exist: none).
    paths = [(), ("id",), ("parameters",), ("inputs",), ("outputs",), ("inputs", 0),
             ("inputs", 0, "name"), ("inputs", 0, "shape"), ("inputs", 0, "shape", 0),
             ("inputs", 0, "datatype"), ("inputs", 0, "data"), ("inputs", 0, "parameters"),
             ("inputs", -1, "shape", -1), ("outputs", 0), ("outputs", 0, "name"),
             ("outputs", 0, "parameters")]  # fmt: skip
    accepted = []

    def replaced(document: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
        document = json.loads(json.dumps(document))
        parent: Any = document
        for step in path[:-1]:
            if (
                isinstance(parent, dict)
                and step in parent
                or (isinstance(parent, list) and -len(parent) <= step < len(parent))
            ):
                parent = parent[step]
            else:
                return document
        if path and (isinstance(parent, dict) or (isinstance(parent, list) and parent)):
            parent[path[-1] if isinstance(parent, dict) else min(path[-1], len(parent) - 1)] = value
        return document

    @settings(max_examples=400, deadline=None, derandomize=True, database=None)
    @given(document=well_formed, path=st.sampled_from(paths), value=unusual)
    def check(document: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
        document = replaced(document, path, value)
        plain = infer_types._plain_envelope(document)
        reference = _outcome(lambda: infer_types._validated_envelope(document))
        if plain is not None:
            accepted.append(plain)
            assert repr(plain) == repr(reference)  # repr: 2.0 == 2, but not as a dimension.

    check()
    assert len(accepted) > 50  # The property was tested, not only its `None`s.
    tensor_ = {"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [0.5, 1.0]}
    well_formed = {"id": "a", "inputs": [tensor_], "outputs": [{"name": "code", "parameters": {}}]}
    assert infer_types._plain_envelope(well_formed) is not None


@pytest.mark.parametrize(
    "data, words",
    [([0.5, True], "boolean"), ([[1.0, 0.0], [False, 2.0]], "boolean"), ([True], "boolean"),
     ([1.0, "0.5"], "string"), ([1.0, None], "null"), ([{}, 1], "object"),
     ([[1.0], 1.0], "mixes"), ([[1.0], [1.0, 2.0]], "rectangular"), ([[[1.0]]], "deeper"),
     ([2**64, 1.0], None)],
)  # fmt: skip
def test_json_numbers_never_reads_a_non_number_as_one(data: list[Any], words: str | None) -> None:
    """numpy alone reads `true` as 1.0 and "0.5" as 0.5; the server must not."""
    from keras_cae.export.serving import codec
    from keras_cae.export.serving.errors import InvalidRequest

    if words is None:  # Beyond 64 bits: still a JSON number.
        assert codec.json_numbers(data, 2, "data").tolist() == [float(2**64), 1.0]
        return
    with pytest.raises(InvalidRequest, match=words):
        codec.json_numbers(data, 2, "data", may_hold_booleans=True)


# ------------------------------------------------------------------------------------------
# The wire: booleans in JSON text, gRPC contents, the v2 response bytes, the JSON codec.


@pytest.mark.parametrize("middle", [b"", b'"true"', b"false", b'"' + b"u" * 100 + b'"',
                                    b'"' + b"ul" * 100 + b'true"', b"nul", b'"fals"'])  # fmt: skip
def test_the_boolean_search_equals_the_substring_search(middle: bytes) -> None:
    from keras_cae.export.serving.codec import may_hold_booleans

    for document in (middle, b'{"x": [' + b"0.5," * 2000 + middle + b', 1], "u": 1}'):
        assert may_hold_booleans(document) == (b"true" in document or b"false" in document)


@pytest.mark.parametrize("count", [0, 1, 7, 64 * 784])
def test_typed_grpc_contents_are_read_from_their_wire_bytes(count: int) -> None:
    """`typed_array` equals protobuf's own element-by-element reading, also for contents
    that are not one packed field (a field the schema does not know, unpacked values)."""
    from keras_cae.export.serving._proto import grpc_predict_v2_pb2 as pb
    from keras_cae.export.serving.infer_types import typed_array

    x = np.random.default_rng(count).normal(size=count)
    for field, dtype in (("fp32_contents", np.float32), ("fp64_contents", np.float64)):
        values = x.astype(dtype)
        contents = pb.InferTensorContents(**{field: values.tolist()})
        got = typed_array(contents, field)
        assert got.dtype == dtype and np.array_equal(got, values)
        number = pb.InferTensorContents.DESCRIPTOR.fields_by_name[field].number
        unknown = bytes([99 << 3 & 0x7F | 0x80, 99 >> 4, 1])  # Field 99, varint 1.
        unpacked = b"".join(  # Each value with its own key (wire type 1 or 5).
            bytes([number << 3 | (5 if dtype == np.float32 else 1)]) + v.tobytes()
            for v in values[:3]
        )
        for wire in (contents.SerializeToString() + unknown, unpacked):
            parsed = pb.InferTensorContents.FromString(wire)
            expected = np.asarray(getattr(parsed, field), dtype=dtype)
            assert np.array_equal(typed_array(parsed, field), expected)


@pytest.mark.parametrize("request_id", [None, "r-1"])
@pytest.mark.parametrize("shape", [(1, 3), (0, 3), (2, 2, 2)])
def test_the_v2_json_response_is_what_dumps_writes_for_its_dict(
    request_id: str | None, shape: tuple[int, ...]
) -> None:
    """`InferResponse.to_rest` writes its known envelope bytes around the data (or the
    binary data's size); they equal `dumps` of the response object, byte for byte."""
    from keras_cae.export.serving.codec import dumps
    from keras_cae.export.serving.infer_types import InferRequest, InferResponse

    codes = np.arange(math.prod(shape), dtype=np.float32).reshape(shape) / 3
    request = InferRequest("enc", None, [], "v2", id=request_id)
    body, media_type, headers = InferResponse(request, "enc\u00e9", "1", 'co"de', codes).to_rest()
    expected: dict[str, Any] = {"model_name": "enc\u00e9", "model_version": "1"}
    if request_id is not None:
        expected["id"] = request_id
    expected["outputs"] = [{"name": "co\"de", "datatype": "FP32", "shape": list(shape),
                            "data": codes.reshape(-1).tolist()}]  # fmt: skip
    assert (body, media_type, headers) == (dumps(expected), "application/json", {})
    # And the binary answer's JSON header.
    request.binary_output = True
    body, media_type, headers = InferResponse(request, "enc\u00e9", "1", 'co"de', codes).to_rest()
    raw = codes.astype("<f4").tobytes()
    del expected["outputs"][0]["data"]
    expected["outputs"][0]["parameters"] = {"binary_data_size": len(raw)}
    header = dumps(expected)
    assert (body, media_type) == (header + raw, "application/octet-stream")
    assert headers == {"Inference-Header-Content-Length": str(len(header))}


def test_json_codec_is_exact_and_lenient_like_the_stdlib() -> None:
    from keras_cae.export.serving import codec

    codes = np.random.default_rng(5).normal(size=(16, 7)).astype(np.float32)
    codes[0, :4] = [np.finfo(np.float32).max, np.finfo(np.float32).tiny, 1e-45, -0.0]
    text = codec.dumps({"data": codes.reshape(-1).tolist()})
    back = json.loads(text)["data"]  # The standard library as the independent reader.
    np.testing.assert_array_equal(exact(back).reshape(codes.shape), codes)
    assert codec.loads(text) == json.loads(text)
    # What Python's parser accepts, the server accepts.
    nan = codec.loads(b'{"x": [NaN, Infinity, -Infinity, 1]}')["x"]
    assert math.isnan(nan[0]) and nan[1:] == [math.inf, -math.inf, 1]
    # Beyond 64 bits orjson reads a float, Python an int: the same float64 either way.
    assert [float(v) for v in codec.loads(b"[" + b"9" * 30 + b"]")] == [float("9" * 30)]
    for invalid in [b'{"inputs": [', b"\xff{", b"[" * 60_000, b"{'a': 1}"]:
        with pytest.raises((ValueError, RecursionError)):
            codec.loads(invalid)
