"""The serving dataplane (`keras_cae.export.serving.dataplane`, `.errors`): that it
imports no transport, the data contract of `keras_cae.data.to_model_input`, the
input-range hook and the worker-thread decision.

The JSON numbers and the request/response types are in test_serve_codec.py; end-to-end
answers over HTTP and gRPC in test_serve_infer.py and test_serve_grpc.py. Here the
dataplane runs in process, behind the real app where a transport matters.
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
from tests._onnx import dense_sigmoid_model, seeded_weights
from tests.export.serving._serving import CODE, FEATURES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SERVING = os.path.join(ROOT, "export", "serving")


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
    sample = [2, FEATURES // 2]  # Two rows of half the features each.
    x = np.random.default_rng(3).normal(size=(3, *sample)).astype(np.float32)
    expected = encoder.encode(to_model_input(x, encoder.input_shape))
    flat = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3, *sample],
                        "data": x.ravel().tolist()}]}  # fmt: skip
    bad = np.zeros((3, 3, 3), np.float32)
    with pytest.raises(ValueError):
        to_model_input(bad, encoder.input_shape)
    app = create_app(model_path, name="enc")
    answers = _post_all(app, [
        ("/v2/models/enc/infer", _tensor(x)),
        ("/v2/models/enc/infer", flat),
        ("/v1/models/enc:predict", {"instances": x.tolist()}),
        ("/v2/models/enc/infer", _tensor(x[:, :1, :1].copy())),  # 1 value: not FEATURES.
        ("/v1/models/enc:predict", {"instances": bad.tolist()}),
        ("/v2/models/enc/infer", _tensor(x, shape=[3, *sample[::-1]])),  # Nested as sample.
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
        assert f"any sample shape of {FEATURES} values" in response.json()["error"], response.text
    declared = f"contradicts its declared shape {[3, *sample[::-1]]}"
    assert declared in answers[5].json()["error"]


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
    ranges = {INPUT_RANGE_KEY: "[0.0, 1.0]", INPUT_SCALING_KEY: "x / 255"}
    dense_sigmoid_model(path, *seeded_weights(seed=0), metadata=ranges)
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
