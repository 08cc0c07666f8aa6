"""`keras-cae serve` answers over HTTP: KServe v2 (JSON and the binary extension) and TF
Serving's REST API, health and metadata, load, the example client, and the whole path
from training.

The folder's one server (`server` in conftest.py, a real process on loopback) serves
the suite's `model_path`; the reference for every result is `OnnxEncoder.encode` in
this process, on the same file.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import time
from typing import Any

import httpx
import numpy as np
import pytest

from tests.export.serving._serving import (
    CODE,
    FEATURES,
    INFER,
    MAX_BATCH,
    NAME,
    PREDICT,
    Server,
    batch,
    exact,
    start_serving,
    stop_server,
    v2_body,
)

# ------------------------------------------------------------------------------------------
# Results equal OnnxEncoder.encode, bit for bit.


@pytest.mark.parametrize("rows", [1, 5, MAX_BATCH])
def test_v2_infer_equals_encoder(server: Server, client: Any, rows: int) -> None:
    x = batch(rows, seed=rows)
    response = client.post(f"/v2/models/{NAME}/infer", json=v2_body(x, id="req-7"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["model_name"] == NAME and body["model_version"] == "1" and body["id"] == "req-7"
    [output] = body["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("code", "FP32", [rows, CODE])
    codes = exact(output["data"]).reshape(output["shape"])
    np.testing.assert_array_equal(codes, server.encoder.encode(x))


def test_v2_accepts_nested_data_versioned_path_and_requested_output(
    server: Server, client: Any
) -> None:
    x = batch(4, seed=11)
    body = v2_body(x, outputs=[{"name": "code"}])
    body["inputs"][0]["data"] = x.tolist()  # Nested to the shape, also allowed by the protocol.
    response = client.post(f"/v2/models/{NAME}/versions/1/infer", json=body)
    assert response.status_code == 200, response.text
    [output] = response.json()["outputs"]
    np.testing.assert_array_equal(exact(output["data"]).reshape(4, CODE), server.encoder.encode(x))
    # An empty `outputs` list, like none, asks for every output.
    response = client.post(INFER, json={**v2_body(x), "outputs": []})
    assert [o["name"] for o in response.json()["outputs"]] == ["code"]


def test_v2_empty_batch(client: Any) -> None:
    response = client.post(f"/v2/models/{NAME}/infer", json=v2_body(np.zeros((0, FEATURES))))
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["shape"] == [0, CODE]
    assert response.json()["outputs"][0]["data"] == []


def test_v2_binary_tensor_data_extension(server: Server, client: Any) -> None:
    # Triton's binary extension, as its clients send it: a JSON header whose length is
    # in Inference-Header-Content-Length, followed by raw little-endian tensor bytes.
    x = batch(6, seed=3)
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
    np.testing.assert_array_equal(exact(data).reshape(6, CODE), server.encoder.encode(x))


def test_tf_serving_row_and_columnar_formats(server: Server, client: Any) -> None:
    x = batch(3, seed=5)
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
        np.testing.assert_array_equal(exact(response.json()[key]), expected)
    response = client.post(f"/v1/models/{NAME}/versions/1:predict", json={"instances": x.tolist()})
    np.testing.assert_array_equal(exact(response.json()["predictions"]), expected)


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
                        response = http.post(INFER, json=v2_body(x))
                        codes = response.json()["outputs"][0]["data"] if response.is_success else []
                    else:
                        response = http.post(PREDICT, json={"instances": x.tolist()})
                        codes = response.json().get("predictions", [])
                    if response.status_code != 200:
                        failures.append(f"{i}: {response.status_code} {response.text[:200]}")
                    elif not np.array_equal(exact(codes).reshape(expected[i].shape), expected[i]):
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
    server = start_serving(model, str(tmp_path / "log"), "--name", "digits")
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
        np.testing.assert_array_equal(exact(output["data"]).reshape(expected.shape), expected)
        response = httpx.post(
            server.url + "/v1/models/digits:predict", json={"instances": x.tolist()}, timeout=30
        )
        np.testing.assert_array_equal(exact(response.json()["predictions"]), expected)
    finally:
        stop_server(server)
