"""`keras-cae serve`: the HTTP service of `keras_cae.export.serving`, without TensorFlow."""

from __future__ import annotations

import argparse
from typing import Any

from keras_cae.cli.errors import CliError
from keras_cae.cli.types import POSITIVE_INT, number

__all__ = ["add_parser", "run"]

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")  # uvicorn's names.


def add_parser(subparsers: Any) -> None:
    """Adds `keras-cae serve ENCODER.onnx ...` to the subcommands."""
    parser = subparsers.add_parser(
        "serve",
        help="serve an exported encoder over HTTP (KServe v2, TF Serving REST, /metrics)",
        description="Serve ENCODER.onnx with onnxruntime: Open Inference Protocol (KServe "
        "v2) at /v2, TensorFlow Serving REST at /v1, Prometheus /metrics, OpenAPI /docs. "
        "Needs: pip install 'keras-cae[serve]'.",
    )
    add = parser.add_argument
    add("encoder", metavar="ENCODER.onnx", help="an encoder written by keras-cae export")
    add("--host", default="127.0.0.1", help="default: 127.0.0.1 (loopback only)")
    add("--port", type=number(0, 65535, integer=True), default=8000, help="default: 8000")
    add("--name", help="model name in URLs (default: the file name, e.g. encoder)")
    add("--max-batch", type=POSITIVE_INT, default=1024, help="rows per request (default: 1024)")
    add("--workers", type=POSITIVE_INT, default=1, help="processes (default: 1)")
    add("--threads", type=POSITIVE_INT, default=1, help="onnxruntime threads/worker (default: 1)")
    add("--max-body-bytes", type=POSITIVE_INT, help="default: fits --max-batch rows of JSON")
    add(
        "--grpc-port",
        type=number(1, 65535, integer=True),
        help="also serve KServe v2 over gRPC on this port (default: off; needs --workers 1)",
    )
    add("--shutdown-timeout", type=POSITIVE_INT, default=30,
        help="seconds to finish in-flight requests on SIGTERM (default: 30)")  # fmt: skip
    # The defaults are keras_cae.export.serving's (not imported here: FastAPI, uvicorn).
    add("--header-timeout", type=number(0, None, False), default=10.0,
        help="seconds an HTTP connection has to send its request line and headers, from "
        "opening or from the previous response; then it is closed (default: 10)")  # fmt: skip
    add("--max-header-bytes", type=POSITIVE_INT, default=65536,
        help="largest HTTP request line + headers; more is a 431 (default: 65536)")  # fmt: skip
    add("--limit-concurrency", type=POSITIVE_INT, default=1000,
        help="HTTP connections open or requests in progress (per worker) beyond which "
        "requests get a 503 (default: 1000)")  # fmt: skip
    add("--access-log", action="store_true", help="log every request")
    add("--log-level", default="info", choices=LOG_LEVELS,
        help="the server's log level: startup, shutdown and errors; with --access-log, "
        "requests at info (default: info)")  # fmt: skip
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Runs `keras-cae serve` until the server stops; a Keras or TensorFlow model given
    as ENCODER.onnx is refused in one line, with the `keras-cae export` command."""
    from keras_cae.export.runtime import keras_model_kind, not_onnx_message

    kind = keras_model_kind(args.encoder)
    if kind is not None:
        raise CliError(not_onnx_message(args.encoder, kind))
    try:
        from keras_cae.export.serving import (
            serve,  # FastAPI, uvicorn, onnxruntime; never TensorFlow.
        )
    except ImportError as error:
        raise CliError(str(error)) from None

    serve(
        args.encoder, host=args.host, port=args.port, name=args.name, max_batch=args.max_batch,
        workers=args.workers, threads=args.threads, max_body_bytes=args.max_body_bytes,
        grpc_port=args.grpc_port, shutdown_timeout=args.shutdown_timeout,
        header_timeout=args.header_timeout, max_header_bytes=args.max_header_bytes,
        limit_concurrency=args.limit_concurrency, access_log=args.access_log,
        log_level=args.log_level,
    )  # fmt: skip
    return 0
