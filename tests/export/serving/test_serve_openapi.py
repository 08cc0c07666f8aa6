"""`keras-cae serve`'s OpenAPI document against the server: it validates, what it
accepts the server answers, what it rejects the server rejects; and fuzzing in both
directions (hypothesis).
"""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
import jsonschema
import numpy as np
import pytest
from openapi_spec_validator import validate as validate_openapi

from tests.export.serving._serving import (
    CODE,
    FEATURES,
    INFER,
    MAX_BATCH,
    NAME,
    PREDICT,
    ROW,
    Server,
    batch,
    exact,
    v2_body,
    v2_text,
)

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
    accepted = v2_body(batch(2), id="a")
    check(request_schema, accepted)
    response = client.post(INFER, json=accepted)
    assert response.status_code == 200
    check(response_schema, response.json())
    # What the schema rejects, the server rejects too.
    for bad in [{}, {"inputs": []}, json.loads(v2_text(datatype="FLOAT")),
                {"inputs": [{"name": "x"}]}]:  # fmt: skip
        with pytest.raises(jsonschema.ValidationError):
            check(request_schema, bad)
        rejected = client.post(INFER, json=bad)
        assert rejected.status_code == 400
        check(error_schema, rejected.json())

    predict = paths["/v1/models/{name}:predict"]["post"]
    tf_request = predict["requestBody"]["content"]["application/json"]["schema"]
    tf_response = predict["responses"]["200"]["content"]["application/json"]["schema"]
    for body in [{"instances": batch(2).tolist()}, {"inputs": {"x": batch(2).tolist()}}]:
        check(tf_request, body)
        response = client.post(PREDICT, json=body)
        assert response.status_code == 200
        check(tf_response, response.json())
    # The schema is the served model's: what it rejects, the server rejects too
    # (`{"inputs": {}}` was schema-valid and a 400 before).
    tf_error = predict["responses"]["400"]["content"]["application/json"]["schema"]
    for bad in [{"inputs": {}}, {"instances": [ROW[:-1]]}, {}, {"instances": [[1e39] * FEATURES]},
                {"instances": [ROW], "inputs": [ROW]}, {"instances": [{"y": ROW}]}]:  # fmt: skip
        with pytest.raises(jsonschema.ValidationError):
            check(tf_request, bad)
        rejected = client.post(PREDICT, json=bad)
        assert rejected.status_code == 400, (bad, rejected.text)
        check(tf_error, rejected.json())
    for bad in [json.loads(v2_text(name="y")), json.loads(v2_text(shape=[1, FEATURES + 1])),
                {**json.loads(v2_text()),
                 "parameters": {"binary_data_output": "false"}}]:  # fmt: skip
        with pytest.raises(jsonschema.ValidationError):
            check(request_schema, bad)
        assert client.post(INFER, json=bad).status_code == 400
    metadata = paths["/v2/models/{name}"]["get"]["responses"]["200"]["content"]
    check(metadata["application/json"]["schema"], client.get(f"/v2/models/{NAME}").json())


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
        INFER: v2_body(batch(2)),
        PREDICT: {"instances": batch(2).tolist()},
    }
    paths = [
        INFER,
        PREDICT,
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
    # Every rank up to 3 (the model's features are 6 = 2 * 3).
    samples = st.sampled_from([[FEATURES], [2, 3], [3, 2], [1, 2, 3], [1, FEATURES], [FEATURES, 1]])
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
        return draw(st.sampled_from([INFER, f"/v2/models/{NAME}/versions/1/infer"])), body

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
        return PREDICT, body

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
        if path == PREDICT:
            values = body.get("instances", body.get("inputs"))
            if isinstance(values, dict):
                values = values["x"]
            values = [row["x"] if isinstance(row, dict) else row for row in values]
            codes = answer.get("predictions", answer.get("outputs"))
        else:
            values = body["inputs"][0].get("data", [])
            codes = answer["outputs"][0]["data"]
        x = np.asarray(values, dtype=np.float32).reshape(-1, FEATURES)
        np.testing.assert_array_equal(exact(codes).reshape(-1, CODE), server.encoder.encode(x))

    check()
