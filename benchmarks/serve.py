"""Throughput and latency of `keras-cae serve` at concurrency 1 and 16.

Starts the real server (``python -m keras_cae.cli serve``) in a subprocess on a
free loopback port and drives it from this process with a small asyncio HTTP/1.1
client (keep-alive connections, one per concurrent client; precomputed request
bytes, so that the client costs little next to the server). Each request carries
digits rows (scikit-learn's 8×8 digits, scaled to [0, 1]); the first answer of
every configuration is checked against `OnnxEncoder.encode` in this process.

Configurations: protocol (KServe v2 ``/infer`` or TF Serving ``:predict``) ×
rows per request × concurrency. The configurations run round-robin for `--rounds`
rounds, so all of them see the same machine load (the machine is shared); the table
quotes the median throughput over rounds and the p50/p99 latency over all requests.
A reference row times `OnnxEncoder.encode` itself (no HTTP) on one row.

The encoder: ``--model ENCODER.onnx``, or by default the digits encoder made here by
``keras-cae train --epochs 2`` and ``keras-cae export`` (TensorFlow, ~20 s, once).

After the first answers are checked, a load check sends ``--load-check`` requests
(default 2,000) of 1-8 rows at concurrency 16, v2 and TF Serving alternately, and
requires every answer to equal `OnnxEncoder.encode` bit for bit (the test suite sends
200 the same way).

Usage::

    python benchmarks/serve.py                       # digits encoder, writes JSON
    python benchmarks/serve.py --model exported/encoder.onnx --workers 2
    python benchmarks/serve.py --quick               # fewer requests
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

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
NAME = "digits"


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


def start_server(model: str, workers: int, log: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    command = [sys.executable, "-m", "keras_cae.cli", "serve", model, "--name", NAME, "--port",
               str(port), "--workers", str(workers), "--log-level", "warning"]  # fmt: skip
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
    parser.add_argument("--protocols", nargs="+", default=["v2", "v2-binary", "tfserving"])
    parser.add_argument("--requests", type=int, default=1000, help="per configuration and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="200 requests, 2 rounds")
    parser.add_argument(
        "--load-check",
        type=int,
        default=2000,
        help="requests of the exactness check at concurrency 16 (default: 2000)",
    )
    parser.add_argument("--out", default=os.path.join(RESULTS, "serve.json"))
    args = parser.parse_args()
    if args.quick:
        args.requests, args.rounds = 200, 2

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
        process, port = start_server(model, workers, log)
        try:
            configs = [
                (p, r, c) for p in args.protocols for r in args.rows for c in args.concurrency
            ]
            requests = {
                (p, r): request_bytes(p, digits[:r]) for p in args.protocols for r in args.rows
            }
            for protocol, rows in requests:
                check_answer(port, protocol, digits[:rows], encoder.encode(digits[:rows]))
            load_seconds = load_check(port, encoder, digits, args.load_check)
            print(f"load check, {workers} worker(s): {args.load_check} requests at concurrency "
                  f"16, all equal to OnnxEncoder.encode ({load_seconds:.2f} s)")  # fmt: skip
            for request in requests.values():  # Warm-up: connections, caches, JIT paths.
                asyncio.run(drive(port, request, 4, 200))
            rates: dict[tuple, list[float]] = {c: [] for c in configs}
            latencies: dict[tuple, list[float]] = {c: [] for c in configs}
            for _ in range(args.rounds):
                for config in configs:
                    protocol, rows, concurrency = config
                    seconds, lat = asyncio.run(
                        drive(port, requests[(protocol, rows)], concurrency, args.requests)
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

    header = f"{'workers':>7} {'protocol':>9} {'rows':>5} {'conc':>5} {'req/s':>8} " \
             f"{'rows/s':>9} {'p50 ms':>7} {'p99 ms':>7}"  # fmt: skip
    print(header)
    for r in results:
        print(f"{r['workers']:>7} {r['protocol']:>9} {r['rows']:>5} {r['concurrency']:>5} "
              f"{r['requests_per_s']:>8.0f} {r['rows_per_s']:>9.0f} {r['p50_ms']:>7.2f} "
              f"{r['p99_ms']:>7.2f}")  # fmt: skip
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
            "results": results,
        }, file, indent=2)  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
