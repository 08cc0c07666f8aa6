"""The edges of `keras-cae serve`: idle connections, a header flood, SIGTERM under load.

Starts the real server (``python -m keras_cae.cli serve``) in a subprocess on free
loopback ports, with its default limits, and runs three probes against it:

- ``idle``: `--idle` connections that send nothing; how many are still open after
  9, 12 and 20 s (``--header-timeout`` defaults to 10 s).
- ``flood``: 10 connections, each sending 20 MB of a header that never ends; the
  server's peak RSS (``/proc/PID/status``, Linux) and what each client could send.
- ``sigterm`` (a server of its own, ``--grpc-port``, ``--shutdown-timeout 10``):
  `--calls` concurrent ModelInfer calls of 1,024 rows over one ``grpc.aio`` channel
  and 30 HTTP v2 calls of 1,024 rows (one open connection each, from threads), then
  SIGTERM 0.2 s after they start; how each call ended.

The encoder: ``--model ENCODER.onnx``, or by default a 64 -> 64 sigmoid encoder
(digits-sized) built here with ``onnx.helper``. The figures are printed and written
to ``benchmarks/results/serve_edges.json``; docs/serving.md quotes them.

Usage::

    python benchmarks/serve_edges.py                  # all three probes
    python benchmarks/serve_edges.py --probe sigterm --calls 400
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import json
import os
import platform
import signal
import socket
import sys
import tempfile
import threading
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tests._loopback import free_port, serve_command, start_server, stop_server  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
NAME = "enc"
FEATURES = 64


def make_encoder(path: str) -> None:
    """x [N, 64] -> sigmoid(x @ W + b) -> code [N, 64], dynamic batch, opset 17."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = (rng.normal(size=(FEATURES, FEATURES)) / 8).astype(np.float32)
    bias = rng.normal(size=FEATURES).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["h"]),
            helper.make_node("Add", ["h", "b"], ["z"]),
            helper.make_node("Sigmoid", ["z"], ["code"]),
        ],
        "encoder",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info("code", TensorProto.FLOAT, ["batch", FEATURES])],
        initializer=[numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def still_open(connections: list[socket.socket]) -> int:
    """How many of `connections` the server has not closed."""
    count = 0
    for connection in connections:
        connection.setblocking(False)
        try:
            count += connection.recv(1) != b""
        except BlockingIOError:
            count += 1
        except OSError:
            pass
    return count


def probe_idle(port: int, count: int) -> dict[str, Any]:
    connections = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    start = time.monotonic()
    result: dict[str, Any] = {"connections": count}
    for seconds in (9, 12, 20):
        time.sleep(max(0.0, seconds - (time.monotonic() - start)))
        result[f"open_after_{seconds}_s"] = still_open(connections)
        print(f"idle: {result[f'open_after_{seconds}_s']}/{count} open after {seconds} s")
    for connection in connections:
        connection.close()
    return result


def probe_flood(port: int, pid: int) -> dict[str, Any]:
    outcomes: dict[int, tuple[str, int]] = {}

    def flood(index: int) -> None:
        connection = socket.create_connection(("127.0.0.1", port))
        sent = 0
        try:
            connection.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: ")
            chunk = b"a" * (1 << 20)
            for _ in range(20):
                connection.sendall(chunk)
                sent += len(chunk)
            outcomes[index] = ("all sent", sent)
        except OSError as error:
            outcomes[index] = (type(error).__name__, sent)
        finally:
            time.sleep(1.0)  # Held open while the peak is read.
            connection.close()

    base = peak = rss_mb(pid)
    threads = [threading.Thread(target=flood, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        peak = max(peak, rss_mb(pid))
        time.sleep(0.05)
    result = {
        "rss_mb": round(base), "peak_rss_mb": round(peak),
        "client_outcomes": sorted({o[0] for o in outcomes.values()}),
        "most_sent_mib": round(max(o[1] for o in outcomes.values()) / 2**20, 1),
    }  # fmt: skip
    print(f"flood: {result}")
    return result


def probe_sigterm(model: str, calls: int, log: str) -> dict[str, Any]:
    import grpc
    import httpx
    from tritonclient.grpc import service_pb2

    port, grpc_port = free_port(), free_port()
    server = start_server(
        serve_command(model, port, "--name", NAME, "--grpc-port", str(grpc_port),
                      "--shutdown-timeout", "10"), port, log,
    )  # fmt: skip
    x = np.random.default_rng(0).normal(size=(1024, FEATURES)).astype(np.float32)
    request = service_pb2.ModelInferRequest(model_name=NAME)
    request.inputs.add(name="x", datatype="FP32", shape=x.shape)
    request.raw_input_contents.append(x.tobytes())
    message = request.SerializeToString()
    body = json.dumps(
        {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                     "data": x.ravel().tolist()}]}
    )  # fmt: skip
    clients = [httpx.Client(timeout=30) for _ in range(30)]
    for client in clients:  # Each connection open before the calls.
        client.get(f"http://127.0.0.1:{port}/v2/health/ready")
    pool = concurrent.futures.ThreadPoolExecutor(len(clients))

    def post(client: Any) -> Any:
        try:
            url = f"http://127.0.0.1:{port}/v2/models/{NAME}/infer"
            return client.post(url, content=body).status_code
        except httpx.HTTPError as error:
            return type(error).__name__

    async def run() -> tuple[list[Any], float]:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}")
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")

        async def one() -> str:
            try:
                await infer(message, timeout=30)
                return "OK"
            except grpc.aio.AioRpcError as error:
                return error.code().name

        loop = asyncio.get_running_loop()
        tasks = [asyncio.ensure_future(one()) for _ in range(calls)]
        tasks += [asyncio.ensure_future(loop.run_in_executor(pool, post, c)) for c in clients]
        await asyncio.sleep(0.2)
        server.process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        results = await asyncio.gather(*tasks)
        await channel.close()
        return results, time.monotonic() - sent

    try:
        results, seconds = asyncio.run(run())
    finally:
        for client in clients:
            client.close()
        stop_server(server)
    result = {
        "grpc_calls": dict(collections.Counter(results[:calls])),
        "http_calls": {str(k): v for k, v in collections.Counter(results[calls:]).items()},
        "last_answer_after_sigterm_s": round(seconds, 2),
    }
    print(f"sigterm: {result}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="an .onnx encoder with 64 features (default: built)")
    parser.add_argument("--probe", choices=["idle", "flood", "sigterm", "all"], default="all")
    parser.add_argument("--idle", type=int, default=800, help="idle connections (default 800)")
    parser.add_argument("--calls", type=int, default=400, help="gRPC calls (default 400)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or os.path.join(tmp, "encoder.onnx")
        if args.model is None:
            make_encoder(model)
        results: dict[str, Any] = {"python": platform.python_version(), "cpus": os.cpu_count()}
        if args.probe in ("idle", "flood", "all"):
            port = free_port()
            server = start_server(
                serve_command(model, port, "--name", NAME), port, os.path.join(tmp, "log")
            )
            try:
                if args.probe in ("idle", "all"):
                    results["idle"] = probe_idle(port, args.idle)
                if args.probe in ("flood", "all"):
                    results["flood"] = probe_flood(port, server.process.pid)
            finally:
                stop_server(server)
        if args.probe in ("sigterm", "all"):
            results["sigterm"] = probe_sigterm(model, args.calls, os.path.join(tmp, "log2"))
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, "serve_edges.json")
    with open(path + ".tmp", "w") as out:
        json.dump(results, out, indent=2)
    os.replace(path + ".tmp", path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
