"""`keras-cae serve` against the serving systems a user would pick instead.

``python benchmarks/serve.py --peers`` runs this: every server below serves the same
encoder ``.onnx`` with onnxruntime (1 intra-op thread) and answers the same KServe v2
JSON request, all of them running at once so that the rounds interleave (the machine
is shared: each configuration sees the same load):

- ``keras-cae``: ``keras-cae serve`` (this checkout's, or each ``--keras-cae-bin``);
- ``kserve``: KServe 0.21.0's ``ModelServer`` (``peers/kserve/server.py``);
- ``litserve``: LitServe 0.2.19 (``peers/litserve/server.py``);
- ``triton``: Triton 2.51, PyTriton 0.7.0's bundled ``tritonserver``, python backend
  (``peers/triton/server.py``);
- ``bentoml``: BentoML 1.4.40 (``peers/bentoml/service.py``);
- ``floor``: a raw ASGI app on uvicorn with uvloop and httptools, orjson and the same
  onnxruntime session, no checks (``peers/floor/server.py``).

Each peer runs in its own venv, ``benchmarks/.venvs/NAME`` (made here from
``peers/NAME/requirements.txt`` with pinned versions, once; remade when that file
changes). Before any timing, every server's answer to the timed requests (1 and 64
rows) must equal onnxruntime in this process bit for bit; after the rounds it is
checked again. Then ``wrk -t1 -c8`` posts the request for ``--duration`` seconds per
server and rows, for ``--rounds`` interleaved rounds; the table quotes median req/s and
the CPU time the server's whole process tree spent per request (from ``/proc``). gRPC:
``h2load`` (a C client, ``-c8 -m1``) sends keras-cae's ModelInfer with 64 rows in raw
contents; its ceiling is measured against a `grpc.aio` server whose ModelInfer does
nothing. The bad-request table sends 8 bad requests to every server and records what
it answers.

The functions here that take no server (request building, answer decoding and
comparison, CPU accounting from a ``/proc`` tree, the table and the JSON) are tested in
tests/test_bench_peers.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
BENCHMARKS = os.path.dirname(HERE)
VENVS = os.path.join(BENCHMARKS, ".venvs")
NAME = "encoder"
PEERS = ("kserve", "litserve", "triton", "bentoml", "floor")
LABELS = {
    "kserve": "KServe 0.21.0 ModelServer",
    "litserve": "LitServe 0.2.19",
    "triton": "Triton 2.51 (PyTriton 0.7.0's tritonserver, python backend)",
    "bentoml": "BentoML 1.4.40",
    "floor": "bare floor: raw ASGI, uvloop+httptools, orjson, no checks",
}
GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"
NOOP = "grpc.aio no-op"


# ------------------------------------------------------------------------------------------
# Requests and answers.


def v2_body(x: np.ndarray, name: str = "x") -> bytes:
    """The KServe v2 JSON request for the float32 rows `x`, compact.

    Args:
        x: a 2-D float32 array of rows.
        name: the input's name.

    Returns:
        The UTF-8 request body; every float is written so that it reads back as the
        same float32.

    Example:
        >>> v2_body(np.zeros((1, 2), np.float32))
        b'{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[0.0,0.0]}]}'
    """
    x = np.asarray(x)
    if x.dtype != np.float32 or x.ndim != 2:
        raise ValueError(f"`x` should be a 2-D float32 array. Received: {x.dtype} {x.shape}")
    tensor = {"name": name, "shape": list(x.shape), "datatype": "FP32",
              "data": x.ravel().tolist()}  # fmt: skip
    return json.dumps({"inputs": [tensor]}, separators=(",", ":")).encode()


def bad_requests(features: int) -> list[tuple[str, bytes]]:
    """The 8 bad requests every server gets: (what is wrong, body).

    Example:
        >>> [name for name, _ in bad_requests(4)][:3]
        ['NaN', 'bool', 'string']
    """
    row = [0.5] * features

    def body(data: Any = None, shape: Any = None, datatype: str = "FP32") -> bytes:
        tensor = {"name": "x", "shape": [1, features] if shape is None else shape,
                  "datatype": datatype, "data": [row] if data is None else data}  # fmt: skip
        if data == "missing":
            del tensor["data"]
        return json.dumps({"inputs": [tensor]}).encode()  # NaN as the NaN literal.

    return [
        ("NaN", body(data=[[*row[:-1], float("nan")]])),
        ("bool", body(data=[[True] * features])),
        ("string", body(data=[["0.5"] * features])),
        ("wrong shape", body(data=[row[:-1]], shape=[1, features - 1])),
        ("wrong datatype", body(datatype="FP64")),
        ("missing data", body(data="missing")),
        ("malformed JSON", b'{"inputs": ['),
        ("huge shape", body(shape=[10**9, features])),  # Last: it may crash the server.
    ]


def decode_v2(body: bytes) -> np.ndarray:
    """The first output of a v2 JSON response as float32, in its shape.

    Raises:
        ValueError: the body is not a v2 response with one output of data and shape,
            or a number does not read back as a float32 exactly.

    Example:
        >>> decode_v2(b'{"outputs":[{"shape":[1,2],"data":[0.5,1.0]}]}')
        array([[0.5, 1. ]], dtype=float32)
    """
    try:
        output = json.loads(body)["outputs"][0]
        data = np.asarray(output["data"], dtype=np.float64).ravel()
        shape = [int(n) for n in output["shape"]]
        data.reshape(shape)
    except (ValueError, KeyError, IndexError, TypeError) as error:
        raise ValueError(f"`body` is not a v2 JSON response: {body[:200]!r} ({error})") from None
    single = data.astype(np.float32)
    finite = np.isfinite(data)
    # A float64 that is not a float32 (e.g. '0.1' where float32(0.1) was meant to be
    # written in full) reads back as some float32; the comparison must be of the
    # float32 the server computed, so both shortest float32 text and exact float64
    # text of a float32 are accepted, and nothing else.
    shortest = np.array([float(np.format_float_positional(v, unique=True)) if f else np.nan
                         for v, f in zip(single, finite.tolist())])  # fmt: skip
    exact = single.astype(np.float64)
    if not np.all(~finite | (data == exact) | (data == shortest)):
        raise ValueError("`body` has numbers that are not float32 values written in full")
    return single.reshape(shape)


def bit_exact(got: np.ndarray, expected: np.ndarray) -> bool:
    """Whether two float32 arrays are equal bit for bit (same shape; NaN equals NaN
    only with the same bits; 0.0 differs from -0.0).

    Example:
        >>> bit_exact(np.float32([0.0]), np.float32([-0.0]))
        False
    """
    got, expected = np.asarray(got), np.asarray(expected)
    if got.dtype != np.float32 or expected.dtype != np.float32:
        raise ValueError(f"float32 arrays expected. Received: {got.dtype}, {expected.dtype}")
    return got.shape == expected.shape and np.array_equal(
        got.view(np.uint32), expected.view(np.uint32)
    )


# ------------------------------------------------------------------------------------------
# CPU time of a process tree, from /proc.


def _stat(proc: str, pid: int) -> tuple[int, int] | None:
    """(parent pid, utime+stime+cutime+cstime in ticks) of `pid`, or None if gone."""
    try:
        with open(os.path.join(proc, str(pid), "stat")) as file:
            text = file.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # The name may hold spaces and ')'.
    # After the name: state ppid ... utime(14) stime(15) cutime(16) cstime(17), 1-based.
    return int(fields[1]), sum(int(fields[i]) for i in (11, 12, 13, 14))


def tree_cpu_seconds(root: int, proc: str = "/proc", ticks_per_s: int | None = None) -> float:
    """CPU seconds (user + system) spent by `root` and every process below it,
    including children they have reaped.

    Args:
        root: the pid at the top of the tree.
        proc: where the proc file system is (a fake one in tests).
        ticks_per_s: clock ticks per second (default: ``SC_CLK_TCK``).

    Raises:
        ValueError: `root` is not running.

    Example:
        >>> tree_cpu_seconds(os.getpid()) > 0
        True
    """
    ticks_per_s = ticks_per_s or os.sysconf("SC_CLK_TCK")
    stats = {}
    for entry in os.listdir(proc):
        if entry.isdigit():
            stat = _stat(proc, int(entry))
            if stat is not None:
                stats[int(entry)] = stat
    if root not in stats:
        raise ValueError(f"`root` is not a running process. Received: root={root}")
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in stats.items():
        children.setdefault(parent, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += stats[pid][1]
        todo.extend(children.get(pid, ()))
    return total / ticks_per_s


# ------------------------------------------------------------------------------------------
# Results: the table and the JSON.


def summarize(
    rates: dict[str, dict[int, list[float]]],
    cpu_us: dict[str, dict[int, list[float]]],
    baseline: str,
) -> list[dict[str, Any]]:
    """One row per server: median req/s and CPU µs/request per rows, and the ratio of
    each median to `baseline`'s.

    Example:
        >>> rows = summarize({"a": {1: [2.0, 4.0, 3.0]}, "b": {1: [6.0]}},
        ...                  {"a": {1: [10.0]}, "b": {1: [5.0]}}, "a")
        >>> rows[1]["rows"][1]["vs_baseline"]
        2.0
    """
    if baseline not in rates:
        raise ValueError(f"`baseline` should be one of {sorted(rates)}. Received: {baseline!r}")
    out = []
    for server, by_rows in rates.items():
        entry: dict[str, Any] = {"server": server, "rows": {}}
        for rows, values in by_rows.items():
            median = statistics.median(values)
            base = statistics.median(rates[baseline][rows])
            cpu = cpu_us.get(server, {}).get(rows) or []
            entry["rows"][rows] = {
                "req_per_s": median, "rounds": list(values),
                "vs_baseline": median / base if base else math.nan,
                "cpu_us_per_req": statistics.median(cpu) if cpu else math.nan,
            }  # fmt: skip
        out.append(entry)
    return out


def format_table(summary: list[dict[str, Any]], labels: dict[str, str], baseline: str) -> str:
    """The Markdown table of `summarize`'s rows.

    Example:
        >>> s = summarize({"a": {1: [2.0]}}, {"a": {1: [10.0]}}, "a")
        >>> print(format_table(s, {"a": "A"}, "a").splitlines()[2])
        | A | 2 | 1.00 | 10 |
    """
    rows_list = sorted({r for entry in summary for r in entry["rows"]})
    base = labels.get(baseline, baseline)
    head = ["server"]
    for rows in rows_list:
        noun = "row" if rows == 1 else "rows"
        head += [f"{rows} {noun} req/s", f"÷ {base}"]
    head += [f"CPU µs/req ({r} {'row' if r == 1 else 'rows'})" for r in rows_list]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for entry in summary:
        cells = [labels.get(entry["server"], entry["server"])]
        for rows in rows_list:
            r = entry["rows"].get(rows)
            cells += ["–", "–"] if r is None else [f"{r['req_per_s']:,.0f}",
                                                    f"{r['vs_baseline']:.2f}"]  # fmt: skip
        for rows in rows_list:
            r = entry["rows"].get(rows)
            cpu = math.nan if r is None else r["cpu_us_per_req"]
            cells.append("–" if math.isnan(cpu) else f"{cpu:,.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_bad_table(bad: dict[str, dict[str, str]], labels: dict[str, str]) -> str:
    """The Markdown table of what each server answered to each bad request.

    Example:
        >>> print(format_bad_table({"a": {"NaN": "400"}}, {"a": "A"}).splitlines()[2])
        | A | 400 |
    """
    kinds = list(dict.fromkeys(k for answers in bad.values() for k in answers))
    lines = ["| server | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    for server, answers in bad.items():
        row = [labels.get(server, server)] + [answers.get(k, "–") for k in kinds]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def format_grpc_table(grpc: dict[str, dict[str, Any]], rows: int) -> str:
    """The Markdown table of gRPC against HTTP JSON per server (the no-op: the ceiling).

    Example:
        >>> print(format_grpc_table({"k": {"grpc_64": 30.0, "http_json_64": 10.0,
        ...                                "cpu_us_per_req": 5.0}}, 64).splitlines()[2])
        | k | 30 | 10 | 3.00 | 5 |
    """
    lines = [f"| server | gRPC {rows} rows req/s | HTTP JSON {rows} rows req/s | ÷ | "
             "CPU µs/gRPC call |", "|---|---:|---:|---:|---:|"]  # fmt: skip
    for name, value in grpc.items():
        http = value.get("http_json_64")
        cpu = value.get("cpu_us_per_req", math.nan)
        cells = [name, f"{value['grpc_64']:,.0f}", "–" if http is None else f"{http:,.0f}",
                 "–" if not http else f"{value['grpc_64'] / http:.2f}",
                 "–" if math.isnan(cpu) else f"{cpu:,.0f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(
    summary: list[dict[str, Any]], grpc: dict[str, dict[str, float]], keras_cae: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Issue 21's targets for each keras-cae server: ≥ 1.2× the best peer at 1 and 64
    rows, ≥ 0.7× (1 row) and ≥ 0.85× (64 rows) the floor, gRPC ≥ 2× HTTP JSON at 64 rows.

    Example:
        >>> s = summarize({"k": {1: [12.0]}, "kserve": {1: [10.0]}, "floor": {1: [15.0]}},
        ...               {}, "k")
        >>> t = targets(s, {}, ["k"])["k"]
        >>> t["1 row vs best peer (kserve) >= 1.2"]["met"], t["1 row vs floor >= 0.7"]["met"]
        (True, True)
    """
    median = {e["server"]: {r: v["req_per_s"] for r, v in e["rows"].items()} for e in summary}
    out: dict[str, dict[str, Any]] = {}
    for server in keras_cae:
        found: dict[str, Any] = {}
        for rows, floor_goal in ((1, 0.7), (64, 0.85)):
            ours = median.get(server, {}).get(rows)
            if ours is None:
                continue
            noun = "row" if rows == 1 else "rows"
            peers = {
                p: median[p][rows] for p in PEERS if p != "floor" and rows in median.get(p, {})
            }
            if peers:
                best = max(peers, key=peers.get)
                ratio = ours / peers[best]
                found[f"{rows} {noun} vs best peer ({best}) >= 1.2"] = {
                    "ratio": ratio,
                    "met": ratio >= 1.2,
                }
            if rows in median.get("floor", {}):
                ratio = ours / median["floor"][rows]
                found[f"{rows} {noun} vs floor >= {floor_goal}"] = {
                    "ratio": ratio,
                    "met": ratio >= floor_goal,
                }
        for key, rpc in grpc.items():  # The server's own, and with a second encoder.
            if key != server and not key.startswith(server + " ["):
                continue
            if rpc.get("http_json_64") and rpc.get("grpc_64"):
                ratio = rpc["grpc_64"] / rpc["http_json_64"]
                goal = "gRPC 64 rows vs HTTP JSON 64 rows >= 2" + key[len(server) :]
                found[goal] = {"ratio": ratio, "met": ratio >= 2}
        out[server] = found
    return out


def write_json(path: str, payload: dict[str, Any], overwrite: bool = True) -> None:
    """Writes `payload` as JSON atomically (a temporary file, then a rename).

    Raises:
        FileExistsError: `path` exists and `overwrite` is false.
    """
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"{path} exists (pass overwrite=True to replace it)")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)  # As open() would make it, not mkstemp's 0600.
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(payload, file, indent=2, allow_nan=True)
            file.write("\n")
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


# ------------------------------------------------------------------------------------------
# Venvs and servers.


def venv_python(name: str, venvs: str = VENVS) -> str:
    return os.path.join(venvs, name, "bin", "python")


def ensure_venv(name: str, python: str, venvs: str = VENVS, log: Callable = print) -> str:
    """Makes ``venvs/NAME`` from ``peers/NAME/requirements.txt`` unless it was made from
    the same file already; returns its python."""
    requirements = os.path.join(HERE, name, "requirements.txt")
    with open(requirements, "rb") as file:
        digest = hashlib.sha256(file.read()).hexdigest()
    folder = os.path.join(venvs, name)
    stamp = os.path.join(folder, ".requirements.sha256")
    if os.path.exists(stamp) and open(stamp).read().strip() == digest:
        return venv_python(name, venvs)
    log(f"making {folder} from {requirements} (minutes, once)")
    shutil.rmtree(folder, ignore_errors=True)
    subprocess.run([python, "-m", "venv", folder], check=True)
    subprocess.run([venv_python(name, venvs), "-m", "pip", "install", "-q",
                    "--disable-pip-version-check", "-r", requirements], check=True)  # fmt: skip
    with open(stamp, "w") as file:
        file.write(digest + "\n")
    return venv_python(name, venvs)


_KEY_PACKAGES = {"kserve", "litserve", "nvidia-pytriton", "tritonclient", "bentoml", "uvicorn",
                 "fastapi", "starlette", "pydantic", "numpy", "onnxruntime", "orjson", "uvloop",
                 "httptools", "grpcio", "protobuf"}  # fmt: skip


def venv_versions(python: str) -> dict[str, str]:
    """The versions of the packages that matter here, as installed for `python`."""
    command = [python, "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        return {"error": done.stderr.strip()[-300:]}
    return {p["name"].lower(): p["version"] for p in json.loads(done.stdout)
            if p["name"].lower() in _KEY_PACKAGES}  # fmt: skip


@dataclasses.dataclass
class Server:
    """A running server: its name, process (the root of its tree), ports and log."""

    name: str
    process: subprocess.Popen
    port: int
    log: str
    grpc_port: int | None = None
    model: str = ""  # "" for the benchmark's encoder, " [digits]" for the second one.


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def post(port: int, body: bytes, path: str = f"/v2/models/{NAME}/infer",
         timeout: float = 30) -> tuple[int, bytes]:  # fmt: skip
    """One POST with a JSON content type; returns (status, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", path, body, {"Content-Type": "application/json"})
        reply = connection.getresponse()
        return reply.status, reply.read()
    finally:
        connection.close()


def start(name: str, command: list[str], workdir: str, ready_body: bytes,
          env: dict[str, str] | None = None, grpc_port: int | None = None,
          port: int | None = None, timeout: float = 180, model: str = "") -> Server:  # fmt: skip
    """Starts `command` in its own session and waits until a v2 request gets a 200."""
    log = os.path.join(workdir, f"{name}.log")
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=workdir,
                                   env={**os.environ, **(env or {})},
                                   start_new_session=True)  # fmt: skip
    server = Server(name, process, port or 0, log, grpc_port, model)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited ({process.returncode}):\n{_tail(log)}")
        try:
            if post(server.port, ready_body, timeout=5)[0] == 200:
                return server
        except OSError:
            pass
        time.sleep(0.25)
    stop(server)
    raise RuntimeError(f"{name} was not ready in {timeout:.0f} s:\n{_tail(log)}")


def stop(server: Server, timeout: float = 30) -> None:
    """SIGTERM to the server's process group, SIGKILL after `timeout`."""
    try:
        os.killpg(server.process.pid, signal.SIGTERM)
        server.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait()
    except ProcessLookupError:
        pass


def _tail(path: str, size: int = 3000) -> str:
    with open(path, "rb") as file:
        return file.read()[-size:].decode(errors="replace")


def peer_command(name: str, model: str, port: int) -> tuple[list[str], dict[str, str]]:
    """The command and environment that start peer `name` on `port`."""
    if name == "bentoml":
        bentoml = os.path.join(VENVS, "bentoml", "bin", "bentoml")
        env = {"BENCH_MODEL": model, "BENCH_NAME": NAME, "BENTOML_DO_NOT_TRACK": "true"}
        folder = os.path.join(HERE, "bentoml")
        command = [bentoml, "serve", "service:Encoder", "--working-dir", folder,
                   "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
        return command, env
    script = os.path.join(HERE, name, "server.py")
    return [venv_python(name), script, "--model", model, "--port", str(port), "--name", NAME], {}


def keras_cae_command(binary: str | None, model: str, port: int, grpc_port: int) -> list[str]:
    """`keras-cae serve` (this checkout's by default) with 1 thread, gRPC on, quiet."""
    head = [binary] if binary else [sys.executable, "-m", "keras_cae.cli"]
    return [*head, "serve", model, "--name", NAME, "--port", str(port), "--threads", "1",
            "--grpc-port", str(grpc_port), "--log-level", "warning"]  # fmt: skip


def keras_cae_label(binary: str | None) -> str:
    """``keras-cae`` for this checkout, else ``keras-cae (WORKTREE)`` from the path.

    Example:
        >>> keras_cae_label("/work/wt/h21-dataplane/.venv/bin/keras-cae")
        'keras-cae (h21-dataplane)'
    """
    if binary is None:
        return "keras-cae"
    parts = os.path.abspath(binary).split(os.sep)
    root = parts[-4] if len(parts) >= 4 and parts[-3] == ".venv" else binary
    return f"keras-cae ({root})"


# ------------------------------------------------------------------------------------------
# Load generators.


def wrk_script(body: bytes, path: str, script: str) -> str:
    """A wrk Lua script that POSTs `body` (JSON) to `path`; written to `script`."""
    escaped = "".join(chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\{b:03d}"
                      for b in body)  # fmt: skip
    with open(script, "w") as file:
        file.write(f'wrk.method = "POST"\nwrk.path = "{path}"\n'
                   'wrk.headers["Content-Type"] = "application/json"\n'
                   f'wrk.body = "{escaped}"\n')  # fmt: skip
    return script


def parse_wrk(text: str) -> dict[str, Any]:
    """Requests, req/s and errors from wrk's output.

    Example:
        >>> parse_wrk("  1234 requests in 10.00s, 1.2MB read\\nRequests/sec:    123.40\\n")
        {'requests': 1234, 'req_per_s': 123.4, 'errors': ''}
    """
    requests = re.search(r"(\d+) requests in", text)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if requests is None or rate is None:
        raise ValueError(f"not wrk's output: {text[:500]!r}")
    errors = [line.strip() for line in text.splitlines()
              if "Non-2xx" in line or "Socket errors" in line]  # fmt: skip
    return {"requests": int(requests.group(1)), "req_per_s": float(rate.group(1)),
            "errors": "; ".join(errors)}  # fmt: skip


def parse_h2load(text: str) -> dict[str, Any]:
    """Requests, req/s and errors from h2load's output.

    Example:
        >>> parse_h2load("finished in 10.00s, 2000.50 req/s, 1MB/s\\n"
        ...              "requests: 20005 total, 20005 started, 20005 done, 20005 succeeded, "
        ...              "0 failed, 0 errored, 0 timeout\\n")
        {'requests': 20005, 'req_per_s': 2000.5, 'errors': ''}
    """
    rate = re.search(r"finished in [\d.]+s, ([\d.]+) req/s", text)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, "
                     r"(\d+) failed, (\d+) errored", text)  # fmt: skip
    if rate is None or done is None:
        raise ValueError(f"not h2load's output: {text[:500]!r}")
    failed, errored = int(done.group(3)), int(done.group(4))
    errors = f"{failed} failed, {errored} errored" if failed or errored else ""
    return {"requests": int(done.group(2)), "req_per_s": float(rate.group(1)), "errors": errors}


def measure(command: list[str], parse: Callable[[str], dict[str, Any]],
            root: int | None) -> dict[str, Any]:  # fmt: skip
    """Runs a load generator; adds the CPU µs per request of `root`'s process tree."""
    before = tree_cpu_seconds(root) if root else None
    done = subprocess.run(command, capture_output=True, text=True)
    after = tree_cpu_seconds(root) if root else None
    if done.returncode:
        raise RuntimeError(f"{command[0]} failed ({done.returncode}): {done.stderr[-1000:]}")
    result = parse(done.stdout)
    if root and result["requests"]:
        result["cpu_us_per_req"] = (after - before) / result["requests"] * 1e6
    return result


def wrk_command(script: str, port: int, seconds: int, connections: int) -> list[str]:
    return ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", script,
            f"http://127.0.0.1:{port}"]  # fmt: skip


def h2load_command(data: str, port: int, seconds: int, connections: int) -> list[str]:
    return ["h2load", "-t1", f"-c{connections}", "-m1", f"-D{seconds}", "-d", data, "-H",
            "content-type: application/grpc", "-H", "te: trailers",
            f"http://127.0.0.1:{port}{GRPC_INFER}"]  # fmt: skip


# ------------------------------------------------------------------------------------------
# The run.


def grpc_request(x: np.ndarray) -> bytes:
    """A serialized ModelInferRequest with `x` as raw contents (as Triton's client sends)."""
    from keras_cae.export.serving._proto import grpc_predict_v2_pb2 as pb

    request = pb.ModelInferRequest(model_name=NAME)
    request.inputs.add(name="x", datatype="FP32", shape=x.shape)
    request.raw_input_contents.append(np.ascontiguousarray(x, dtype="<f4").tobytes())
    return request.SerializeToString()


def grpc_answer(port: int, x: np.ndarray) -> np.ndarray:
    import grpc

    from keras_cae.export.serving._proto import grpc_predict_v2_pb2 as pb

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = pb.ModelInferResponse.FromString(
            channel.unary_unary(GRPC_INFER)(grpc_request(x), timeout=30)
        )
    shape = list(reply.outputs[0].shape)
    return np.frombuffer(reply.raw_output_contents[0], dtype="<f4").reshape(shape)


def make_encoder(mnist: str, cache: str) -> str:
    """The 784→256→64 MNIST encoder (1 epoch on 2,000 training images; the weights do
    not matter here), made once with ``keras-cae train`` and ``export`` into `cache`."""
    path = os.path.join(cache, "exported", "encoder.onnx")
    if os.path.exists(path):
        return path
    os.makedirs(cache, exist_ok=True)
    with np.load(mnist) as data:
        x = (data["x_train"][:2000].reshape(-1, 784) / 255).astype(np.float32)
    np.save(os.path.join(cache, "rows.npy"), x)
    return _train_and_export(
        cache, ["--data", os.path.join(cache, "rows.npy"), "--hidden-units", "256,64",
                "--epochs", "1"],
    )  # fmt: skip


def make_digits_encoder(cache: str) -> str:
    """The 64 → 64 digits encoder (``keras-cae train --epochs 2`` on the bundled digits,
    then ``export``), made once into `cache`: the encoder of docs/serving.md's earlier
    gRPC-vs-JSON figures."""
    path = os.path.join(cache, "exported", "encoder.onnx")
    if os.path.exists(path):
        return path
    return _train_and_export(cache, ["--epochs", "2"])


def _train_and_export(cache: str, train_args: list[str]) -> str:
    """``keras-cae train TRAIN_ARGS`` into ``cache/run``, then ``export`` its model as
    ONNX into ``cache/exported``; returns the encoder's path."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    cli = [sys.executable, "-m", "keras_cae.cli"]
    for command in (
        [*cli, "train", *train_args, "--out", os.path.join(cache, "run"), "--overwrite",
         "--quiet"],
        [*cli, "export", os.path.join(cache, "run", "model.keras"), "--out",
         os.path.join(cache, "exported"), "--format", "onnx"],
    ):  # fmt: skip
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return os.path.join(cache, "exported", "encoder.onnx")


def request_rows(features: int, mnist: str | None, count: int) -> np.ndarray:
    """MNIST test images scaled to [0, 1] where the model takes 784 features and the file
    is there, else seeded uniform rows."""
    if features == 784 and mnist and os.path.exists(mnist):
        with np.load(mnist) as data:
            return (data["x_test"][:count].reshape(-1, 784) / 255).astype(np.float32)
    return np.random.default_rng(0).random((count, features), dtype=np.float32)


def answer_of(status: int, body: bytes) -> str:
    """A short cell for the bad-request table: the status and, for a 200, what the
    answer's numbers hold where they are not all numbers (NaN, null).

    Example:
        >>> answer_of(200, b'{"outputs":[{"data":[NaN, 1.0]}]}'), answer_of(422, b"{}")
        ('200, answers NaN', '422')
    """
    if status != 200:
        return str(status)
    try:
        data = np.asarray(json.loads(body)["outputs"][0]["data"], dtype=object).ravel()
    except (ValueError, KeyError, IndexError, TypeError):
        return "200, not a v2 answer"
    found = []
    if any(v is None for v in data):
        found.append("null")
    if any(isinstance(v, float) and math.isnan(v) for v in data):
        found.append("NaN")
    return "200, answers " + " and ".join(found) if found else "200"


def run_peers(args: Any) -> dict[str, Any]:
    """The peers benchmark (``benchmarks/serve.py --peers``); returns what it wrote."""
    import onnxruntime as ort

    for tool in ("wrk", "h2load"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (apt-get install wrk nghttp2-client)")
    workdir = tempfile.mkdtemp(prefix="bench-peers-")
    load_before = os.getloadavg()
    mnist = args.mnist
    model = args.model or make_encoder(mnist, os.path.join(VENVS, "_encoder"))
    model = os.path.abspath(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    features = int(session.get_inputs()[0].shape[1])
    x_all = request_rows(features, mnist, max(args.rows))
    print(f"encoder: {model}, {features} features; {workdir}")

    peers = [p for p in args.peer_names if p in PEERS]
    base_python = getattr(sys, "_base_executable", sys.executable)
    for peer in peers:
        ensure_venv(peer, base_python)

    # The gRPC-vs-JSON comparison also runs on a second encoder (default: the 64-feature
    # digits encoder of docs/serving.md's earlier gRPC figures), served by keras-cae only.
    models = {"": (model, session, x_all)}
    if args.grpc_model != "none":
        second = args.grpc_model or make_digits_encoder(os.path.join(VENVS, "_digits"))
        second_session = ort.InferenceSession(
            os.path.abspath(second), options, providers=["CPUExecutionProvider"]
        )
        width = int(second_session.get_inputs()[0].shape[1])
        models[" [digits]"] = (os.path.abspath(second), second_session,
                               request_rows(width, None, max(args.rows)))  # fmt: skip
        print(f"gRPC comparison also on: {second}, {width} features")

    bins = args.keras_cae_bin or [None]
    servers: dict[str, Server] = {}
    labels = dict(LABELS)
    keras_names = []
    grpc_rows = 64 if 64 in args.rows else max(args.rows)
    try:
        for binary in bins:
            label = keras_cae_label(binary)
            keras_names.append(label)
            labels[label] = label + " serve"
            for suffix, (path, _, x) in models.items():
                port, grpc_port = free_port(), free_port()
                print(f"starting {label}{suffix}")
                servers[label + suffix] = start(
                    label + suffix, keras_cae_command(binary, path, port, grpc_port), workdir,
                    v2_body(x[:1]), grpc_port=grpc_port, port=port, model=suffix,
                )  # fmt: skip
        not_started = {}
        for peer in peers:  # A peer that does not start is left out, and said so.
            port = free_port()
            command, env = peer_command(peer, model, port)
            print(f"starting {peer}")
            try:
                servers[peer] = start(peer, command, workdir, v2_body(x_all[:1]), env=env,
                                      port=port)  # fmt: skip
            except RuntimeError as error:
                not_started[peer] = str(error)[-2000:]
                print(f"{peer} left out: {str(error)[-500:]}")
        noop_port = free_port()
        noop = subprocess.Popen([sys.executable, os.path.join(BENCHMARKS, "serve.py"),
                                 "--bare-grpc", str(noop_port)], start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)  # fmt: skip
        for suffix in models:
            servers[NOOP + suffix] = Server(NOOP + suffix, noop, 0, "", noop_port, suffix)
        _wait_port(noop_port)

        bodies, expected, scripts, grpc_data = {}, {}, {}, {}
        for suffix, (_, model_session, x) in models.items():
            name = model_session.get_inputs()[0].name
            for rows in args.rows:
                bodies[suffix, rows] = v2_body(x[:rows])
                expected[suffix, rows] = model_session.run(None, {name: x[:rows]})[0]
                scripts[suffix, rows] = wrk_script(
                    bodies[suffix, rows], f"/v2/models/{NAME}/infer",
                    os.path.join(workdir, f"v2{suffix.strip(' []')}-{rows}.lua"),
                )  # fmt: skip
            message = grpc_request(x[:grpc_rows])
            grpc_data[suffix] = os.path.join(workdir, f"grpc{suffix.strip(' []')}.bin")
            with open(grpc_data[suffix], "wb") as file:  # gRPC framing: flag, length, message.
                file.write(b"\0" + len(message).to_bytes(4, "big") + message)
        exact = check_all(servers, bodies, expected, models, grpc_rows)
        print("bit-exact before timing: " + ", ".join(f"{k}: {v}" for k, v in exact.items()))

        configs: list[tuple[str, str, int]] = []  # (server, "http"|"grpc", rows)
        for name, server in servers.items():
            if name.startswith(NOOP):
                configs.append((name, "grpc", grpc_rows))
                continue
            if server.model:  # The second encoder: the gRPC comparison only.
                configs += [(name, "http", grpc_rows), (name, "grpc", grpc_rows)]
                continue
            configs += [(name, "http", rows) for rows in args.rows]
            if server.grpc_port:
                configs.append((name, "grpc", grpc_rows))

        def one(config: tuple[str, str, int], seconds: int) -> dict[str, Any]:
            name, kind, rows = config
            server = servers[name]
            if kind == "http":
                script = scripts[server.model, rows]
                command = wrk_command(script, server.port, seconds, args.connections)
                return measure(command, parse_wrk, server.process.pid)
            data = grpc_data[server.model]
            command = h2load_command(data, server.grpc_port, seconds, args.connections)
            return measure(command, parse_h2load, server.process.pid)

        for config in configs:  # Warm-up.
            one(config, 1)
        results: dict[tuple[str, str, int], list[dict[str, Any]]] = {c: [] for c in configs}
        for round_ in range(args.rounds):
            for config in configs:
                try:
                    result = one(config, args.duration)
                except (RuntimeError, ValueError) as error:  # The load generator failed, or
                    # the server is gone: nothing served.
                    result = {"requests": 0, "req_per_s": 0.0, "errors": str(error)[-500:]}
                results[config].append(result)
                if result["errors"]:
                    print(f"  {config}: {result['errors']}")
            print(f"round {round_ + 1} of {args.rounds} done")
        after = check_all(servers, bodies, expected, models, grpc_rows, strict=False)
        print("bit-exact after timing: " + ", ".join(f"{k}: {v}" for k, v in after.items()))

        bad = {}
        for name, server in servers.items():
            if name.startswith(NOOP) or server.model:
                continue
            bad[name] = probe_bad(server, bad_requests(features), v2_body(x_all[:1]))
    finally:
        for server in servers.values():
            stop(server)

    main_servers = [n for n, s in servers.items() if not s.model and not n.startswith(NOOP)]
    http_rates = {n: {r: [x["req_per_s"] for x in results[(n, "http", r)]] for r in args.rows}
                  for n in main_servers}  # fmt: skip
    http_cpu = {n: {r: [x["cpu_us_per_req"] for x in results[(n, "http", r)]
                        if "cpu_us_per_req" in x] for r in args.rows}
                for n in http_rates}  # fmt: skip
    summary = summarize(http_rates, http_cpu, keras_names[0])
    grpc: dict[str, dict[str, Any]] = {}
    for name in servers:
        if (name, "grpc", grpc_rows) not in results:
            continue
        runs = results[(name, "grpc", grpc_rows)]
        cpu = [x["cpu_us_per_req"] for x in runs if "cpu_us_per_req" in x]
        grpc[name] = {"grpc_64": statistics.median(x["req_per_s"] for x in runs),
                      "rounds": [x["req_per_s"] for x in runs],
                      "cpu_us_per_req": statistics.median(cpu) if cpu else math.nan}  # fmt: skip
        if (name, "http", grpc_rows) in results:
            http = [x["req_per_s"] for x in results[(name, "http", grpc_rows)]]
            grpc[name]["http_json_64"] = statistics.median(http)
            grpc[name]["http_rounds"] = http
    goals = targets(summary, grpc, keras_names)
    errors = {f"{n} {k} {r}": [x["errors"] for x in v if x["errors"]]
              for (n, k, r), v in results.items() if any(x["errors"] for x in v)}  # fmt: skip

    table = format_table(summary, labels, keras_names[0])
    bad_table = format_bad_table(bad, labels)
    print()
    print(table)
    print()
    grpc_table = format_grpc_table(grpc, grpc_rows)
    print(f"gRPC (h2load -t1 -c{args.connections} -m1, raw contents) against HTTP JSON "
          f"(wrk -t1 -c{args.connections}), {grpc_rows} rows, median req/s:")  # fmt: skip
    print(grpc_table)
    print()
    print(bad_table)
    print()
    for server, found in goals.items():
        for goal, value in found.items():
            print(f"target {server}: {goal}: {value['ratio']:.2f} "
                  f"{'met' if value['met'] else 'MISSED'}")  # fmt: skip
    if errors:
        print(f"load generator errors: {errors}")
    versions = {"this process": venv_versions(sys.executable), "python": platform.python_version()}
    versions.update({peer: venv_versions(venv_python(peer)) for peer in peers})
    for binary in [*(args.keras_cae_bin or ()), None]:
        label = keras_cae_label(binary)
        if binary is not None:
            versions[label] = venv_versions(os.path.join(os.path.dirname(binary), "python"))
        # The checkout it runs from (the venv's parent folder; this one's for the default).
        folder = os.path.dirname(BENCHMARKS)
        if binary is not None:
            folder = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(binary))))
        command = ["git", "-C", folder, "log", "-1", "--format=%h %ad %s",
                   "--date=format:%Y-%m-%d %H:%M"]  # fmt: skip
        head = subprocess.run(command, capture_output=True, text=True)
        versions.setdefault("commits", {})[label] = head.stdout.strip() or "unknown"
    triton_log = os.path.join(workdir, "triton.log")
    if os.path.exists(triton_log):
        found = re.search(r"server_version\s*\|\s*([\d.]+)", open(triton_log).read())
        versions["tritonserver"] = found.group(1) if found else "unknown"
    payload = {
        "benchmark": "serve --peers", "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "processor": _cpu_model(), "load_average_before": load_before,
                    "load_average_after": os.getloadavg(),
                    "shared": True},
        "model": model, "features": features, "rows": args.rows, "rounds": args.rounds,
        "duration_s": args.duration, "connections": args.connections,
        "client": f"wrk -t1 -c{args.connections} -d{args.duration}s; "
                  f"h2load -t1 -c{args.connections} -m1 -D{args.duration}",
        "versions": versions, "labels": {n: labels.get(n, n) for n in servers},
        "bit_exact": {"before": exact, "after": after},
        "http": summary, "grpc": grpc, "bad_requests": bad, "targets": goals,
        "load_generator_errors": errors, "not_started": not_started,
        "table_markdown": table, "grpc_markdown": grpc_table,
        "bad_requests_markdown": bad_table,
    }  # fmt: skip
    write_json(args.out, payload)
    print(f"wrote {args.out}")
    return payload


def check_all(servers: dict[str, Server], bodies: dict[tuple[str, int], bytes],
              expected: dict[tuple[str, int], np.ndarray], models: dict[str, tuple],
              grpc_rows: int, strict: bool = True) -> dict[str, str]:  # fmt: skip
    """Every server's answer to every timed request (and keras-cae's gRPC answer) against
    onnxruntime in this process, bit for bit; raises AssertionError naming the first
    that differs, or with `strict` false, says so in the server's entry."""
    out = {}
    for name, server in servers.items():
        if name.startswith(NOOP):
            continue
        if not strict:
            try:
                out.update(check_all({name: server}, bodies, expected, models, grpc_rows))
            except (AssertionError, OSError, ValueError) as error:
                out[name] = f"FAILED: {error}"[:500]
            continue
        for (model, rows), body in bodies.items():
            if model != server.model:
                continue
            status, reply = post(server.port, body)
            if status != 200:
                raise AssertionError(f"{name}, {rows} rows: HTTP {status} {reply[:300]!r}")
            if not bit_exact(decode_v2(reply), expected[model, rows]):
                raise AssertionError(f"{name}, {rows} rows: differs from onnxruntime")
        if server.grpc_port:
            x = models[server.model][2][:grpc_rows]
            if not bit_exact(grpc_answer(server.grpc_port, x), expected[server.model, grpc_rows]):
                raise AssertionError(f"{name} gRPC, {grpc_rows} rows: differs from onnxruntime")
        out[name] = "equal"
    return out


def probe_bad(server: Server, requests: list[tuple[str, bytes]], good: bytes) -> dict[str, str]:
    """What `server` answers to each bad request, and whether it still answers `good`."""
    out = {}
    for kind, body in requests:
        try:
            status, reply = post(server.port, body, timeout=30)
            out[kind] = answer_of(status, reply)
        except OSError as error:
            out[kind] = f"no answer ({type(error).__name__})"
    try:
        out["then a good request"] = str(post(server.port, good, timeout=30)[0])
    except OSError as error:
        out["then a good request"] = f"no answer ({type(error).__name__}): server down"
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as file:
            return next(x.split(":", 1)[1].strip() for x in file if x.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def _wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:.0f} s")
