"""The serving path in process, before and after the dataplane: median µs per request.

Each request goes through the real app of `keras_cae.export.serving` as a server
would call it, without sockets: the ASGI app called with a prepared scope and body
(v2 JSON, v2 with Triton's binary extension), or the gRPC ``ModelInfer`` handler
called with the serialized message (parsed and the reply serialized, as `grpc.aio`
would). "before" is the code at `--before` (default: main before the dataplane,
c0dcb76) and "after" the code at `--after` (default: HEAD), each staged from git into
a temporary folder and imported from there in a process of its own. Both serve the
same 784 → 256 → 64 sigmoid MLP (made here with `onnx`, seed 0; onnxruntime, 1
intra-op thread) and answer the same requests: real MNIST rows scaled to [0, 1]
(``../shared/data/mnist.npz``; random rows if absent). Every answer is checked
against `OnnxEncoder.encode`.

Both processes stay up; for `--rounds` rounds, each configuration runs one short
block of requests in one and then in the other (which goes first alternates), so that
both see the same machine load; the table gives, per configuration, the median of the
blocks' medians, of the process's CPU time per request (all its threads: what the
request costs, whatever else the machine runs) and of the wall time (which, on a
shared machine, also holds the time the process waited for a CPU). Results go to
``benchmarks/results/dataplane.json``.

What should move (written before measuring; the issue's in-process profile at 64 rows:
a per-element type scan 0.74 ms, the worker-thread hop 0.33 ms against a 0.13 ms encode,
pydantic 0.11 ms):

- v2 JSON, 64 rows: the type scan becomes one numpy conversion plus a byte search,
  pydantic no longer walks the 50,176 values, and the encode stays on the loop
  (its calibrated cost is far below the 1 ms budget): about -1.2 ms, to ~0.6x.
- v2 binary, 64 rows: only the thread hop goes: about -0.3 ms, to ~0.5x.
- gRPC typed, 64 rows: no more protobuf -> list -> JSON dict -> pydantic -> scan ->
  float64 -> float32; ``np.asarray`` on the repeated field: to ~0.3x.
- 1 row (any): the per-request overhead is about the same; within ±15 %.

The last row, ``encode-only``, times `OnnxEncoder.encode` alone on one row, as each
version's server calls it: the part of a difference that is the runtime's, not the
serving code's.

Usage::

    python benchmarks/dataplane.py                 # 30 rounds
    python benchmarks/dataplane.py --quick         # 8 rounds
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
MNIST = os.path.join(ROOT, "..", "shared", "data", "mnist.npz")
CONFIGS = [("v2-json", 1), ("v2-json", 64), ("v2-binary", 1), ("v2-binary", 64),
           ("grpc-typed", 1), ("grpc-typed", 64), ("encode-only", 1)]  # fmt: skip
NAME = "enc"


def make_model(path: str) -> None:
    """A 784 -> 256 -> 64 sigmoid MLP, dynamic batch, opset 17."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = (rng.normal(size=(784, 256)) / 28).astype(np.float32)
    w2 = (rng.normal(size=(256, 64)) / 16).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W1"], ["h"]),
         helper.make_node("Sigmoid", ["h"], ["a"]),
         helper.make_node("MatMul", ["a", "W2"], ["z"]),
         helper.make_node("Sigmoid", ["z"], ["code"])],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 784])],
        [helper.make_tensor_value_info("code", TensorProto.FLOAT, ["batch", 64])],
        initializer=[numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def rows(count: int) -> np.ndarray:
    if os.path.exists(MNIST):
        with np.load(MNIST) as data:
            x = data["x_test"][:count].reshape(count, -1)
        return (x / 255.0).astype(np.float32)
    return np.random.default_rng(1).random((count, 784), dtype=np.float32)


# ------------------------------------------------------------------------------------------
# The child: one code version, in process.


def _asgi_call(app: Any, path: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> Any:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"content-length", b"%d" % len(body)), *headers],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000),
    }  # fmt: skip
    message = {"type": "http.request", "body": body, "more_body": False}

    async def call() -> tuple[int, bytes, dict[bytes, bytes]]:
        out: dict[str, Any] = {"body": b""}

        async def receive() -> dict[str, Any]:
            return message

        async def send(event: dict[str, Any]) -> None:
            if event["type"] == "http.response.start":
                out["status"], out["headers"] = event["status"], dict(event["headers"])
            else:
                out["body"] += event.get("body", b"")

        await app(scope, receive, send)
        return out["status"], out["body"], out["headers"]

    return call


def child(args: argparse.Namespace) -> None:
    from keras_cae.export.runtime import OnnxEncoder
    from keras_cae.export.serving import create_app, kserve_v2_grpc
    from keras_cae.export.serving._proto import grpc_predict_v2_pb2 as pb

    app = create_app(args.model, name=NAME, max_batch=1024)
    gc.freeze()  # As `keras-cae serve` does once the app is built.
    state = app.state
    target = getattr(state, "dataplane", None) or state.v2  # After, or before.
    handlers = kserve_v2_grpc.GrpcHandlers(target)
    reference = OnnxEncoder(args.model)
    path = f"/v2/models/{NAME}/infer"
    calls: dict[str, Any] = {}
    for protocol, count in CONFIGS:
        x = rows(count)
        expected = reference.encode(x)
        key = f"{protocol}/{count}"
        if protocol == "v2-json":
            body = json.dumps({"inputs": [{"name": "x", "shape": [count, 784], "datatype": "FP32",
                                           "data": x.ravel().tolist()}]}).encode()  # fmt: skip
            calls[key] = (_asgi_call(app, path, body, []), expected, "json")
        elif protocol == "v2-binary":
            header = json.dumps({
                "inputs": [{"name": "x", "shape": [count, 784], "datatype": "FP32",
                            "parameters": {"binary_data_size": x.nbytes}}],
                "outputs": [{"name": "code", "parameters": {"binary_data": True}}],
            }).encode()  # fmt: skip
            length = [(b"inference-header-content-length", b"%d" % len(header))]
            calls[key] = (_asgi_call(app, path, header + x.tobytes(), length), expected, "binary")
        elif protocol == "encode-only":  # The runtime alone, as the server calls it.
            encoder = (
                state.dataplane.encoder if hasattr(state, "dataplane") else state.service.encoder
            )

            async def encode_only(x: np.ndarray = x, encoder: Any = encoder) -> Any:
                return encoder.encode(x)

            calls[key] = (encode_only, expected, "array")
        else:
            request = pb.ModelInferRequest(model_name=NAME)
            tensor = request.inputs.add(name="x", datatype="FP32", shape=x.shape)
            tensor.contents.fp32_contents.extend(x.ravel().tolist())
            data = request.SerializeToString()

            async def grpc_call(data: bytes = data) -> Any:
                message = pb.ModelInferRequest.FromString(data)
                return (await handlers.model_infer(message)).SerializeToString()

            calls[key] = (grpc_call, expected, "grpc")

    async def verify() -> None:
        for key, (call, expected, kind) in calls.items():
            answer = await call()
            if kind == "grpc":
                reply = pb.ModelInferResponse.FromString(answer)
                codes = np.asarray(reply.outputs[0].contents.fp32_contents, np.float32)
            elif kind == "array":
                codes = answer.ravel()
            elif kind == "json":
                assert answer[0] == 200, answer[1][:300]
                codes = np.asarray(json.loads(answer[1])["outputs"][0]["data"], np.float32)
            else:
                assert answer[0] == 200, answer[1][:300]
                length = int(answer[2][b"inference-header-content-length"])
                codes = np.frombuffer(answer[1][length:], "<f4")
            if not np.array_equal(codes, expected.ravel()):
                raise AssertionError(f"{key}: codes differ from OnnxEncoder.encode")
            for _ in range(20):  # Warm-up.
                await call()

    async def block(key: str, count: int) -> tuple[float, float]:
        call = calls[key][0]
        wall, cpu = [], []
        for _ in range(count):
            start, start_cpu = time.perf_counter(), time.process_time()
            await call()
            cpu.append(time.process_time() - start_cpu)
            wall.append(time.perf_counter() - start)
        return statistics.median(wall) * 1e6, statistics.median(cpu) * 1e6

    try:
        import uvloop

        loop = uvloop.new_event_loop()  # As uvicorn runs.
    except ImportError:
        loop = asyncio.new_event_loop()
    import keras_cae.export.serving as serving

    loop.run_until_complete(verify())
    print(json.dumps({"source": serving.__file__}), flush=True)
    for line in sys.stdin:  # "key count": one timed block, answered with its medians.
        key, count = line.split()
        print(json.dumps(loop.run_until_complete(block(key, int(count)))), flush=True)


# ------------------------------------------------------------------------------------------
# The parent: stage "before", alternate the two, report.


def stage(ref: str, folder: str) -> str:
    """`ref`'s `keras_cae` with `export/` as `keras_cae/export`, importable from the
    returned folder (made in `folder`)."""
    folder = os.path.join(folder, ref.replace("/", "_"))
    os.makedirs(folder)
    archive = os.path.join(folder, "src.tar")
    with open(archive, "wb") as out:
        subprocess.run(["git", "-C", ROOT, "archive", ref, "keras_cae", "export"], stdout=out,
                       check=True)  # fmt: skip
    source = os.path.join(folder, "src")
    with tarfile.open(archive) as tar:
        tar.extractall(source, filter="data")
    staged = os.path.join(folder, "staged")
    os.makedirs(staged)
    os.rename(os.path.join(source, "keras_cae"), os.path.join(staged, "keras_cae"))
    os.rename(os.path.join(source, "export"), os.path.join(staged, "keras_cae", "export"))
    return staged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", default="c0dcb76", help="git ref of the 'before' code")
    parser.add_argument("--after", default="HEAD", help="git ref of the 'after' code")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--iterations", type=int, default=200, help="requests per 1-row block")
    parser.add_argument("--quick", action="store_true", help="fewer requests")
    parser.add_argument("--out", default=os.path.join(RESULTS, "dataplane.json"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.quick:
        args.rounds = 8
    with tempfile.TemporaryDirectory() as folder:
        model = os.path.join(folder, "encoder.onnx")
        make_model(model)
        staged = {"before": stage(args.before, folder), "after": stage(args.after, folder)}
        command = [sys.executable, os.path.abspath(__file__), "--child", "--model", model]
        children = {}
        for version in ("before", "after"):
            env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": staged[version]}
            child_process = subprocess.Popen(
                command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
            ready = child_process.stdout.readline()  # type: ignore[union-attr]
            if not ready:
                raise SystemExit(f"{version} failed to start")
            source = json.loads(ready)["source"]
            if not source.startswith(staged[version]):
                raise SystemExit(f"{version} imported the wrong code: {source}")
            children[version] = child_process
        runs: dict[str, dict[str, list[list[float]]]] = {"before": {}, "after": {}}
        try:
            for round_ in range(args.rounds):
                # Short blocks, the two versions back to back (in turn first), so that
                # both see the same load on a shared machine.
                order = ("before", "after") if round_ % 2 == 0 else ("after", "before")
                for protocol, count in CONFIGS:
                    key = f"{protocol}/{count}"
                    requests = args.iterations if count == 1 else max(args.iterations // 8, 5)
                    for version in order:
                        process = children[version]
                        process.stdin.write(f"{key} {requests}\n")  # type: ignore[union-attr]
                        process.stdin.flush()  # type: ignore[union-attr]
                        answer = process.stdout.readline()  # type: ignore[union-attr]
                        runs[version].setdefault(key, []).append(json.loads(answer))
                print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
        finally:
            for process in children.values():
                process.stdin.close()  # type: ignore[union-attr]
                process.wait()
    table = []
    print(f"\n{'configuration':<16}{'CPU µs':>20}{'':>8}{'wall µs':>20}")
    print(f"{'':<16}{'before':>10}{'after':>10}{'ratio':>8}{'before':>10}{'after':>10}{'ratio':>8}")
    for protocol, count in CONFIGS:
        key = f"{protocol}/{count}"
        row: dict[str, Any] = {"protocol": protocol, "rows": count}
        line = f"{key:<16}"
        for index, measure in ((1, "cpu"), (0, "wall")):
            before = statistics.median(block[index] for block in runs["before"][key])
            after = statistics.median(block[index] for block in runs["after"][key])
            row.update({f"{measure}_before_us": round(before, 1),
                        f"{measure}_after_us": round(after, 1),
                        f"{measure}_ratio": round(after / before, 3)})  # fmt: skip
            line += f"{before:>10.1f}{after:>10.1f}{after / before:>8.2f}"
        table.append(row)
        print(line)
    payload = {
        "benchmark": "dataplane", "before": args.before, "rounds": args.rounds,
        "after": subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", args.after],
                                capture_output=True, text=True).stdout.strip(),
        "requests_per_block_1_row": args.iterations,
        "model": "784-256-64 sigmoid MLP (onnx, seed 0)",
        "data": "mnist x_test / 255" if os.path.exists(MNIST) else "uniform random",
        "python": sys.version.split()[0], "cpus": os.cpu_count(), "table": table, "runs": runs,
    }  # fmt: skip
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    staging = args.out + ".tmp"
    with open(staging, "w") as stream:
        json.dump(payload, stream, indent=2)
    os.replace(staging, args.out)
    print(f"\nwritten: {os.path.relpath(args.out, ROOT)}")


if __name__ == "__main__":
    main()
