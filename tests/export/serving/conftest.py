"""The serving tests' fixtures: one `keras-cae serve` for the whole folder (HTTP and
gRPC), its clients, and the server with tight connection limits.

Starting a server costs about a second, so the test files share one: it serves the
suite's `model_path` (tests/conftest.py) as `NAME`. Under pytest-xdist each worker
process that runs a test needing it starts its own. Tests that stop a server, or need
other options, start their own with `_serving.start_serving`.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import grpc
import httpx
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2_grpc

from tests.export.serving._serving import (
    HEADER_TIMEOUT,
    LIMIT_CONCURRENCY,
    MAX_BATCH,
    MAX_BODY,
    MAX_HEADER_BYTES,
    NAME,
    Server,
    start_serving,
    stop_server,
)


def _stopped_gracefully(server: Server) -> None:
    code = stop_server(server)
    # A graceful stop: uvicorn finishes, then re-raises the SIGTERM it caught, as a
    # process stopped by that signal should (not -9: it was not killed).
    assert code == -signal.SIGTERM, server.output()
    # No request may have crashed a handler: uvicorn logs tracebacks of 500s.
    assert "Traceback" not in server.output(), server.output()


@pytest.fixture(scope="package")
def server(model_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`keras-cae serve` of `model_path` as `NAME`, over HTTP and gRPC, with
    ``--max-batch MAX_BATCH --max-body-bytes MAX_BODY``."""
    log = str(tmp_path_factory.mktemp("serve-log") / "server.log")
    options = ["--name", NAME, "--max-batch", str(MAX_BATCH), "--max-body-bytes", str(MAX_BODY)]
    running = start_serving(model_path, log, *options, grpc=True)
    try:
        yield running
    finally:
        _stopped_gracefully(running)


@pytest.fixture(scope="package")
def client(server: Server) -> Iterator[httpx.Client]:
    """An HTTP client of `server`."""
    with httpx.Client(base_url=server.url, timeout=10.0) as http:
        yield http


@pytest.fixture(scope="package")
def triton(server: Server) -> Iterator[grpcclient.InferenceServerClient]:
    """Triton's gRPC client of `server`."""
    client = grpcclient.InferenceServerClient(server.grpc_address)
    yield client
    client.close()


@pytest.fixture(scope="package")
def stub(server: Server) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    """A stub of `server`'s gRPC service, in Triton's generated messages."""
    with grpc.insecure_channel(server.grpc_address) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture(scope="module")
def limited(model_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`keras-cae serve` with tight connection limits: ``--header-timeout
    HEADER_TIMEOUT --max-header-bytes MAX_HEADER_BYTES --limit-concurrency
    LIMIT_CONCURRENCY``."""
    log = str(tmp_path_factory.mktemp("server-log") / "server.log")
    server = start_serving(
        model_path, log, "--name", NAME, "--header-timeout", str(HEADER_TIMEOUT),
        "--max-header-bytes", str(MAX_HEADER_BYTES),
        "--limit-concurrency", str(LIMIT_CONCURRENCY),
    )  # fmt: skip
    try:
        yield server
    finally:
        _stopped_gracefully(server)
