"""Throughput and latency of `keras-cae serve` at concurrency 1 and 16.

Starts the real server (``python -m keras_cae.cli serve --grpc-port ...``) in a
subprocess on free loopback ports and drives it from this process with a small
asyncio HTTP/1.1 client (keep-alive connections, one per concurrent client;
precomputed request bytes, so that the client costs little next to the server) and,
for gRPC, with `grpc.aio` (one channel and connection per concurrent client; the
request message serialized once, so that the client sends bytes). Each request carries
digits rows (scikit-learn's 8×8 digits, scaled to [0, 1]); the first answer of
every configuration is checked against `OnnxEncoder.encode` in this process.

Configurations: protocol (KServe v2 ``/infer`` with JSON, ``v2``, or with Triton's
binary extension, ``v2-binary``; KServe v2 over gRPC with ``raw_input_contents``,
``grpc``; TF Serving ``:predict``) × rows per request × concurrency. The
configurations run round-robin for `--rounds` rounds, so all of them see the same
machine load (the machine is shared); the table
quotes the median throughput over rounds and the p50/p99 latency over all requests.
A reference row times `OnnxEncoder.encode` itself (no HTTP) on one row.

The encoder: ``--model ENCODER.onnx``, or by default the digits encoder made here by
``keras-cae train --epochs 2`` and ``keras-cae export`` (TensorFlow, ~20 s, once).

After the first answers are checked, a load check sends ``--load-check`` requests
(default 2,000) of 1-8 rows at concurrency 16, v2 and TF Serving alternately, and
requires every answer to equal `OnnxEncoder.encode` bit for bit (the test suite sends
200 the same way).

The HTTP floor: ``wrk`` (a C load generator; ``apt-get install wrk``), with
``-t1 -c8``, posts one single-row v2 JSON request over and over to the server and
to a bare ASGI app on the same uvicorn (`bare_app`: reads the body, returns a fixed
JSON body), alternately for `--wrk-rounds` rounds; the table quotes the medians and
their ratio. Skipped, and said so, where ``wrk`` is not installed.

Peers (``--peers``, in benchmarks/peers/bench.py): keras-cae against KServe,
LitServe, Triton (PyTriton's tritonserver), BentoML and a bare ASGI floor, each in its
own pinned venv under benchmarks/.venvs (made on first use), all serving the same
784→256→64 MNIST encoder with 1 onnxruntime thread and answering the same v2 JSON
request, every answer checked bit for bit; ``wrk -t1 -c8`` for ``--duration`` s per
server and rows, ``--rounds`` interleaved rounds, medians, CPU µs per request of each
server's process tree; keras-cae's gRPC (h2load) against its HTTP JSON at 64 rows,
with a no-op ``grpc.aio`` server as the ceiling; the bad-request table. Writes
results/serve_peers.json.

Usage::

    python benchmarks/serve.py                       # digits encoder, writes JSON
    python benchmarks/serve.py --model exported/encoder.onnx --workers 2
    python benchmarks/serve.py --quick               # fewer requests
    python benchmarks/serve.py --peers               # against the peers, 3 × 10 s
    python benchmarks/serve.py --peers --duration 2 --rounds 1 --peer-names floor
    python benchmarks/serve.py --peers --keras-cae-bin /work/main/.venv/bin/keras-cae \
        --keras-cae-bin /work/wt/h21-dataplane/.venv/bin/keras-cae  # two installs, one run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np
from peers.bench import PEERS, run_peers  # benchmarks/peers/bench.py

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
_MNIST = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                      "shared", "data", "mnist.npz"))  # fmt: skip
NAME = "digits"
_GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"
# What the bare app answers: a v2 response of one row's size.
_BARE_BODY = json.dumps({
    "model_name": NAME, "model_version": "1",
    "outputs": [{"name": "code", "datatype": "FP32", "shape": [1, 32], "data": [0.5] * 32}],
}).encode()  # fmt: skip


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The HTTP floor: reads the request body and answers a fixed JSON body."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    headers = [(b"content-type", b"application/json"),
               (b"content-length", b"%d" % len(_BARE_BODY))]  # fmt: skip
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": _BARE_BODY})


def make_digits_encoder(workdir: str) -> str:
    """Trains 2 epochs on digits and exports the encoder; returns the .onnx path."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = os.path.join(workdir, "run")
    out = os.path.join(workdir, "exported")
    cli = [sys.executable, "-m", "keras_cae.cli"]
    model = os.path.join(run, "model.keras")
    for command in (
        [*cli, "train", "--out", run, "--epochs", "2", "--quiet"],
        [*cli, "export", model, "--out", out, "--format", "onnx"],
    ):
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode:  # TensorFlow's start-up chatter is shown only on failure.
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return os.path.join(out, "encoder.onnx")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(
    model: str, workers: int, log: str, grpc_port: int | None = None
) -> tuple[subprocess.Popen, int]:
    port = free_port()
    command = [sys.executable, "-m", "keras_cae.cli", "serve", model, "--name", NAME, "--port",
               str(port), "--workers", str(workers), "--log-level", "warning"]  # fmt: skip
    if grpc_port is not None:
        command += ["--grpc-port", str(grpc_port)]
    return _wait_ready(command, port, log)


async def _bare_grpc(port: int) -> None:
    """The gRPC floor: a `grpc.aio` server whose ModelInfer answers a fixed reply."""
    import grpc

    async def infer(request: bytes, context: Any) -> bytes:
        return b"\n\x06digits"  # ModelInferResponse(model_name="digits")

    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(infer)
    service = _GRPC_INFER.split("/")[1]
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service, {"ModelInfer": handler}),)
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def start_bare_grpc(log: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    command = [sys.executable, __file__, "--bare-grpc", str(port)]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return process, port
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("bare gRPC server not ready in 60 s")


def start_bare(log: str) -> tuple[subprocess.Popen, int]:
    """`bare_app` on uvicorn with the server's options (httptools, uvloop, no logs)."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "--app-dir", os.path.dirname(__file__),
               "serve:bare_app", "--port", str(port), "--log-level", "warning",
               "--no-access-log", "--no-server-header"]  # fmt: skip
    return _wait_ready(command, port, log)


def _wait_ready(command: list[str], port: int, log: str) -> tuple[subprocess.Popen, int]:
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {open(log).read()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                probe.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
                if probe.recv(64).startswith(b"HTTP/1.1 200"):
                    return process, port
        except OSError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("server not ready in 60 s")


def request_bytes(protocol: str, x: np.ndarray) -> bytes:
    if protocol == "grpc":  # A serialized ModelInferRequest, raw contents, as Triton sends.
        from keras_cae.export.serving._proto import grpc_predict_v2_pb2 as pb

        request = pb.ModelInferRequest(model_name=NAME)
        request.inputs.add(name="x", datatype="FP32", shape=x.shape)
        request.raw_input_contents.append(np.ascontiguousarray(x, dtype="<f4").tobytes())
        return request.SerializeToString()
    if protocol == "v2-binary":  # Triton's binary tensor data extension, both ways.
        raw = np.ascontiguousarray(x, dtype="<f4").tobytes()
        header = json.dumps({
            "inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                        "parameters": {"binary_data_size": len(raw)}}],
            "outputs": [{"name": "code", "parameters": {"binary_data": True}}],
        }, separators=(",", ":")).encode()  # fmt: skip
        head = (f"POST /v2/models/{NAME}/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: application/octet-stream\r\n"
                f"Inference-Header-Content-Length: {len(header)}\r\n"
                f"Content-Length: {len(header) + len(raw)}\r\n\r\n")  # fmt: skip
        return head.encode() + header + raw
    if protocol == "v2":
        path = f"/v2/models/{NAME}/infer"
        body = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                            "data": x.ravel().tolist()}]}  # fmt: skip
    else:
        path = f"/v1/models/{NAME}:predict"
        body = {"instances": x.tolist()}
    payload = json.dumps(body, separators=(",", ":")).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n")  # fmt: skip
    return head.encode() + payload


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, int]:
    """Returns (status, body, Inference-Header-Content-Length or -1)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length, header_length = 0, -1
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        name = name.lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"inference-header-content-length":
            header_length = int(value)
    return status, await reader.readexactly(length), header_length


async def drive(
    port: int, request: bytes, concurrency: int, count: int
) -> tuple[float, list[float]]:
    """Sends `count` requests over `concurrency` connections; returns (seconds, latencies)."""
    latencies: list[float] = []
    per_client = [count // concurrency + (i < count % concurrency) for i in range(concurrency)]

    async def client(n: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in range(n):
                start = time.perf_counter()
                writer.write(request)
                status, body, _ = await read_response(reader)
                latencies.append(time.perf_counter() - start)
                if status != 200:
                    raise RuntimeError(f"HTTP {status}: {body[:200]!r}")
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(client(n) for n in per_client))
    return time.perf_counter() - start, latencies


async def drive_grpc(
    port: int, request: bytes, concurrency: int, count: int
) -> tuple[float, list[float]]:
    """`drive` for gRPC: one channel (its own connection) per concurrent client."""
    import grpc

    latencies: list[float] = []
    per_client = [count // concurrency + (i < count % concurrency) for i in range(concurrency)]
    options = [("grpc.use_local_subchannel_pool", 1)]  # A connection per channel.
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options)
                for _ in per_client]  # fmt: skip

    async def client(channel: Any, n: int) -> None:
        call = channel.unary_unary(_GRPC_INFER)  # Bytes in, bytes out.
        await call(request)  # Connects before the clock starts.
        for _ in range(n):
            start = time.perf_counter()
            await call(request)
            latencies.append(time.perf_counter() - start)

    try:
        await asyncio.gather(*(channel.channel_ready() for channel in channels))
        start = time.perf_counter()
        await asyncio.gather(*(client(c, n) for c, n in zip(channels, per_client)))
        return time.perf_counter() - start, latencies
    finally:
        await asyncio.gather(*(channel.close() for channel in channels))


def run_config(
    ports: dict[str, int], protocol: str, request: bytes, concurrency: int, count: int
) -> tuple[float, list[float]]:
    if protocol == "grpc":
        return asyncio.run(drive_grpc(ports["grpc"], request, concurrency, count))
    return asyncio.run(drive(ports["http"], request, concurrency, count))


def check_grpc_answer(port: int, x: np.ndarray, expected: np.ndarray) -> None:
    import grpc

    from keras_cae.export.serving._proto import grpc_predict_v2_pb2 as pb

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = pb.ModelInferResponse.FromString(
            channel.unary_unary(_GRPC_INFER)(request_bytes("grpc", x))
        )
    got = np.frombuffer(reply.raw_output_contents[0], dtype="<f4").reshape(expected.shape)
    if not np.array_equal(got, expected):
        raise AssertionError("grpc: served codes differ from OnnxEncoder.encode")


def wrk_floor(
    model: str, workdir: str, x: np.ndarray, rounds: int, seconds: int
) -> dict[str, Any] | None:
    """Single-row v2 JSON with ``wrk -t1 -c8``: the server against `bare_app`."""
    import shutil

    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk): HTTP floor comparison skipped")
        return None
    body = request_bytes("v2", x).split(b"\r\n\r\n", 1)[1].decode()
    script = os.path.join(workdir, "post.lua")
    with open(script, "w") as file:
        file.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                   f"wrk.body = {json.dumps(body)}\n")  # fmt: skip
    servers = {
        "serve": start_server(model, 1, os.path.join(workdir, "wrk-serve.log")),
        "bare": start_bare(os.path.join(workdir, "wrk-bare.log")),
    }
    rates: dict[str, list[float]] = {name: [] for name in servers}
    try:
        for _, port in servers.values():  # Warm-up.
            _wrk(script, port, 1)
        for _ in range(rounds):
            for name, (_, port) in servers.items():
                rates[name].append(_wrk(script, port, seconds))
    finally:
        for process, _ in servers.values():
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    ratios = [s / b for s, b in zip(rates["serve"], rates["bare"])]
    return {
        "tool": "wrk -t1 -c8", "seconds": seconds, "rounds": rounds,
        "serve_v2_json_1_row_req_per_s": statistics.median(rates["serve"]),
        "bare_asgi_req_per_s": statistics.median(rates["bare"]),
        "ratio_median": statistics.median(ratios), "rounds_serve": rates["serve"],
        "rounds_bare": rates["bare"],
    }  # fmt: skip


def _wrk(script: str, port: int, seconds: int, connections: int = 8) -> float:
    url = f"http://127.0.0.1:{port}/v2/models/{NAME}/infer"
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", script, url]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    if "Non-2xx" in done.stdout or "Socket errors" in done.stdout:
        raise AssertionError(f"wrk got errors:\n{done.stdout}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("Requests/sec:"))
    return float(line.split()[1])


def _wrk_script(request: bytes, path: str) -> str:
    """A wrk Lua script that posts the body and headers of raw HTTP request bytes."""
    head, body = request.split(b"\r\n\r\n", 1)
    lines = ['wrk.method = "POST"', f'wrk.path = "{head.split()[1].decode()}"']
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.decode().partition(": ")
        if name.lower() not in ("host", "content-length"):  # wrk writes these.
            lines.append(f'wrk.headers["{name}"] = "{value}"')
    escaped = "".join(chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\{b:03d}"
                      for b in body)  # fmt: skip
    lines.append(f'wrk.body = "{escaped}"')
    with open(path, "w") as file:
        file.write("\n".join(lines) + "\n")
    return path


def _h2load(data: str, port: int, seconds: int, connections: int) -> float:
    """gRPC ModelInfer calls with h2load: one stream per connection, like wrk."""
    url = f"http://127.0.0.1:{port}{_GRPC_INFER}"
    command = ["h2load", "-t1", f"-c{connections}", "-m1", f"-D{seconds}", "-d", data,
               "-H", "content-type: application/grpc", "-H", "te: trailers", url]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    if " 0 failed, 0 errored" not in done.stdout:
        raise AssertionError(f"h2load got errors:\n{done.stdout}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("finished in"))
    return float(line.split(",")[1].split()[0])


def _grpc_errors(http_port: int) -> dict[str, float]:
    """gRPC calls that failed (not OK, and not cancelled by h2load at its deadline)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics") as reply:
        text = reply.read().decode()
    return {
        f"{sample.labels['method']} {sample.labels['code']}": sample.value
        for family in text_string_to_metric_families(text) for sample in family.samples
        if sample.name == "keras_cae_grpc_requests_total"
        and sample.labels["code"] not in ("OK", "CANCELLED")
    }  # fmt: skip


def c_clients(
    model: str, workdir: str, digits: np.ndarray, rows_list: list[int],
    concurrencies: list[int], rounds: int, seconds: int,
) -> list[dict[str, Any]] | None:  # fmt: skip
    """HTTP JSON and binary with wrk, gRPC with h2load (C load generators, so that
    the client is not what is measured), round-robin, medians over rounds. The
    ``grpc-noop`` rows are `_bare_grpc`, the floor of `grpc.aio` on this machine."""
    import shutil

    missing = [tool for tool in ("wrk", "h2load") if shutil.which(tool) is None]
    if missing:
        print(f"{' and '.join(missing)} not installed (apt-get install wrk nghttp2-client): "
              "C-client table skipped")  # fmt: skip
        return None
    grpc_port = free_port()
    process, port = start_server(model, 1, os.path.join(workdir, "c-clients.log"), grpc_port)
    bare, bare_port = start_bare_grpc(os.path.join(workdir, "bare-grpc.log"))
    try:
        runs = {}
        for rows in rows_list:
            x = digits[:rows]
            for protocol in ("v2", "v2-binary"):
                path = os.path.join(workdir, f"{protocol}-{rows}.lua")
                runs[(protocol, rows)] = (_wrk, _wrk_script(request_bytes(protocol, x), path),
                                          port)  # fmt: skip
            message = request_bytes("grpc", x)
            data = os.path.join(workdir, f"grpc-{rows}.bin")
            with open(data, "wb") as file:  # gRPC's framing: not compressed, length, message.
                file.write(b"\0" + len(message).to_bytes(4, "big") + message)
            runs[("grpc", rows)] = (_h2load, data, grpc_port)
            runs[("grpc-noop", rows)] = (_h2load, data, bare_port)
        configs = [(p, r, c) for (p, r) in runs for c in concurrencies]
        for tool, target, target_port in runs.values():  # Warm-up.
            tool(target, target_port, 1, 4)
        rates: dict[tuple, list[float]] = {config: [] for config in configs}
        for _ in range(rounds):
            for config in configs:
                tool, target, target_port = runs[config[:2]]
                rates[config].append(tool(target, target_port, seconds, config[2]))
        errors = _grpc_errors(port)
        if errors:
            raise AssertionError(f"gRPC calls failed: {errors}")
    finally:
        for server in (process, bare):
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    return [
        {"protocol": p, "rows": r, "concurrency": c, "client": "h2load" if p == "grpc" else "wrk",
         "requests_per_s": statistics.median(rates[(p, r, c)]),
         "rows_per_s": statistics.median(rates[(p, r, c)]) * r, "rounds": rates[(p, r, c)]}
        for (p, r, c) in configs
    ]  # fmt: skip


def check_answer(port: int, protocol: str, x: np.ndarray, expected: np.ndarray) -> None:
    async def once() -> tuple[bytes, int]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request_bytes(protocol, x))
        status, body, header_length = await read_response(reader)
        writer.close()
        assert status == 200, body
        return body, header_length

    raw, header_length = asyncio.run(once())
    if header_length >= 0:
        got = np.frombuffer(raw[header_length:], dtype="<f4").astype(np.float64)
    else:
        body = json.loads(raw)
        got = body["outputs"][0]["data"] if protocol == "v2" else body["predictions"]
    got = np.asarray(got, dtype=np.float64).reshape(expected.shape)
    if not np.array_equal(got, expected.astype(np.float64)):
        raise AssertionError(f"{protocol}: served codes differ from OnnxEncoder.encode")


def codec_times(encoder: Any, x: np.ndarray, repeats: int = 200) -> dict[str, dict[str, float]]:
    """Median ms to parse a v2 request and write its response: the server's codec
    (orjson) and the standard library's json, which it replaced."""
    from keras_cae.export.serving import codec

    request = request_bytes("v2", x).split(b"\r\n\r\n", 1)[1]
    response = {"outputs": [{"data": encoder.encode(x).reshape(-1).tolist()}]}
    stdlib = (json.loads, lambda value: json.dumps(value, separators=(",", ":")).encode())
    out = {}
    for name, (loads, dumps) in (("orjson", (codec.loads, codec.dumps)), ("stdlib", stdlib)):
        timings = {}
        for key, call, argument in (("loads_ms", loads, request),
                                    ("dumps_ms", dumps, response)):  # fmt: skip
            samples = []
            for _ in range(repeats):
                start = time.perf_counter()
                call(argument)
                samples.append(time.perf_counter() - start)
            timings[key] = statistics.median(samples) * 1e3
        out[name] = timings
    return out


def load_check(
    port: int, encoder: Any, digits: np.ndarray, count: int = 2000, concurrency: int = 16
) -> float:
    """`count` requests of 1-8 rows, v2 and TF Serving alternately, over `concurrency`
    connections; every answer must equal `OnnxEncoder.encode` bit for bit. Returns s."""
    rng = np.random.default_rng(42)
    batches = [digits[rng.integers(0, len(digits), size=int(n))] for n in rng.integers(1, 9, count)]
    expected = [encoder.encode(x) for x in batches]
    failures: list[str] = []

    async def client(indices: range) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in indices:
                protocol = "v2" if i % 2 else "tfserving"
                writer.write(request_bytes(protocol, batches[i]))
                status, body, _ = await read_response(reader)
                if status != 200:
                    failures.append(f"{i}: HTTP {status} {body[:200]!r}")
                    continue
                answer = json.loads(body)
                got = answer["outputs"][0]["data"] if protocol == "v2" else answer["predictions"]
                got = np.asarray(got, dtype=np.float64).reshape(expected[i].shape)
                if not np.array_equal(got, expected[i].astype(np.float64)):
                    failures.append(f"{i}: codes differ")
        finally:
            writer.close()

    async def run() -> None:
        await asyncio.gather(*(client(range(k, count, concurrency)) for k in range(concurrency)))

    start = time.perf_counter()
    asyncio.run(run())
    if failures:
        raise AssertionError(f"{len(failures)} of {count} requests failed, e.g. {failures[:5]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="an encoder .onnx (default: train+export digits)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1], help="default: 1")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 64], help="rows per request")
    parser.add_argument("--protocols", nargs="+", default=["v2", "v2-binary", "grpc", "tfserving"])
    parser.add_argument("--requests", type=int, default=1000, help="per configuration and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="200 requests, 2 rounds")
    parser.add_argument(
        "--load-check",
        type=int,
        default=2000,
        help="requests of the exactness check at concurrency 16 (default: 2000)",
    )
    parser.add_argument("--wrk-rounds", type=int, default=5, help="0: skip the wrk floor")
    parser.add_argument("--wrk-seconds", type=int, default=5)
    parser.add_argument("--out", help="default: results/serve.json (results/serve_peers.json "
                        "with --peers)")  # fmt: skip
    parser.add_argument("--bare-grpc", type=int, help=argparse.SUPPRESS)  # Internal.
    peers = parser.add_argument_group(
        "peers (--peers): keras-cae against KServe, LitServe, Triton, BentoML and a bare "
        "floor, each in its own venv under benchmarks/.venvs; see benchmarks/peers/bench.py"
    )
    peers.add_argument("--peers", action="store_true", help="run the peers benchmark")
    peers.add_argument("--peer-names", nargs="+", default=list(PEERS), choices=PEERS,
                       metavar="NAME", help=f"default: {' '.join(PEERS)}")  # fmt: skip
    peers.add_argument("--keras-cae-bin", action="append", metavar="PATH",
                       help="a keras-cae executable to benchmark (repeatable; the first is "
                            "the baseline; default: this checkout's)")  # fmt: skip
    peers.add_argument("--duration", type=int, default=10, help="seconds per run (default 10)")
    peers.add_argument("--connections", type=int, default=8, help="wrk/h2load -c (default 8)")
    peers.add_argument("--mnist", default=_MNIST, help=f"default: {_MNIST}")
    peers.add_argument("--grpc-model", help="a second encoder for the gRPC-vs-JSON comparison, "
                       "keras-cae only (default: the digits encoder, 64 features; 'none': "
                       "skip)")  # fmt: skip
    args = parser.parse_args()
    if args.bare_grpc:
        asyncio.run(_bare_grpc(args.bare_grpc))
        return
    if args.peers:
        for name, value in (("--duration", args.duration), ("--rounds", args.rounds),
                            ("--connections", args.connections)):  # fmt: skip
            if value <= 0:
                parser.error(f"{name} should be positive. Received: {value}")
        for path in args.keras_cae_bin or ():
            if not (os.path.isfile(path) and os.access(path, os.X_OK)):
                parser.error(f"--keras-cae-bin should be an executable file. Received: {path}")
        if args.out is None:
            args.out = os.path.join(RESULTS, "serve_peers.json")
        run_peers(args)
        return
    if args.out is None:
        args.out = os.path.join(RESULTS, "serve.json")
    if args.quick:
        args.requests, args.rounds, args.wrk_rounds, args.wrk_seconds = 200, 2, 2, 2

    from keras_cae.data import load_digits
    from keras_cae.export.runtime import OnnxEncoder

    workdir = tempfile.mkdtemp(prefix="bench-serve-")
    model = args.model or make_digits_encoder(workdir)
    source = "--model " + model if args.model else "digits, keras-cae train --epochs 2 + export"
    encoder = OnnxEncoder(model, intra_op_num_threads=1)
    digits = load_digits().x
    print(f"encoder: {model} ({source}); input {encoder.input_shape} -> {encoder.output_shape}")

    # Reference: the runtime alone, one row, no HTTP.
    row = digits[:1]
    for _ in range(200):
        encoder.encode(row)
    times = []
    for _ in range(2000):
        start = time.perf_counter()
        encoder.encode(row)
        times.append(time.perf_counter() - start)
    reference_p50 = statistics.median(times)
    codec = codec_times(encoder, digits[:64])

    results: list[dict[str, Any]] = []
    for workers in args.workers:
        log = os.path.join(workdir, f"server-{workers}.log")
        # gRPC is served by one process only (--grpc-port needs --workers 1).
        protocols = [p for p in args.protocols if p != "grpc" or workers == 1]
        grpc_port = free_port() if "grpc" in protocols else None
        process, port = start_server(model, workers, log, grpc_port)
        ports = {"http": port, "grpc": grpc_port}
        try:
            configs = [(p, r, c) for p in protocols for r in args.rows for c in args.concurrency]
            requests = {(p, r): request_bytes(p, digits[:r]) for p in protocols for r in args.rows}
            for protocol, rows in requests:
                expected = encoder.encode(digits[:rows])
                if protocol == "grpc":
                    check_grpc_answer(grpc_port, digits[:rows], expected)
                else:
                    check_answer(port, protocol, digits[:rows], expected)
            load_seconds = load_check(port, encoder, digits, args.load_check)
            print(f"load check, {workers} worker(s): {args.load_check} requests at concurrency "
                  f"16, all equal to OnnxEncoder.encode ({load_seconds:.2f} s)")  # fmt: skip
            for (protocol, _), request in requests.items():  # Warm-up: caches, paths.
                run_config(ports, protocol, request, 4, 200)
            rates: dict[tuple, list[float]] = {c: [] for c in configs}
            latencies: dict[tuple, list[float]] = {c: [] for c in configs}
            for _ in range(args.rounds):
                for config in configs:
                    protocol, rows, concurrency = config
                    seconds, lat = run_config(
                        ports, protocol, requests[(protocol, rows)], concurrency, args.requests
                    )
                    rates[config].append(args.requests / seconds)
                    latencies[config].extend(lat)
            for config in configs:
                protocol, rows, concurrency = config
                lat = np.asarray(latencies[config]) * 1e3
                rate = statistics.median(rates[config])
                results.append({
                    "workers": workers, "protocol": protocol, "rows": rows,
                    "concurrency": concurrency, "requests_per_s": rate, "rows_per_s": rate * rows,
                    "p50_ms": float(np.percentile(lat, 50)),
                    "p99_ms": float(np.percentile(lat, 99)),
                    "requests": int(lat.size),
                })  # fmt: skip
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)

    floor = c_table = None
    if args.wrk_rounds > 0:
        floor = wrk_floor(model, workdir, digits[:1], args.wrk_rounds, args.wrk_seconds)
        c_table = c_clients(model, workdir, digits, args.rows, args.concurrency,
                            args.rounds, args.wrk_seconds)  # fmt: skip

    header = f"{'workers':>7} {'protocol':>9} {'rows':>5} {'conc':>5} {'req/s':>8} " \
             f"{'rows/s':>9} {'p50 ms':>7} {'p99 ms':>7}"  # fmt: skip
    print(header)
    for r in results:
        print(f"{r['workers']:>7} {r['protocol']:>9} {r['rows']:>5} {r['concurrency']:>5} "
              f"{r['requests_per_s']:>8.0f} {r['rows_per_s']:>9.0f} {r['p50_ms']:>7.2f} "
              f"{r['p99_ms']:>7.2f}")  # fmt: skip
    ratios = _ratios(results)
    for name, value in ratios.items():
        print(f"ratio {name}: {value:.2f}")
    c_ratios = {}
    if c_table is not None:
        print("C load generators (wrk for HTTP/1.1, h2load for gRPC), 1 worker, median req/s:")
        print(f"{'protocol':>9} {'rows':>5} {'conc':>5} {'req/s':>8} {'rows/s':>9}")
        for r in c_table:
            print(f"{r['protocol']:>9} {r['rows']:>5} {r['concurrency']:>5} "
                  f"{r['requests_per_s']:>8.0f} {r['rows_per_s']:>9.0f}")  # fmt: skip
        c_ratios = _ratios([{**r, "workers": 1} for r in c_table])
        for name, value in c_ratios.items():
            print(f"ratio (C clients) {name}: {value:.2f}")
    if floor is not None:
        print(f"HTTP floor ({floor['tool']}, single-row v2 JSON, median of {floor['rounds']} "
              f"rounds of {floor['seconds']} s): keras-cae serve "
              f"{floor['serve_v2_json_1_row_req_per_s']:.0f} req/s, bare ASGI "
              f"{floor['bare_asgi_req_per_s']:.0f} req/s, ratio {floor['ratio_median']:.2f} "
              "(target >= 0.5)")  # fmt: skip
    print(f"reference: OnnxEncoder.encode, 1 row, no HTTP: p50 {reference_p50 * 1e3:.3f} ms")
    print("JSON codec, 64-row request and response, median ms (the server uses orjson):")
    for name, times_ms in codec.items():
        print(f"  {name:>7}: parse request {times_ms['loads_ms']:.3f}, "
              f"write response {times_ms['dumps_ms']:.3f}")  # fmt: skip

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as file:
        json.dump({
            "benchmark": "serve", "encoder": source,
            "input_shape": list(encoder.input_shape), "output_shape": list(encoder.output_shape),
            "requests_per_config_and_round": args.requests, "rounds": args.rounds,
            "reference_encode_1_row_p50_ms": reference_p50 * 1e3,
            "json_codec_64_rows_ms": codec,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform()},
            "results": results, "ratios": ratios, "http_floor": floor,
            "c_clients": c_table, "c_client_ratios": c_ratios,
        }, file, indent=2)  # fmt: skip
    print(f"wrote {args.out}")


def _ratios(results: list[dict[str, Any]]) -> dict[str, float]:
    """gRPC and binary HTTP throughput over JSON HTTP, per rows and concurrency."""
    rate = {(r["workers"], r["protocol"], r["rows"], r["concurrency"]): r["requests_per_s"]
            for r in results}  # fmt: skip
    out = {}
    for (workers, protocol, rows, concurrency), value in rate.items():
        json_rate = rate.get((workers, "v2", rows, concurrency))
        if protocol in ("grpc", "grpc-noop", "v2-binary") and json_rate:
            key = f"{protocol}/v2 json, {rows} rows, concurrency {concurrency}, {workers} worker"
            out[key] = value / json_rate
    return out


if __name__ == "__main__":
    main()
