"""Prometheus metrics of the server, with `prometheus_client`.

One process: the metrics live in a registry of the app's own. Several worker
processes (``--workers N``): `prometheus_client`'s multiprocess mode, switched on by
the environment variable ``PROMETHEUS_MULTIPROC_DIR`` that `keras_cae.export.serving.server`
sets before the workers start. Each worker then writes its values to files in that
directory, and a scrape (answered by any worker) sums the files of all of them, so
counters and histograms keep what a worker counted after it dies; the in-flight and
worker-count gauges count live processes only (files of dead ones are dropped).
"""

from __future__ import annotations

import glob
import os
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

__all__ = [
    "Metrics", "MetricsMiddleware", "CONTENT_TYPE", "MULTIPROCESS_ENV", "GRPC", "process_alive",
]  # fmt: skip

#: The text format `generate_latest` writes.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: The `method` of `Metrics.end` for a gRPC call (HTTP calls pass their HTTP method).
GRPC = "<grpc>"  # Not an HTTP method token, so no HTTP request counts as one.
# The HTTP methods counted under their own name; any other is "other", so that clients
# cannot grow the label set.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5, 5.0, 10.0)  # fmt: skip
_LIVE_FILE = re.compile(r"gauge_live\w*?_(\d+)\.db$")


class Metrics:
    """Request, latency and batch-size metrics of one app.

    Args:
        max_batch: the largest batch the server accepts; it bounds the batch-size
            histogram's buckets (powers of two up to it).
        info: labels of the ``keras_cae_model_info`` gauge.

    Example:

    >>> metrics = Metrics(max_batch=8, info={"model": "enc"})
    >>> metrics.observe_request("/metrics", "GET", 200, 0.001)
    >>> b"keras_cae_requests_total" in metrics.render()
    True
    """

    def __init__(self, max_batch: int, info: dict[str, str]) -> None:
        self.directory = os.environ.get(MULTIPROCESS_ENV) or None
        # In multiprocess mode values go to files, not to a registry.
        self.registry = None if self.directory else CollectorRegistry()
        bounds, size = [], 1
        while size < max_batch:
            bounds.append(size)
            size *= 2
        bounds.append(max_batch)
        registry = self.registry
        self._requests = Counter(
            "keras_cae_requests", "HTTP requests answered, by route template, method and "
            "status code (499: the client left before sending its request).",
            ["endpoint", "method", "status"], registry=registry,
        )  # fmt: skip
        self._latency = Histogram(
            "keras_cae_request_duration_seconds",
            "Time from receiving a request to sending the end of its response.",
            ["endpoint"], buckets=_LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self._grpc_requests = Counter(
            "keras_cae_grpc_requests", "gRPC calls answered, by method and status code "
            "(OK, INVALID_ARGUMENT, NOT_FOUND, ...).", ["method", "code"], registry=registry,
        )  # fmt: skip
        self._grpc_latency = Histogram(
            "keras_cae_grpc_request_duration_seconds",
            "Time from receiving a gRPC request message to returning its response.",
            ["method"], buckets=_LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self._batch = Histogram(
            "keras_cae_batch_size", "Rows per successful inference request, by protocol.",
            ["protocol"], buckets=bounds, registry=registry,
        )  # fmt: skip
        self.in_flight = Gauge(
            "keras_cae_requests_in_flight", "Requests being handled now (this scrape too).",
            registry=registry, multiprocess_mode="livesum",
        )  # fmt: skip
        Gauge(
            "keras_cae_worker_processes", "Live worker processes whose metrics are included.",
            registry=registry, multiprocess_mode="livesum",
        ).set(1)  # fmt: skip
        Gauge(
            "keras_cae_model_info", "The served model; the value is always 1.",
            list(info), registry=registry, multiprocess_mode="max",
        ).labels(*info.values()).set(1)  # fmt: skip
        Gauge(
            "process_start_time_seconds", "Start time of the (first) server process since "
            "the Unix epoch in seconds.", registry=registry, multiprocess_mode="min",
        ).set(time.time())  # fmt: skip
        # Children per label set (bounded: route templates x methods x statuses), so the
        # hot path skips prometheus_client's label lookup.
        self._children: dict[tuple[str, str, int | str], tuple[Any, Any]] = {}
        self._batch_children: dict[str, Any] = {}

    def begin(self) -> float:
        """Counts a request in flight; returns its start time for `end`. Every transport
        times its requests with `begin` and `end`.

        Example:

        >>> metrics = Metrics(max_batch=8, info={"model": "enc"})
        >>> metrics.end(metrics.begin(), "ModelInfer", GRPC, "OK")
        """
        self.in_flight.inc()
        return time.perf_counter()

    def end(self, start: float, endpoint: str, method: str, status: int | str) -> None:
        """Counts a finished request begun at `start` (from `begin`).

        Args:
            start: what `begin` returned.
            endpoint: the route template (HTTP) or the method name (gRPC).
            method: the HTTP method, or `GRPC`.
            status: the HTTP status code, or the gRPC status code's name.
        """
        self.in_flight.dec()
        seconds = time.perf_counter() - start
        if method == GRPC:
            self.observe_grpc(endpoint, str(status), seconds)
        else:
            assert isinstance(status, int)
            self.observe_request(endpoint, method, status, seconds)

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        """Counts one finished request and its latency."""
        key = (endpoint, method if method in _METHODS else "other", status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self._requests.labels(key[0], key[1], str(status)),
                self._latency.labels(endpoint),
            )
        children[0].inc()
        children[1].observe(seconds)

    def observe_grpc(self, method: str, code: str, seconds: float) -> None:
        """Counts one finished gRPC call (`method` from a fixed set) and its latency."""
        key = (method, "grpc", code)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self._grpc_requests.labels(method, code),
                self._grpc_latency.labels(method),
            )
        children[0].inc()
        children[1].observe(seconds)

    def observe_batch(self, protocol: str, rows: int) -> None:
        """Records the number of rows of one successful inference."""
        child = self._batch_children.get(protocol)
        if child is None:
            child = self._batch_children[protocol] = self._batch.labels(protocol)
        child.observe(rows)

    def render(self) -> bytes:
        """All metrics in the Prometheus text format (of every worker, if several)."""
        if self.directory is None:
            assert self.registry is not None
            return generate_latest(self.registry)
        for path in glob.glob(os.path.join(self.directory, "gauge_live*.db")):
            match = _LIVE_FILE.search(os.path.basename(path))
            if match and not process_alive(int(match.group(1))):
                mark_process_dead(int(match.group(1)), self.directory)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, self.directory)
        return generate_latest(registry)


def process_alive(pid: int) -> bool:
    """Whether `pid` runs (a killed worker stays a zombie until uvicorn reaps it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            return file.read().rpartition(b")")[2].split()[0] != b"Z"
    except FileNotFoundError:
        return False
    except OSError:  # No /proc (not Linux): ask the kernel.
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # Exists, owned by someone else.
            return True
        return True


class MetricsMiddleware:
    """Pure ASGI middleware: counts every HTTP request by route template and status."""

    def __init__(self, app: Callable[..., Awaitable[None]], metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # What the client sees if the app fails before responding.

        async def send_wrapper(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        start = self.metrics.begin()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            # The router stores the matched route in the scope; the template, not the
            # raw path, keeps the label set bounded.
            endpoint = getattr(scope.get("route"), "path", None) or "<unmatched>"
            self.metrics.end(start, endpoint, scope.get("method", ""), status)
