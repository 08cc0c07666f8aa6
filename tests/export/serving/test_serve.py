"""`keras-cae serve`: the real server, in a subprocess, spoken to over HTTP on loopback.

One server per module (`server` fixture) serves a small TensorFlow-free ONNX encoder
built with `onnx.helper`; the reference for every result is `OnnxEncoder.encode` in
this process, on the same file. Graceful shutdown uses servers of its own.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx  # The `test` extra holds httpx, jsonschema, openapi-spec-validator, fastapi...
import jsonschema
import numpy as np
import pytest
from openapi_spec_validator import validate as validate_openapi
from prometheus_client.parser import text_string_to_metric_families

from keras_cae.export.runtime import OnnxEncoder
from tests._loopback import Server as LoopbackServer
from tests._loopback import free_port as _free_port
from tests._loopback import serve_command, start_server, stop_server

FEATURES, CODE = 8, 3
_INFER_PATH = "/v2/models/enc/infer"
MAX_BATCH = 32
MAX_BODY = 64 * 1024
NAME = "enc"


def _make_encoder(
    path: str, seed: int = 0, features: int = FEATURES, code: int = CODE,
    metadata: dict[str, str] | None = None,
) -> None:  # fmt: skip
    """x [N, 8] -> sigmoid(x @ W + b) -> code [N, 3] (or other sizes), dynamic batch, opset 17."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(features, code)).astype(np.float32)
    bias = rng.normal(size=code).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["h"]),
            helper.make_node("Add", ["h", "b"], ["z"]),
            helper.make_node("Sigmoid", ["z"], ["code"]),
        ],
        "encoder",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("code", TensorProto.FLOAT, ["batch", code])],
        initializer=[numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # Loadable by every onnxruntime that supports opset 17.
    for key, value in (metadata or {}).items():  # As `keras-cae export` records them.
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    onnx.save(model, path)


@dataclass
class Server(LoopbackServer):
    """A `keras-cae serve` process and the encoder it serves, to compare answers with."""

    encoder: OnnxEncoder


def _start(model: str, log: str, *extra: str, env: dict[str, str] | None = None) -> Server:
    port = _free_port()
    server = start_server(serve_command(model, port, *extra), port, log, env)
    return Server(server.process, server.port, server.log, OnnxEncoder(model))


_stop = stop_server


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("serve") / "encoder.onnx")
    _make_encoder(path)
    return path


@pytest.fixture(scope="module")
def server(model_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = str(tmp_path_factory.mktemp("serve-log") / "server.log")
    options = ["--name", NAME, "--max-batch", str(MAX_BATCH), "--max-body-bytes", str(MAX_BODY)]
    running = _start(model_path, log, *options)
    try:
        yield running
    finally:
        code = _stop(running)
        # A graceful stop: uvicorn finishes, then re-raises the SIGTERM it caught, as a
        # process stopped by that signal should (not -9: it was not killed).
        assert code == -signal.SIGTERM, running.output()
        # No request may have crashed a handler: uvicorn logs tracebacks of 500s.
        assert "Traceback" not in running.output(), running.output()


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[Any]:
    with httpx.Client(base_url=server.url, timeout=10.0) as http:
        yield http


def _batch(rows: int, seed: int = 1) -> np.ndarray:
    # Float32 values with full mantissas (not round decimals), so that any loss in the
    # JSON round trip would show.
    return np.random.default_rng(seed).normal(size=(rows, FEATURES)).astype(np.float32)


def _v2_body(x: Any, **fields: Any) -> dict[str, Any]:
    x = np.asarray(x)
    tensor = {"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
    return {"inputs": [tensor], **fields}


def _exact(values: Any) -> np.ndarray:
    """JSON numbers as float32, after checking that each is exactly a float32."""
    wide = np.asarray(values, dtype=np.float64)
    narrow = wide.astype(np.float32)
    assert np.array_equal(narrow.astype(np.float64), wide), "a value is not a float32"
    return narrow


# ------------------------------------------------------------------------------------------
# Results equal OnnxEncoder.encode, bit for bit.


@pytest.mark.parametrize("rows", [1, 5, MAX_BATCH])
def test_v2_infer_equals_encoder(server: Server, client: Any, rows: int) -> None:
    x = _batch(rows, seed=rows)
    response = client.post(f"/v2/models/{NAME}/infer", json=_v2_body(x, id="req-7"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["model_name"] == NAME and body["model_version"] == "1" and body["id"] == "req-7"
    [output] = body["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("code", "FP32", [rows, CODE])
    codes = _exact(output["data"]).reshape(output["shape"])
    np.testing.assert_array_equal(codes, server.encoder.encode(x))


def test_v2_accepts_nested_data_versioned_path_and_requested_output(
    server: Server, client: Any
) -> None:
    x = _batch(4, seed=11)
    body = _v2_body(x, outputs=[{"name": "code"}])
    body["inputs"][0]["data"] = x.tolist()  # Nested to the shape, also allowed by the protocol.
    response = client.post(f"/v2/models/{NAME}/versions/1/infer", json=body)
    assert response.status_code == 200, response.text
    [output] = response.json()["outputs"]
    np.testing.assert_array_equal(_exact(output["data"]).reshape(4, CODE), server.encoder.encode(x))
    # An empty `outputs` list, like none, asks for every output.
    response = client.post(_INFER_PATH, json={**_v2_body(x), "outputs": []})
    assert [o["name"] for o in response.json()["outputs"]] == ["code"]


def test_v2_empty_batch(client: Any) -> None:
    response = client.post(f"/v2/models/{NAME}/infer", json=_v2_body(np.zeros((0, FEATURES))))
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["shape"] == [0, CODE]
    assert response.json()["outputs"][0]["data"] == []


def test_v2_binary_tensor_data_extension(server: Server, client: Any) -> None:
    # Triton's binary extension, as its clients send it: a JSON header whose length is
    # in Inference-Header-Content-Length, followed by raw little-endian tensor bytes.
    x = _batch(6, seed=3)
    raw = x.astype("<f4").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [6, FEATURES],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "code", "parameters": {"binary_data": True}}],
        }
    ).encode()
    response = client.post(
        f"/v2/models/{NAME}/infer",
        content=header + raw,
        headers={
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream",
        },
    )
    assert response.status_code == 200, response.text
    length = int(response.headers["inference-header-content-length"])
    meta = json.loads(response.content[:length])
    [output] = meta["outputs"]
    assert output["shape"] == [6, CODE] and output["datatype"] == "FP32"
    assert output["parameters"]["binary_data_size"] == 6 * CODE * 4
    codes = np.frombuffer(response.content[length:], dtype="<f4").reshape(6, CODE)
    np.testing.assert_array_equal(codes, server.encoder.encode(x))

    # Binary input, JSON output (the request-level parameter left at its default).
    del header
    header = json.dumps(
        {"inputs": [{"name": "x", "shape": [6, FEATURES], "datatype": "FP32",
                     "parameters": {"binary_data_size": len(raw)}}]}
    ).encode()  # fmt: skip
    response = client.post(
        f"/v2/models/{NAME}/infer",
        content=header + raw,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 200, response.text
    data = response.json()["outputs"][0]["data"]
    np.testing.assert_array_equal(_exact(data).reshape(6, CODE), server.encoder.encode(x))


def test_tf_serving_row_and_columnar_formats(server: Server, client: Any) -> None:
    x = _batch(3, seed=5)
    expected = server.encoder.encode(x)
    url = f"/v1/models/{NAME}:predict"
    for body, key in [
        ({"instances": x.tolist()}, "predictions"),
        ({"instances": [{"x": row} for row in x.tolist()]}, "predictions"),
        ({"signature_name": "serving_default", "inputs": x.tolist()}, "outputs"),
        ({"inputs": {"x": x.tolist()}}, "outputs"),
    ]:
        response = client.post(url, json=body)
        assert response.status_code == 200, response.text
        assert list(response.json()) == [key]
        np.testing.assert_array_equal(_exact(response.json()[key]), expected)
    response = client.post(f"/v1/models/{NAME}/versions/1:predict", json={"instances": x.tolist()})
    np.testing.assert_array_equal(_exact(response.json()["predictions"]), expected)


# ------------------------------------------------------------------------------------------
# Health and metadata.


def test_health_and_metadata(client: Any) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    server_metadata = client.get("/v2").json()
    assert server_metadata["name"] == "keras-cae"
    assert "binary_tensor_data" in server_metadata["extensions"]
    metadata = client.get(f"/v2/models/{NAME}").json()
    assert metadata == {
        "name": NAME,
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, FEATURES]}],
        "outputs": [{"name": "code", "datatype": "FP32", "shape": [-1, CODE]}],
    }
    assert client.get(f"/v2/models/{NAME}/versions/1").json() == metadata
    assert client.get(f"/v2/models/{NAME}/ready").json() == {"name": NAME, "ready": True}
    status = client.get(f"/v1/models/{NAME}").json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    signature = client.get(f"/v1/models/{NAME}/metadata").json()
    serving = signature["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert serving["inputs"]["x"]["dtype"] == "DT_FLOAT"
    dims = [int(d["size"]) for d in serving["inputs"]["x"]["tensor_shape"]["dim"]]
    assert dims == [-1, FEATURES]


# ------------------------------------------------------------------------------------------
# Bad input: a 4xx with a JSON error that says what was wrong; the server lives on.

_INFER = f"/v2/models/{NAME}/infer"
_PREDICT = f"/v1/models/{NAME}:predict"
_ROW = [0.5] * FEATURES


def _v2(data: Any = None, shape: Any = None, datatype: str = "FP32", name: str = "x") -> str:
    data = [_ROW] if data is None else None if data == "null" else data
    shape = [1, FEATURES] if shape is None else shape
    tensor = {"name": name, "shape": shape, "datatype": datatype, "data": data}
    return json.dumps({"inputs": [tensor]})


_BAD_REQUESTS = [
    # (id, method, path, body, status, words the error must contain)
    ("malformed-json", "POST", _INFER, '{"inputs": [', 400, "not valid JSON"),
    ("empty-body", "POST", _INFER, "", 400, "empty"),
    ("json-array", "POST", _INFER, "[1, 2]", 400, "JSON object"),
    ("not-utf8", "POST", _INFER, b"\xff\xfe{", 400, "not valid JSON"),
    ("deep-nesting", "POST", _INFER, "[" * 60_000, 400, "not valid JSON"),
    ("no-inputs", "POST", _INFER, "{}", 400, "inputs"),
    ("inputs-not-list", "POST", _INFER, '{"inputs": 3}', 400, "inputs"),
    ("wrong-input-name", "POST", _INFER, _v2(name="y"), 400, "named 'x'"),
    ("two-inputs", "POST", _INFER,
     json.dumps({"inputs": [json.loads(_v2())["inputs"][0]] * 2}), 400, "exactly one input"),
    ("unknown-datatype", "POST", _INFER, _v2(datatype="FLOAT"), 400, "datatype"),
    ("wrong-datatype", "POST", _INFER, _v2(datatype="FP64"), 400, "expects FP32"),
    ("wrong-feature-count", "POST", _INFER, _v2(data=[[0.5] * 7], shape=[1, 7]), 400, "[-1, 8]"),
    ("wrong-rank", "POST", _INFER, _v2(data=_ROW, shape=[FEATURES]), 400, "[-1, 8]"),
    ("negative-dim", "POST", _INFER, _v2(shape=[-1, FEATURES]), 400, "negative"),
    ("non-integer-dim", "POST", _INFER, _v2(shape=[1.5, FEATURES]), 400, "shape"),
    ("count-mismatch", "POST", _INFER, _v2(data=_ROW[:-1]), 400, "needs 8"),
    ("string-element", "POST", _INFER, _v2(data=["0.5"] * FEATURES), 400, "string"),
    ("bool-element", "POST", _INFER, _v2(data=[True] * FEATURES), 400, "boolean"),
    ("null-element", "POST", _INFER, _v2(data=[None] * FEATURES), 400, "null"),
    ("object-element", "POST", _INFER, _v2(data=[{}] * FEATURES), 400, "found an object"),
    ("mixed-nesting", "POST", _INFER, _v2(data=[_ROW, 0.5]), 400, "mixes"),
    ("too-deep-data", "POST", _INFER, _v2(data=[[[0.5]] * FEATURES]), 400, "deeper"),
    ("nan", "POST", _INFER, _v2(data=[[*_ROW[:-1], float("nan")]]), 400, "NaN"),
    ("infinity", "POST", _INFER, _v2(data=[[float("inf"), *_ROW[1:]]]), 400, "infinite"),
    ("huge-number", "POST", _INFER, _v2(data=[[10**400, *_ROW[1:]]]), 400, "numeric"),
    ("float32-overflow", "POST", _INFER, _v2(data=[[1e39, *_ROW[1:]]]), 400, "overflow FP32"),
    ("tf-float32-overflow", "POST", _PREDICT, json.dumps({"instances": [[*_ROW[1:], -1e39]]}),
     400, "overflow FP32"),
    ("nested-ragged-rows", "POST", _INFER,
     _v2(data=[[0.5] * 7, [0.5] * 9], shape=[2, FEATURES]), 400, "rectangular"),
    ("nested-contradicts-shape", "POST", _INFER,
     _v2(data=[[0.5] * 2 * FEATURES], shape=[2, FEATURES]), 400, "contradicts"),
    ("binary-output-string", "POST", _INFER,
     json.dumps({**json.loads(_v2()), "parameters": {"binary_data_output": "false"}}), 400,
     "JSON boolean"),
    ("binary-data-string", "POST", _INFER,
     json.dumps({**json.loads(_v2()), "outputs": [{"name": "code",
                 "parameters": {"binary_data": "true"}}]}), 400, "JSON boolean"),
    ("header-length-superscript", "POST", _INFER, ("²", _v2()), 400, "Inference-Header"),
    ("header-length-5000-digits", "POST", _INFER, ("1" * 5000, _v2()), 400, "Inference-Header"),
    ("header-length-negative", "POST", _INFER, ("-1", _v2()), 400, "Inference-Header"),
    ("over-max-batch", "POST", _INFER,
     _v2(data=[_ROW] * (MAX_BATCH + 1), shape=[MAX_BATCH + 1, FEATURES]), 400, "--max-batch"),
    ("unknown-output", "POST", _INFER,
     json.dumps({**json.loads(_v2()), "outputs": [{"name": "z"}]}), 400, "Unknown output"),
    ("unknown-model", "POST", "/v2/models/nope/infer", _v2(), 404, "Unknown model 'nope'"),
    ("unknown-version", "POST", f"/v2/models/{NAME}/versions/7/infer", _v2(), 404, "version"),
    ("unknown-model-metadata", "GET", "/v2/models/nope", None, 404, "Unknown model"),
    ("binary-size-mismatch", "POST", _INFER, "binary", 400, "binary_data_size"),
    ("tf-both-formats", "POST", _PREDICT,
     json.dumps({"instances": [_ROW], "inputs": [_ROW]}), 400, "exactly one of"),
    ("tf-neither-format", "POST", _PREDICT, "{}", 400, "exactly one of"),
    ("tf-ragged", "POST", _PREDICT,
     json.dumps({"instances": [_ROW, _ROW[:-1]]}), 400, "rectangular"),
    ("tf-feature-count", "POST", _PREDICT, json.dumps({"instances": [_ROW[:-1]]}), 400, "[-1, 8]"),
    ("tf-flat-instances", "POST", _PREDICT, json.dumps({"instances": _ROW}), 400, "[-1, 8]"),
    ("tf-nan", "POST", _PREDICT, '{"instances": [[NaN, 0, 0, 0, 0, 0, 0, 0]]}', 400, "NaN"),
    ("tf-string", "POST", _PREDICT, json.dumps({"instances": [["a"] * FEATURES]}), 400, "string"),
    ("tf-signature", "POST", _PREDICT,
     json.dumps({"signature_name": "other", "instances": [_ROW]}), 400, "signature_name"),
    ("tf-instance-key", "POST", _PREDICT, json.dumps({"instances": [{"y": _ROW}]}), 400, "'x'"),
    ("tf-inputs-key", "POST", _PREDICT, json.dumps({"inputs": {"y": [_ROW]}}), 400, "'x'"),
    ("tf-over-max-batch", "POST", _PREDICT,
     json.dumps({"instances": [_ROW] * (MAX_BATCH + 1)}), 400, "--max-batch"),
    ("tf-unknown-model", "POST", "/v1/models/nope:predict", json.dumps({"instances": [_ROW]}), 404,
     "Unknown model"),
    # Client text that cannot be written back (a lone surrogate) or that nests deeper
    # than the JSON writer goes is refused, never echoed (issue 20, item 3).
    ("lone-surrogate-id", "POST", _INFER, json.dumps({**json.loads(_v2()), "id": "\ud800"}),
     400, "lone surrogate"),
    ("lone-surrogate-binary-output", "POST", _INFER,
     json.dumps({**json.loads(_v2()), "parameters": {"binary_data_output": "\ud800"}}), 400,
     "JSON boolean"),
    ("deep-binary-output", "POST", _INFER,
     json.dumps(json.loads(_v2()))[:-1] + ', "parameters": {"binary_data_output": '
     + "[" * 500 + "]" * 500 + "}}", 400, "JSON boolean"),
    ("lone-surrogate-output-name", "POST", _INFER,
     json.dumps({**json.loads(_v2()), "outputs": [{"name": "\ud800"}]}), 400, "Unknown output"),
    # A shape longer than any model's is refused before any work on it (item 9).
    ("too-many-dims", "POST", _INFER, _v2(shape=[1] * 40), 400, "40 dimensions; at most 32"),
    # What the OpenAPI schema refuses, the server refuses (item 10).
    ("data-null", "POST", _INFER, _v2(data="null"), 400, "`data` null"),
    ("tf-instances-null-and-inputs", "POST", _PREDICT, '{"inputs": [], "instances": null}', 400,
     "exactly one of"),
    ("tf-instances-null", "POST", _PREDICT, '{"instances": null}', 400, "null"),
    ("oversized-body", "POST", _INFER, "x" * (MAX_BODY + 1), 413, "--max-body-bytes"),
    ("oversized-chunked-body", "POST", _INFER, "chunked", 413, "--max-body-bytes"),
    ("wrong-method", "GET", _INFER, None, 405, "Method Not Allowed"),
    ("unknown-route", "GET", "/v3/whatever", None, 404, "No route"),
]  # fmt: skip


@pytest.mark.parametrize(
    "method, path, body, status, words", [case[1:] for case in _BAD_REQUESTS],
    ids=[case[0] for case in _BAD_REQUESTS],
)  # fmt: skip
def test_bad_request_is_a_clear_4xx(
    server: Server, client: Any, method: str, path: str, body: Any, status: int, words: str
) -> None:
    headers: dict[str, Any] = {}
    content: Any = body
    if body == "binary":  # Declares 4 bytes more than it sends.
        raw = np.zeros((1, FEATURES), "<f4").tobytes()
        tensor = {"name": "x", "shape": [1, FEATURES], "datatype": "FP32",
                  "parameters": {"binary_data_size": len(raw) + 4}}  # fmt: skip
        header = json.dumps({"inputs": [tensor]}).encode()
        content = header + raw
        headers["Inference-Header-Content-Length"] = str(len(header))
    elif isinstance(body, tuple):  # (Inference-Header-Content-Length, body)
        headers["Inference-Header-Content-Length"], content = body[0].encode("latin-1"), body[1]
    elif body == "chunked":  # No Content-Length: the limit is enforced while streaming.
        content = (b"x" * 8192 for _ in range(MAX_BODY // 8192 + 2))
    response = client.request(method, path, content=content, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()
    assert list(error) == ["error"] and isinstance(error["error"], str)
    assert words in error["error"], error["error"]
    # Nothing an HTTP client cannot act on (such as how to construct an OnnxEncoder).
    assert "check_finite" not in error["error"], error["error"]
    # The server is unharmed: the next request succeeds.
    assert server.process.poll() is None
    assert client.post(_INFER, content=_v2()).status_code == 200


# ------------------------------------------------------------------------------------------
# Metrics.


def _parse_prometheus(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Samples by name, then by sorted label pairs, read by prometheus_client's parser."""
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_metrics_count_requests_latency_and_batches(client: Any) -> None:
    before = _parse_prometheus(client.get("/metrics").text)
    x = _batch(5, seed=9)
    url = f"/v2/models/{NAME}/versions/1/infer"
    for _ in range(3):
        assert client.post(url, json=_v2_body(x)).status_code == 200
    assert client.post(url, content="{").status_code == 400
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    after = _parse_prometheus(response.text)

    def delta(name: str, **labels: str) -> float:
        key = tuple(sorted(labels.items()))

        def pick(samples: dict) -> float:
            matches = [v for k, v in samples.get(name, {}).items() if tuple(sorted(k)) == key]
            return sum(matches)

        return pick(after) - pick(before)

    route = "/v2/models/{name}/versions/{version}/infer"
    assert delta("keras_cae_requests_total", endpoint=route, method="POST", status="200") == 3
    assert delta("keras_cae_requests_total", endpoint=route, method="POST", status="400") == 1
    assert delta("keras_cae_request_duration_seconds_count", endpoint=route) == 4
    assert delta("keras_cae_request_duration_seconds_sum", endpoint=route) > 0
    assert delta("keras_cae_batch_size_count", protocol="v2") == 3
    assert delta("keras_cae_batch_size_sum", protocol="v2") == 15
    assert delta("keras_cae_batch_size_bucket", protocol="v2", le="4.0") == 0
    assert delta("keras_cae_batch_size_bucket", protocol="v2", le="8.0") == 3
    info = after["keras_cae_model_info"]
    assert [dict(k)["model"] for k in info] == [NAME]


def test_metrics_labels_stay_bounded_whatever_the_method(client: Any) -> None:
    before = _parse_prometheus(client.get("/metrics").text)["keras_cae_requests_total"]
    # Methods the HTTP parser knows (WebDAV and friends) reach the app: 405. Arbitrary
    # tokens reach it through h11 (405) but httptools, the parser of uvicorn[standard],
    # refuses them itself (400) before any app or metric sees them.
    known = [
        "PROPFIND",
        "PROPPATCH",
        "MKCOL",
        "COPY",
        "MOVE",
        "LOCK",
        "UNLOCK",
        "PURGE",
        "REPORT",
        "SEARCH",
        "MKCALENDAR",
        "LINK",
        "UNLINK",
        "NOTIFY",
        "SUBSCRIBE",
    ]
    arbitrary = [f"M{i}" for i in range(40)] + ["X" * 4000]  # fmt: skip
    for method in known:
        assert client.request(method, "/v2/health/ready").status_code == 405
    refused = [client.request(m, "/v2/health/ready").status_code for m in arbitrary]
    assert set(refused) in ({400}, {405}), refused
    reached = len(known) + refused.count(405)
    after = _parse_prometheus(client.get("/metrics").text)["keras_cae_requests_total"]
    labels = {dict(k)["method"] for k in after}
    assert labels <= {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other"}
    assert len(after) - len(before) <= 1  # At most the one new series for "other".
    other = {("endpoint", "/v2/health/ready"), ("method", "other"), ("status", "405")}
    count = sum(v for k, v in after.items() if set(k) == other)
    assert count - sum(v for k, v in before.items() if set(k) == other) == reached


def test_client_gone_mid_body_is_499_and_no_traceback(server: Server, client: Any) -> None:
    def closed() -> float:
        samples = _parse_prometheus(client.get("/metrics").text)["keras_cae_requests_total"]
        want = {("endpoint", _INFER_PATH.replace(NAME, "{name}")), ("method", "POST")}
        return sum(v for k, v in samples.items() if want <= set(k) and dict(k)["status"] == "499")

    before = closed()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(
            f"POST {_INFER} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n"
            '{"inputs": ['.encode()
        )
    deadline = time.monotonic() + 10
    while closed() == before and time.monotonic() < deadline:
        time.sleep(0.05)  # Polls the server's own count; no fixed wait.
    assert closed() == before + 1
    assert "Exception in ASGI application" not in server.output(), server.output()
    assert 'status="500"' not in client.get("/metrics").text


# ------------------------------------------------------------------------------------------
# The OpenAPI document describes what the server really accepts and returns.


def test_openapi_document_matches_the_server(client: Any) -> None:
    document = client.get("/openapi.json").json()
    validate_openapi(document)  # A valid OpenAPI 3.1 document.
    paths = document["paths"]
    for path, method in [
        ("/v2/models/{name}/infer", "post"),
        ("/v2/models/{name}/versions/{version}/infer", "post"),
        ("/v1/models/{name}:predict", "post"),
        ("/v2/health/ready", "get"),
        ("/metrics", "get"),
    ]:
        assert method in paths[path], path

    def schema_of(ref: dict[str, Any]) -> dict[str, Any]:
        # Resolve against the whole document, where the referenced components live.
        return {**ref, "components": document["components"]}

    def check(schema: dict[str, Any], value: Any) -> None:
        jsonschema.validate(value, schema_of(schema))

    infer = paths["/v2/models/{name}/infer"]["post"]
    request_schema = infer["requestBody"]["content"]["application/json"]["schema"]
    response_schema = infer["responses"]["200"]["content"]["application/json"]["schema"]
    error_schema = infer["responses"]["400"]["content"]["application/json"]["schema"]
    accepted = _v2_body(_batch(2), id="a")
    check(request_schema, accepted)
    response = client.post(_INFER, json=accepted)
    assert response.status_code == 200
    check(response_schema, response.json())
    # What the schema rejects, the server rejects too.
    for bad in [{}, {"inputs": []}, json.loads(_v2(datatype="FLOAT")), {"inputs": [{"name": "x"}]}]:
        with pytest.raises(jsonschema.ValidationError):
            check(request_schema, bad)
        rejected = client.post(_INFER, json=bad)
        assert rejected.status_code == 400
        check(error_schema, rejected.json())

    predict = paths["/v1/models/{name}:predict"]["post"]
    tf_request = predict["requestBody"]["content"]["application/json"]["schema"]
    tf_response = predict["responses"]["200"]["content"]["application/json"]["schema"]
    for body in [{"instances": _batch(2).tolist()}, {"inputs": {"x": _batch(2).tolist()}}]:
        check(tf_request, body)
        response = client.post(_PREDICT, json=body)
        assert response.status_code == 200
        check(tf_response, response.json())
    # The schema is the served model's: what it rejects, the server rejects too
    # (`{"inputs": {}}` was schema-valid and a 400 before).
    tf_error = predict["responses"]["400"]["content"]["application/json"]["schema"]
    for bad in [{"inputs": {}}, {"instances": [_ROW[:-1]]}, {}, {"instances": [[1e39] * 8]},
                {"instances": [_ROW], "inputs": [_ROW]}, {"instances": [{"y": _ROW}]}]:  # fmt: skip
        with pytest.raises(jsonschema.ValidationError):
            check(tf_request, bad)
        rejected = client.post(_PREDICT, json=bad)
        assert rejected.status_code == 400, (bad, rejected.text)
        check(tf_error, rejected.json())
    for bad in [json.loads(_v2(name="y")), json.loads(_v2(shape=[1, 7])),
                {**json.loads(_v2()), "parameters": {"binary_data_output": "false"}}]:  # fmt: skip
        with pytest.raises(jsonschema.ValidationError):
            check(request_schema, bad)
        assert client.post(_INFER, json=bad).status_code == 400
    metadata = paths["/v2/models/{name}"]["get"]["responses"]["200"]["content"]
    check(metadata["application/json"]["schema"], client.get(f"/v2/models/{NAME}").json())


# ------------------------------------------------------------------------------------------
# Load: concurrent clients, zero errors, every answer exact.


def test_load_200_requests_at_concurrency_16(server: Server) -> None:
    # 2,000 requests (and more) run in benchmarks/serve.py, which checks them the same way.
    requests, concurrency = 200, 16
    rng = np.random.default_rng(42)
    sizes = rng.integers(1, 9, size=requests)
    inputs = [rng.normal(size=(int(n), FEATURES)).astype(np.float32) for n in sizes]
    expected = [server.encoder.encode(x) for x in inputs]

    def worker(indices: range) -> list[str]:
        failures = []
        with httpx.Client(base_url=server.url, timeout=30.0) as http:
            for i in indices:
                x = inputs[i]
                try:
                    if i % 2:
                        response = http.post(_INFER, json=_v2_body(x))
                        codes = response.json()["outputs"][0]["data"] if response.is_success else []
                    else:
                        response = http.post(_PREDICT, json={"instances": x.tolist()})
                        codes = response.json().get("predictions", [])
                    if response.status_code != 200:
                        failures.append(f"{i}: {response.status_code} {response.text[:200]}")
                    elif not np.array_equal(_exact(codes).reshape(expected[i].shape), expected[i]):
                        failures.append(f"{i}: codes differ")
                except Exception as error:  # A transport error is a failure too.
                    failures.append(f"{i}: {type(error).__name__}: {error}")
        return failures

    started = time.monotonic()
    chunks = [range(k, requests, concurrency) for k in range(concurrency)]
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        failures = [f for result in pool.map(worker, chunks) for f in result]
    elapsed = time.monotonic() - started
    assert not failures, f"{len(failures)} failures, e.g. {failures[:5]}"
    assert server.process.poll() is None
    print(f"\n{requests} requests at concurrency {concurrency}: {elapsed:.2f} s")


def test_example_client_runs_against_the_server(server: Server) -> None:
    # Also covers the request-level `binary_data_output` parameter of the extension.
    example = os.path.join(
        os.path.dirname(__file__), "..", "..", "..", "examples", "serve_client.py"
    )
    done = subprocess.run(
        [sys.executable, example, "--url", server.url, "--model", NAME],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "identical over JSON, binary and TF Serving" in done.stdout


# ------------------------------------------------------------------------------------------
# Graceful shutdown.


def test_sigterm_finishes_in_flight_requests(model_path: str, tmp_path: Any) -> None:
    server = _start(model_path, str(tmp_path / "log"), "--name", NAME)
    try:
        x = _batch(2, seed=21)
        body = json.dumps(_v2_body(x)).encode()
        # A request in flight: headers and half the body sent, the rest after SIGTERM.
        connection = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        head = (
            f"POST {_INFER} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        connection.sendall(head + body[: len(body) // 2])

        def in_flight() -> float:  # Besides the scrape asking.
            text = httpx.get(server.url + "/metrics", timeout=10).text
            return _parse_prometheus(text)["keras_cae_requests_in_flight"][()] - 1

        _wait_for(lambda: in_flight() == 1, "the server to start our request")
        server.process.send_signal(signal.SIGTERM)

        def refuses_connections() -> bool:
            try:
                socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
            except OSError:
                return True
            return False

        _wait_for(refuses_connections, "the server to stop accepting connections")
        assert server.process.poll() is None, "the server quit with a request in flight"
        connection.sendall(body[len(body) // 2 :])
        reply = b""
        while chunk := connection.recv(65536):
            reply += chunk
        connection.close()
        status_line, _, rest = reply.partition(b"\r\n")
        assert status_line == b"HTTP/1.1 200 OK", reply[:300]
        payload = json.loads(rest.split(b"\r\n\r\n", 1)[1])
        codes = _exact(payload["outputs"][0]["data"]).reshape(2, CODE)
        np.testing.assert_array_equal(codes, server.encoder.encode(x))
        assert server.process.wait(timeout=15) == -signal.SIGTERM, server.output()
        assert "Traceback" not in server.output(), server.output()
    finally:
        _stop(server)


# ------------------------------------------------------------------------------------------
# The command line and the module.


def test_cli_errors_are_one_line_exit_2(
    model_path: str, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from keras_cae.cli import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        cases = [
            ([str(tmp_path / "missing.onnx")], "not found"),
            ([model_path, "--name", "bad/name"], "Invalid model name"),
            ([model_path, "--port", port], "Cannot listen"),
            ([model_path, "--port", "70000"], "--port"),
            ([model_path, "--max-batch", "0"], "--max-batch"),
        ]
        not_onnx = tmp_path / "not.onnx"
        not_onnx.write_text("not a model")
        cases.append(([str(not_onnx)], "cannot load"))
        for argv, words in cases:
            assert main(["serve", *argv]) == 2, argv
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and words in err, (argv, err)


def test_serving_never_imports_tensorflow(model_path: str) -> None:
    code = (
        "import sys\n"
        "from keras_cae.export.serving import create_app\n"
        "from keras_cae import cli\n"
        "cli._build_parser()\n"
        f"create_app({model_path!r})\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TF imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_two_workers_serve_and_metrics_count_both(model_path: str, tmp_path: Any) -> None:
    server = _start(model_path, str(tmp_path / "log"), "--name", NAME, "--workers", "2")
    try:

        def scrape() -> tuple[float, float]:
            samples = _parse_prometheus(httpx.get(server.url + "/metrics", timeout=10).text)
            ok = {("endpoint", "/v2/models/{name}/infer"), ("method", "POST"), ("status", "200")}
            total = sum(v for k, v in samples["keras_cae_requests_total"].items() if set(k) == ok)
            return total, samples["keras_cae_worker_processes"][()]

        # The server answers once one worker is up; on a loaded machine the second can
        # take tens of seconds more. Both must be serving before the requests are sent.
        deadline = time.monotonic() + 120
        while (counts := scrape()) != (0, 2) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert counts == (0, 2)
        x = _batch(2, seed=31)
        expected = server.encoder.encode(x)
        for _ in range(40):  # A new connection each time, so both workers take requests.
            response = httpx.post(server.url + _INFER, json=_v2_body(x), timeout=10)
            assert response.status_code == 200, response.text
            data = response.json()["outputs"][0]["data"]
            np.testing.assert_array_equal(_exact(data).reshape(2, CODE), expected)

        # Other workers' snapshots lag by at most Metrics.FLUSH_SECONDS (0.5 s).
        deadline = time.monotonic() + 10
        while (counts := scrape()) != (40, 2) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert counts == (40, 2)
        for _ in range(5):  # Whichever worker answers, the totals are the same.
            assert scrape() == (40, 2)
    finally:
        code = _stop(server)
    assert code in (0, -signal.SIGTERM), server.output()
    assert "Traceback" not in server.output(), server.output()


def _workers(master: int) -> list[int]:
    """The live uvicorn worker processes of a master (not its resource tracker)."""
    children = []
    with open(f"/proc/{master}/task/{master}/children") as file:
        for pid in map(int, file.read().split()):
            if _alive(pid) and b"spawn_main" in _read(f"/proc/{pid}/cmdline"):
                children.append(pid)
    return children


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    """Running, and not a zombie (in a container nobody may reap an orphan)."""
    status = _read(f"/proc/{pid}/status")
    return bool(status) and b"State:\tZ" not in status


def _wait_for(condition: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_die_with_their_master_and_totals_survive_a_worker(
    model_path: str, tmp_path: Any
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    server = _start(model_path, str(tmp_path / "log"), "--name", NAME, "--workers", "2",
                    env={"TMPDIR": str(temp)})  # fmt: skip
    try:
        workers = _wait_for(lambda: len(w := _workers(server.process.pid)) == 2 and w, "workers")
        assert len(list(temp.glob("keras-cae-serve-metrics-*"))) == 1
        for _ in range(30):  # A new connection each time, so both workers take requests.
            assert httpx.post(server.url + _INFER, json=_v2_body(_batch(1)), timeout=10).is_success

        def scrape() -> tuple[float, float, float]:
            samples = _parse_prometheus(httpx.get(server.url + "/metrics", timeout=10).text)
            ok = (("endpoint", "/v2/models/{name}/infer"), ("method", "POST"), ("status", "200"))
            return (
                samples["keras_cae_requests_total"][ok],
                samples["keras_cae_worker_processes"][()],
                samples["keras_cae_requests_in_flight"][()],  # The scrape itself: 1.
            )

        assert scrape() == (30, 2, 1)
        os.kill(workers[0], signal.SIGKILL)
        _wait_for(lambda: not _alive(workers[0]), "the killed worker to go")
        workers = _wait_for(
            lambda: len(w := _workers(server.process.pid)) == 2 and w, "a replacement worker"
        )
        # The dead worker's counts stay; the gauges count the live workers only.
        _wait_for(lambda: scrape()[1] == 2, "the replacement to load the model")
        for _ in range(5):  # Whichever worker answers.
            assert scrape() == (30, 2, 1)
        server.process.kill()  # SIGKILL: the master cannot clean up; the workers must.
        server.process.wait(timeout=10)
        _wait_for(lambda: not any(map(_alive, workers)), "the workers to die with the master")
        with socket.socket() as probe:  # Nobody holds the port any more.
            probe.bind(("127.0.0.1", server.port))
        _wait_for(lambda: not list(temp.glob("keras-cae-serve-metrics-*")), "no metrics dir")
    finally:
        _stop(server)
        for pid in _workers(server.process.pid) if server.process.poll() is None else []:
            os.kill(pid, signal.SIGKILL)


# ------------------------------------------------------------------------------------------
# In-process checks of the pieces the server is made of.


def test_json_codec_is_exact_and_lenient_like_the_stdlib() -> None:
    from keras_cae.export.serving import codec

    codes = np.random.default_rng(5).normal(size=(16, 7)).astype(np.float32)
    codes[0, :4] = [np.finfo(np.float32).max, np.finfo(np.float32).tiny, 1e-45, -0.0]
    text = codec.dumps({"data": codes.reshape(-1).tolist()})
    back = json.loads(text)["data"]  # The standard library as the independent reader.
    np.testing.assert_array_equal(_exact(back).reshape(codes.shape), codes)
    assert codec.loads(text) == json.loads(text)
    # What Python's parser accepts, the server accepts.
    nan = codec.loads(b'{"x": [NaN, Infinity, -Infinity, 1]}')["x"]
    assert math.isnan(nan[0]) and nan[1:] == [math.inf, -math.inf, 1]
    # Beyond 64 bits orjson reads a float, Python an int: the same float64 either way.
    assert [float(v) for v in codec.loads(b"[" + b"9" * 30 + b"]")] == [float("9" * 30)]
    for invalid in [b'{"inputs": [', b"\xff{", b"[" * 60_000, b"{'a': 1}"]:
        with pytest.raises((ValueError, RecursionError)):
            codec.loads(invalid)


def test_routers_answer_without_the_fast_path(model_path: str) -> None:
    """The protocol routers are complete on their own (the app puts a raw ASGI fast
    path for inference in front of them): the same answers, errors included."""
    import asyncio

    from fastapi import FastAPI

    from keras_cae.export.serving import create_app, kserve_v2, tf_serving
    from keras_cae.export.serving.rest import BodyReader, add_error_handlers

    fast = create_app(model_path, name=NAME)
    dataplane = fast.state.dataplane
    reader = BodyReader(dataplane.max_body_bytes)
    plain = FastAPI()
    plain.include_router(kserve_v2.router(kserve_v2.V2Handlers(dataplane, reader)))
    plain.include_router(tf_serving.router(tf_serving.TFHandlers(dataplane, reader)))
    add_error_handlers(plain)
    requests = [
        ("/v2/models/enc/versions/1/infer", _v2_body(_batch(3))),
        ("/v1/models/enc:predict", {"instances": _batch(2).tolist()}),
        ("/v2/models/enc/infer", {"inputs": []}),
        ("/v1/models/nope:predict", {"instances": []}),
    ]

    async def answers(app: Any) -> list[tuple[int, bytes]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return [
                (r.status_code, r.content)
                for r in [await http.post(path, json=body) for path, body in requests]
            ]

    expected = asyncio.run(answers(fast))
    assert [status for status, _ in expected] == [200, 200, 400, 404]
    assert asyncio.run(answers(plain)) == expected


def test_non_finite_codes_are_a_clear_400(tmp_path: Any) -> None:
    import asyncio

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from keras_cae.export.serving import create_app

    # code = x @ W with W = 2: a finite input near float32's maximum overflows to inf.
    weights = numpy_helper.from_array(np.full((2, 1), 2.0, np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["code"])], "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("code", TensorProto.FLOAT, ["batch", 1])],
        initializer=[weights],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = str(tmp_path / "linear.onnx")
    onnx.save(model, path)

    async def post(body: dict[str, Any]) -> Any:
        transport = httpx.ASGITransport(app=create_app(path, name="linear"))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return await http.post("/v1/models/linear:predict", json=body)

    response = asyncio.run(post({"instances": [[1.0, 2.0], [3e38, 3e38]]}))
    assert response.status_code == 400
    assert "infinite codes for 1 of 2 rows" in response.json()["error"]
    response = asyncio.run(post({"instances": [[1.0, 2.0]]}))
    assert response.json() == {"predictions": [[6.0]]}


@pytest.mark.slow
def test_digits_train_export_serve_end_to_end(tmp_path: Any) -> None:
    """The real path: keras-cae train -> keras-cae export -> keras-cae serve."""
    from keras_cae.data import load_digits

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    cli = [sys.executable, "-m", "keras_cae.cli"]
    run, exported = str(tmp_path / "run"), str(tmp_path / "exported")
    for command in (
        [*cli, "train", "--out", run, "--epochs", "1", "--quiet"],
        [*cli, "export", os.path.join(run, "model.keras"), "--out", exported, "--format", "onnx"],
    ):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    model = os.path.join(exported, "encoder.onnx")
    server = _start(model, str(tmp_path / "log"), "--name", "digits")
    try:
        x = load_digits().x[:10]
        expected = server.encoder.encode(x)
        features = x.shape[1]
        body = {"inputs": [{"name": server.encoder.input_name, "shape": [10, features],
                            "datatype": "FP32", "data": x.ravel().tolist()}]}  # fmt: skip
        response = httpx.post(server.url + "/v2/models/digits/infer", json=body, timeout=30)
        assert response.status_code == 200, response.text
        [output] = response.json()["outputs"]
        assert output["name"] == server.encoder.output_name
        np.testing.assert_array_equal(_exact(output["data"]).reshape(expected.shape), expected)
        response = httpx.post(
            server.url + "/v1/models/digits:predict", json={"instances": x.tolist()}, timeout=30
        )
        np.testing.assert_array_equal(_exact(response.json()["predictions"]), expected)
    finally:
        _stop(server)


# ------------------------------------------------------------------------------------------
# Fuzzing: near-valid and arbitrary requests never give a 5xx, and every answer is the
# documented error object or matches the documented response schema.


def _json_values() -> Any:
    from hypothesis import strategies as st

    scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=12,
    )


@pytest.mark.slow  # ~10 s: 300 requests over loopback.
def test_fuzz_the_http_api(server: Server, client: Any) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    document = client.get("/openapi.json").json()
    components = document["components"]
    valid = {
        _INFER: _v2_body(_batch(2)),
        _PREDICT: {"instances": _batch(2).tolist()},
    }
    paths = [
        _INFER,
        _PREDICT,
        f"/v2/models/{NAME}",
        f"/v2/models/{NAME}/ready",
        "/v2",
        f"/v1/models/{NAME}/metadata",
        f"/v2/models/{NAME}/versions/1/infer",
        "/v2/health/live",
        f"/v1/models/{NAME}:predict",
        "/v1/models/x%00y:predict",
    ]

    def mutate(body: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
        """`body` with the node at a path of indices/keys (cut where it ends) replaced."""
        body = json.loads(json.dumps(body))
        node = body
        for step in path[:-1]:
            children = list(node) if isinstance(node, dict) else range(len(node))
            if not children or not isinstance(node, (dict, list)):
                break
            key = list(children)[step % len(children)]
            if not isinstance(node[key], (dict, list)):
                break
            node = node[key]
        if isinstance(node, dict) and node:
            node[list(node)[path[-1] % len(node)]] = value
        elif isinstance(node, list) and node:
            node[path[-1] % len(node)] = value
        return body

    bodies = st.one_of(
        st.builds(mutate, st.sampled_from(list(valid.values())),
                  st.lists(st.integers(0, 7), min_size=1, max_size=4), _json_values()),
        _json_values().map(json.dumps),
        st.binary(max_size=64),
    )  # fmt: skip
    headers = st.fixed_dictionaries(
        {},
        optional={"Inference-Header-Content-Length": st.integers(-5, 500).map(str)
                  | st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=6)
                  | st.text(st.sampled_from("0123456789¹²³"), min_size=1, max_size=6)},
    )  # fmt: skip

    @settings(max_examples=300, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(path=st.sampled_from(paths), method=st.sampled_from(["POST", "GET", "PUT"]),
           body=bodies, extra=headers)  # fmt: skip
    def check(path: str, method: str, body: Any, extra: dict[str, str]) -> None:
        content = body if isinstance(body, (bytes, str)) else json.dumps(body)
        raw = {key: value.encode("latin-1") for key, value in extra.items()}
        try:
            response = client.request(method, path, content=content, headers=raw)
        except httpx.LocalProtocolError:  # A header h11 itself refuses to send.
            return
        assert response.status_code < 500, response.text
        if response.status_code >= 400:
            error = response.json()
            assert list(error) == ["error"] and isinstance(error["error"], str), error
            return
        template = path.replace(f"/{NAME}", "/{name}").replace("/versions/1", "/versions/{version}")
        operation = document["paths"][template][method.lower()]
        if "requestBody" in operation and not extra:
            # What the server answers, the schema accepts (issue 20, item 10).
            request = operation["requestBody"]["content"]["application/json"]["schema"]
            jsonschema.validate(json.loads(content), {**request, "components": components})
        if response.headers["content-type"] != "application/json":
            return  # The binary extension's answer; its JSON part is checked elsewhere.
        schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
        jsonschema.validate(response.json(), {**schema, "components": components})

    check()
    assert server.process.poll() is None


def _schema_valid_requests() -> Any:
    """(path, body) of requests that the served model's OpenAPI schema describes and
    whose data fits their shape (which a JSON Schema cannot say): every optional field
    present, absent or null, each sample shape that flattens to the model's."""
    from hypothesis import strategies as st

    value = st.floats(-1e6, 1e6, width=32) | st.integers(-1000, 1000)
    samples = st.sampled_from([[FEATURES], [2, 4], [4, 2], [2, 2, 2], [1, FEATURES], [FEATURES, 1]])
    absent = object()

    def maybe(strategy: Any) -> Any:
        return st.just(absent) | st.none() | strategy

    def fill(shape: list[int], draw: Any) -> Any:
        flat = draw(st.lists(value, min_size=math.prod(shape), max_size=math.prod(shape)))
        return np.asarray(flat, dtype=object).reshape(shape).tolist() if shape else flat

    @st.composite
    def v2(draw: Any) -> tuple[str, dict[str, Any]]:
        shape = [draw(st.integers(0, 3) | st.just(MAX_BATCH)), *draw(samples)]
        tensor: dict[str, Any] = {"name": "x", "shape": shape, "datatype": "FP32"}
        if shape[0] > 0 or draw(st.booleans()):
            data = fill(shape, draw)
            tensor["data"] = data if draw(st.booleans()) else np.ravel(data).tolist()
        body: dict[str, Any] = {"inputs": [tensor]}
        outputs = [{"name": "code"}]
        binary = st.fixed_dictionaries({}, optional={"binary_data": st.just(False)})
        output_parameters = draw(maybe(binary))
        if output_parameters is not absent:
            outputs[0]["parameters"] = output_parameters
        for key, strategy in [
            ("id", maybe(st.text(max_size=8))),
            ("parameters", maybe(st.just({}) | st.just({"binary_data_output": False}))),
            ("outputs", maybe(st.just([]) | st.just(outputs))),
        ]:
            field = draw(strategy)
            if field is not absent:
                body[key] = field
        parameters = draw(maybe(st.just({})))
        if parameters is not absent:
            tensor["parameters"] = parameters
        return draw(st.sampled_from([_INFER, f"/v2/models/{NAME}/versions/1/infer"])), body

    @st.composite
    def tf(draw: Any) -> tuple[str, dict[str, Any]]:
        sample = draw(samples)
        rows = [fill(sample, draw) for _ in range(draw(st.integers(0, 3)))]
        form = draw(st.sampled_from(["instances", "keyed", "inputs", "inputs-keyed"]))
        if form == "keyed":
            body: dict[str, Any] = {"instances": [{"x": row} for row in rows]}
        elif form == "inputs-keyed":
            body = {"inputs": {"x": rows}}
        else:
            body = {form: rows}
        signature = draw(maybe(st.just("serving_default")))
        if signature is not absent:
            body["signature_name"] = signature
        return _PREDICT, body

    return v2() | tf()


@pytest.mark.slow  # 10-25 s: 100 requests over loopback.
def test_what_the_schema_describes_the_server_answers(server: Server, client: Any) -> None:
    """The other direction of the fuzz test: every request the OpenAPI schema accepts
    (with data that fits its shape) is answered 200 with the encoder's codes."""
    from hypothesis import HealthCheck, given, settings

    document = client.get("/openapi.json").json()
    components = document["components"]

    @settings(max_examples=100, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(request=_schema_valid_requests())
    def check(request: tuple[str, dict[str, Any]]) -> None:
        path, body = request
        template = path.replace(f"/{NAME}", "/{name}").replace("/versions/1", "/versions/{version}")
        operation = document["paths"][template]["post"]
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        jsonschema.validate(body, {**schema, "components": components})  # Inside the schema.
        response = client.post(path, content=json.dumps(body))
        assert response.status_code == 200, (body, response.text)
        answer = response.json()
        reply = operation["responses"]["200"]["content"]["application/json"]["schema"]
        jsonschema.validate(answer, {**reply, "components": components})
        if path == _PREDICT:
            values = body.get("instances", body.get("inputs"))
            if isinstance(values, dict):
                values = values["x"]
            values = [row["x"] if isinstance(row, dict) else row for row in values]
            codes = answer.get("predictions", answer.get("outputs"))
        else:
            values = body["inputs"][0].get("data", [])
            codes = answer["outputs"][0]["data"]
        x = np.asarray(values, dtype=np.float32).reshape(-1, FEATURES)
        np.testing.assert_array_equal(_exact(codes).reshape(-1, CODE), server.encoder.encode(x))

    check()


# ------------------------------------------------------------------------------------------
# The interactive docs, in a real browser, without internet access.


@pytest.mark.slow
def test_docs_render_every_operation_offline_in_chromium(server: Server, tmp_path: Any) -> None:
    import shutil

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI"):  # .ci/run installs it: never skip the check there.
            pytest.fail("CI must have Debian's chromium; .ci/run installs it")
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    net_log = tmp_path / "net-log.json"
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-features=NetworkTimeServiceQuerying",
         f"--user-data-dir={tmp_path / 'profile'}",
         f"--log-net-log={net_log}", "--virtual-time-budget=20000", "--dump-dom",
         server.url + "/docs"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    document = httpx.get(server.url + "/openapi.json", timeout=10).json()
    operations = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(operations) >= 13
    for operation in operations:  # Swagger UI's element id for each rendered operation.
        assert re.search(rf'id="operations-[^"]*-{re.escape(operation)}"', dom), operation
    assert "Unable to render this definition" not in dom
    # Every URL the page asked for was on this server. (Requests Chromium makes for
    # itself, such as its update and time checks, have no origin as initiator.)
    log = json.loads(net_log.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = {
        event["params"]["url"]
        for event in log["events"]
        if event["type"] == start_job
        and "url" in event.get("params", {})
        and event["params"].get("initiator") != "not an origin"
    }
    assert server.url + "/docs/assets/swagger-ui-bundle.js" in urls, urls
    assert server.url + "/openapi.json" in urls, urls
    outside = {url for url in urls if not url.startswith(server.url + "/")}
    assert not outside, outside
