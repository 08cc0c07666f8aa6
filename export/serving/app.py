"""The ASGI app: FastAPI routers for both protocols, and a raw ASGI fast path for
inference in front of them.

The two inference routes (``.../infer`` and ``...:predict``) are answered by
`_InferenceFastPath`, pure ASGI code that the app (`_ServingApp`) calls before its
middleware stack: it reads the body, calls the protocol's handler, sends its reply
and counts it in the metrics, without FastAPI's middleware, request, dependency and
response machinery (they cost more than the inference; see docs/serving.md). The
same handlers sit behind the routers too, which document them in the OpenAPI
document and answer them wherever the routers are mounted without the fast path.
Metadata, health, docs, metrics and errors go through FastAPI.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from keras_cae.export.runtime import OnnxEncoder
from keras_cae.export.serving import kserve_v2, tf_serving
from keras_cae.export.serving.codec import shape_text
from keras_cae.export.serving.dataplane import VERSION, DataPlane
from keras_cae.export.serving.docs import add_docs, install_openapi
from keras_cae.export.serving.errors import ServingError
from keras_cae.export.serving.metrics import CONTENT_TYPE, Metrics, MetricsMiddleware
from keras_cae.export.serving.rest import (
    BodyReader,
    Reply,
    add_error_handlers,
    error_reply,
    internal_error_body,
)

__all__ = ["create_app", "DEFAULT_MAX_BATCH"]

#: The most rows one request may carry unless `max_batch` says otherwise.
DEFAULT_MAX_BATCH = 1024
# Model names appear in URL paths, so they are restricted to URL-safe characters.
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

Handler = Callable[[dict[bytes, bytes], bytes, str, "str | None"], Awaitable[Reply]]


def create_app(
    encoder: OnnxEncoder | str | os.PathLike[str],
    name: str | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_body_bytes: int | None = None,
    threads: int | None = 1,
) -> FastAPI:
    """Creates the ASGI app that serves one encoder.

    Args:
        encoder: an `OnnxEncoder`, or the path of an `.onnx` encoder to load.
        name: the model name in URLs (``/v2/models/{name}/infer``). Defaults to the
            file name without its extension (``encoder`` for ``encoder.onnx``).
        max_batch: the most rows one request may carry. Defaults to `1024`.
        max_body_bytes: the largest request body accepted. Defaults to a size that fits
            any batch of `max_batch` rows as JSON (32 bytes per value + 64 KiB).
        threads: onnxruntime intra-op threads, when `encoder` is a path. Defaults to
            `1`: per-request batches are small, and parallelism comes from workers.

    Returns:
        A FastAPI app; run it with any ASGI server, e.g. ``uvicorn.run(app)``.

    Raises:
        FileNotFoundError: the `.onnx` file does not exist.
        ValueError: the model cannot be loaded, or an argument is invalid.

    Example:

    >>> app = create_app("exported/encoder.onnx", name="digits")  # doctest: +SKIP
    """
    if not isinstance(encoder, OnnxEncoder):
        # The dataplane checks for NaN, overflow and the input range itself, once, to
        # answer in the protocol's terms (`DataPlane.to_input_dtype`).
        encoder = OnnxEncoder(
            encoder, intra_op_num_threads=threads, check_finite=False, check_range=False
        )
    name = _default_name(encoder.path) if name is None else name
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise ValueError(
            f"Invalid model name {name!r}: use 1-128 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit."
        )
    for argument, value in (("max_batch", max_batch), ("max_body_bytes", max_body_bytes)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ValueError(f"`{argument}` should be a positive integer. Received: {value!r}")
    if max_body_bytes is None:
        # A float32 value needs at most ~16 characters in JSON ("-1.2345678e-05,");
        # allow 32 bytes per element plus 64 KiB for the envelope, so that every batch
        # within max_batch fits, with room for pretty-printed JSON.
        elements = math.prod(d or 1 for d in encoder.input_shape[1:])
        max_body_bytes = 64 * 1024 + 32 * elements * max_batch
    metrics = Metrics(
        max_batch,
        info={
            "model": name,
            "version": VERSION,
            "path": encoder.path,
            "input_shape": shape_text(encoder.input_shape),
            "output_shape": shape_text(encoder.output_shape),
        },
    )
    version = _package_version()
    dataplane = DataPlane(encoder, name, max_batch, max_body_bytes, metrics, version)
    reader = BodyReader(max_body_bytes)
    app = _ServingApp(
        title="keras-cae serve",
        version=version,
        summary=f"Contractive auto-encoder {name!r}, on onnxruntime.",
        description="Open Inference Protocol (KServe v2) and TensorFlow Serving REST "
        'endpoints for one exported encoder. Errors are `{"error": message}`.',
        docs_url=None,  # Served by `add_docs` from local files, not from a CDN.
        redoc_url=None,
    )
    app.state.dataplane = dataplane  # Also answers gRPC (`kserve_v2_grpc`).
    v2 = kserve_v2.V2Handlers(dataplane, reader)
    tf = tf_serving.TFHandlers(dataplane, reader)
    routers = [kserve_v2.router(v2), tf_serving.router(tf)]
    for router in routers:
        app.include_router(router)

    @app.get(
        "/metrics",
        tags=["Monitoring"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text."}},
    )
    async def metrics_endpoint() -> Response:
        """Prometheus metrics: requests by route and status, latency, batch sizes."""
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    add_error_handlers(app)
    add_docs(app)
    install_openapi(app, dataplane)
    routes = {r.path: r for router in routers for r in router.routes if isinstance(r, APIRoute)}
    fast: list[tuple[re.Pattern[str], APIRoute, Handler]] = []
    for base, suffix, handler in (
        ("/v2/models/{name}", "/infer", v2.infer),
        ("/v1/models/{name}", ":predict", tf.predict),
    ):
        for versioned in (False, True):
            path = base + ("/versions/{version}" if versioned else "") + suffix
            fast.append((routes[path].path_regex, routes[path], handler))
    app.fast_path = _InferenceFastPath(reader, metrics, fast)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # Counts all but the fast path.
    return app


class _ServingApp(FastAPI):
    """FastAPI, with the inference routes answered before its middleware stack."""

    fast_path: _InferenceFastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.fast_path
        if fast is not None and scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            for pattern, route, handler in fast.routes:
                match = pattern.match(path)
                if match is not None:
                    await fast.answer(scope, receive, send, route, handler, match.groupdict())
                    return
        await super().__call__(scope, receive, send)


class _InferenceFastPath:
    """Answers ``POST`` to the inference routes in pure ASGI, counted in the metrics
    as `MetricsMiddleware` counts the rest."""

    def __init__(
        self, reader: BodyReader, metrics: Metrics,
        routes: list[tuple[re.Pattern[str], APIRoute, Handler]],
    ) -> None:  # fmt: skip
        self.reader = reader
        self.metrics = metrics
        self.routes = routes

    async def answer(
        self, scope: Scope, receive: Receive, send: Send, route: APIRoute,
        handler: Handler, params: dict[str, str],
    ) -> None:  # fmt: skip
        start = self.metrics.begin()
        status = 500  # What the client sees if the handler fails.
        try:
            headers = dict(scope["headers"])
            try:
                body = await self.reader.receive(headers, receive)
                reply = await handler(headers, body, params["name"], params.get("version"))
            except ServingError as error:
                reply = error_reply(error)
            except Exception as error:
                # As FastAPI's error handler does: a JSON 500, and the exception on to
                # the server, which logs it.
                await _send(send, Reply(internal_error_body(error), 500))
                raise
            status = reply.status
            await _send(send, reply)
        finally:
            self.metrics.end(start, route.path, "POST", status)


async def _send(send: Send, reply: Reply) -> None:
    headers = [
        (b"content-type", reply.media_type.encode()),
        (b"content-length", b"%d" % len(reply.body)),
        *((k.lower().encode(), v.encode()) for k, v in reply.headers.items()),
    ]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


def _default_name(path: str) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", stem).lstrip("_.-") or "encoder"
    return name[:128]


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("keras-cae")
    except Exception:  # Not installed (source checkout): still serve.
        return "0+unknown"
