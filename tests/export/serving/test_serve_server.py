"""The `keras-cae serve` process (`keras_cae.export.serving.server`, `.http_limits`): its
connection limits, its startup line and its shutdown, driven over loopback.

Each test starts a real server in a subprocess (`_serving.start_serving`; the `limited`
one is in conftest.py) and speaks to it with raw sockets where the point is what a
client sends byte by byte.
"""

from __future__ import annotations

import inspect
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from tests._onnx import dense_sigmoid_model, seeded_weights
from tests.export.serving._serving import (
    FEATURES,
    HEADER_TIMEOUT,
    LIMIT_CONCURRENCY,
    MAX_HEADER_BYTES,
    NAME,
    Server,
    free_port,
    read_all,
    start_serving,
    stop_server,
    v2_body,
    wait_for,
)

_LIVE = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n"


def _connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def _closed_at(connection: socket.socket, timeout: float) -> float:
    """When (`time.monotonic`) the server closes `connection`; fails after `timeout` s."""
    connection.settimeout(timeout)
    try:
        while connection.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return time.monotonic()


def _trickle(connection: socket.socket, stop: threading.Event) -> None:
    """Sends a request head that never ends, one byte every 0.1 s (a slow client)."""
    try:
        connection.sendall(_LIVE + b"X-Slow: ")
        while not stop.wait(0.1):
            connection.sendall(b"a")
    except OSError:  # Closed by the server: what the test waits for.
        pass


# ------------------------------------------------------------------------------------------
# HTTP connection limits (`http_limits`).


def test_idle_and_slow_request_heads_are_closed_after_the_header_timeout(
    limited: Server,
) -> None:
    opened = time.monotonic()
    idle = [_connect(limited) for _ in range(20)]
    slow_fresh = _connect(limited)
    # A keep-alive connection after one answered request, whose next head is slow:
    # uvicorn's keep-alive timer stops at its first byte.
    slow_after_response = _connect(limited)
    slow_after_response.sendall(_LIVE + b"\r\n")
    assert slow_after_response.recv(65536).startswith(b"HTTP/1.1 200 OK")
    stop = threading.Event()
    trickles = [
        threading.Thread(target=_trickle, args=(c, stop), daemon=True)
        for c in (slow_fresh, slow_after_response)
    ]
    for thread in trickles:
        thread.start()
    # A request whose body comes slowly is not cut: the deadline is for the head.
    body = json.dumps(v2_body(np.zeros((0, FEATURES), np.float32))).encode()
    uploading = _connect(limited)
    head = f"POST /v2/models/{NAME}/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}"
    uploading.sendall(f"{head}\r\nConnection: close\r\n\r\n".encode() + body[:10])
    head_sent = time.monotonic()
    try:
        # Closed, and not before the timeout (counted from before the client connected);
        # the upper bound is loose for a loaded machine: before, they were held for ever.
        closed = [_closed_at(c, timeout=10) - opened for c in idle]
        assert HEADER_TIMEOUT - 0.01 <= min(closed) and max(closed) < 10, closed
        for c in (slow_fresh, slow_after_response):
            assert _closed_at(c, timeout=10) - opened < 10
        time.sleep(max(0.0, head_sent + 1.5 * HEADER_TIMEOUT - time.monotonic()))
        uploading.sendall(body[10:])
        assert read_all(uploading).startswith(b"HTTP/1.1 200 OK")
    finally:
        stop.set()
        for c in [*idle, slow_fresh, slow_after_response, uploading]:
            c.close()
    assert httpx.get(limited.url + "/v2/health/live").status_code == 200


def test_oversized_request_head_is_431_and_the_rest_is_not_read(limited: Server) -> None:
    # A header that never ends: answered once the limit is passed, then closed, so the
    # server does not read (and buffer) what the client goes on sending.
    flood = _connect(limited)
    flood.sendall(_LIVE + b"X-Big: " + b"a" * (4 * MAX_HEADER_BYTES))
    flood.settimeout(10)
    reply = flood.recv(65536)
    assert reply.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), reply
    assert b"--max-header-bytes" in reply and b"connection: close" in reply
    with pytest.raises(OSError):  # EPIPE or ECONNRESET: nobody reads any more.
        for _ in range(200):
            flood.sendall(b"a" * 65536)  # 12.5 MiB in all.
    flood.close()
    # A whole head over the limit, in one write, and one just under it.
    for size, status in ((MAX_HEADER_BYTES + 1, b"431"), (MAX_HEADER_BYTES - 200, b"200")):
        pad = b"a" * (size - len(_LIVE) - 9)
        head = _LIVE + b"X-Pad: " + pad + b"\r\nConnection: close\r\n\r\n"
        with _connect(limited) as connection:
            connection.sendall(head)
            assert read_all(connection).startswith(b"HTTP/1.1 " + status), size


def test_limit_concurrency_answers_503_beyond_it(limited: Server) -> None:
    held = [_connect(limited) for _ in range(LIMIT_CONCURRENCY)]
    try:
        wait_for(
            lambda: httpx.get(limited.url + "/v2/health/live").status_code == 503,
            "a 503 beyond --limit-concurrency",
        )
    finally:
        for c in held:
            c.close()
    wait_for(
        lambda: httpx.get(limited.url + "/v2/health/live").status_code == 200,
        "a 200 once the connections are gone",
    )


def test_cli_limit_options_check_their_range_and_default_to_serves(
    model_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from keras_cae.cli import _build_parser, main
    from keras_cae.export.serving import serve

    for option in ("--header-timeout", "--max-header-bytes", "--limit-concurrency"):
        assert main(["serve", model_path, option, "0"]) == 2, option
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and option in err, err
    args = _build_parser().parse_args(["serve", model_path])
    defaults = inspect.signature(serve).parameters
    for name in ("header_timeout", "max_header_bytes", "limit_concurrency"):
        assert getattr(args, name) == defaults[name].default, name


# ------------------------------------------------------------------------------------------
# The startup line.


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
def test_startup_line_brackets_an_ipv6_host(model_path: str, tmp_path: Any) -> None:
    port, grpc_port = free_port(), free_port()
    command = [
        sys.executable, "-m", "keras_cae.cli", "serve", model_path, "--name", NAME,
        "--host", "::1", "--port", str(port), "--grpc-port", str(grpc_port),
    ]  # fmt: skip
    log = tmp_path / "log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:

        def ready() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                return httpx.get(f"http://[::1]:{port}/v2/health/ready").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, "the server on [::1]", timeout=60)
        [line] = [x for x in log.read_text().splitlines() if x.startswith("keras-cae serve:")]
        url = f"http://[::1]:{port}/v2/models/{NAME}/infer"
        assert url in line and f"gRPC [::1]:{grpc_port}" in line, line
        assert httpx.get(f"http://[::1]:{port}/v2/models/{NAME}").json()["name"] == NAME
        with grpc.insecure_channel(f"[::1]:{grpc_port}") as channel:
            channel_ready = grpc.channel_ready_future(channel)
            channel_ready.result(timeout=10)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)


# ------------------------------------------------------------------------------------------
# SIGTERM with gRPC calls sent but not yet taken by the server.


@pytest.mark.slow  # A 64-feature model and 64 calls of 1,024 rows: ~5-10 s here.
def test_sigterm_answers_every_grpc_call_already_sent(tmp_path: Any) -> None:
    features = 64
    model = str(tmp_path / "wide.onnx")
    dense_sigmoid_model(model, *seeded_weights(features, 64, seed=0))
    grpc_port = free_port()
    server = start_serving(
        model, str(tmp_path / "log"), "--name", NAME, "--grpc-port", str(grpc_port),
        "--shutdown-timeout", "20",
    )  # fmt: skip
    x = np.random.default_rng(0).normal(size=(1024, features)).astype(np.float32)
    request = service_pb2.ModelInferRequest(model_name=NAME)
    request.inputs.add(name="x", datatype="FP32", shape=x.shape)
    request.raw_input_contents.append(x.tobytes())
    expected = server.encoder.encode(x)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            infer = channel.unary_unary(
                "/inference.GRPCInferenceService/ModelInfer",
                request_serializer=service_pb2.ModelInferRequest.SerializeToString,
                response_deserializer=service_pb2.ModelInferResponse.FromString,
            )
            grpc.channel_ready_future(channel).result(timeout=10)
            calls = [infer.future(request, timeout=60) for _ in range(64)]
            # Once the server has answered one call, it has received all 64 (the client
            # sends them at once); most are still waiting for the server to take them.
            first = threading.Event()
            for call in calls:
                call.add_done_callback(lambda _: first.set())
            assert first.wait(timeout=60)
            sent = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            codes: list[str] = []
            for call in calls:
                try:
                    reply = call.result()
                    got = np.frombuffer(reply.raw_output_contents[0], "<f4").reshape(1024, 64)
                    np.testing.assert_array_equal(got, expected)
                    codes.append("OK")
                except grpc.RpcError as error:
                    codes.append(error.code().name)
            answered = time.monotonic() - sent
        assert codes == ["OK"] * len(calls), {c: codes.count(c) for c in set(codes)}
        assert answered < 20, answered
        assert server.process.wait(timeout=30) == -signal.SIGTERM, server.output()
        assert "Traceback" not in server.output(), server.output()
        assert re.search(r"gRPC \(KServe v2\) running on", server.output())
    finally:
        stop_server(server)


@pytest.mark.slow  # ~5 s: a server start and a 2 s grace.
def test_sigterm_with_grpc_calls_that_keep_coming_stops_within_the_grace(
    model_path: str, tmp_path: Any
) -> None:
    # The server takes calls until none arrives for a moment, but for at most half the
    # grace: a client that never pauses does not hold it past --shutdown-timeout.
    grace = 2
    grpc_port = free_port()
    server = start_serving(
        model_path, str(tmp_path / "log"), "--name", NAME, "--grpc-port", str(grpc_port),
        "--shutdown-timeout", str(grace),
    )  # fmt: skip
    request = service_pb2.ModelInferRequest(model_name=NAME)
    request.inputs.add(name="x", datatype="FP32", shape=[1, FEATURES])
    request.raw_input_contents.append(np.zeros((1, FEATURES), "<f4").tobytes())
    codes: list[str] = []
    stop = threading.Event()

    def keep_calling() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            infer = channel.unary_unary(
                "/inference.GRPCInferenceService/ModelInfer",
                request_serializer=service_pb2.ModelInferRequest.SerializeToString,
            )
            while not stop.is_set():
                try:
                    infer(request, timeout=10)
                    codes.append("OK")
                except grpc.RpcError as error:
                    codes.append(error.code().name)

    caller = threading.Thread(target=keep_calling, daemon=True)
    caller.start()
    try:
        wait_for(lambda: len(codes) >= 20, "calls to be answered")
        server.process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        assert server.process.wait(timeout=grace + 10) == -signal.SIGTERM, server.output()
        assert time.monotonic() - sent < grace + 3, time.monotonic() - sent
        assert "Traceback" not in server.output(), server.output()
    finally:
        stop.set()
        caller.join(timeout=15)
        stop_server(server)
    assert codes[:20] == ["OK"] * 20, codes[:20]
