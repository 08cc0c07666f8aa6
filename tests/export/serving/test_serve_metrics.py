"""`keras-cae serve`'s Prometheus metrics (`/metrics`): requests, latency, batch sizes,
bounded labels, clients that go away.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from tests.export.serving._serving import INFER, NAME, Server, batch, parse_prometheus, v2_body


def test_metrics_count_requests_latency_and_batches(client: Any) -> None:
    before = parse_prometheus(client.get("/metrics").text)
    x = batch(5, seed=9)
    url = f"/v2/models/{NAME}/versions/1/infer"
    for _ in range(3):
        assert client.post(url, json=v2_body(x)).status_code == 200
    assert client.post(url, content="{").status_code == 400
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    after = parse_prometheus(response.text)

    def delta(name: str, **labels: str) -> float:
        key = tuple(sorted(labels.items()))

        def pick(samples: dict) -> float:
            matches = [v for k, v in samples.get(name, {}).items() if tuple(sorted(k)) == key]
            return sum(matches)

        return pick(after) - pick(before)

    route = "/v2/models/{name}/versions/{version}/infer"
    assert delta("keras_cae_requests_total", endpoint=route, method="POST", status="200") == 3
    assert delta("keras_cae_requests_total", endpoint=route, method="POST", status="400") == 1
    assert delta("keras_cae_request_duration_seconds_count", endpoint=route) == 4
    assert delta("keras_cae_request_duration_seconds_sum", endpoint=route) > 0
    assert delta("keras_cae_batch_size_count", protocol="v2") == 3
    assert delta("keras_cae_batch_size_sum", protocol="v2") == 15
    assert delta("keras_cae_batch_size_bucket", protocol="v2", le="4.0") == 0
    assert delta("keras_cae_batch_size_bucket", protocol="v2", le="8.0") == 3
    info = after["keras_cae_model_info"]
    assert [dict(k)["model"] for k in info] == [NAME]


def test_metrics_labels_stay_bounded_whatever_the_method(client: Any) -> None:
    before = parse_prometheus(client.get("/metrics").text)["keras_cae_requests_total"]
    # Methods the HTTP parser knows (WebDAV and friends) reach the app: 405. Arbitrary
    # tokens reach it through h11 (405) but httptools, the parser of uvicorn[standard],
    # refuses them itself (400) before any app or metric sees them.
    known = [
        "PROPFIND",
        "PROPPATCH",
        "MKCOL",
        "COPY",
        "MOVE",
        "LOCK",
        "UNLOCK",
        "PURGE",
        "REPORT",
        "SEARCH",
        "MKCALENDAR",
        "LINK",
        "UNLINK",
        "NOTIFY",
        "SUBSCRIBE",
    ]
    arbitrary = [f"M{i}" for i in range(40)] + ["X" * 4000]  # fmt: skip
    for method in known:
        assert client.request(method, "/v2/health/ready").status_code == 405
    refused = [client.request(m, "/v2/health/ready").status_code for m in arbitrary]
    assert set(refused) in ({400}, {405}), refused
    reached = len(known) + refused.count(405)
    after = parse_prometheus(client.get("/metrics").text)["keras_cae_requests_total"]
    labels = {dict(k)["method"] for k in after}
    assert labels <= {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other"}
    assert len(after) - len(before) <= 1  # At most the one new series for "other".
    other = {("endpoint", "/v2/health/ready"), ("method", "other"), ("status", "405")}
    count = sum(v for k, v in after.items() if set(k) == other)
    assert count - sum(v for k, v in before.items() if set(k) == other) == reached


def test_client_gone_mid_body_is_499_and_no_traceback(server: Server, client: Any) -> None:
    def closed() -> float:
        samples = parse_prometheus(client.get("/metrics").text)["keras_cae_requests_total"]
        want = {("endpoint", INFER.replace(NAME, "{name}")), ("method", "POST")}
        return sum(v for k, v in samples.items() if want <= set(k) and dict(k)["status"] == "499")

    before = closed()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(
            f"POST {INFER} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n"
            '{"inputs": ['.encode()
        )
    deadline = time.monotonic() + 10
    while closed() == before and time.monotonic() < deadline:
        time.sleep(0.05)  # Polls the server's own count; no fixed wait.
    assert closed() == before + 1
    assert "Exception in ASGI application" not in server.output(), server.output()
    assert 'status="500"' not in client.get("/metrics").text
