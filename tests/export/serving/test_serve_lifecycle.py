"""The `keras-cae serve` process: graceful shutdown, the command line and the module,
several workers. Each test starts (and stops) a server of its own.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import httpx
import numpy as np
import pytest

from tests.export.serving._serving import (
    CODE,
    INFER,
    NAME,
    batch,
    exact,
    parse_prometheus,
    read_all,
    refuses_connections,
    start_serving,
    stop_server,
    v2_body,
    wait_for,
)

# ------------------------------------------------------------------------------------------
# Graceful shutdown.


def test_sigterm_finishes_in_flight_requests(model_path: str, tmp_path: Any) -> None:
    server = start_serving(model_path, str(tmp_path / "log"), "--name", NAME)
    try:
        x = batch(2, seed=21)
        body = json.dumps(v2_body(x)).encode()
        # A request in flight: headers and half the body sent, the rest after SIGTERM.
        connection = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        head = (
            f"POST {INFER} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        connection.sendall(head + body[: len(body) // 2])

        def in_flight() -> float:  # Besides the scrape asking.
            text = httpx.get(server.url + "/metrics", timeout=10).text
            return parse_prometheus(text)["keras_cae_requests_in_flight"][()] - 1

        wait_for(lambda: in_flight() == 1, "the server to start our request")
        server.process.send_signal(signal.SIGTERM)
        wait_for(
            lambda: refuses_connections(server.port), "the server to stop accepting connections"
        )
        assert server.process.poll() is None, "the server quit with a request in flight"
        connection.sendall(body[len(body) // 2 :])
        reply = read_all(connection)
        connection.close()
        status_line, _, rest = reply.partition(b"\r\n")
        assert status_line == b"HTTP/1.1 200 OK", reply[:300]
        payload = json.loads(rest.split(b"\r\n\r\n", 1)[1])
        codes = exact(payload["outputs"][0]["data"]).reshape(2, CODE)
        np.testing.assert_array_equal(codes, server.encoder.encode(x))
        assert server.process.wait(timeout=15) == -signal.SIGTERM, server.output()
        assert "Traceback" not in server.output(), server.output()
    finally:
        stop_server(server)


# ------------------------------------------------------------------------------------------
# The command line and the module.


def test_cli_errors_are_one_line_exit_2(
    model_path: str, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from keras_cae.cli import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        cases = [
            ([str(tmp_path / "missing.onnx")], "not found"),
            ([model_path, "--name", "bad/name"], "Invalid model name"),
            ([model_path, "--port", port], "Cannot listen"),
            ([model_path, "--port", "70000"], "--port"),
            ([model_path, "--max-batch", "0"], "--max-batch"),
        ]
        not_onnx = tmp_path / "not.onnx"
        not_onnx.write_text("not a model")
        cases.append(([str(not_onnx)], "cannot load"))
        for argv, words in cases:
            assert main(["serve", *argv]) == 2, argv
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and words in err, (argv, err)


def test_serving_never_imports_tensorflow(model_path: str) -> None:
    code = (
        "import sys\n"
        "from keras_cae.export.serving import create_app\n"
        "from keras_cae import cli\n"
        "cli._build_parser()\n"
        f"create_app({model_path!r})\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TF imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_two_workers_serve_and_metrics_count_both(model_path: str, tmp_path: Any) -> None:
    server = start_serving(model_path, str(tmp_path / "log"), "--name", NAME, "--workers", "2")
    try:

        def scrape() -> tuple[float, float]:
            samples = parse_prometheus(httpx.get(server.url + "/metrics", timeout=10).text)
            ok = {("endpoint", "/v2/models/{name}/infer"), ("method", "POST"), ("status", "200")}
            total = sum(v for k, v in samples["keras_cae_requests_total"].items() if set(k) == ok)
            return total, samples["keras_cae_worker_processes"][()]

        # The server answers once one worker is up; on a loaded machine the second can
        # take tens of seconds more. Both must be serving before the requests are sent.
        deadline = time.monotonic() + 120
        while (counts := scrape()) != (0, 2) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert counts == (0, 2)
        x = batch(2, seed=31)
        expected = server.encoder.encode(x)
        for _ in range(40):  # A new connection each time, so both workers take requests.
            response = httpx.post(server.url + INFER, json=v2_body(x), timeout=10)
            assert response.status_code == 200, response.text
            data = response.json()["outputs"][0]["data"]
            np.testing.assert_array_equal(exact(data).reshape(2, CODE), expected)

        # Other workers' snapshots lag by at most Metrics.FLUSH_SECONDS (0.5 s).
        deadline = time.monotonic() + 10
        while (counts := scrape()) != (40, 2) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert counts == (40, 2)
        for _ in range(5):  # Whichever worker answers, the totals are the same.
            assert scrape() == (40, 2)
    finally:
        code = stop_server(server)
    assert code in (0, -signal.SIGTERM), server.output()
    assert "Traceback" not in server.output(), server.output()


def _workers(master: int) -> list[int]:
    """The live uvicorn worker processes of a master (not its resource tracker)."""
    children = []
    with open(f"/proc/{master}/task/{master}/children") as file:
        for pid in map(int, file.read().split()):
            if _alive(pid) and b"spawn_main" in _read(f"/proc/{pid}/cmdline"):
                children.append(pid)
    return children


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    """Running, and not a zombie (in a container nobody may reap an orphan)."""
    status = _read(f"/proc/{pid}/status")
    return bool(status) and b"State:\tZ" not in status


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_die_with_their_master_and_totals_survive_a_worker(
    model_path: str, tmp_path: Any
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    server = start_serving(model_path, str(tmp_path / "log"), "--name", NAME, "--workers", "2",
                    env={"TMPDIR": str(temp)})  # fmt: skip
    try:
        workers = wait_for(lambda: len(w := _workers(server.process.pid)) == 2 and w, "workers")
        assert len(list(temp.glob("keras-cae-serve-metrics-*"))) == 1
        for _ in range(30):  # A new connection each time, so both workers take requests.
            assert httpx.post(server.url + INFER, json=v2_body(batch(1)), timeout=10).is_success

        def scrape() -> tuple[float, float, float]:
            samples = parse_prometheus(httpx.get(server.url + "/metrics", timeout=10).text)
            ok = (("endpoint", "/v2/models/{name}/infer"), ("method", "POST"), ("status", "200"))
            return (
                samples["keras_cae_requests_total"][ok],
                samples["keras_cae_worker_processes"][()],
                samples["keras_cae_requests_in_flight"][()],  # The scrape itself: 1.
            )

        assert scrape() == (30, 2, 1)
        os.kill(workers[0], signal.SIGKILL)
        wait_for(lambda: not _alive(workers[0]), "the killed worker to go")
        workers = wait_for(
            lambda: len(w := _workers(server.process.pid)) == 2 and w, "a replacement worker"
        )
        # The dead worker's counts stay; the gauges count the live workers only.
        wait_for(lambda: scrape()[1] == 2, "the replacement to load the model")
        for _ in range(5):  # Whichever worker answers.
            assert scrape() == (30, 2, 1)
        server.process.kill()  # SIGKILL: the master cannot clean up; the workers must.
        server.process.wait(timeout=10)
        wait_for(lambda: not any(map(_alive, workers)), "the workers to die with the master")
        with socket.socket() as probe:  # Nobody holds the port any more.
            probe.bind(("127.0.0.1", server.port))
        wait_for(lambda: not list(temp.glob("keras-cae-serve-metrics-*")), "no metrics dir")
    finally:
        stop_server(server)
        for pid in _workers(server.process.pid) if server.process.poll() is None else []:
            os.kill(pid, signal.SIGKILL)
