"""`keras-cae serve`: an HTTP inference service for an exported encoder.

The service runs an `OnnxEncoder` (onnxruntime, no TensorFlow) behind an ASGI app
(FastAPI on uvicorn) and speaks the protocols that existing inference clients use:

* the Open Inference Protocol (KServe v2; Triton, KServe, Seldon MLServer):
  ``GET /v2``, ``GET /v2/health/live``, ``GET /v2/health/ready``,
  ``GET /v2/models/{name}[/versions/{version}]``, ``.../ready`` and
  ``POST /v2/models/{name}[/versions/{version}]/infer``, including Triton's binary
  tensor data extension for inputs and outputs;
* TensorFlow Serving's REST API: ``POST /v1/models/{name}[/versions/{version}]:predict``
  with ``{"instances": ...}`` (row format, answered with ``{"predictions": ...}``) or
  ``{"inputs": ...}`` (columnar format, answered with ``{"outputs": ...}``, as TF
  Serving does), ``GET /v1/models/{name}`` and ``GET /v1/models/{name}/metadata``;
* ``GET /metrics`` in the Prometheus text format, and the OpenAPI document at
  ``/openapi.json`` (interactive at ``/docs``).

Every client error is a 4xx response whose JSON body is ``{"error": "<what was
wrong>"}`` (the error object of both protocols). This module needs the `serve` extra:
``pip install 'keras-cae[serve]'``.

Example:

>>> from export.serve import create_app                       # doctest: +SKIP
>>> app = create_app("exported/encoder.onnx", name="digits")  # doctest: +SKIP
>>> # uvicorn.run(app, port=8000), or from the shell:
>>> # keras-cae serve exported/encoder.onnx --name digits --port 8000
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Literal

import numpy as np

try:
    import anyio.to_thread
    import fastapi_offline  # Ships Swagger UI 5's files, so /docs works offline.
    import uvicorn
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.openapi.utils import get_openapi
    from pydantic import BaseModel, ConfigDict, Field, ValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import ClientDisconnect
    from starlette.responses import FileResponse, HTMLResponse, Response
except ImportError as error:  # pragma: no cover - depends on the environment.
    raise ImportError(
        "`keras-cae serve` needs FastAPI and uvicorn, which are not installed "
        f"({error}). Install them with: pip install 'keras-cae[serve]'"
    ) from error

from export.runtime import OnnxEncoder

try:  # Optional: parses and writes large JSON batches ~10x faster than the stdlib.
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment.
    _orjson = None

__all__ = ["create_app", "serve", "Metrics", "DEFAULT_MAX_BATCH", "SERVER_NAME"]

#: The most rows one request may carry unless `max_batch` says otherwise.
DEFAULT_MAX_BATCH = 1024
#: The server name reported by ``GET /v2``.
SERVER_NAME = "keras-cae"
# The only model version served. TF Serving clients need a numeric version.
_VERSION = "1"
# Triton's binary tensor data extension (also spoken by its Python/C++ clients).
_BINARY_HEADER = "inference-header-content-length"
_EXTENSIONS = ["binary_tensor_data"]
# A byte count in a header: ASCII digits only (`str.isdigit` also accepts "²"), and few
# enough of them that `int` never meets its 4,300-digit limit.
_LENGTH = re.compile(r"[0-9]{1,18}")
# The HTTP methods counted under their own name in /metrics; any other is "other", so
# that clients cannot grow the label set.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
# Counted as nginx does when a client goes away before its request is read.
_CLIENT_CLOSED = 499
# Model names appear in URL paths, so they are restricted to URL-safe characters.
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

# Open Inference Protocol tensor data types and their little-endian numpy dtypes.
_V2_DTYPES: dict[str, str | None] = {
    "BOOL": "?",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
    "BF16": None,  # No numpy dtype; never an encoder input type.
    "BYTES": None,
}
V2Datatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BF16", "BYTES",
]  # fmt: skip
_NUMPY_TO_V2 = {"float32": "FP32", "float64": "FP64", "float16": "FP16"}
_NUMPY_TO_TF = {"float32": "DT_FLOAT", "float64": "DT_DOUBLE", "float16": "DT_HALF"}
# JSON numbers arrive as these Python types; `bool` is a separate type and rejected.
_NUMBER_TYPES = frozenset({int, float})
_JSON_TYPE_NAMES = {bool: "boolean", str: "string", type(None): "null", dict: "object"}
# Batches at least this large are encoded on a worker thread (onnxruntime releases the
# GIL), so that one big request does not stall the event loop for everyone else;
# smaller ones run inline, where a thread hop would cost more than the inference.
_THREAD_MIN_ROWS = 64


# ------------------------------------------------------------------------------------------
# Request and response schemas. They validate requests and generate the OpenAPI document,
# so that the document describes exactly what the server accepts.


class _Schema(BaseModel):
    # Unknown fields are ignored, as the protocols allow extensions.
    model_config = ConfigDict(extra="ignore")


class V2RequestInput(_Schema):
    """One input tensor of an Open Inference Protocol request."""

    name: str = Field(description="The input tensor name, as in the model metadata.")
    shape: list[int] = Field(
        description="The full shape of the tensor, batch first, e.g. [2, 64].",
        json_schema_extra={"items": {"type": "integer", "minimum": 0}},
    )
    datatype: V2Datatype = Field(description="Must equal the model's input datatype.")
    parameters: dict[str, Any] | None = Field(
        default=None,
        description="Optional; `binary_data_size` marks data sent in the binary extension.",
    )
    data: list[Any] | None = Field(
        default=None,
        description="The tensor elements (JSON numbers) in row-major order, flattened "
        "or nested to the tensor's shape. Omitted when sent as binary data.",
    )


class V2RequestOutput(_Schema):
    """An output tensor requested in an Open Inference Protocol request."""

    name: str
    parameters: dict[str, Any] | None = Field(
        default=None, description="Optional; `binary_data: true` asks for binary output."
    )


class V2InferRequest(_Schema):
    """An Open Inference Protocol (KServe v2) inference request."""

    id: str | None = Field(default=None, description="Echoed in the response.")
    parameters: dict[str, Any] | None = Field(
        default=None, description="Optional; `binary_data_output: true` asks for binary output."
    )
    inputs: list[V2RequestInput] = Field(min_length=1)
    outputs: list[V2RequestOutput] | None = None


class V2Tensor(_Schema):
    """A tensor in a model metadata or inference response."""

    name: str
    datatype: str
    shape: list[int] = Field(description="-1 marks a variable-size dimension in metadata.")


class V2ResponseOutput(V2Tensor):
    """One output tensor of an inference response."""

    parameters: dict[str, Any] | None = None
    data: list[float] | None = Field(default=None, description="Row-major, flattened.")


class V2InferResponse(_Schema):
    """An Open Inference Protocol inference response."""

    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[V2ResponseOutput]


class V2ModelMetadata(_Schema):
    """Open Inference Protocol model metadata."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[V2Tensor]
    outputs: list[V2Tensor]


class V2ServerMetadata(_Schema):
    name: str
    version: str
    extensions: list[str]


class V2Live(_Schema):
    live: bool


class V2Ready(_Schema):
    ready: bool


class V2ModelReady(_Schema):
    name: str
    ready: bool


class TFPredictRequest(_Schema):
    """A TensorFlow Serving predict request: exactly one of `instances` or `inputs`."""

    signature_name: str | None = Field(default=None, description='"serving_default" or omitted.')
    instances: list[Any] | None = Field(
        default=None,
        description="Row format: one entry per example, either the feature values or "
        "an object keyed by the input name.",
    )
    inputs: list[Any] | dict[str, Any] | None = Field(
        default=None,
        description="Columnar format: the whole batch, or an object keyed by the input name.",
    )


class TFPredictResponse(_Schema):
    """`predictions` answers the row format, `outputs` the columnar format."""

    predictions: list[list[float]] | None = None
    outputs: list[list[float]] | None = None


class ErrorResponse(_Schema):
    """Every error: what was wrong, in one sentence or two."""

    error: str


_ERRORS = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in [
        (400, "Malformed JSON, or a tensor of the wrong shape, datatype or values."),
        (404, "Unknown model name or version."),
        (413, "The request body is larger than the server accepts."),
    ]
}


# ------------------------------------------------------------------------------------------
# Metrics.


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _format_value(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    return repr(float(value)) if isinstance(value, float) else str(value)


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape_label(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Histogram:
    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)  # Non-cumulative; the last is +Inf.
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        index = len(self.buckets)
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                index = i
                break
        self.counts[index] += 1
        self.sum += value
        self.count += 1


class Metrics:
    """Request, latency and batch-size metrics, rendered in the Prometheus text format.

    With several uvicorn workers, a scrape reaches one worker; so that it still sees
    the totals of all of them, each worker writes a snapshot of its counters into
    `shared_dir` (at most every 0.5 s, and on every scrape it answers) and a scrape
    sums the snapshots of all workers. Counters of other workers may thus lag by up
    to half a second; totals never decrease, also when a worker exits.

    Args:
        max_batch: the largest batch the server accepts; it bounds the batch-size
            histogram's buckets.
        info: labels of the ``keras_cae_model_info`` gauge.
        shared_dir: a directory shared by all worker processes of one server, or
            `None` (one process).

    Example:

    >>> metrics = Metrics(max_batch=8, info={"model": "enc"})
    >>> metrics.observe_request("/metrics", "GET", 200, 0.001)
    >>> "keras_cae_requests_total" in metrics.render()
    True
    """

    LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                       2.5, 5.0, 10.0)  # fmt: skip
    FLUSH_SECONDS = 0.5

    def __init__(
        self,
        max_batch: int = DEFAULT_MAX_BATCH,
        info: dict[str, str] | None = None,
        shared_dir: str | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], int] = {}
        self._latency: dict[str, _Histogram] = {}
        self._batch: dict[str, _Histogram] = {}
        bounds, size = [], 1
        while size < max_batch:
            bounds.append(size)
            size *= 2
        bounds.append(max_batch)
        self._batch_buckets = tuple(float(b) for b in bounds)
        self._info = dict(info or {})
        self.in_flight = 0
        self._start_time = time.time()
        self._shared_dir = shared_dir
        self._changes = 0  # Bumped on every observation; tells the flusher to write.
        self._flusher: threading.Thread | None = None
        self._stop = threading.Event()

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        """Counts one finished request and its latency."""
        with self._lock:
            key = (endpoint, method, str(status))
            self._requests[key] = self._requests.get(key, 0) + 1
            histogram = self._latency.get(endpoint)
            if histogram is None:
                histogram = self._latency[endpoint] = _Histogram(self.LATENCY_BUCKETS)
            histogram.observe(seconds)
            self._changes += 1

    def observe_batch(self, protocol: str, rows: int) -> None:
        """Records the number of rows of one successful inference."""
        with self._lock:
            histogram = self._batch.get(protocol)
            if histogram is None:
                histogram = self._batch[protocol] = _Histogram(self._batch_buckets)
            histogram.observe(float(rows))
            self._changes += 1

    # -- sharing between worker processes --------------------------------------------------

    def state(self) -> dict[str, Any]:
        """A JSON-serializable snapshot of this process's counters."""
        with self._lock:
            return {
                "requests": [[*key, count] for key, count in self._requests.items()],
                "latency": [[k, h.counts, h.sum, h.count] for k, h in self._latency.items()],
                "batch": [[k, h.counts, h.sum, h.count] for k, h in self._batch.items()],
                "in_flight": self.in_flight,
                "start": self._start_time,
            }

    def flush(self) -> None:
        """Writes this process's snapshot into `shared_dir` (atomically)."""
        if self._shared_dir is None:
            return
        path = os.path.join(self._shared_dir, f"worker-{os.getpid()}.json")
        temporary = path + ".tmp"
        with open(temporary, "w", encoding="utf-8") as file:
            json.dump(self.state(), file)
        os.replace(temporary, path)  # Readers see the old or the new file, never half.

    def start(self) -> None:
        """Starts writing snapshots in the background (a no-op without `shared_dir`)."""
        if self._shared_dir is None or self._flusher is not None:
            return
        self.flush()  # So that a scrape counts this worker from the start.

        def run() -> None:
            written = self._changes
            while not self._stop.wait(self.FLUSH_SECONDS):
                if self._changes != written:
                    written = self._changes
                    try:
                        self.flush()
                    except OSError:  # E.g. the directory went away at shutdown.
                        pass

        self._flusher = threading.Thread(target=run, name="keras-cae-metrics", daemon=True)
        self._flusher.start()

    def stop(self) -> None:
        """Stops the background writer after a last snapshot."""
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join(timeout=5)
            self._flusher = None
        try:
            self.flush()
        except OSError:
            pass

    def _states(self) -> list[dict[str, Any]]:
        if self._shared_dir is None:
            return [self.state()]
        self.flush()
        states = []
        for entry in sorted(os.listdir(self._shared_dir)):
            if not entry.endswith(".json"):
                continue
            try:
                with open(os.path.join(self._shared_dir, entry), encoding="utf-8") as file:
                    states.append(json.load(file))
            except (OSError, ValueError):  # Replaced or removed while listing: skip it.
                continue
        return states

    # -- rendering -------------------------------------------------------------------------

    def render(self) -> str:
        """Returns all metrics in the Prometheus text exposition format (0.0.4)."""
        states = self._states()
        requests: dict[tuple[str, ...], int] = {}
        latency: dict[str, list[Any]] = {}
        batch: dict[str, list[Any]] = {}
        for state in states:
            for *key, count in state["requests"]:
                requests[tuple(key)] = requests.get(tuple(key), 0) + count
            for merged, items in ((latency, state["latency"]), (batch, state["batch"])):
                for key, counts, total, count in items:
                    if key in merged:
                        old = merged[key]
                        merged[key] = [[a + b for a, b in zip(old[0], counts, strict=True)],
                                       old[1] + total, old[2] + count]  # fmt: skip
                    else:
                        merged[key] = [list(counts), total, count]
        lines = [
            "# HELP keras_cae_requests_total HTTP requests answered, by route template, "
            "method and status code.",
            "# TYPE keras_cae_requests_total counter",
        ]
        for key, count in sorted(requests.items()):
            names = ("endpoint", "method", "status")
            lines.append(f"keras_cae_requests_total{_labels(names, key)} {count}")
        self._render_histogram(
            lines,
            "keras_cae_request_duration_seconds",
            "Time from receiving a request to sending the end of its response.",
            "endpoint",
            self.LATENCY_BUCKETS,
            latency,
        )
        self._render_histogram(
            lines,
            "keras_cae_batch_size",
            "Rows per successful inference request, by protocol.",
            "protocol",
            self._batch_buckets,
            batch,
        )
        in_flight = sum(state["in_flight"] for state in states)
        start = min(state["start"] for state in states)
        info = _labels(tuple(self._info), tuple(self._info.values()))
        lines += [
            "# HELP keras_cae_requests_in_flight Requests being handled now.",
            "# TYPE keras_cae_requests_in_flight gauge",
            f"keras_cae_requests_in_flight {in_flight}",
            "# HELP keras_cae_worker_processes Worker processes whose counters are included.",
            "# TYPE keras_cae_worker_processes gauge",
            f"keras_cae_worker_processes {len(states)}",
            "# HELP keras_cae_model_info The served model; the value is always 1.",
            "# TYPE keras_cae_model_info gauge",
            f"keras_cae_model_info{info} 1",
            "# HELP process_start_time_seconds Start time of the (first) server process "
            "since the Unix epoch in seconds.",
            "# TYPE process_start_time_seconds gauge",
            f"process_start_time_seconds {start!r}",
        ]
        return "\n".join(lines) + "\n"

    @staticmethod
    def _render_histogram(
        lines: list[str],
        name: str,
        help_text: str,
        label: str,
        buckets: Sequence[float],
        histograms: dict[str, list[Any]],
    ) -> None:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        for key, (counts, total, count) in sorted(histograms.items()):
            cumulative = 0
            for bound, n in zip((*buckets, math.inf), counts, strict=True):
                cumulative += n
                le = f'le="{_format_value(bound)}"'
                lines.append(f"{name}_bucket{_labels((label,), (key,), le)} {cumulative}")
            lines.append(f"{name}_sum{_labels((label,), (key,))} {float(total)!r}")
            lines.append(f"{name}_count{_labels((label,), (key,))} {count}")


class _MetricsMiddleware:
    """Pure ASGI middleware: counts every HTTP request by route template and status."""

    def __init__(self, app: Callable[..., Awaitable[None]], metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # What the client sees if the app fails before responding.

        async def send_wrapper(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight += 1
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_flight -= 1
            # The router stores the matched route in the scope; the template (not the
            # raw path) keeps the label set bounded whatever clients request.
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "<unmatched>"
            method = scope.get("method", "")
            self.metrics.observe_request(
                endpoint, method if method in _METHODS else "other", status,
                time.perf_counter() - start,
            )  # fmt: skip


# ------------------------------------------------------------------------------------------
# Errors and request parsing.


class _ClientError(Exception):
    """A request error answered with `status` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _dumps(content: Any) -> bytes:
    """JSON bytes; floats as their shortest round-tripping repr, so float32 codes (exact
    in float64) parse back bit-identical. Callers never pass NaN or infinities."""
    if _orjson is not None:
        return _orjson.dumps(content)
    return json.dumps(content, separators=(",", ":"), allow_nan=False).encode()


def _loads(body: bytes) -> Any:
    """Parses JSON; the standard library decides (and explains) what orjson refuses."""
    if _orjson is not None:
        try:
            return _orjson.loads(body)
        except _orjson.JSONDecodeError:
            # NaN/Infinity literals, integers beyond 64 bits, very deep nesting or
            # invalid JSON: Python's parser accepts the first two (NaN is then
            # rejected with a precise message) and says what is wrong with the rest.
            pass
    return json.loads(body)


def _json_response(content: Any, status: int = 200) -> Response:
    return Response(_dumps(content), status_code=status, media_type="application/json")


def _error_response(status: int, message: str) -> Response:
    return _json_response({"error": message}, status)


def _describe_validation_error(error: ValidationError | RequestValidationError) -> str:
    parts = []
    for item in error.errors()[:3]:
        location = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
        parts.append(f"{location or 'body'}: {item.get('msg', 'invalid')}")
    more = len(error.errors()) - 3
    return "Invalid request: " + "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _parse_json(body: bytes, what: str) -> dict[str, Any]:
    if not body:
        raise _ClientError(400, f"The request body is empty; expected a JSON object ({what}).")
    try:
        value = _loads(body)
    except (ValueError, RecursionError) as error:
        raise _ClientError(400, f"The request body is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise _ClientError(
            400, f"Expected a JSON object ({what}); received a JSON {_json_type(value)}."
        )
    return value


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "number"
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _validate(schema: type[BaseModel], value: dict[str, Any]) -> Any:
    try:
        return schema.model_validate(value)
    except ValidationError as error:
        raise _ClientError(400, _describe_validation_error(error)) from None


def _flatten_numbers(data: list[Any], depth: int, where: str) -> list[Any]:
    """Returns the numbers of a (possibly nested) JSON array in row-major order.

    Raises `_ClientError` for booleans, strings, nulls or objects (JSON `true` is
    not a number, and numpy would silently read it as 1.0) and for nesting deeper
    than `depth`.
    """
    if not data:
        return data
    types = set(map(type, data))  # One C-level pass; nearly always {float} or {int, float}.
    if types <= _NUMBER_TYPES:
        return data
    if types == {list}:
        if depth <= 1:
            raise _ClientError(400, f"{where} is nested deeper than the tensor's rank.")
        flat: list[Any] = []
        for item in data:
            flat.extend(_flatten_numbers(item, depth - 1, where))
        return flat
    if list in types:
        raise _ClientError(400, f"{where} mixes numbers and arrays at the same level.")
    bad = _JSON_TYPE_NAMES.get(next(t for t in types if t not in _NUMBER_TYPES), "value")
    article = "an" if bad[0] in "aeiou" else "a"
    raise _ClientError(400, f"{where} must hold JSON numbers; found {article} {bad}.")


def _flag(parameters: dict[str, Any] | None, key: str, default: bool, where: str) -> bool:
    """A boolean request parameter; the string "false" is not false, so only JSON
    booleans are accepted."""
    value = (parameters or {}).get(key, default)
    if not isinstance(value, bool):
        raise _ClientError(
            400, f"{where}.{key} must be true or false (a JSON boolean); received "
            f"{_dumps(value)[:40].decode(errors='replace')}.",
        )  # fmt: skip
    return value


def _to_float64(values: list[Any], where: str) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError, OverflowError) as error:
        message = str(error).split("\n")[0]
        raise _ClientError(400, f"{where} is not a rectangular numeric array: {message}") from None


def _shape_text(shape: Sequence[int | None]) -> str:
    return "[" + ", ".join("-1" if d is None else str(d) for d in shape) + "]"


# ------------------------------------------------------------------------------------------
# The app.


class _Service:
    """The request handlers; one instance per app, shared by all requests."""

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
            raise ValueError(f"Unsupported encoder input dtype {dtype}")
        self.input_datatype = _NUMPY_TO_V2[dtype]
        self.input_dtype = np.dtype(_V2_DTYPES[self.input_datatype])
        self.sample_shape = tuple(encoder.input_shape[1:])
        self.rank = len(encoder.input_shape)
        self.v2_metadata = {
            "name": name,
            "versions": [_VERSION],
            "platform": "onnxruntime_onnx",
            "inputs": [
                {
                    "name": encoder.input_name,
                    "datatype": self.input_datatype,
                    "shape": [-1 if d is None else d for d in encoder.input_shape],
                }
            ],
            "outputs": [
                {
                    "name": encoder.output_name,
                    "datatype": "FP32",
                    "shape": [-1 if d is None else d for d in encoder.output_shape],
                }
            ],
        }

    # -- shared checks ---------------------------------------------------------------------

    def check_model(self, name: str, version: str | None) -> None:
        if name != self.name:
            raise _ClientError(
                404, f"Unknown model {name!r}; this server serves the model {self.name!r}."
            )
        if version is not None and version != _VERSION:
            raise _ClientError(
                404, f"Unknown version {version!r} of model {name!r}; the served version "
                f"is {_VERSION!r}.",
            )  # fmt: skip

    async def read_body(self, request: Request) -> bytes:
        limit = self.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            if not _LENGTH.fullmatch(declared):
                raise _ClientError(400, f"Invalid Content-Length header {declared[:40]!r}.")
            if int(declared) > limit:
                raise self._too_large(int(declared))
        chunks, size = [], 0
        # Counted while streaming, so that a chunked body cannot exceed the limit either.
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise self._too_large(size, at_least=True)
                chunks.append(chunk)
        except ClientDisconnect:
            # Nobody is left to answer: the 499 only labels the request in /metrics.
            raise _ClientError(_CLIENT_CLOSED, "The client closed the connection.") from None
        return b"".join(chunks)

    def _too_large(self, size: int, at_least: bool = False) -> _ClientError:
        return _ClientError(
            413, f"The request body has {'more than ' if at_least else ''}"
            f"{size if not at_least else self.max_body_bytes} bytes; this server accepts at "
            f"most {self.max_body_bytes} bytes (--max-body-bytes). Split the batch.",
        )  # fmt: skip

    def check_batch(self, x: np.ndarray, where: str) -> None:
        if x.ndim != self.rank or x.shape[1:] != self.sample_shape:
            raise _ClientError(
                400, f"{where} has shape {_shape_text(x.shape)}; the model expects "
                f"{_shape_text(self.encoder.input_shape)} (batch first).",
            )  # fmt: skip
        if x.shape[0] > self.max_batch:
            raise _ClientError(
                400, f"The batch has {x.shape[0]} rows; this server accepts at most "
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
        raise _ClientError(
            400, f"The input holds {what} in {len(rows)} of {len(wide)} rows (first: row "
            f"{rows[0]}). Send finite values within the model's input type.",
        )  # fmt: skip

    async def encode(self, x: np.ndarray, protocol: str) -> np.ndarray:
        x = self.to_input_dtype(x)
        try:
            if x.shape[0] >= _THREAD_MIN_ROWS:
                codes = await anyio.to_thread.run_sync(self.encoder.encode, x)
            else:
                codes = self.encoder.encode(x)
        except ValueError as error:  # Non-finite values; shape errors are caught earlier.
            raise _ClientError(400, str(error)) from None
        if codes.size and not math.isfinite(codes.sum(dtype=np.float64)):
            bad = int((~np.isfinite(codes.reshape(len(codes), -1)).all(axis=1)).sum())
            raise _ClientError(
                400, f"The encoder produced NaN or infinite codes for {bad} of {len(codes)} "
                "rows of this (finite) input: an overflow. Are the inputs scaled like the "
                "training data?",
            )  # fmt: skip
        self.metrics.observe_batch(protocol, x.shape[0])
        return codes

    # -- Open Inference Protocol -----------------------------------------------------------

    async def v2_infer(self, request: Request, name: str, version: str | None) -> Response:
        self.check_model(name, version)
        body = await self.read_body(request)
        header_length = request.headers.get(_BINARY_HEADER)
        binary = b""
        if header_length is not None:
            if not _LENGTH.fullmatch(header_length) or int(header_length) > len(body):
                raise _ClientError(
                    400, f"Invalid Inference-Header-Content-Length {header_length[:40]!r} "
                    f"for a body of {len(body)} bytes: expected the JSON part's length, "
                    "a decimal number of bytes.",
                )  # fmt: skip
            body, binary = body[: int(header_length)], body[int(header_length) :]
        payload = _validate(V2InferRequest, _parse_json(body, "an inference request"))
        x = self._v2_input(payload, binary)
        self.check_batch(x, f"Input {self.encoder.input_name!r}")
        codes = await self.encode(x, "v2")

        binary_output = _flag(payload.parameters, "binary_data_output", False, "parameters")
        if payload.outputs:  # An empty list, like no list, asks for every output.
            names = [output.name for output in payload.outputs]
            unknown = [n for n in names if n != self.encoder.output_name]
            if unknown:
                raise _ClientError(
                    400, f"Unknown output(s) {unknown}; the model's output is "
                    f"{self.encoder.output_name!r}.",
                )  # fmt: skip
            binary_output = any(
                _flag(output.parameters, "binary_data", binary_output, f"outputs[{i}].parameters")
                for i, output in enumerate(payload.outputs)
            )
        output: dict[str, Any] = {
            "name": self.encoder.output_name,
            "datatype": "FP32",
            "shape": list(codes.shape),
        }
        response: dict[str, Any] = {"model_name": self.name, "model_version": _VERSION}
        if payload.id is not None:
            response["id"] = payload.id
        response["outputs"] = [output]
        if not binary_output:
            output["data"] = codes.reshape(-1).tolist()
            return _json_response(response)
        raw = np.ascontiguousarray(codes, dtype="<f4").tobytes()
        output["parameters"] = {"binary_data_size": len(raw)}
        header = _dumps(response)
        return Response(
            header + raw,
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(len(header))},
        )

    def _v2_input(self, payload: V2InferRequest, binary: bytes) -> np.ndarray:
        expected = self.encoder.input_name
        names = [tensor.name for tensor in payload.inputs]
        if names != [expected]:
            raise _ClientError(
                400, f"Expected exactly one input named {expected!r}; received inputs "
                f"{names}.",
            )  # fmt: skip
        tensor = payload.inputs[0]
        where = f"Input {expected!r}"
        if tensor.datatype != self.input_datatype:
            raise _ClientError(
                400, f"{where} has datatype {tensor.datatype}; the model expects "
                f"{self.input_datatype}.",
            )  # fmt: skip
        shape = tuple(tensor.shape)
        if any(dim < 0 for dim in shape):
            raise _ClientError(400, f"{where} has a negative dimension in shape {list(shape)}.")
        if len(shape) != self.rank or shape[1:] != self.sample_shape:
            raise _ClientError(
                400, f"{where} has shape {list(shape)}; the model expects "
                f"{_shape_text(self.encoder.input_shape)} (batch first).",
            )  # fmt: skip
        if shape[0] > self.max_batch:
            raise _ClientError(
                400, f"The batch has {shape[0]} rows; this server accepts at most "
                f"{self.max_batch} rows per request (--max-batch). Split the batch.",
            )  # fmt: skip
        count = math.prod(shape)
        binary_size = (tensor.parameters or {}).get("binary_data_size")
        if binary_size is not None:
            if tensor.data is not None:
                raise _ClientError(400, f"{where} has both `data` and `binary_data_size`.")
            itemsize = self.input_dtype.itemsize
            if (
                isinstance(binary_size, bool)
                or not isinstance(binary_size, int)
                or binary_size != len(binary)
                or binary_size != count * itemsize
            ):
                raise _ClientError(
                    400, f"{where}: binary_data_size={binary_size!r}, but shape "
                    f"{list(shape)} of {self.input_datatype} needs {count * itemsize} bytes "
                    f"and the body holds {len(binary)} bytes after the JSON header.",
                )  # fmt: skip
            return np.frombuffer(binary, dtype=self.input_dtype).reshape(shape)
        if binary:
            raise _ClientError(400, "The body has binary data but no input declares it.")
        if tensor.data is None:
            raise _ClientError(400, f"{where} has no `data`.")
        flat = _flatten_numbers(tensor.data, self.rank, f"{where} data")
        if len(flat) != count:
            raise _ClientError(
                400, f"{where} has {len(flat)} data elements; shape {list(shape)} needs "
                f"{count}.",
            )  # fmt: skip
        if flat is tensor.data:  # Flattened row-major, as the protocol allows.
            return _to_float64(flat, f"{where} data").reshape(shape)
        # Nested: the nesting must be the declared shape, not re-split to fit it.
        x = _to_float64(tensor.data, f"{where} data")
        if x.shape != shape:
            raise _ClientError(
                400, f"{where} data is nested as shape {list(x.shape)}, which contradicts "
                f"its declared shape {list(shape)}; nest it exactly so, or flatten it.",
            )  # fmt: skip
        return x

    # -- TensorFlow Serving ----------------------------------------------------------------

    async def tf_predict(self, request: Request, name: str, version: str | None) -> Response:
        self.check_model(name, version)
        payload = _validate(
            TFPredictRequest, _parse_json(await self.read_body(request), "a predict request")
        )
        if payload.signature_name not in (None, "serving_default"):
            raise _ClientError(
                400, f"Unknown signature_name {payload.signature_name!r}; the model has "
                "only 'serving_default'.",
            )  # fmt: skip
        if (payload.instances is None) == (payload.inputs is None):
            raise _ClientError(
                400, "Expected exactly one of 'instances' (row format) or 'inputs' "
                "(columnar format).",
            )  # fmt: skip
        input_name = self.encoder.input_name
        if payload.instances is not None:
            rows = payload.instances
            if rows and all(isinstance(row, dict) for row in rows):
                if any(list(row) != [input_name] for row in rows):
                    raise _ClientError(
                        400, f"Each instance object must have exactly the key {input_name!r}.",
                    )  # fmt: skip
                rows = [row[input_name] for row in rows]
            where = "'instances'"
            values = rows
        else:
            values = payload.inputs
            where = "'inputs'"
            if isinstance(values, dict):
                if list(values) != [input_name]:
                    raise _ClientError(
                        400, f"'inputs' must have exactly the key {input_name!r}; received "
                        f"{list(values)}.",
                    )  # fmt: skip
                values = values[input_name]
                if not isinstance(values, list):
                    raise _ClientError(400, f"'inputs'[{input_name!r}] must be an array.")
        _flatten_numbers(values, self.rank, where)  # Type checks only.
        x = _to_float64(values, where)
        if x.size == 0 and x.ndim == 1:
            x = x.reshape((0, *self.sample_shape))  # `[]` is an empty batch.
        self.check_batch(x, where)
        codes = await self.encode(x, "tfserving")
        key = "predictions" if payload.instances is not None else "outputs"
        return _json_response({key: codes.tolist()})

    def tf_status(self, name: str, version: str | None) -> dict[str, Any]:
        self.check_model(name, version)
        return {
            "model_version_status": [
                {
                    "version": _VERSION,
                    "state": "AVAILABLE",
                    "status": {"error_code": "OK", "error_message": ""},
                }
            ]
        }

    def tf_metadata(self, name: str, version: str | None) -> dict[str, Any]:
        self.check_model(name, version)

        def tensor_info(tensor_name: str, dtype: str, shape: Sequence[int | None]) -> dict:
            return {
                "dtype": dtype,
                "tensor_shape": {
                    "dim": [{"size": str(-1 if d is None else d), "name": ""} for d in shape],
                    "unknown_rank": False,
                },
                "name": tensor_name,
            }

        dtype = _NUMPY_TO_TF[np.dtype(self.encoder.input_dtype).name]
        return {
            "model_spec": {"name": self.name, "signature_name": "", "version": _VERSION},
            "metadata": {
                "signature_def": {
                    "signature_def": {
                        "serving_default": {
                            "inputs": {
                                self.encoder.input_name: tensor_info(
                                    self.encoder.input_name, dtype, self.encoder.input_shape
                                )
                            },
                            "outputs": {
                                self.encoder.output_name: tensor_info(
                                    self.encoder.output_name, "DT_FLOAT", self.encoder.output_shape
                                )
                            },
                            "method_name": "tensorflow/serving/predict",
                        }
                    }
                }
            },
        }


def _default_name(path: str) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", stem).lstrip("_.-") or "encoder"
    return name[:128]


def _default_max_body_bytes(encoder: OnnxEncoder, max_batch: int) -> int:
    # A float32 value needs at most ~16 characters in JSON ("-1.2345678e-05,"); allow
    # 32 bytes per element plus 64 KiB for the envelope, so that every batch within
    # --max-batch fits, with room for pretty-printed JSON.
    elements = math.prod(d or 1 for d in encoder.input_shape[1:])
    return 64 * 1024 + 32 * elements * max_batch


def create_app(
    encoder: OnnxEncoder | str | os.PathLike[str],
    name: str | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_body_bytes: int | None = None,
    threads: int | None = 1,
    shared_metrics_dir: str | None = None,
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
        shared_metrics_dir: with several worker processes, a directory they share so
            that ``/metrics`` reports the totals of all of them (see `Metrics`).

    Returns:
        A FastAPI app; run it with any ASGI server, e.g. ``uvicorn.run(app)``.

    Raises:
        FileNotFoundError: the `.onnx` file does not exist.
        ValueError: the model cannot be loaded, or an argument is invalid.

    Example:

    >>> app = create_app("exported/encoder.onnx", name="digits")  # doctest: +SKIP
    """
    if not isinstance(encoder, OnnxEncoder):
        # The service checks for NaN and overflow itself (`_Service.to_input_dtype`).
        encoder = OnnxEncoder(encoder, intra_op_num_threads=threads, check_finite=False)
    name = _default_name(encoder.path) if name is None else name
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise ValueError(
            f"Invalid model name {name!r}: use 1-128 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit."
        )
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ValueError(f"`max_batch` should be a positive integer. Received: {max_batch!r}")
    if max_body_bytes is None:
        max_body_bytes = _default_max_body_bytes(encoder, max_batch)
    if (
        isinstance(max_body_bytes, bool)
        or not isinstance(max_body_bytes, int)
        or (max_body_bytes < 1)
    ):
        raise ValueError(
            f"`max_body_bytes` should be a positive integer. Received: {max_body_bytes!r}"
        )
    metrics = Metrics(
        max_batch,
        shared_dir=shared_metrics_dir,
        info={
            "model": name,
            "version": _VERSION,
            "path": encoder.path,
            "input_shape": _shape_text(encoder.input_shape),
            "output_shape": _shape_text(encoder.output_shape),
        },
    )
    service = _Service(encoder, name, max_batch, max_body_bytes, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        metrics.start()
        try:
            yield
        finally:
            metrics.stop()

    app = FastAPI(
        lifespan=lifespan,
        docs_url=None,  # Served by `_add_docs` from local files, not from a CDN.
        redoc_url=None,
        title="keras-cae serve",
        version=_package_version(),
        summary=f"Contractive auto-encoder {name!r}, on onnxruntime.",
        description="Open Inference Protocol (KServe v2) and TensorFlow Serving REST "
        'endpoints for one exported encoder. Errors are `{"error": message}`.',
    )
    app.state.service = service
    app.state.metrics = metrics
    _add_error_handlers(app)
    _add_routes(app, service)
    _add_docs(app)
    _install_openapi(app, service)
    app.add_middleware(_MetricsMiddleware, metrics=metrics)
    return app


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("keras-cae")
    except Exception:  # Not installed (source checkout): still serve.
        return "0+unknown"


def _add_error_handlers(app: FastAPI) -> None:
    async def client_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, _ClientError)
        return _error_response(error.status, error.message)

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, StarletteHTTPException)
        detail = error.detail
        if error.status_code == 404 and detail == "Not Found":
            detail = f"No route for {request.method} {request.url.path}; see /docs."
        response = _error_response(error.status_code, str(detail))
        for key, value in (error.headers or {}).items():
            response.headers[key] = value
        return response

    async def validation_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        return _error_response(400, _describe_validation_error(error))

    async def internal_error(request: Request, error: Exception) -> Response:
        # Reached only by a bug or a model that fails at run time; uvicorn logs the
        # traceback, the client gets JSON rather than a bare "Internal Server Error".
        return _error_response(500, f"Internal server error: {type(error).__name__}: {error}")

    app.add_exception_handler(_ClientError, client_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, internal_error)


def _json_body(schema: type[BaseModel], description: str) -> dict[str, Any]:
    """An OpenAPI requestBody for a handler that parses its body itself.

    The handlers read the raw body (to bound its size, to accept JSON whatever the
    Content-Type, as Triton and TF Serving do, and for the binary extension), so
    FastAPI cannot infer the body; `_install_openapi` adds the referenced schemas.
    """
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{schema.__name__}"}}
            },
        }
    }


def _model_schemas(service: _Service) -> dict[str, dict[str, Any]]:
    """The parts of the request schemas that depend on the served model: its tensor
    names, datatype, sample shape and value range, so that the OpenAPI document says
    what this server accepts (a JSON Schema cannot say that `data` holds as many
    values as `shape` counts, nor that codes stay finite)."""
    encoder = service.encoder
    largest = float(np.finfo(service.input_dtype).max)
    number: dict[str, Any] = {"type": "number", "minimum": -largest, "maximum": largest}

    def nested(dims: Sequence[int | None], leaf: dict[str, Any]) -> dict[str, Any]:
        schema = leaf
        for dim in reversed(dims):
            schema = {"type": "array", "items": schema}
            if dim is not None:
                schema.update(minItems=dim, maxItems=dim)
        return schema

    sample = nested(service.sample_shape, number)
    batch = {**nested((None,), sample), "maxItems": service.max_batch}
    name = encoder.input_name
    keyed = {"type": "object", "required": [name], "additionalProperties": False}
    # V2 `data`: flattened, or nested like the tensor (at most `rank` levels deep).
    element = number
    for _ in range(service.rank - 1):
        element = {"anyOf": [number, {"type": "array", "items": element}]}
    flag = {"type": "boolean"}
    return {
        "V2RequestInput": {
            "name": {"type": "string", "const": name},
            "datatype": {"type": "string", "enum": [service.input_datatype]},
            "shape": {
                "type": "array",
                "prefixItems": [
                    {"type": "integer", "minimum": 0, "maximum": service.max_batch},
                    *({"type": "integer", "minimum": 0} if d is None else {"const": d}
                      for d in service.sample_shape),
                ],
                "items": False,
                "minItems": service.rank,
            },
            "data": {"type": "array", "items": element},
            "parameters": {"type": "object", "properties": {
                "binary_data_size": {"type": "integer", "minimum": 0}}},
        },
        "V2RequestOutput": {
            "name": {"type": "string", "const": encoder.output_name},
            "parameters": {"type": "object", "properties": {"binary_data": flag}},
        },
        "V2InferRequest": {
            "parameters": {"type": "object", "properties": {"binary_data_output": flag}},
        },
        "TFPredictRequest": {
            "signature_name": {"type": "string", "enum": ["serving_default"]},
            "instances": {"anyOf": [
                batch,
                {"type": "array", "maxItems": service.max_batch,
                 "items": {**keyed, "properties": {name: sample}}},
            ]},
            "inputs": {"anyOf": [batch, {**keyed, "properties": {name: batch}}]},
        },
    }  # fmt: skip


def _install_openapi(app: FastAPI, service: _Service) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
            )
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for model in (V2InferRequest, TFPredictRequest):
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(schema.pop("$defs", {}))
                schemas[model.__name__] = schema
            for model_name, properties in _model_schemas(service).items():
                for key, schema in properties.items():
                    old = schemas[model_name]["properties"][key]
                    schemas[model_name]["properties"][key] = {
                        **schema,
                        **{k: old[k] for k in ("title", "description") if k in old},
                    }
            schemas["V2InferRequest"]["properties"]["inputs"].update(maxItems=1)
            # Exactly one of the two formats.
            schemas["TFPredictRequest"]["oneOf"] = [
                {"required": ["instances"]}, {"required": ["inputs"]}
            ]  # fmt: skip
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


# Swagger UI 5 (OpenAPI 3.1 needs >= 5), as installed with the `serve` extra.
_DOCS_ASSETS = {
    name: os.path.join(os.path.dirname(fastapi_offline.__file__), "static", name)
    for name in ("swagger-ui-bundle.js", "swagger-ui.css")
}


def _add_docs(app: FastAPI) -> None:
    """Interactive docs at ``/docs`` that load nothing from outside the server (an
    inference service usually has no internet access)."""

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} - docs",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="data:,",  # No icon request at all.
            swagger_ui_parameters={"validatorUrl": None},  # No call to swagger.io.
        )

    @app.get("/docs/assets/{file}", include_in_schema=False)
    async def docs_asset(file: str) -> FileResponse:
        if file not in _DOCS_ASSETS:
            raise _ClientError(404, f"No docs asset {file!r}; see /docs.")
        return FileResponse(_DOCS_ASSETS[file], headers={"Cache-Control": "max-age=86400"})


def _endpoint(handler: Callable[..., Awaitable[Any]], versioned: bool) -> Callable[..., Any]:
    """Wraps `handler(request, name, version)` for a route with or without `{version}`.

    FastAPI documents the parameters of the signature, so each route gets a function
    whose signature has exactly its path parameters.
    """
    if versioned:

        async def with_version(request: Request, name: str, version: str) -> Any:
            return await handler(request, name, version)

        return with_version

    async def without_version(request: Request, name: str) -> Any:
        return await handler(request, name, None)

    return without_version


def _add_routes(app: FastAPI, service: _Service) -> None:
    v2 = ["Open Inference Protocol (KServe v2)"]
    tf = ["TensorFlow Serving REST"]

    @app.get("/v2", tags=v2, response_model=V2ServerMetadata)
    async def server_metadata() -> dict[str, Any]:
        """Server metadata: name, version and supported extensions."""
        return {"name": SERVER_NAME, "version": app.version, "extensions": _EXTENSIONS}

    @app.get("/v2/health/live", tags=v2, response_model=V2Live)
    async def server_live() -> dict[str, Any]:
        """Liveness: 200 while the server can answer requests."""
        return {"live": True}

    @app.get("/v2/health/ready", tags=v2, response_model=V2Ready)
    async def server_ready() -> dict[str, Any]:
        """Readiness: 200 once the model is loaded (it is loaded before the server listens)."""
        return {"ready": True}

    async def model_metadata(request: Request, name: str, version: str | None) -> Any:
        service.check_model(name, version)
        return service.v2_metadata

    async def model_ready(request: Request, name: str, version: str | None) -> Any:
        service.check_model(name, version)
        return {"name": name, "ready": True}

    async def tf_status(request: Request, name: str, version: str | None) -> Any:
        return service.tf_status(name, version)

    async def tf_metadata(request: Request, name: str, version: str | None) -> Any:
        return service.tf_metadata(name, version)

    not_found: dict[int | str, dict[str, Any]] = {404: _ERRORS[404]}
    infer_errors: dict[int | str, dict[str, Any]] = dict(_ERRORS)
    infer_body = _json_body(
        V2InferRequest,
        "An inference request. With Triton's binary tensor data extension, the header "
        "Inference-Header-Content-Length gives the JSON part's length and the raw "
        "little-endian tensor bytes follow it.",
    )
    predict_body = _json_body(TFPredictRequest, "A predict request, row or columnar format.")
    # (path suffix, method, handler, tags, operation, summary, extra route options)
    routes: list[tuple[str, str, Any, list[str], str, str, dict[str, Any]]] = [
        ("", "GET", model_metadata, v2, "model_metadata",
         "Model metadata: input and output names, datatypes and shapes (-1: any size).",
         {"response_model": V2ModelMetadata, "responses": not_found}),
        ("/ready", "GET", model_ready, v2, "model_ready", "Model readiness.",
         {"response_model": V2ModelReady, "responses": not_found}),
        ("/infer", "POST", service.v2_infer, v2, "model_infer",
         "Encodes a batch: input [N, *features] -> output [N, *code], row-major.",
         {"response_model": V2InferResponse, "responses": infer_errors,
          "openapi_extra": infer_body}),
        (":predict", "POST", service.tf_predict, tf, "tf_predict",
         "Encodes a batch: `instances` -> `predictions`, `inputs` -> `outputs`.",
         {"response_model": TFPredictResponse, "response_model_exclude_none": True,
          "responses": infer_errors, "openapi_extra": predict_body}),
        ("/metadata", "GET", tf_metadata, tf, "tf_metadata",
         "The model's signature (TF Serving's GetModelMetadata).", {"responses": not_found}),
        ("", "GET", tf_status, tf, "tf_status",
         "The model's version status (TF Serving's GetModelStatus).", {"responses": not_found}),
    ]  # fmt: skip
    for suffix, method, handler, tags, operation, summary, options in routes:
        base = "/v2/models/{name}" if tags is v2 else "/v1/models/{name}"
        for versioned in (False, True):
            path = base + ("/versions/{version}" if versioned else "") + suffix
            app.add_api_route(
                path,
                _endpoint(handler, versioned),
                methods=[method],
                tags=tags,
                summary=summary,
                operation_id=operation + ("_version" if versioned else ""),
                **options,
            )

    @app.get(
        "/metrics",
        tags=["Monitoring"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text."}},
    )
    async def metrics() -> Response:
        """Prometheus metrics: requests by route and status, latency, batch sizes."""
        return Response(
            service.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )


# ------------------------------------------------------------------------------------------
# Running the server.

_CONFIG_ENV = "KERAS_CAE_SERVE_CONFIG"


def _app_from_environment() -> FastAPI:
    """The app factory run by each uvicorn worker process when `workers > 1`."""
    config = json.loads(os.environ[_CONFIG_ENV])
    return create_app(**config)


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
    shutdown_timeout: int = 30,
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
        threads: onnxruntime intra-op threads per worker. Defaults to `1`.
        max_body_bytes: the largest request body; defaults to one that fits
            `max_batch` rows of JSON.
        shutdown_timeout: seconds to wait for in-flight requests after SIGTERM.
        access_log: log every request (costs throughput). Defaults to `False`;
            ``/metrics`` counts requests either way.
        log_level: uvicorn's log level. Defaults to ``"info"``.
        on_ready: called with the app before the server starts (single worker only).

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: the model cannot be loaded, or an argument is invalid.
    """
    config = {
        "encoder": os.path.abspath(os.fspath(path)),
        "name": name,
        "max_batch": max_batch,
        "max_body_bytes": max_body_bytes,
        "threads": threads,
    }
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"`workers` should be a positive integer. Received: {workers!r}")
    _check_can_listen(host, port)
    # Load once here, in every case: a bad model or argument fails before any worker
    # starts, with one clear error.
    app = create_app(**config)
    service: _Service = app.state.service
    print(
        f"keras-cae serve: model {service.name!r} ({service.encoder.path}), input "
        f"{_shape_text(service.encoder.input_shape)} {service.input_datatype} -> output "
        f"{_shape_text(service.encoder.output_shape)} FP32; http://{host}:{port}/v2/models/"
        f"{service.name}/infer, /v1/models/{service.name}:predict, /metrics, /docs",
        flush=True,
    )
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "access_log": access_log,
        "timeout_graceful_shutdown": shutdown_timeout,
        "server_header": False,
    }
    if workers == 1:
        if on_ready is not None:
            on_ready(app)
        uvicorn.run(app, **options)
    else:
        del app
        # The workers share a directory of metrics snapshots, removed when they stop.
        shared = tempfile.mkdtemp(prefix="keras-cae-serve-metrics-")
        config.update(name=service.name, shared_metrics_dir=shared)
        os.environ[_CONFIG_ENV] = json.dumps(config)
        try:
            uvicorn.run(
                "export.serve:_app_from_environment", factory=True, workers=workers, **options
            )
        finally:
            shutil.rmtree(shared, ignore_errors=True)
