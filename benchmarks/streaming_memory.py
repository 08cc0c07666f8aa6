"""Peak resident memory of `keras-cae train` on streamed shards, against data size.

Writes synthetic float32 `.npy` shards (uniform [0, 1), default 784 features, as
MNIST-sized rows) into a temporary directory, then runs, each in a fresh process:

* ``keras-cae train --data DIR`` on the small and the large data set (one full epoch,
  so every row is read; the held-out shards are read once more for the summary);
* for reference, ``keras-cae train --data FILE.npy`` on the small data set as one
  in-memory array (the non-streaming path loads it whole).

Each child reports its own peak RSS (``getrusage(RUSAGE_SELF).ru_maxrss``). Target:
the large (default 4 GB) set trains with peak RSS under 2 GB, and the streamed peak
does not grow with the data size. The shards are deleted afterwards (``--keep`` keeps
them). Check the free disk space first: the large set needs ``--size-gb`` GB.

Usage::

    python benchmarks/streaming_memory.py                  # 4 GB vs 0.25 GB
    python benchmarks/streaming_memory.py --size-gb 1      # when disk is short
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "streaming_memory.json")
CHILD = (
    "import resource, sys\n"
    "from keras_cae import cli\n"
    "code = cli.main(sys.argv[1:])\n"
    "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)\n"
    "sys.exit(code)\n"
)


def write_shards(folder: str, size_gb: float, features: int, shard_mb: int, seed: int) -> int:
    """Writes about `size_gb` GB of float32 rows as `.npy` shards; returns the row count."""
    os.makedirs(folder, exist_ok=True)
    row_bytes = features * 4
    total_rows = int(size_gb * 1e9 // row_bytes)
    shard_rows = max(1, shard_mb * 2**20 // row_bytes)
    rng = np.random.default_rng(seed)
    written, index = 0, 0
    while written < total_rows:
        rows = min(shard_rows, total_rows - written)
        path = os.path.join(folder, f"part-{index:05d}.npy")
        # A memory-mapped writer keeps this process small too.
        shard = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, features))
        for start in range(0, rows, 65536):
            stop = min(start + 65536, rows)
            shard[start:stop] = rng.random((stop - start, features), dtype=np.float32)
        shard.flush()
        del shard
        written += rows
        index += 1
    return total_rows


def run_train(data: str, out: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable, "-c", CHILD, "train", "--data", data, "--out", out, "--quiet",
        "--epochs", "1", "--batch-size", str(args.batch_size), "--hidden-units", str(args.hidden),
        "--test-fraction", str(args.test_fraction), "--seed", "0",
    ]  # fmt: skip
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.timeout)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"training on {data} failed:\n{done.stderr[-3000:]}")
    peak_kb = next(
        int(line.split()[1]) for line in done.stdout.splitlines() if line.startswith("PEAK_RSS_KB")
    )
    with open(os.path.join(out, "metrics.json")) as handle:
        metrics = json.load(handle)
    return {
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "wall_seconds": round(seconds, 1),
        "train_seconds": metrics["train_seconds"],
        "num_train": metrics["num_train"],
        "num_test": metrics["num_test"],
        "final_loss": metrics["history"]["loss"][-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gb", type=float, default=4.0, help="large data set (default: 4)")
    parser.add_argument(
        "--small-gb", type=float, default=0.25, help="small data set (default: 0.25)"
    )
    parser.add_argument("--features", type=int, default=784)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--shard-mb", type=int, default=128)
    parser.add_argument("--test-fraction", type=float, default=0.05)
    parser.add_argument("--dir", help="where to write shards (default: a new temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the shards")
    parser.add_argument("--timeout", type=int, default=3600)
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()

    root = args.dir or tempfile.mkdtemp(prefix="keras-cae-streaming-")
    free_gb = shutil.disk_usage(os.path.dirname(os.path.abspath(root)) or ".").free / 1e9
    needed = args.size_gb + 2 * args.small_gb + 0.5
    if free_gb < needed:
        raise SystemExit(f"{root}: {free_gb:.1f} GB free, need {needed:.1f} GB; use --size-gb")
    rows: list[dict[str, Any]] = []
    try:
        for label, size in (("small", args.small_gb), ("large", args.size_gb)):
            folder = os.path.join(root, label)
            started = time.perf_counter()
            count = write_shards(folder, size, args.features, args.shard_mb, seed=1)
            write_seconds = time.perf_counter() - started
            shards = len(os.listdir(folder))
            print(
                f"wrote {size:g} GB ({count} rows, {shards} shards) in {write_seconds:.0f} s",
                flush=True,
            )
            result = run_train(folder, os.path.join(root, f"run-{label}"), args)
            rows.append(
                {
                    "mode": "streamed shards",
                    "size_gb": size,
                    "rows": count,
                    "shards": shards,
                    **result,
                }
            )
            print(rows[-1], flush=True)
            if label == "small":
                # The same rows as one in-memory array, for reference.
                array_path = os.path.join(root, "small.npy")
                parts = [np.load(os.path.join(folder, name)) for name in sorted(os.listdir(folder))]
                np.save(array_path, np.concatenate(parts))
                del parts
                result = run_train(array_path, os.path.join(root, "run-array"), args)
                rows.append(
                    {
                        "mode": "in-memory array",
                        "size_gb": size,
                        "rows": count,
                        "shards": 1,
                        **result,
                    }
                )
                print(rows[-1], flush=True)
                os.remove(array_path)
            shutil.rmtree(folder) if not args.keep else None
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(root, ignore_errors=True)

    print()
    header = (
        f"{'mode':<17} {'size GB':>8} {'rows':>10} {'shards':>6} {'peak RSS MB':>12} {'train s':>8}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['mode']:<17} {row['size_gb']:>8g} {row['rows']:>10} {row['shards']:>6} "
            f"{row['peak_rss_mb']:>12.0f} {row['train_seconds']:>8.1f}"
        )
    large = [r for r in rows if r["mode"] == "streamed shards" and r["size_gb"] == args.size_gb][0]
    verdict = "PASS" if large["peak_rss_mb"] < 2048 else "FAIL"
    print(
        f"\n{args.size_gb:g} GB streamed: peak RSS {large['peak_rss_mb']:.0f} MB "
        f"(target < 2048 MB): {verdict}"
    )
    payload = {
        "benchmark": "streaming_memory",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "config": {k: v for k, v in vars(args).items() if k not in ("out", "dir")},
        "rows": rows,
        "target_peak_rss_mb": 2048,
        "verdict": verdict,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    staging = args.out + ".tmp"
    with open(staging, "w") as handle:
        json.dump(payload, handle, indent=2)
        handle.write("\n")
    os.replace(staging, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
