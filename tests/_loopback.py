"""Real servers for tests: started as subprocesses on 127.0.0.1, stopped by the test."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

STARTUP_TIMEOUT = 60.0  # Seconds; the machine is shared with TensorFlow jobs.


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running_server(command: Sequence[str], port: int, log_path: str) -> Iterator[str]:
    """Runs `command` (a ``keras-cae serve ... --port port``) until /v2/health/ready
    answers; yields ``127.0.0.1:<port>`` and stops the server on exit."""
    import httpx

    with open(log_path, "w") as log:
        process = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if process.poll() is not None:
                raise AssertionError(f"the server exited:\n{open(log_path).read()}")
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1)
                if response.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the server did not start:\n{open(log_path).read()}")
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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
