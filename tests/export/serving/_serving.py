"""What the serving tests share: the served model's name and limits, starting and
stopping a `keras-cae serve` process with the encoder to compare its answers with,
request bodies, exact float32 reading of JSON numbers, polling and metric parsing.

The fixtures built on these (the package-wide server, its clients) are in this
folder's conftest.py; the encoder served is the suite's `model_path`
(`tests._onnx`, `FEATURES` -> `CODE`).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from keras_cae.export.runtime import OnnxEncoder
from tests._loopback import Server as LoopbackServer
from tests._loopback import free_port, serve_command, start_server, stop_server
from tests._onnx import CODE, FEATURES

__all__ = [
    "CODE",
    "FEATURES",
    "HEADER_TIMEOUT",
    "INFER",
    "LIMIT_CONCURRENCY",
    "MAX_BATCH",
    "MAX_BODY",
    "MAX_HEADER_BYTES",
    "NAME",
    "PREDICT",
    "ROW",
    "Server",
    "batch",
    "exact",
    "free_port",
    "parse_prometheus",
    "read_all",
    "refuses_connections",
    "start_serving",
    "stop_server",
    "v2_body",
    "v2_text",
    "wait_for",
]

NAME = "enc"  # The served model's name.
MAX_BATCH = 32  # --max-batch of the package-wide server.
MAX_BODY = 64 * 1024  # --max-body-bytes of the package-wide server.
INFER = f"/v2/models/{NAME}/infer"
PREDICT = f"/v1/models/{NAME}:predict"
ROW = [0.5] * FEATURES  # One valid input row.
# The connection limits of the `limited` server (test_serve_server.py).
HEADER_TIMEOUT = 1.0  # Seconds.
MAX_HEADER_BYTES = 8192
LIMIT_CONCURRENCY = 30


@dataclass
class Server(LoopbackServer):
    """A `keras-cae serve` process and the encoder it serves, to compare answers with.

    Attributes:
        encoder: the served file, loaded in this process.
        grpc_address: ``127.0.0.1:<port>`` of its gRPC listener, or `None` without one.
    """

    encoder: OnnxEncoder
    grpc_address: str | None = None


def start_serving(
    model: str, log: str, *extra: str, env: dict[str, str] | None = None, grpc: bool = False
) -> Server:
    """Starts ``keras-cae serve model ...extra`` on free loopback ports; ready to answer.

    Args:
        model: the ONNX encoder to serve.
        log: the file for the server's output.
        *extra: more command-line options.
        env: more environment variables.
        grpc: also listen for gRPC (``--grpc-port``) on another free port.

    Returns:
        The running server; stop it with `stop_server`.
    """
    port = free_port()
    grpc_address = None
    if grpc:
        grpc_port = free_port()
        extra = ("--grpc-port", str(grpc_port), *extra)
        grpc_address = f"127.0.0.1:{grpc_port}"
    server = start_server(serve_command(model, port, *extra), port, log, env)
    return Server(server.process, server.port, server.log, OnnxEncoder(model), grpc_address)


def batch(rows: int, seed: int = 1) -> np.ndarray:
    """`rows` inputs of the served model: float32 values with full mantissas (not round
    decimals), so that any loss in the JSON round trip would show."""
    return np.random.default_rng(seed).normal(size=(rows, FEATURES)).astype(np.float32)


def v2_body(x: Any, **fields: Any) -> dict[str, Any]:
    """A KServe v2 JSON request for `x` (flat `data`), with more top-level `fields`."""
    x = np.asarray(x)
    tensor = {"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
    return {"inputs": [tensor], **fields}


def v2_text(data: Any = None, shape: Any = None, datatype: str = "FP32", name: str = "x") -> str:
    """A KServe v2 request as JSON text, one valid row unless told otherwise (`data`
    "null" writes a JSON null)."""
    data = [ROW] if data is None else None if data == "null" else data
    shape = [1, FEATURES] if shape is None else shape
    tensor = {"name": name, "shape": shape, "datatype": datatype, "data": data}
    return json.dumps({"inputs": [tensor]})


def exact(values: Any) -> np.ndarray:
    """JSON numbers as float32, after checking that each is exactly a float32."""
    wide = np.asarray(values, dtype=np.float64)
    narrow = wide.astype(np.float32)
    assert np.array_equal(narrow.astype(np.float64), wide), "a value is not a float32"
    return narrow


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Polls `condition` until it is true; returns its value, or fails after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def refuses_connections(port: int) -> bool:
    """Whether nothing accepts TCP connections on 127.0.0.1:`port` any more."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return True
    return False


def read_all(connection: socket.socket) -> bytes:
    """Everything the server sends on `connection` until it closes it."""
    reply = b""
    while chunk := connection.recv(65536):
        reply += chunk
    return reply


def parse_prometheus(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Samples by name, then by sorted label pairs, read by prometheus_client's parser."""
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples
