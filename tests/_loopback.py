"""Real servers for tests: started as subprocesses on 127.0.0.1, stopped by the test.

The one place that starts and stops a `keras-cae serve` process for the tests: the
serving tests, the pipeline harness, the Triton and service-install checks.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

STARTUP_TIMEOUT = 60.0  # Seconds; the machine is shared with TensorFlow jobs.
STOP_TIMEOUT = 15.0  # Seconds to finish after SIGTERM before the process is killed.


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports free on 127.0.0.1 right now (held open together while
    they are chosen, so none is handed out twice)."""
    probes = []
    try:
        for _ in range(count):
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probes.append(probe)
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def serve_command(model: str, port: int, *extra: str) -> list[str]:
    """``keras-cae serve MODEL --port PORT ...`` run with this interpreter."""
    return [sys.executable, "-m", "keras_cae.cli", "serve", model, "--port", str(port), *extra]


@dataclass
class Server:
    """A running server process and where it listens."""

    process: subprocess.Popen
    port: int
    log: str

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``, as Triton's clients take it."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def output(self) -> str:
        with open(self.log, encoding="utf-8", errors="replace") as file:
            return file.read()


def start_server(
    command: Sequence[str], port: int, log: str, env: Mapping[str, str] | None = None
) -> Server:
    """Starts `command` (a server on `port`) and waits until /v2/health/ready answers.

    Raises:
        AssertionError: the process exited, or was not ready in `STARTUP_TIMEOUT`
            seconds (then it is stopped); the message holds its log.
    """
    import httpx

    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            list(command), stdout=out, stderr=subprocess.STDOUT, env=environment
        )
    server = Server(process, port, log)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{server.output()}")
        try:
            if httpx.get(server.url + "/v2/health/ready", timeout=1.0).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            stop_server(server)
            raise AssertionError(f"server not ready in {STARTUP_TIMEOUT} s:\n{server.output()}")
        time.sleep(0.1)


def stop_server(server: Server) -> int:
    """SIGTERM, then SIGKILL after `STOP_TIMEOUT` seconds; returns the exit code."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=5)
    return server.process.returncode


@contextmanager
def running_server(
    command: Sequence[str], port: int, log: str, env: Mapping[str, str] | None = None
) -> Iterator[str]:
    """Runs `command` (a ``keras-cae serve ... --port port``) until ready; yields
    ``127.0.0.1:<port>`` and stops the server on exit."""
    server = start_server(command, port, log, env)
    try:
        yield server.address
    finally:
        stop_server(server)


def v2_infer(
    url: str, model: str, input_name: str, datatype: str, x: np.ndarray, output_name: str
) -> np.ndarray:
    """One KServe v2 JSON request with Triton's own HTTP client; returns the output."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url)
    try:
        tensor = httpclient.InferInput(input_name, list(x.shape), datatype)
        tensor.set_data_from_numpy(x, binary_data=False)
        output = httpclient.InferRequestedOutput(output_name, binary_data=False)
        return client.infer(model, [tensor], outputs=[output]).as_numpy(output_name)
    finally:
        client.close()
