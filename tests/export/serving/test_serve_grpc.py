"""KServe v2 over gRPC (`keras_cae.export.serving.kserve_v2_grpc`): a real `keras-cae serve
--grpc-port` in a subprocess (the folder's one server, conftest.py, unless a test needs
its own), spoken to on loopback with Triton's own clients.

The reference for every result is `OnnxEncoder.encode` in this process, on the same
file; the reference for every error message is the HTTP endpoint's answer to the
same request.
"""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Callable
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests._onnx import dense_sigmoid_model, seeded_weights
from tests.export.serving._serving import (
    CODE,
    FEATURES,
    MAX_BATCH,
    NAME,
    Server,
    batch,
    free_port,
    parse_prometheus,
    read_all,
    refuses_connections,
    start_serving,
    stop_server,
    wait_for,
)

_METHOD = "/inference.GRPCInferenceService/ModelInfer"


def _start_grpc(model: str, log: str, *extra: str) -> tuple[Server, str]:
    server = start_serving(model, log, "--name", NAME, *extra, grpc=True)
    assert server.grpc_address is not None
    return server, server.grpc_address


def _triton_infer(client: Any, x: np.ndarray, **options: Any) -> Any:
    tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return client.infer(NAME, [tensor], **options)


def _request(x: np.ndarray, raw: bool = True, **fields: Any) -> service_pb2.ModelInferRequest:
    """A ModelInfer request in Triton's own messages, raw or typed."""
    request = service_pb2.ModelInferRequest(model_name=NAME, **fields)
    tensor = request.inputs.add(name="x", datatype="FP32", shape=x.shape)
    if raw:
        request.raw_input_contents.append(x.astype("<f4").tobytes())
    else:
        tensor.contents.fp32_contents.extend(x.ravel().tolist())
    return request


# ------------------------------------------------------------------------------------------
# Results equal OnnxEncoder.encode, bit for bit, over both transports.


@pytest.mark.parametrize("rows", [0, 1, 7, MAX_BATCH])
def test_triton_grpc_client_gets_the_encoders_codes(server: Server, triton: Any, rows: int) -> None:
    x = batch(rows, seed=rows)
    result = _triton_infer(triton, x, request_id="req-9")
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == (NAME, "1", "req-9")
    [output] = response.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("code", "FP32", [rows, CODE])
    codes = result.as_numpy("code")
    assert codes.dtype == np.float32
    np.testing.assert_array_equal(codes, server.encoder.encode(x))


def test_typed_contents_in_typed_contents_out(server: Server, stub: Any) -> None:
    x = batch(5, seed=4)
    request = _request(x, raw=False, model_version="1")
    request.outputs.add(name="code")
    response = stub.ModelInfer(request)
    assert not response.raw_output_contents
    [output] = response.outputs
    assert list(output.shape) == [5, CODE]
    codes = np.asarray(output.contents.fp32_contents, dtype=np.float32).reshape(5, CODE)
    np.testing.assert_array_equal(codes, server.encoder.encode(x))


def test_grpc_and_http_clients_get_identical_answers(server: Server, triton: Any) -> None:
    x = batch(9, seed=8)
    via_grpc = _triton_infer(triton, x).as_numpy("code")
    http = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    try:
        for binary in (False, True):
            tensor = httpclient.InferInput("x", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x, binary_data=binary)
            output = httpclient.InferRequestedOutput("code", binary_data=binary)
            via_http = http.infer(NAME, [tensor], outputs=[output]).as_numpy("code")
            assert via_http.tobytes() == via_grpc.tobytes()
    finally:
        http.close()


def test_health_and_metadata_match_http(server: Server, triton: Any, stub: Any) -> None:
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready(NAME) and triton.is_model_ready(NAME, "1")
    info = triton.get_server_metadata()
    http_info = httpx.get(server.url + "/v2").json()
    assert (info.name, info.version) == (http_info["name"], http_info["version"])
    # One extension list, wherever it is true: raw contents are the binary extension.
    assert list(info.extensions) == http_info["extensions"] == ["binary_tensor_data"]
    metadata = triton.get_model_metadata(NAME, as_json=True)
    for tensor in metadata["inputs"] + metadata["outputs"]:
        tensor["shape"] = [int(d) for d in tensor["shape"]]  # int64 is a string in JSON.
    assert metadata == httpx.get(f"{server.url}/v2/models/{NAME}").json()
    assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, FEATURES]}]
    for call in (
        lambda: stub.ModelReady(service_pb2.ModelReadyRequest(name="other")),
        lambda: stub.ModelMetadata(service_pb2.ModelMetadataRequest(name=NAME, version="2")),
    ):
        with pytest.raises(grpc.RpcError) as error:
            call()
        assert error.value.code() == grpc.StatusCode.NOT_FOUND


# ------------------------------------------------------------------------------------------
# Bad requests: INVALID_ARGUMENT or NOT_FOUND, with the HTTP endpoint's own message.


def _http_twin(request: service_pb2.ModelInferRequest) -> tuple[str, dict[str, Any], bytes]:
    """The HTTP v2 request (path, JSON header, binary part) a gRPC request stands for."""
    inputs = []
    for i, tensor in enumerate(request.inputs):
        item: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype,
                                "shape": list(tensor.shape)}  # fmt: skip
        if request.raw_input_contents:
            item["parameters"] = {"binary_data_size": len(request.raw_input_contents[i])}
        else:
            item["data"] = list(tensor.contents.fp32_contents)
        inputs.append(item)
    body: dict[str, Any] = {"inputs": inputs}
    if request.outputs:
        body["outputs"] = [{"name": o.name} for o in request.outputs]
    version = f"/versions/{request.model_version}" if request.model_version else ""
    path = f"/v2/models/{request.model_name}{version}/infer"
    return path, body, b"".join(request.raw_input_contents)


def _mutated(change: Callable[[Any], Any], raw: bool = True) -> service_pb2.ModelInferRequest:
    request = _request(batch(2, seed=30), raw=raw)
    change(request)
    return request


_SHARED_ERRORS = {
    "unknown model": (lambda r: setattr(r, "model_name", "other"), True, "NOT_FOUND"),
    "unknown version": (lambda r: setattr(r, "model_version", "2"), True, "NOT_FOUND"),
    "input name": (lambda r: setattr(r.inputs[0], "name", "y"), True, "INVALID_ARGUMENT"),
    "datatype": (lambda r: setattr(r.inputs[0], "datatype", "FP64"), True, "INVALID_ARGUMENT"),
    "bad datatype": (lambda r: setattr(r.inputs[0], "datatype", "F32"), True, "INVALID_ARGUMENT"),
    "shape": (lambda r: r.inputs[0].shape.__setitem__(1, 7), True, "INVALID_ARGUMENT"),
    "negative": (lambda r: r.inputs[0].shape.__setitem__(0, -2), True, "INVALID_ARGUMENT"),
    "rows": (lambda r: r.inputs[0].shape.__setitem__(0, MAX_BATCH + 1), True, "INVALID_ARGUMENT"),
    "raw size": (lambda r: r.raw_input_contents.__setitem__(0, b"\0" * 60), True,
                 "INVALID_ARGUMENT"),
    "count": (lambda r: r.inputs[0].contents.fp32_contents.append(1.0), False,
              "INVALID_ARGUMENT"),
    "nan": (lambda r: r.inputs[0].contents.fp32_contents.__setitem__(3, float("nan")), False,
            "INVALID_ARGUMENT"),
    "output": (lambda r: r.outputs.add(name="z"), True, "INVALID_ARGUMENT"),
    "two inputs": (lambda r: (r.inputs.add(name="x2", datatype="FP32", shape=[2, FEATURES]),
                              r.raw_input_contents.append(b"\0" * 8 * FEATURES)), True,
                   "INVALID_ARGUMENT"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(_SHARED_ERRORS))
def test_bad_request_gets_the_http_message_and_a_client_status(
    server: Server, stub: Any, case: str
) -> None:
    change, raw, status = _SHARED_ERRORS[case]
    request = _mutated(change, raw=raw)
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(request)
    assert error.value.code().name == status, error.value.details()
    path, body, binary = _http_twin(request)
    header = json.dumps(body).encode()
    headers = {"Inference-Header-Content-Length": str(len(header))} if binary else {}
    reply = httpx.post(server.url + path, content=header + binary, headers=headers)
    assert reply.status_code == (404 if status == "NOT_FOUND" else 400), reply.text
    assert error.value.details() == reply.json()["error"]


_GRPC_ONLY_ERRORS = {
    "both": (lambda r: r.inputs[0].contents.fp32_contents.append(1.0), True,
             "Input 'x' has both contents (fp32_contents) and raw_input_contents"),
    "wrong contents": (lambda r: r.inputs[0].contents.ClearField("fp32_contents")
                       or r.inputs[0].contents.int_contents.extend([1] * 2 * FEATURES), False,
                       "its contents are in int_contents; FP32 values go in fp32_contents"),
    "raw count": (lambda r: r.raw_input_contents.append(b""), True,
                  "2 raw_input_contents for 1 inputs"),
    "no inputs": (lambda r: r.ClearField("inputs") or r.ClearField("raw_input_contents"), True,
                  "Invalid request: inputs: List should have at least 1 item"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(_GRPC_ONLY_ERRORS))
def test_grpc_envelope_errors_are_invalid_argument(stub: Any, case: str) -> None:
    change, raw, words = _GRPC_ONLY_ERRORS[case]
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(_mutated(change, raw=raw))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in error.value.details(), error.value.details()


_HUGE_ECHOES = {
    # (change, status, words): client text is echoed cut short, so the status reaches the
    # client (an unbounded echo overflowed gRPC's metadata: RESOURCE_EXHAUSTED).
    "20,000-character model name": (lambda r: setattr(r, "model_name", "m" * 20_000),
                                    "NOT_FOUND", "(20000 characters)"),
    "20,000-character input name": (lambda r: setattr(r.inputs[0], "name", "y" * 20_000),
                                    "INVALID_ARGUMENT", "(20000 characters)"),
    "10,000-dimension shape": (lambda r: r.inputs[0].shape.extend([1] * 9_998),
                               "INVALID_ARGUMENT", "10000 dimensions; at most 32"),
    "2,000 outputs": (lambda r: [r.outputs.add(name="z") for _ in range(2_000)],
                       "INVALID_ARGUMENT", "(2000 in all)"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(_HUGE_ECHOES))
def test_huge_client_values_get_their_status_and_a_short_message(stub: Any, case: str) -> None:
    change, status, words = _HUGE_ECHOES[case]
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(_mutated(change))
    assert error.value.code().name == status, error.value.details()
    assert words in error.value.details(), error.value.details()
    assert len(error.value.details()) < 500, error.value.details()


def test_malformed_message_is_invalid_argument_not_internal(server: Server) -> None:
    with grpc.insecure_channel(server.grpc_address) as channel:
        call = channel.unary_unary(_METHOD)  # No serializer: the bytes go as they are.
        with pytest.raises(grpc.RpcError) as error:
            call(b"\x0a\xff\xff\xff")  # Field 1 claims more bytes than follow.
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid ModelInfer message" in error.value.details()


def test_replies_larger_than_max_body_bytes_are_sent_and_counted(tmp_path: Any) -> None:
    # A 2,048-value code: 100 rows are a 2.4 KB raw request and an 819 KB reply, ten
    # times the default --max-body-bytes for 100 rows of 6 features (84,736 bytes).
    model = str(tmp_path / "wide.onnx")
    dense_sigmoid_model(model, *seeded_weights(code=2048, seed=0))
    server, address = _start_grpc(model, str(tmp_path / "log"), "--max-batch", "100")
    try:
        x = batch(100, seed=70)
        expected = server.encoder.encode(x)
        client = grpcclient.InferenceServerClient(address)
        with grpc.insecure_channel(address) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            typed = stub.ModelInfer(_request(x, raw=False))
            raw = _triton_infer(client, x).as_numpy("code")
        client.close()
        np.testing.assert_array_equal(raw, expected)
        codes = np.asarray(typed.outputs[0].contents.fp32_contents, np.float32)
        np.testing.assert_array_equal(codes.reshape(100, 2048), expected)
        samples = parse_prometheus(httpx.get(server.url + "/metrics").text)
        calls = samples["keras_cae_grpc_requests_total"]
        assert calls == {(("code", "OK"), ("method", "ModelInfer")): 2.0}, calls
    finally:
        stop_server(server)


# ------------------------------------------------------------------------------------------
# Metrics, shutdown, the command line.


def test_metrics_count_grpc_calls(server: Server, triton: Any, stub: Any) -> None:

    def scrape() -> dict[str, Any]:
        return parse_prometheus(httpx.get(server.url + "/metrics").text)

    def total(samples: dict[str, Any], name: str, **labels: str) -> float:
        return sum(
            value for key, value in samples.get(name, {}).items()
            if labels.items() <= dict(key).items()
        )  # fmt: skip

    before = scrape()
    for _ in range(3):
        _triton_infer(triton, batch(4, seed=40))
    triton.is_server_live()
    with pytest.raises(grpc.RpcError):
        stub.ModelInfer(_mutated(lambda r: setattr(r, "model_name", "other")))
    with pytest.raises(grpc.RpcError):
        stub.ModelInfer(_mutated(lambda r: r.outputs.add(name="z")))
    after = scrape()

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    requests = "keras_cae_grpc_requests_total"
    assert delta(requests, method="ModelInfer", code="OK") == 3
    assert delta(requests, method="ModelInfer", code="NOT_FOUND") == 1
    assert delta(requests, method="ModelInfer", code="INVALID_ARGUMENT") == 1
    assert delta(requests, method="ServerLive", code="OK") == 1
    assert delta("keras_cae_grpc_request_duration_seconds_count", method="ModelInfer") == 5
    assert delta("keras_cae_batch_size_count", protocol="v2_grpc") == 3
    assert delta("keras_cae_batch_size_sum", protocol="v2_grpc") == 12
    assert delta("keras_cae_requests_in_flight") == 0


def test_sigterm_stops_both_listeners_and_finishes_in_flight_requests(
    model_path: str, tmp_path: Any
) -> None:
    server, address = _start_grpc(model_path, str(tmp_path / "log"))
    grpc_port = int(address.rsplit(":", 1)[1])
    try:
        client = grpcclient.InferenceServerClient(address)
        x = batch(3, seed=50)
        np.testing.assert_array_equal(
            _triton_infer(client, x).as_numpy("code"), server.encoder.encode(x)
        )
        client.close()
        # An HTTP request in flight (half its body sent) keeps the process shutting down.
        body = json.dumps(
            {
                "inputs": [
                    {
                        "name": "x",
                        "shape": [3, FEATURES],
                        "datatype": "FP32",
                        "data": x.ravel().tolist(),
                    }
                ]
            }
        )
        data = body.encode()  # fmt: skip
        connection = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        connection.sendall(
            f"POST /v2/models/{NAME}/infer HTTP/1.1\r\nHost: x\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data[: len(data) // 2]
        )
        wait_for(
            lambda: parse_prometheus(httpx.get(server.url + "/metrics").text)[
                "keras_cae_requests_in_flight"][()] == 2, "the request to be in flight",
        )  # fmt: skip
        server.process.send_signal(signal.SIGTERM)
        wait_for(lambda: refuses_connections(server.port), "HTTP to stop accepting connections")
        wait_for(lambda: refuses_connections(grpc_port), "gRPC to stop accepting connections")
        assert server.process.poll() is None, "the server quit with a request in flight"
        connection.sendall(data[len(data) // 2 :])
        reply = read_all(connection)
        connection.close()
        assert reply.startswith(b"HTTP/1.1 200 OK"), reply[:300]
        codes = json.loads(reply.split(b"\r\n\r\n", 1)[1])["outputs"][0]["data"]
        np.testing.assert_array_equal(
            np.asarray(codes, np.float32).reshape(3, CODE), server.encoder.encode(x)
        )
        assert server.process.wait(timeout=15) == -signal.SIGTERM, server.output()
        assert "Traceback" not in server.output(), server.output()
    finally:
        stop_server(server)


def test_cli_grpc_errors_are_one_line_exit_2(
    model_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from keras_cae.cli import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = str(busy.getsockname()[1])
        free = str(free_port())
        cases = [
            (["--grpc-port", taken], "Cannot listen on 127.0.0.1:" + taken),
            (["--grpc-port", free, "--workers", "2"], "--grpc-port serves from one process"),
            (["--grpc-port", free, "--port", free], "--grpc-port and --port must differ"),
            (["--grpc-port", "0"], "--grpc-port"),
        ]
        for argv, words in cases:
            assert main(["serve", model_path, *argv]) == 2, argv
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and words in err, (argv, err)


def test_messages_are_wire_compatible_with_tritons_and_share_a_process() -> None:
    # Both message sets load in one process (ours live in their own descriptor pool),
    # and a request written with Triton's messages reads back field for field.
    from keras_cae.export.serving._proto import grpc_predict_v2_pb2 as ours
    from keras_cae.export.serving.kserve_v2_grpc import SERVICE

    assert SERVICE == "inference.GRPCInferenceService"
    methods = ours.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods_by_name
    assert sorted(methods) == sorted(
        ["ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata",
         "ModelInfer"]
    )  # fmt: skip
    theirs = _request(batch(2, seed=60), raw=False, id="a", model_version="1")
    theirs.outputs.add(name="code")
    mine = ours.ModelInferRequest.FromString(theirs.SerializeToString())
    assert (mine.model_name, mine.model_version, mine.id) == (NAME, "1", "a")
    assert list(mine.inputs[0].contents.fp32_contents) == list(
        theirs.inputs[0].contents.fp32_contents
    )
    assert [o.name for o in mine.outputs] == ["code"]
    reply = ours.ModelInferResponse(model_name=NAME)
    reply.raw_output_contents.append(b"1234")
    assert service_pb2.ModelInferResponse.FromString(
        reply.SerializeToString()
    ).raw_output_contents == [b"1234"]
