"""Bad input to `keras-cae serve` over HTTP: a 4xx with a JSON error that says what was
wrong, and the server lives on.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from tests.export.serving._serving import (
    FEATURES,
    INFER,
    MAX_BATCH,
    MAX_BODY,
    NAME,
    PREDICT,
    ROW,
    Server,
    v2_text,
)

_BAD_REQUESTS = [
    # (id, method, path, body, status, words the error must contain)
    ("malformed-json", "POST", INFER, '{"inputs": [', 400, "not valid JSON"),
    ("empty-body", "POST", INFER, "", 400, "empty"),
    ("json-array", "POST", INFER, "[1, 2]", 400, "JSON object"),
    ("not-utf8", "POST", INFER, b"\xff\xfe{", 400, "not valid JSON"),
    ("deep-nesting", "POST", INFER, "[" * 60_000, 400, "not valid JSON"),
    ("no-inputs", "POST", INFER, "{}", 400, "inputs"),
    ("inputs-not-list", "POST", INFER, '{"inputs": 3}', 400, "inputs"),
    ("wrong-input-name", "POST", INFER, v2_text(name="y"), 400, "named 'x'"),
    ("two-inputs", "POST", INFER,
     json.dumps({"inputs": [json.loads(v2_text())["inputs"][0]] * 2}), 400, "exactly one input"),
    ("unknown-datatype", "POST", INFER, v2_text(datatype="FLOAT"), 400, "datatype"),
    ("wrong-datatype", "POST", INFER, v2_text(datatype="FP64"), 400, "expects FP32"),
    ("wrong-feature-count", "POST", INFER,
     v2_text(data=[[0.5] * (FEATURES + 1)], shape=[1, FEATURES + 1]), 400, f"[-1, {FEATURES}]"),
    ("wrong-rank", "POST", INFER, v2_text(data=ROW, shape=[FEATURES]), 400, f"[-1, {FEATURES}]"),
    ("negative-dim", "POST", INFER, v2_text(shape=[-1, FEATURES]), 400, "negative"),
    ("non-integer-dim", "POST", INFER, v2_text(shape=[1.5, FEATURES]), 400, "shape"),
    ("count-mismatch", "POST", INFER, v2_text(data=ROW[:-1]), 400, f"needs {FEATURES}"),
    ("string-element", "POST", INFER, v2_text(data=["0.5"] * FEATURES), 400, "string"),
    ("bool-element", "POST", INFER, v2_text(data=[True] * FEATURES), 400, "boolean"),
    ("null-element", "POST", INFER, v2_text(data=[None] * FEATURES), 400, "null"),
    ("object-element", "POST", INFER, v2_text(data=[{}] * FEATURES), 400, "found an object"),
    ("mixed-nesting", "POST", INFER, v2_text(data=[ROW, 0.5]), 400, "mixes"),
    ("too-deep-data", "POST", INFER, v2_text(data=[[[0.5]] * FEATURES]), 400, "deeper"),
    ("nan", "POST", INFER, v2_text(data=[[*ROW[:-1], float("nan")]]), 400, "NaN"),
    ("infinity", "POST", INFER, v2_text(data=[[float("inf"), *ROW[1:]]]), 400, "infinite"),
    ("huge-number", "POST", INFER, v2_text(data=[[10**400, *ROW[1:]]]), 400, "numeric"),
    ("float32-overflow", "POST", INFER, v2_text(data=[[1e39, *ROW[1:]]]), 400, "overflow FP32"),
    ("tf-float32-overflow", "POST", PREDICT, json.dumps({"instances": [[*ROW[1:], -1e39]]}),
     400, "overflow FP32"),
    ("nested-ragged-rows", "POST", INFER,
     v2_text(data=[[0.5] * (FEATURES - 1), [0.5] * (FEATURES + 1)], shape=[2, FEATURES]), 400,
     "rectangular"),
    ("nested-contradicts-shape", "POST", INFER,
     v2_text(data=[[0.5] * 2 * FEATURES], shape=[2, FEATURES]), 400, "contradicts"),
    ("binary-output-string", "POST", INFER,
     json.dumps({**json.loads(v2_text()), "parameters": {"binary_data_output": "false"}}), 400,
     "JSON boolean"),
    ("binary-data-string", "POST", INFER,
     json.dumps({**json.loads(v2_text()), "outputs": [{"name": "code",
                 "parameters": {"binary_data": "true"}}]}), 400, "JSON boolean"),
    ("header-length-superscript", "POST", INFER, ("²", v2_text()), 400, "Inference-Header"),
    ("header-length-5000-digits", "POST", INFER, ("1" * 5000, v2_text()), 400, "Inference-Header"),
    ("header-length-negative", "POST", INFER, ("-1", v2_text()), 400, "Inference-Header"),
    ("over-max-batch", "POST", INFER,
     v2_text(data=[ROW] * (MAX_BATCH + 1), shape=[MAX_BATCH + 1, FEATURES]), 400, "--max-batch"),
    ("unknown-output", "POST", INFER,
     json.dumps({**json.loads(v2_text()), "outputs": [{"name": "z"}]}), 400, "Unknown output"),
    ("unknown-model", "POST", "/v2/models/nope/infer", v2_text(), 404, "Unknown model 'nope'"),
    ("unknown-version", "POST", f"/v2/models/{NAME}/versions/7/infer", v2_text(), 404, "version"),
    ("unknown-model-metadata", "GET", "/v2/models/nope", None, 404, "Unknown model"),
    ("binary-size-mismatch", "POST", INFER, "binary", 400, "binary_data_size"),
    ("tf-both-formats", "POST", PREDICT,
     json.dumps({"instances": [ROW], "inputs": [ROW]}), 400, "exactly one of"),
    ("tf-neither-format", "POST", PREDICT, "{}", 400, "exactly one of"),
    ("tf-ragged", "POST", PREDICT,
     json.dumps({"instances": [ROW, ROW[:-1]]}), 400, "rectangular"),
    ("tf-feature-count", "POST", PREDICT, json.dumps({"instances": [ROW[:-1]]}), 400,
     f"[-1, {FEATURES}]"),
    ("tf-flat-instances", "POST", PREDICT, json.dumps({"instances": ROW}), 400,
     f"[-1, {FEATURES}]"),
    ("tf-nan", "POST", PREDICT, '{"instances": [[NaN' + ", 0" * (FEATURES - 1) + "]]}", 400,
     "NaN"),
    ("tf-string", "POST", PREDICT, json.dumps({"instances": [["a"] * FEATURES]}), 400, "string"),
    ("tf-signature", "POST", PREDICT,
     json.dumps({"signature_name": "other", "instances": [ROW]}), 400, "signature_name"),
    ("tf-instance-key", "POST", PREDICT, json.dumps({"instances": [{"y": ROW}]}), 400, "'x'"),
    ("tf-inputs-key", "POST", PREDICT, json.dumps({"inputs": {"y": [ROW]}}), 400, "'x'"),
    ("tf-over-max-batch", "POST", PREDICT,
     json.dumps({"instances": [ROW] * (MAX_BATCH + 1)}), 400, "--max-batch"),
    ("tf-unknown-model", "POST", "/v1/models/nope:predict", json.dumps({"instances": [ROW]}), 404,
     "Unknown model"),
    # Client text that cannot be written back (a lone surrogate) or that nests deeper
    # than the JSON writer goes is refused, never echoed (issue 20, item 3).
    ("lone-surrogate-id", "POST", INFER, json.dumps({**json.loads(v2_text()), "id": "\ud800"}),
     400, "lone surrogate"),
    ("lone-surrogate-binary-output", "POST", INFER,
     json.dumps({**json.loads(v2_text()), "parameters": {"binary_data_output": "\ud800"}}), 400,
     "JSON boolean"),
    ("deep-binary-output", "POST", INFER,
     json.dumps(json.loads(v2_text()))[:-1] + ', "parameters": {"binary_data_output": '
     + "[" * 500 + "]" * 500 + "}}", 400, "JSON boolean"),
    ("lone-surrogate-output-name", "POST", INFER,
     json.dumps({**json.loads(v2_text()), "outputs": [{"name": "\ud800"}]}), 400, "Unknown output"),
    # A shape longer than any model's is refused before any work on it (item 9).
    ("too-many-dims", "POST", INFER, v2_text(shape=[1] * 40), 400, "40 dimensions; at most 32"),
    # What the OpenAPI schema refuses, the server refuses (item 10).
    ("data-null", "POST", INFER, v2_text(data="null"), 400, "`data` null"),
    ("tf-instances-null-and-inputs", "POST", PREDICT, '{"inputs": [], "instances": null}', 400,
     "exactly one of"),
    ("tf-instances-null", "POST", PREDICT, '{"instances": null}', 400, "null"),
    ("oversized-body", "POST", INFER, "x" * (MAX_BODY + 1), 413, "--max-body-bytes"),
    ("oversized-chunked-body", "POST", INFER, "chunked", 413, "--max-body-bytes"),
    ("wrong-method", "GET", INFER, None, 405, "Method Not Allowed"),
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
    assert client.post(INFER, content=v2_text()).status_code == 200
