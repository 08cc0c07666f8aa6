"""Running the server: one process, or uvicorn workers that die with their master.

With a gRPC port, the one process also runs the gRPC service of
`keras_cae.export.serving.kserve_v2_grpc` on uvicorn's event loop (`_Server`): it starts before
the HTTP listener and, on SIGTERM, answers the calls that clients have sent, within
the same `shutdown_timeout` as HTTP (`GrpcServer.stop`). gRPC needs one
worker: several would each need their own gRPC listener, and gRPC's port sharing
(SO_REUSEPORT) is not what uvicorn's workers use (they inherit one socket).

With ``workers > 1``, uvicorn's master process starts the workers, each of which
loads the model (`_worker_app`). The master creates the metrics directory of
`prometheus_client`'s multiprocess mode and removes it when it stops; each worker
asks the kernel for SIGTERM when its master dies (Linux ``PR_SET_PDEATHSIG``;
elsewhere a thread that watches the parent), so that a killed master leaves neither
workers holding the port nor, once they stop, the directory behind. A new master
also removes directories left by masters that are gone.

HTTP connections get the request-head limits of `keras_cae.export.serving.http_limits`
(a deadline and a size) and uvicorn's ``limit_concurrency``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import glob
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import uvicorn
from fastapi import FastAPI

from keras_cae.export.serving.app import DEFAULT_MAX_BATCH, create_app
from keras_cae.export.serving.codec import shape_text
from keras_cae.export.serving.dataplane import DataPlane
from keras_cae.export.serving.http_limits import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_HEADER_BYTES,
    http_protocol,
)
from keras_cae.export.serving.metrics import MULTIPROCESS_ENV, process_alive

__all__ = ["serve", "DEFAULT_LIMIT_CONCURRENCY"]

#: Open connections or requests in progress, per worker, beyond which HTTP answers 503.
DEFAULT_LIMIT_CONCURRENCY = 1000

_CONFIG_ENV = "KERAS_CAE_SERVE_CONFIG"
_MASTER_ENV = "KERAS_CAE_SERVE_MASTER"
_METRICS_PREFIX = "keras-cae-serve-metrics-"
_PR_SET_PDEATHSIG = 1
_LOGGER = logging.getLogger("uvicorn.error")


class _Server(uvicorn.Server):
    """uvicorn's server plus a gRPC listener on its event loop, stopped with it."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, grpc_address: str) -> None:
        super().__init__(config)
        self.app = app
        self.grpc_address = grpc_address
        self.grpc: Any = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        from keras_cae.export.serving.kserve_v2_grpc import create_grpc_server

        dataplane: DataPlane = self.app.state.dataplane
        try:
            self.grpc = create_grpc_server(dataplane, self.grpc_address, dataplane.max_body_bytes)
        except ValueError as error:  # As uvicorn does when its own port is taken.
            _LOGGER.error("%s", error)
            sys.exit(1)
        await self.grpc.start()
        _LOGGER.info("gRPC (KServe v2) running on %s", self.grpc_address)
        await super().startup(sockets)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Both stop at once, each answering what its clients have sent, in one grace.
        grace = self.config.timeout_graceful_shutdown
        stopping = asyncio.ensure_future(self.grpc.stop(grace))
        await super().shutdown(sockets)
        await stopping


#: How long uvicorn's master waits for a worker's answer to its health ping before it kills
#: the worker as hung (uvicorn's own default, 5 s, killed workers still starting up on a
#: busy 2-core machine, over and over: their imports hold the interpreter for longer).
WORKER_HEALTHCHECK_SECONDS = 30  # uvicorn takes whole seconds (an int).


def _worker_app() -> FastAPI:
    """The app factory run by each uvicorn worker process when `workers > 1`."""
    master = int(os.environ[_MASTER_ENV])
    _die_with(master)
    app = create_app(**json.loads(os.environ[_CONFIG_ENV]))
    directory = os.environ[MULTIPROCESS_ENV]

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if os.getppid() != master:  # The master is gone: nobody else will clean up.
            shutil.rmtree(directory, ignore_errors=True)

    app.router.lifespan_context = lifespan
    gc.freeze()  # As in `serve`: the app lives as long as the worker.
    return app


def _die_with(master: int) -> None:
    """SIGTERM to this process when `master` (its parent) exits, however it exits."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    else:  # pragma: no cover - not Linux.

        def watch() -> None:
            while os.getppid() == master:
                threading.Event().wait(1.0)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, name="keras-cae-master-watch", daemon=True).start()
    if os.getppid() != master:  # Died before the request above took effect.
        os.kill(os.getpid(), signal.SIGTERM)


def _remove_stale_metrics_dirs() -> None:
    """Removes metrics directories whose master process no longer exists."""
    for path in glob.glob(os.path.join(tempfile.gettempdir(), _METRICS_PREFIX + "*")):
        pid = os.path.basename(path)[len(_METRICS_PREFIX) :].split("-")[0]
        if pid.isascii() and pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _check_can_listen(host: str, port: int) -> None:
    """Fails early, with one line, if the address is taken (uvicorn would exit later)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise ValueError(f"Cannot resolve --host {host!r}: {error}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            raise ValueError(f"Cannot listen on {host}:{port}: {error.strerror}") from None


def serve(
    path: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 8000,
    name: str | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    workers: int = 1,
    threads: int = 1,
    max_body_bytes: int | None = None,
    grpc_port: int | None = None,
    shutdown_timeout: int = 30,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    limit_concurrency: int = DEFAULT_LIMIT_CONCURRENCY,
    access_log: bool = False,
    log_level: str = "info",
    on_ready: Callable[[FastAPI], None] | None = None,
) -> None:
    """Serves an `.onnx` encoder over HTTP until SIGINT or SIGTERM.

    On SIGTERM the server stops accepting connections, finishes the requests in
    flight (for at most `shutdown_timeout` seconds) and returns.

    Args:
        path: the `.onnx` encoder.
        host: the interface to listen on. Defaults to loopback only; use ``0.0.0.0``
            to accept connections from other machines.
        port: the TCP port. Defaults to `8000`.
        name: the model name in URLs. Defaults to the file name without extension.
        max_batch: the most rows per request. Defaults to `1024`.
        workers: uvicorn worker processes, each with its own onnxruntime session.
            They die with this process, even when it is killed.
        threads: onnxruntime intra-op threads per worker. Defaults to `1`.
        max_body_bytes: the largest request body; defaults to one that fits
            `max_batch` rows of JSON. It also bounds gRPC request messages.
        grpc_port: also serve the Open Inference Protocol over gRPC on this port
            (KServe v2 ``GRPCInferenceService``). Defaults to `None`: HTTP only.
            Needs ``workers=1``.
        shutdown_timeout: seconds to wait for in-flight requests after SIGTERM.
        header_timeout: seconds an HTTP connection may take to send a request line and
            headers, from its opening or from the previous response; then it is
            closed. Defaults to `10`.
        max_header_bytes: the largest HTTP request line and headers; larger is a 431.
            Defaults to `65536`.
        limit_concurrency: HTTP connections open or requests in progress (per worker)
            beyond which requests are answered 503 (uvicorn's ``limit_concurrency``).
            Defaults to `1000`.
        access_log: log every request (costs throughput). Defaults to `False`;
            ``/metrics`` counts requests either way.
        log_level: uvicorn's log level. Defaults to ``"info"``.
        on_ready: called with the app before the server starts (single worker only).

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: the model cannot be loaded, or an argument is invalid.
    """
    config: dict[str, Any] = {
        "encoder": os.path.abspath(os.fspath(path)),
        "name": name,
        "max_batch": max_batch,
        "max_body_bytes": max_body_bytes,
        "threads": threads,
    }
    for argument, value in (("workers", workers), ("limit_concurrency", limit_concurrency)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{argument}` should be a positive integer. Received: {value!r}")
    http = http_protocol(header_timeout, max_header_bytes)
    if grpc_port is not None:
        if workers != 1:
            raise ValueError(
                f"--grpc-port serves from one process; received --workers {workers}. Use "
                "--workers 1 with --grpc-port, or run one server per port."
            )
        if grpc_port == port:
            raise ValueError(f"--grpc-port and --port must differ; both are {port}.")
        _check_can_listen(host, grpc_port)
    _check_can_listen(host, port)
    # Load once here, in every case: a bad model or argument fails before any worker
    # starts, with one clear error.
    app = create_app(**config)
    service: DataPlane = app.state.dataplane
    where = f"[{host}]" if ":" in host else host  # An IPv6 address, as URLs write it.
    print(
        f"keras-cae serve: model {service.name!r} ({service.encoder.path}), input "
        f"{shape_text(service.encoder.input_shape)} {service.input_datatype} -> output "
        f"{shape_text(service.encoder.output_shape)} FP32; http://{where}:{port}/v2/models/"
        f"{service.name}/infer, /v1/models/{service.name}:predict, /metrics, /docs"
        + (f"; gRPC {where}:{grpc_port}" if grpc_port is not None else ""),
        flush=True,
    )
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "access_log": access_log,
        "timeout_graceful_shutdown": shutdown_timeout,
        "server_header": False,
        "http": http,
        "limit_concurrency": limit_concurrency,
    }
    if workers == 1:
        if on_ready is not None:
            on_ready(app)
        # The app's objects (FastAPI, pydantic, onnxruntime) live as long as the
        # process: out of the garbage collector's way, its full passes stay short.
        gc.freeze()
        if grpc_port is None:
            uvicorn.run(app, **options)
        else:
            _Server(uvicorn.Config(app, **options), app, f"{where}:{grpc_port}").run()
        return
    del app
    _remove_stale_metrics_dirs()
    directory = tempfile.mkdtemp(prefix=f"{_METRICS_PREFIX}{os.getpid()}-")
    config.update(name=service.name)
    # Read by the workers, which uvicorn spawns as fresh interpreters.
    environment = {
        _CONFIG_ENV: json.dumps(config), _MASTER_ENV: str(os.getpid()),
        MULTIPROCESS_ENV: directory,
    }  # fmt: skip
    saved = {key: os.environ.get(key) for key in environment}
    os.environ.update(environment)
    try:
        uvicorn.run(
            "keras_cae.export.serving.server:_worker_app", factory=True, workers=workers,
            timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS, **options,
        )  # fmt: skip
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        for key, previous in saved.items():  # The caller's environment, as it was.
            if previous is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = previous
