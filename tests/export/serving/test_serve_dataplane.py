"""The serving dataplane (`keras_cae.export.serving.dataplane`, `.infer_types`, `.codec`):
its checks at numpy speed against the element-wise reference, the data contract of
`keras_cae.data.to_model_input`, the input-range hook, the worker-thread decision, and
that it imports no transport.

End-to-end answers over HTTP and gRPC are in test_serve.py and test_serve_grpc.py; here
the dataplane runs in process, behind the real app where a transport matters.
"""

from __future__ import annotations

import ast
import asyncio
import json
import math
import os
import threading
from typing import Any

import httpx
import numpy as np
import pytest

from keras_cae.export.runtime import OnnxEncoder
from tests.export.serving.test_serve import CODE, FEATURES, _make_encoder

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SERVING = os.path.join(ROOT, "export", "serving")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("dataplane") / "encoder.onnx")
    _make_encoder(path)
    return path


# ------------------------------------------------------------------------------------------
# The dataplane knows no transport.


def _imports(module: str) -> set[str]:
    """Every module `module` of the serving package imports, transitively within the
    package (its own files, read from the source; lazy imports included)."""
    seen: set[str] = set()
    todo = [module]
    external: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = os.path.join(SERVING, *name.split(".")) + ".py"
        if not os.path.exists(path):
            path = os.path.join(SERVING, *name.split("."), "__init__.py")
        with open(path, encoding="utf-8") as stream:
            tree = ast.parse(stream.read())
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            for target in targets:
                prefix = "keras_cae.export.serving."
                if target.startswith(prefix):
                    local = target[len(prefix) :]
                    if os.path.exists(os.path.join(SERVING, *local.split(".")) + ".py"):
                        todo.append(local)
                else:
                    external.add(target.split(".")[0])
    return external


@pytest.mark.parametrize("module", ["dataplane", "infer_types", "errors", "codec"])
def test_the_dataplane_imports_no_web_or_rpc_framework(module: str) -> None:
    imported = _imports(module)
    assert "typing" in imported  # The walk sees imports at all.
    assert not imported & {"fastapi", "starlette", "grpc", "uvicorn", "anyio"}, imported


def test_each_transport_maps_every_dataplane_error_once() -> None:
    from keras_cae.export.serving import errors
    from keras_cae.export.serving.kserve_v2_grpc import GRPC_CODES
    from keras_cae.export.serving.rest import HTTP_STATUS

    kinds = {errors.InvalidRequest, errors.NotFound, errors.TooLarge, errors.ClientClosed}
    assert set(HTTP_STATUS) == kinds and set(GRPC_CODES) == kinds
    assert (HTTP_STATUS[errors.InvalidRequest], HTTP_STATUS[errors.NotFound]) == (400, 404)
    assert GRPC_CODES[errors.NotFound].name == "NOT_FOUND"
    assert GRPC_CODES[errors.InvalidRequest].name == "INVALID_ARGUMENT"


def test_echo_bounds_client_text_and_escapes_surrogates() -> None:
    from keras_cae.export.serving.errors import echo, echo_list, shape_echo

    assert echo("nope") == repr("nope")
    long = echo("m" * 20_000)
    assert len(long) < 120 and "(20000 characters)" in long
    assert echo("\ud800").encode("utf-8")  # Writable: the surrogate is escaped.
    assert echo(10**5000) == "an integer of 16610 bits"
    assert echo([[[]]]) == "a JSON array of 1 items"
    assert len(echo_list(["y" * 1000] * 1000)) < 1000
    assert shape_echo([1] * 700_000) == "[1, 1, 1, 1, 1, 1, 1, 1, ... (700000 dimensions)]"


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
# The dataplane in process: shapes, the input range, the worker thread.


def _app_client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def _post_all(app: Any, requests: list[tuple[str, Any]]) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        async with _app_client(app) as http:
            return [
                await http.post(path, content=body if isinstance(body, bytes) else json.dumps(body))
                for path, body in requests
            ]

    return asyncio.run(run())


def _tensor(x: np.ndarray, shape: Any = None, **extra: Any) -> dict[str, Any]:
    shape = list(x.shape) if shape is None else shape
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": shape, "data": x.tolist(),
                        **extra}]}  # fmt: skip


def test_sample_shapes_follow_to_model_input(model_path: str) -> None:
    """A flat model takes any sample shape of its feature count, flattened, over both
    HTTP protocols (the rule of `keras_cae.data.to_model_input`, the reference here)."""
    from keras_cae.data import to_model_input
    from keras_cae.export.serving import create_app

    encoder = OnnxEncoder(model_path)
    x = np.random.default_rng(3).normal(size=(3, 2, 4)).astype(np.float32)
    expected = encoder.encode(to_model_input(x, encoder.input_shape))
    flat = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 2, 4],
                        "data": x.ravel().tolist()}]}  # fmt: skip
    bad = np.zeros((3, 3, 3), np.float32)
    with pytest.raises(ValueError):
        to_model_input(bad, encoder.input_shape)
    app = create_app(model_path, name="enc")
    answers = _post_all(app, [
        ("/v2/models/enc/infer", _tensor(x)),
        ("/v2/models/enc/infer", flat),
        ("/v1/models/enc:predict", {"instances": x.tolist()}),
        ("/v2/models/enc/infer", _tensor(x[:, :1, :1].copy())),  # 1 value: not 8.
        ("/v1/models/enc:predict", {"instances": bad.tolist()}),
        ("/v2/models/enc/infer", _tensor(x, shape=[3, 4, 2])),  # Nested as [3, 2, 4].
    ])  # fmt: skip
    for response in answers[:2]:
        assert response.status_code == 200, response.text
        [output] = response.json()["outputs"]
        assert output["shape"] == [3, CODE]
        np.testing.assert_array_equal(np.asarray(output["data"], np.float32), expected.ravel())
    assert answers[2].status_code == 200, answers[2].text
    np.testing.assert_array_equal(
        np.asarray(answers[2].json()["predictions"], np.float32), expected
    )
    for response in answers[3:5]:
        assert response.status_code == 400
        assert "any sample shape of 8 values" in response.json()["error"], response.text
    assert "contradicts its declared shape [3, 4, 2]" in answers[5].json()["error"]


def test_no_rows_need_no_data(model_path: str) -> None:
    """`shape [0, F]` without `data` is valid for the schema, and for the server."""
    from keras_cae.export.serving import create_app

    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [0, FEATURES]}]}
    [response] = _post_all(create_app(model_path, name="enc"), [("/v2/models/enc/infer", body)])
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["shape"] == [0, CODE]


def test_a_700000_dimension_shape_is_refused_before_any_work(model_path: str) -> None:
    from keras_cae.export.serving import create_app

    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1] * 700_000,
                                   "data": [0.5]}]}).encode()  # fmt: skip
    app = create_app(model_path, name="enc", max_body_bytes=4 << 20)
    [response] = _post_all(app, [("/v2/models/enc/infer", body)])
    assert response.status_code == 400
    assert "700000 dimensions; at most 32" in response.json()["error"]
    assert len(response.content) < 300, response.content[:500]


def test_input_outside_the_trained_range_is_refused(tmp_path: Any) -> None:
    """An encoder exported with its training input range (``keras_cae.input_range``)
    refuses raw 0-255 pixels for a model trained on pixels / 255 over every transport,
    with `check_input_range`'s message (the package's one rule), as a client error."""
    from keras_cae.export.runtime import INPUT_RANGE_KEY, INPUT_SCALING_KEY
    from keras_cae.export.serving import create_app
    from keras_cae.export.serving._proto import grpc_predict_v2_pb2 as pb
    from keras_cae.export.serving.errors import InvalidRequest
    from keras_cae.export.serving.infer_types import InferRequest

    path = str(tmp_path / "ranged.onnx")
    _make_encoder(path, metadata={INPUT_RANGE_KEY: "[0.0, 1.0]", INPUT_SCALING_KEY: "x / 255"})
    encoder = OnnxEncoder(path)
    assert encoder.input_range == (0.0, 1.0)
    app = create_app(path, name="enc")
    inside = np.linspace(0, 1, 2 * FEATURES, dtype=np.float32).reshape(2, FEATURES)
    raw = inside * 255  # Raw 8-bit pixels.
    with pytest.raises(ValueError) as reference:  # The rule, applied by the runtime.
        encoder.encode(raw)
    answers = _post_all(app, [
        ("/v2/models/enc/infer", _tensor(inside)),
        ("/v2/models/enc/infer", _tensor(raw)),
        ("/v1/models/enc:predict", {"instances": raw.tolist()}),
    ])  # fmt: skip
    assert answers[0].status_code == 200
    np.testing.assert_array_equal(
        np.asarray(answers[0].json()["outputs"][0]["data"], np.float32),
        encoder.encode(inside).ravel(),
    )
    expected = str(reference.value).split(" To encode it anyway")[0]
    assert "divide the inputs by 255" in expected
    for response in answers[1:]:
        assert response.status_code == 400
        error = response.json()["error"]
        assert error.startswith(expected) and "this server checks every request" in error
        assert "OnnxEncoder" not in error  # Nothing an HTTP client cannot act on.
    # gRPC goes through the same dataplane: the same refusal.
    message = pb.ModelInferRequest(model_name="enc")
    message.inputs.add(name="x", datatype="FP32", shape=raw.shape)
    message.raw_input_contents.append(raw.astype("<f4").tobytes())
    with pytest.raises(InvalidRequest, match="divide the inputs by 255"):
        asyncio.run(app.state.dataplane.infer(InferRequest.from_grpc(message)))


def test_the_worker_thread_is_chosen_by_the_measured_encode_cost(model_path: str) -> None:
    from keras_cae.export.serving import create_app, dataplane
    from keras_cae.export.serving.infer_types import InferRequest

    plane = create_app(model_path, name="enc").state.dataplane
    cost = plane.encode_cost
    assert cost.fixed > 0 and cost.per_row >= 0  # Calibrated at start-up.
    threads: list[int] = []
    encode = plane.encoder.encode

    def recording_encode(x: np.ndarray) -> np.ndarray:
        threads.append(threading.get_ident())
        return encode(x)

    plane.encoder = _Spy(plane.encoder, recording_encode)
    x = np.zeros((4, FEATURES), np.float32)
    body = json.dumps(_tensor(x)).encode()

    async def infer() -> None:
        await plane.infer(InferRequest.from_rest(body, {}, "enc", None))

    loop_thread = threading.get_ident()
    plane.encode_cost = dataplane.EncodeCost(0.0, 0.0)  # Cheap: on the event loop.
    asyncio.run(infer())
    plane.encode_cost = dataplane.EncodeCost(dataplane.INLINE_BUDGET_S, 1e-9)  # Over budget.
    asyncio.run(infer())
    assert threads[0] == loop_thread and threads[1] != loop_thread
    # The estimate grows with the rows: past the budget at some batch size, or never.
    rows = (dataplane.INLINE_BUDGET_S - cost.fixed) / cost.per_row if cost.per_row else math.inf
    assert rows > 0


class _Spy:
    def __init__(self, encoder: OnnxEncoder, encode: Any) -> None:
        self._encoder = encoder
        self.encode = encode

    def __getattr__(self, name: str) -> Any:
        return getattr(self._encoder, name)


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
