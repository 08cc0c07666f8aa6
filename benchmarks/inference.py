"""Encoder inference: latency at batch 1 and throughput at batch 256, four ways.

Exports one encoder (default 784 → 256 → 64, sigmoid, as in the README) with
`export.export_encoder` and times, in this process:

* `OnnxEncoder.encode` (our runtime: validation, finiteness check, cast, run), and
  for a breakdown the same with a recorded training input range (what every trained
  model's export carries: the range check replaces the finiteness check), without the
  NaN/inf check, and through the public
  `InferenceSession.run` or `run_with_ort_values` rather than the C++ session that
  `OnnxEncoder` calls (the ratio of each to the bare session is reported),
* a bare `onnxruntime.InferenceSession.run` on the same file and session options,
* the SavedModel's `serving_default` signature in TensorFlow,
* the Keras call `model.encoder(x)` (eager), and `model.encoder.predict(x)`.

The machine is shared and noisy, so the methods are timed round-robin in `--rounds`
rounds, each a burst of calls; latencies are pooled over rounds (median, p99) and
the throughput is the median over rounds. The `OnnxEncoder` overhead is the ratio of
its median batch-1 latency to the bare session's; the target is ≤ 1.20. All engines
use `--threads` intra-op threads (default 1; batch-1 encodes gain nothing from more).
Also measured: a fresh process that imports the runtime, loads the model and
encodes one row (what a service pays at start).

Usage::

    python benchmarks/inference.py                   # writes benchmarks/results/inference.json
    python benchmarks/inference.py --input-dim 64 --hidden 32 --quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _time_calls(fn: Callable[[], Any], calls: int) -> list[float]:
    """Seconds per call, for `calls` back-to-back calls."""
    times = []
    clock = time.perf_counter
    for _ in range(calls):
        start = clock()
        fn()
        times.append(clock() - start)
    return times


def _startup_seconds(model: str, features: int, repeats: int) -> list[float]:
    """Wall time of a fresh `python` that imports the runtime and encodes one row."""
    code = (
        "import numpy as np; from keras_cae.export import OnnxEncoder; "
        f"OnnxEncoder({model!r}, intra_op_num_threads=1).encode(np.zeros((1, {features})))"
    )
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input-dim", type=int, default=784)
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 64])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="fewer calls (a smoke run)")
    parser.add_argument("--out", default=os.path.join(RESULTS, "inference.json"))
    args = parser.parse_args(argv)
    scale = 0.1 if args.quick else 1.0
    fast_calls = max(50, int(2000 * scale))  # onnxruntime: ~10-100 µs per call.
    tf_calls = max(20, int(300 * scale))  # TensorFlow: ~0.1-2 ms per call.
    predict_calls = max(3, int(20 * scale))  # model.predict: ~10-50 ms per call.

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import onnxruntime as ort
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    import keras

    import keras_cae
    from keras_cae import export
    from keras_cae.export import OnnxEncoder

    model = keras_cae.dense_autoencoder(args.input_dim, args.hidden, seed=0)
    workdir = tempfile.mkdtemp(prefix="keras-cae-inference-")
    result = export.export_encoder(model, os.path.join(workdir, "exported"))
    onnx_path, sm_path = result.path("onnx"), result.path("saved_model")

    encoder = OnnxEncoder(onnx_path, intra_op_num_threads=args.threads)
    # Two breakdown rows: without the NaN/inf check, and through the public
    # `InferenceSession.run` instead of the C++ session (see keras_cae.export.runtime).
    unchecked = OnnxEncoder(onnx_path, intra_op_num_threads=args.threads, check_finite=False)
    # The same graph with the training range `export` records for a fitted model (this
    # untrained one has none), so that `encode` checks the range instead of finiteness.
    import onnx

    from keras_cae.export.runtime import INPUT_RANGE_KEY

    graph = onnx.load(onnx_path)
    graph.metadata_props.add(key=INPUT_RANGE_KEY, value="[0.0, 1.0]")
    ranged_path = os.path.join(workdir, "ranged.onnx")
    onnx.save(graph, ranged_path)
    ranged = OnnxEncoder(ranged_path, intra_op_num_threads=args.threads)
    assert ranged.input_range == (0.0, 1.0) and encoder.input_range is None
    public = OnnxEncoder(onnx_path, intra_op_num_threads=args.threads)
    public._run = public.session.run
    ort_values = OnnxEncoder(onnx_path, intra_op_num_threads=args.threads)

    def run_with_ort_values(names: list[str], feed: dict[str, Any], run_options: Any) -> Any:
        inputs = {name: ort.OrtValue.ortvalue_from_numpy(x) for name, x in feed.items()}
        outputs = ort_values.session.run_with_ort_values(names, inputs, run_options)
        return [value.numpy() for value in outputs]

    ort_values._run = run_with_ort_values
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    signature = tf.saved_model.load(sm_path).signatures["serving_default"]
    keras_encoder = model.encoder

    rng = np.random.default_rng(0)
    batches = {n: rng.random((n, args.input_dim), dtype=np.float32) for n in (1, 256)}
    tensors = {n: tf.constant(x) for n, x in batches.items()}

    def methods(n: int) -> dict[str, tuple[Callable[[], Any], int]]:
        x, t = batches[n], tensors[n]
        return {
            "OnnxEncoder.encode": (lambda: encoder.encode(x), fast_calls),
            "  ... training range recorded": (lambda: ranged.encode(x), fast_calls),
            "  ... check_finite=False": (lambda: unchecked.encode(x), fast_calls),
            "  ... via public session.run": (lambda: public.encode(x), fast_calls),
            "  ... via run_with_ort_values": (lambda: ort_values.encode(x), fast_calls),
            "bare InferenceSession.run": (lambda: session.run(["code"], {"x": x}), fast_calls),
            "SavedModel signature (TF)": (lambda: signature(x=t)["code"], tf_calls),
            "Keras model.encoder(x)": (lambda: keras_encoder(t, training=False), tf_calls),
            "Keras model.encoder.predict(x)": (
                lambda: keras_encoder.predict(x, verbose=0, batch_size=n),
                predict_calls,
            ),
        }

    # Parity of what we time (the benchmark must time the same computation).
    reference = keras_encoder(batches[256]).numpy()
    for name, (fn, _) in methods(256).items():
        out = fn()
        out = out[0] if isinstance(out, list) else out
        diff = float(np.abs(keras.ops.convert_to_numpy(out) - reference).max())
        assert diff < 1e-5, (name, diff)

    samples: dict[tuple[str, int], list[float]] = {}
    for n in (1, 256):
        for fn, _ in methods(n).values():  # Warm-up: traces, allocations.
            for _ in range(3):
                fn()
    for _ in range(args.rounds):
        for n in (1, 256):
            for name, (fn, calls) in methods(n).items():
                calls = calls if n == 1 else max(3, calls // 16)
                samples.setdefault((name, n), []).append(_time_calls(fn, calls))

    rows = []
    for name in methods(1):
        latency = [t for burst in samples[(name, 1)] for t in burst]
        per_round_throughput = [256 / statistics.median(burst) for burst in samples[(name, 256)]]
        rows.append(
            {
                "method": name,
                "batch1_median_us": statistics.median(latency) * 1e6,
                "batch1_p99_us": _percentile(latency, 99) * 1e6,
                "batch1_calls": len(latency),
                "batch256_rows_per_s": statistics.median(per_round_throughput),
            }
        )
    by_name = {row["method"]: row for row in rows}
    # The overhead as a median of per-round ratios (both timed back to back each round).
    ratios = [
        statistics.median(a) / statistics.median(b)
        for a, b in zip(
            samples[("OnnxEncoder.encode", 1)],
            samples[("bare InferenceSession.run", 1)],
            strict=True,
        )
    ]
    overhead = statistics.median(ratios)
    # The same ratio for each way of calling onnxruntime from `encode`.
    path_overheads = {
        name: statistics.median(
            statistics.median(a) / statistics.median(b)
            for a, b in zip(
                samples[(name, 1)], samples[("bare InferenceSession.run", 1)], strict=True
            )
        )
        for name in (
            "OnnxEncoder.encode",
            "  ... training range recorded",
            "  ... via public session.run",
            "  ... via run_with_ort_values",
        )
    }
    startup = _startup_seconds(onnx_path, args.input_dim, repeats=3 if args.quick else 5)

    shape = " → ".join(map(str, [args.input_dim, *args.hidden]))
    print(f"encoder {shape} (sigmoid), {args.threads} thread(s), {args.rounds} rounds")
    print(f"{'method':<32} {'batch 1 median':>15} {'batch 1 p99':>12} {'batch 256 rows/s':>17}")
    for row in rows:
        print(
            f"{row['method']:<32} {row['batch1_median_us']:>12.1f} µs "
            f"{row['batch1_p99_us']:>9.1f} µs {row['batch256_rows_per_s']:>17,.0f}"
        )
    verdict = "meets" if overhead <= 1.20 else "MISSES"
    print(
        f"OnnxEncoder / bare session at batch 1: {overhead:.3f} (median of per-round ratios; "
        f"{verdict} the ≤ 1.20 target)"
    )
    for name, ratio in path_overheads.items():
        print(f"{name.strip(' .')} / bare session at batch 1: {ratio:.3f}")
    print(
        f"fresh process: import runtime + load + encode one row: median "
        f"{statistics.median(startup):.3f} s (includes the Python interpreter start)"
    )
    speedups = {
        name: by_name[name]["batch1_median_us"] / by_name["OnnxEncoder.encode"]["batch1_median_us"]
        for name in by_name
    }

    payload = {
        "benchmark": "inference",
        "encoder": {
            "input_dim": args.input_dim,
            "hidden_units": args.hidden,
            "activation": "sigmoid",
        },
        "threads": args.threads,
        "rounds": args.rounds,
        "quick": args.quick,
        "rows": rows,
        "onnx_encoder_overhead_ratio": overhead,
        "onnx_encoder_overhead_ratios_per_round": ratios,
        "batch1_overhead_ratio_by_call_path": path_overheads,
        "batch1_latency_relative_to_onnx_encoder": speedups,
        "startup_seconds": startup,
        "export_max_abs_diff": result.max_abs_diff,
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "onnxruntime": ort.__version__,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        },
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    staging = args.out + ".tmp"
    with open(staging, "w") as stream:
        json.dump(payload, stream, indent=2)
    os.replace(staging, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
