"""The served model, and what both protocols share: model checks, body limits, the
NaN/overflow check, inference on or off the event loop, and the reply type."""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import numpy as np
from fastapi import APIRouter, Request
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from keras_cae.export.runtime import OnnxEncoder
from keras_cae.export.serving.codec import shape_text
from keras_cae.export.serving.errors import CLIENT_CLOSED, ClientError
from keras_cae.export.serving.metrics import Metrics

__all__ = ["ModelService", "Reply", "VERSION", "ModelRoute", "add_model_routes", "parse_length"]

#: The only model version served. TF Serving clients need a numeric version.
VERSION = "1"
_NUMPY_TO_V2 = {"float32": "FP32", "float64": "FP64", "float16": "FP16"}
# A byte count in a header: ASCII digits only (`str.isdigit` also accepts "²"), and few
# enough of them that `int` never meets its 4,300-digit limit.
_LENGTH = re.compile(rb"[0-9]{1,18}")
# Batches at least this large are encoded on a worker thread (onnxruntime releases the
# GIL), so that one big request does not stall the event loop for everyone else;
# smaller ones run inline, where a thread hop would cost more than the inference.
_THREAD_MIN_ROWS = 64


@dataclass
class Reply:
    """An HTTP answer: status, body, content type and extra headers."""

    body: bytes
    status: int = 200
    media_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> Response:
        return Response(self.body, self.status, self.headers, self.media_type)


def parse_length(value: bytes | None, what: str, limit: int | None = None) -> int | None:
    """A byte count from a header, or a 400 naming the header."""
    if value is None:
        return None
    if not _LENGTH.fullmatch(value) or (limit is not None and int(value) > limit):
        text = value[:40].decode("latin-1")
        bound = f" for a body of {limit} bytes" if limit is not None else ""
        raise ClientError(
            400, f"Invalid {what} {text!r}{bound}: expected a decimal number of bytes."
        )
    return int(value)


class ModelService:
    """One loaded encoder and the limits it is served with.

    Args:
        encoder: the `OnnxEncoder`.
        name: the model name in URLs.
        max_batch: the most rows per request.
        max_body_bytes: the largest request body.
        metrics: where batch sizes are recorded.

    Example:

    >>> service = ModelService(OnnxEncoder("encoder.onnx"), "enc", 64, 2**20,
    ...                        Metrics(64, {}))  # doctest: +SKIP
    """

    def __init__(
        self, encoder: OnnxEncoder, name: str, max_batch: int, max_body_bytes: int,
        metrics: Metrics,
    ) -> None:  # fmt: skip
        self.encoder = encoder
        self.name = name
        self.max_batch = max_batch
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        dtype = np.dtype(encoder.input_dtype).name
        if dtype not in _NUMPY_TO_V2:
            raise ValueError(
                f"Unsupported encoder input dtype {dtype}; expected one of {list(_NUMPY_TO_V2)}."
            )
        self.input_datatype = _NUMPY_TO_V2[dtype]
        # The encoder's own dtype object: `OnnxEncoder.encode` takes its no-copy path
        # only for arrays of exactly it.
        self.input_dtype = np.dtype(encoder.input_dtype)
        #: The dtype of binary tensor data: little-endian, as the protocol says.
        self.wire_dtype = np.dtype("<" + self.input_dtype.str[1:])
        self.sample_shape = tuple(encoder.input_shape[1:])
        self.rank = len(encoder.input_shape)

    def check_model(self, name: str, version: str | None) -> None:
        """A 404 unless `name` and `version` are the served model's."""
        if name != self.name:
            raise ClientError(
                404, f"Unknown model {name!r}; this server serves the model {self.name!r}."
            )
        if version is not None and version != VERSION:
            raise ClientError(
                404, f"Unknown version {version!r} of model {name!r}; the served version "
                f"is {VERSION!r}.",
            )  # fmt: skip

    async def read_body(self, headers: dict[bytes, bytes], chunks: Any) -> bytes:
        """The request body, within `max_body_bytes` (also when sent chunked).

        Args:
            headers: the request headers, names in lower case.
            chunks: an async iterator of body chunks; `ClientDisconnect` ends it early.
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
            raise ClientError(CLIENT_CLOSED, "The client closed the connection.") from None
        return b"".join(parts)

    async def receive_body(self, headers: dict[bytes, bytes], receive: Any) -> bytes:
        """`read_body` from an ASGI `receive`, without a generator when the body comes
        in one message (as it nearly always does)."""
        message = await receive()
        if message["type"] == "http.request" and not message.get("more_body", False):
            body = message.get("body", b"")
            declared = headers.get(b"content-length")
            # Within the limit and as declared: what `read_body` would return.
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

        return await self.read_body(headers, chunks())

    def _too_large(self, size: int, at_least: bool = False) -> ClientError:
        return ClientError(
            413, f"The request body has {'more than ' if at_least else ''}"
            f"{size if not at_least else self.max_body_bytes} bytes; this server accepts at "
            f"most {self.max_body_bytes} bytes (--max-body-bytes). Split the batch.",
        )  # fmt: skip

    def check_batch(self, x: np.ndarray, where: str) -> None:
        """A 400 unless `x` is a batch of the model's sample shape within `max_batch`."""
        if x.ndim != self.rank or x.shape[1:] != self.sample_shape:
            raise ClientError(
                400, f"{where} has shape {shape_text(x.shape)}; the model expects "
                f"{shape_text(self.encoder.input_shape)} (batch first).",
            )  # fmt: skip
        self.check_rows(x.shape[0])

    def check_rows(self, rows: int) -> None:
        if rows > self.max_batch:
            raise ClientError(
                400, f"The batch has {rows} rows; this server accepts at most "
                f"{self.max_batch} rows per request (--max-batch). Split the batch.",
            )  # fmt: skip

    def to_input_dtype(self, x: np.ndarray) -> np.ndarray:
        """Casts a batch to the model's input dtype; a 400 for NaN, infinities or values
        that overflow it (the server, not the encoder, checks, to say so in HTTP terms)."""
        narrow = x
        if x.dtype != self.input_dtype:
            with np.errstate(over="ignore", invalid="ignore"):
                narrow = x.astype(self.input_dtype)
        if narrow.size == 0 or np.isfinite(narrow).all():
            return narrow
        return self._raise_non_finite(x, narrow)

    def _raise_non_finite(self, wide: np.ndarray, narrow: np.ndarray) -> np.ndarray:
        def bad_rows(x: np.ndarray) -> np.ndarray:
            return np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))

        rows = bad_rows(wide)
        if rows.size:
            what = "NaN or infinite values"
        else:
            rows = bad_rows(narrow)
            what = (
                f"values that overflow {self.input_datatype} (magnitude above "
                f"{np.finfo(self.input_dtype).max:.8g})"
            )
        raise ClientError(
            400, f"The input holds {what} in {len(rows)} of {len(wide)} rows (first: row "
            f"{rows[0]}). Send finite values within the model's input type.",
        )  # fmt: skip

    async def encode(self, x: np.ndarray, protocol: str) -> np.ndarray:
        """The codes of a checked batch; a 400 if they overflow."""
        x = self.to_input_dtype(x)
        try:
            if x.shape[0] >= _THREAD_MIN_ROWS:
                codes = await anyio.to_thread.run_sync(self.encoder.encode, x)
            else:
                codes = self.encoder.encode(x)
        except ValueError as error:  # Shape errors are caught earlier; kept as a guard.
            raise ClientError(400, str(error)) from None
        if codes.size and not math.isfinite(codes.sum(dtype=np.float64)):
            bad = int((~np.isfinite(codes.reshape(len(codes), -1)).all(axis=1)).sum())
            raise ClientError(
                400, f"The encoder produced NaN or infinite codes for {bad} of {len(codes)} "
                "rows of this (finite) input: an overflow. Are the inputs scaled like the "
                "training data?",
            )  # fmt: skip
        self.metrics.observe_batch(protocol, x.shape[0])
        return codes


def endpoint(
    service: ModelService, handler: Callable[..., Awaitable[Any]], versioned: bool, body: bool
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
        data = await service.read_body(headers, request.stream())
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
    api: APIRouter, service: ModelService, base: str, routes: list[ModelRoute]
) -> None:
    """Adds each route at ``{base}{suffix}`` and ``{base}/versions/{version}{suffix}``."""
    for suffix, method, handler, body, operation, summary, options in routes:
        for versioned in (False, True):
            api.add_api_route(
                base + ("/versions/{version}" if versioned else "") + suffix,
                endpoint(service, handler, versioned, body),
                methods=[method],
                summary=summary,
                operation_id=operation + ("_version" if versioned else ""),
                **options,
            )
