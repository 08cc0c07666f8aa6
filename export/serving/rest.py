"""What both HTTP protocols share: reading a bounded body, the reply type, the one
map from the dataplane's errors to HTTP statuses, and FastAPI routes with and without
``/versions/{version}``.

Every error response is ``{"error": "<what was wrong>"}`` with a 4xx status (the
error object of the Open Inference Protocol and of TensorFlow Serving), including
FastAPI's own errors (unknown route, wrong method, invalid parameters).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from keras_cae.export.serving.codec import describe_validation_error, parse_length
from keras_cae.export.serving.errors import (
    ClientClosed,
    InvalidRequest,
    NotFound,
    ServingError,
    TooLarge,
)

__all__ = [
    "HTTP_STATUS", "CLIENT_CLOSED", "Reply", "BodyReader", "error_body", "error_reply",
    "internal_error_body", "add_error_handlers", "ModelRoute", "add_model_routes",
]  # fmt: skip

#: Counted as nginx does when the client goes away before its request is read.
CLIENT_CLOSED = 499
#: The HTTP status of each dataplane error: the one place they are mapped.
HTTP_STATUS: dict[type[ServingError], int] = {
    InvalidRequest: 400,
    NotFound: 404,
    TooLarge: 413,
    ClientClosed: CLIENT_CLOSED,
}


@dataclass
class Reply:
    """An HTTP answer: status, body, content type and extra headers."""

    body: bytes
    status: int = 200
    media_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> Response:
        return Response(self.body, self.status, self.headers, self.media_type)


def error_body(message: str) -> bytes:
    """The JSON error object."""
    return orjson.dumps({"error": message})


def error_reply(error: ServingError) -> Reply:
    """A dataplane error as the HTTP answer it maps to."""
    return Reply(error_body(error.message), HTTP_STATUS[type(error)])


def internal_error_body(error: Exception) -> bytes:
    """The JSON error object of a 500: a bug, or a model that fails at run time."""
    return error_body(f"Internal server error: {type(error).__name__}: {error}")


class BodyReader:
    """Reads request bodies within `max_body_bytes` (also when sent chunked).

    Args:
        max_body_bytes: the largest body accepted.
    """

    def __init__(self, max_body_bytes: int) -> None:
        self.max_body_bytes = max_body_bytes

    async def read(self, headers: dict[bytes, bytes], chunks: Any) -> bytes:
        """The body from an async iterator of chunks (`ClientDisconnect` ends it early).

        Args:
            headers: the request headers, names in lower case.
            chunks: an async iterator of body chunks.

        Raises:
            TooLarge: the body is larger than `max_body_bytes`.
            ClientClosed: the client went away.
            InvalidRequest: an invalid Content-Length header.
        """
        limit = self.max_body_bytes
        declared = parse_length(headers.get(b"content-length"), "Content-Length header")
        if declared is not None and declared > limit:
            raise self._too_large(declared)
        parts, size = [], 0
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise self._too_large(size, at_least=True)
                parts.append(chunk)
        except ClientDisconnect:
            # Nobody is left to answer: the 499 only labels the request in /metrics.
            raise ClientClosed("The client closed the connection.") from None
        return b"".join(parts)

    async def receive(self, headers: dict[bytes, bytes], receive: Any) -> bytes:
        """`read` from an ASGI `receive`, without a generator when the body comes in one
        message (as it nearly always does)."""
        message = await receive()
        if message["type"] == "http.request" and not message.get("more_body", False):
            body = message.get("body", b"")
            declared = headers.get(b"content-length")
            # Within the limit and as declared: what `read` would return.
            if len(body) <= self.max_body_bytes and (
                declared is None or declared == b"%d" % len(body)
            ):
                return body

        async def chunks() -> Any:
            nonlocal message
            while True:
                if message["type"] == "http.disconnect":
                    raise ClientDisconnect()
                yield message.get("body", b"")
                if not message.get("more_body", False):
                    return
                message = await receive()

        return await self.read(headers, chunks())

    def _too_large(self, size: int, at_least: bool = False) -> TooLarge:
        return TooLarge(
            f"The request body has {'more than ' if at_least else ''}"
            f"{size if not at_least else self.max_body_bytes} bytes; this server accepts at "
            f"most {self.max_body_bytes} bytes (--max-body-bytes). Split the batch."
        )


def _error_response(status: int, message: str) -> Response:
    return Response(error_body(message), status_code=status, media_type="application/json")


def add_error_handlers(app: FastAPI) -> None:
    """Makes every error of `app` the JSON error object."""

    async def serving_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, ServingError)
        return error_reply(error).response()

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        detail: Any = error.detail
        if error.status_code == 404 and detail == "Not Found":
            detail = f"No route for {request.method} {request.url.path}; see /docs."
        response = _error_response(error.status_code, str(detail))
        for key, value in (error.headers or {}).items():
            response.headers[key] = value
        return response

    async def validation_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        return _error_response(400, describe_validation_error(error))

    async def internal_error(request: Request, error: Exception) -> Response:
        # Reached only by a bug or a model that fails at run time; uvicorn logs the
        # traceback, the client gets JSON rather than a bare "Internal Server Error".
        return Response(internal_error_body(error), 500, media_type="application/json")

    app.add_exception_handler(ServingError, serving_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, internal_error)


#: A handler that reads a body: ``(headers, body, name, version) -> Reply``.
BodyHandler = Callable[[dict[bytes, bytes], bytes, str, "str | None"], Awaitable[Reply]]


def _endpoint(
    reader: BodyReader, handler: Callable[..., Awaitable[Any]], versioned: bool, body: bool
) -> Callable[..., Any]:
    """A FastAPI endpoint for a route with or without ``{version}``.

    FastAPI documents the parameters of the signature, so each route gets a function
    whose signature has exactly its path parameters. With `body`, the handler is
    ``handler(headers, body, name, version) -> Reply`` and reads the raw body (to bound
    its size, to accept JSON whatever the Content-Type, as Triton and TF Serving do,
    and for the binary extension); otherwise ``handler(name, version) -> JSON value``.
    """

    async def call(request: Request, name: str, version: str | None) -> Any:
        if not body:
            return await handler(name, version)
        headers = dict(request.headers.raw)
        data = await reader.read(headers, request.stream())
        reply = await handler(headers, data, name, version)
        return reply.response()

    if versioned:

        async def with_version(request: Request, name: str, version: str) -> Any:
            return await call(request, name, version)

        return with_version

    async def without_version(request: Request, name: str) -> Any:
        return await call(request, name, None)

    return without_version


#: (path suffix, method, handler, reads a body, operation id, summary, route options)
ModelRoute = tuple[str, str, Callable[..., Awaitable[Any]], bool, str, str, dict[str, Any]]


def add_model_routes(
    api: APIRouter, reader: BodyReader, base: str, routes: list[ModelRoute]
) -> None:
    """Adds each route at ``{base}{suffix}`` and ``{base}/versions/{version}{suffix}``."""
    for suffix, method, handler, body, operation, summary, options in routes:
        for versioned in (False, True):
            api.add_api_route(
                base + ("/versions/{version}" if versioned else "") + suffix,
                _endpoint(reader, handler, versioned, body),
                methods=[method],
                summary=summary,
                operation_id=operation + ("_version" if versioned else ""),
                **options,
            )
