"""`keras-cae encode` on streamed shards: peak resident memory against data size, and
rows/s against `OnnxEncoder.encode` on the same rows held in memory.

Writes synthetic float32 `.npy` shards (uniform [0, 1), 784 features, as
`streaming_memory.py` does for training) and a Dense encoder 784 → 64 (sigmoid) as an
ONNX graph (`onnx.helper`; the graph `keras-cae export` writes for a Dense CAE has the
same MatMul, Add and Sigmoid), then:

* **memory**: runs ``keras-cae encode ENCODER DIR --out CODES`` on each data size in a
  fresh process, which reports its own peak RSS (``VmHWM``; `streaming_memory.py`'s
  ``ru_maxrss`` also counts the parent's RSS at fork). Target: flat in the data size.
* **throughput**: on the small set, times `keras_cae.export.sharded.encode_shards` (memory-mapped
  blocks, codes written to disk) and `OnnxEncoder.encode` on the same rows as one
  in-memory array, alternately, `--rounds` times each; reports the median of the
  per-round ratios. Target: ≥ 0.8×.

The shards are deleted afterwards. Check the free disk space first.

Usage::

    python benchmarks/encode_sharded.py                        # 0.25 GB and 1 GB
    python benchmarks/encode_sharded.py --sizes-gb 0.25,1,4     # with the 4 GB set
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from streaming_memory import write_shards  # noqa: E402

from keras_cae._io import atomic_write_json  # noqa: E402

RESULTS = os.path.join(HERE, "results", "encode_sharded.json")
# The child's own peak, VmHWM of its address space: `getrusage`'s ru_maxrss survives
# fork and exec on Linux, so it would report the parent's RSS when that is larger.
CHILD = (
    "import sys\n"
    "from keras_cae import cli\n"
    "code = cli.main(sys.argv[1:])\n"
    "with open('/proc/self/status') as status:\n"
    "    peak = next(line.split()[1] for line in status if line.startswith('VmHWM:'))\n"
    "print('PEAK_RSS_KB', peak, flush=True)\n"
    "sys.exit(code)\n"
)


def write_encoder(path: str, features: int, code: int, seed: int = 0) -> None:
    """A Dense sigmoid encoder ``features -> code`` as ONNX, like a Dense CAE's export."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = (rng.normal(size=(features, code)) / np.sqrt(features)).astype(np.float32)
    b = np.zeros(code, np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["pre"]),
            helper.make_node("Sigmoid", ["pre"], ["code"]),
        ],
        "encoder",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("code", TensorProto.FLOAT, ["batch", code])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


def run_encode(encoder: str, data: str, out: str, timeout: int) -> dict[str, Any]:
    """`keras-cae encode` in a fresh process; its peak RSS and wall time."""
    command = [sys.executable, "-c", CHILD, "encode", encoder, data, "--out", out]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"encoding {data} failed:\n{done.stderr[-3000:]}")
    peak_kb = next(
        int(line.split()[1]) for line in done.stdout.splitlines() if line.startswith("PEAK_RSS_KB")
    )
    with open(os.path.join(out, "manifest.json")) as stream:
        rows = json.load(stream)["num_rows"]
    return {
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "wall_seconds": round(seconds, 2),
        "rows": rows,
    }


def throughput(encoder_path: str, data: str, root: str, rounds: int) -> dict[str, Any]:
    """Rows/s of the streamed sharded encode and of the in-memory encode, alternately."""
    from keras_cae.export.runtime import OnnxEncoder
    from keras_cae.export.sharded import encode_shards

    # As `keras-cae encode` builds them: on shards, the reader checks finiteness.
    encoder = OnnxEncoder(encoder_path)
    unchecked = OnnxEncoder(encoder_path, check_finite=False)
    names = sorted(os.listdir(data))
    x = np.concatenate([np.load(os.path.join(data, name)) for name in names])
    streamed, in_memory, ratios = [], [], []
    reference = None
    for index in range(rounds):
        out = os.path.join(root, f"codes-{index}")
        started = time.perf_counter()
        encode_shards(unchecked, data, out)
        streamed.append(time.perf_counter() - started)
        started = time.perf_counter()
        codes = encoder.encode(x)
        in_memory.append(time.perf_counter() - started)
        ratios.append(in_memory[-1] / streamed[-1])
        if reference is None:  # The two paths give the same codes, bit for bit.
            written = np.concatenate([np.load(os.path.join(out, name)) for name in names])
            reference = bool(np.array_equal(written, codes))
        shutil.rmtree(out)
    rows = len(x)
    return {
        "rows": rows,
        "rounds": rounds,
        "streamed_rows_per_s": round(rows / statistics.median(streamed)),
        "in_memory_rows_per_s": round(rows / statistics.median(in_memory)),
        "median_ratio": round(statistics.median(ratios), 3),
        "ratios": [round(r, 3) for r in ratios],
        "codes_equal": reference,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes-gb", default="0.25,1", help="data sizes (default: 0.25,1)")
    parser.add_argument("--features", type=int, default=784)
    parser.add_argument("--code", type=int, default=64)
    parser.add_argument("--shard-mb", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--timeout", type=int, default=3600)
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()
    sizes = [float(size) for size in args.sizes_gb.split(",")]

    root = tempfile.mkdtemp(prefix="keras-cae-encode-")
    free_gb = shutil.disk_usage(root).free / 1e9
    if free_gb < max(sizes) * 1.2 + 0.5:
        raise SystemExit(f"{root}: {free_gb:.1f} GB free; choose smaller --sizes-gb")
    encoder = os.path.join(root, "encoder.onnx")
    write_encoder(encoder, args.features, args.code)
    memory: list[dict[str, Any]] = []
    speed: dict[str, Any] = {}
    try:
        for size in sizes:
            folder = os.path.join(root, f"data-{size:g}")
            count = write_shards(folder, size, args.features, args.shard_mb, seed=1)
            shards = len(os.listdir(folder))
            result = run_encode(
                encoder, folder, os.path.join(root, f"codes-{size:g}"), args.timeout
            )
            memory.append({"size_gb": size, "shards": shards, **result})
            assert result["rows"] == count
            print(memory[-1], flush=True)
            shutil.rmtree(os.path.join(root, f"codes-{size:g}"))
            if size != min(sizes):
                shutil.rmtree(folder)
        # Last, so that no child above is forked from a parent holding the array.
        speed = throughput(encoder, os.path.join(root, f"data-{min(sizes):g}"), root, args.rounds)
        print(speed, flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print()
    header = f"{'size GB':>8} {'rows':>10} {'shards':>6} {'peak RSS MB':>12} {'wall s':>7}"
    print(header)
    print("-" * len(header))
    for row in memory:
        print(
            f"{row['size_gb']:>8g} {row['rows']:>10} {row['shards']:>6} "
            f"{row['peak_rss_mb']:>12.0f} {row['wall_seconds']:>7.1f}"
        )
    growth = memory[-1]["peak_rss_mb"] / memory[0]["peak_rss_mb"]
    print(
        f"\npeak RSS, largest / smallest set: {growth:.2f}x for {sizes[-1] / sizes[0]:g}x the data"
    )
    print(
        f"rows/s on {speed['rows']} rows: streamed {speed['streamed_rows_per_s']}, in memory "
        f"{speed['in_memory_rows_per_s']}; median ratio {speed['median_ratio']} "
        f"(target >= 0.8): {'PASS' if speed['median_ratio'] >= 0.8 else 'FAIL'}"
    )
    payload = {
        "benchmark": "encode_sharded",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "memory": memory,
        "peak_rss_growth": round(growth, 3),
        "throughput": speed,
        "target_ratio": 0.8,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    atomic_write_json(args.out, payload)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
