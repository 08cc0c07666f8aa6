"""The linear probe of `keras-cae train` on MNIST's raw pixels: time and accuracy.

Before issue 19 the probe was `keras_cae.training.probe_accuracy` (standardisation,
then scikit-learn's `LogisticRegression(max_iter=2000)`) fit on every training row:
minutes on 784 raw dimensions, printed nothing meanwhile. `keras-cae train` now uses
`quick_probe_accuracy`: a stratified subsample of at most `PROBE_ROWS` rows and
lbfgs with ``tol=1e-3``. Both are fit here on the official split (the first 50,000
training images; the last 10,000 are the validation part `train` holds out) and
scored on the 10,000 test images, with wall seconds per fit.

Usage::

    nice -n 10 python benchmarks/train_probe.py                      # both, minutes
    nice -n 10 python benchmarks/train_probe.py --skip-reference     # the new probe only
    python benchmarks/train_probe.py --data ~/.keras/datasets/mnist.npz
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

from keras_cae.data import load_mnist_npz
from keras_cae.training import PROBE_ROWS, probe_accuracy, quick_probe_accuracy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "mnist.npz"))
    parser.add_argument("--rows", default=f"{PROBE_ROWS}", help="subsample sizes, e.g. 10000,20000")
    parser.add_argument("--skip-reference", action="store_true", help="not the old probe")
    parser.add_argument(
        "--out", default=os.path.join(ROOT, "benchmarks", "results", "train_probe.json")
    )
    args = parser.parse_args()
    data = load_mnist_npz(args.data)
    x_train = data.x[:50_000].reshape(50_000, -1)
    y_train = data.y[:50_000]
    x_test = data.x_test.reshape(len(data.x_test), -1)
    rows = []
    if not args.skip_reference:
        started = time.perf_counter()
        accuracy = probe_accuracy(x_train, y_train, x_test, data.y_test)
        rows.append(("probe_accuracy (before)", 50_000, time.perf_counter() - started, accuracy))
        print(rows[-1], flush=True)
    for size in (int(r) for r in args.rows.split(",")):
        started = time.perf_counter()
        accuracy = quick_probe_accuracy(x_train, y_train, x_test, data.y_test, max_rows=size)
        rows.append(("quick_probe_accuracy (after)", size, time.perf_counter() - started, accuracy))
        print(rows[-1], flush=True)
    print(f"\n{'probe':<30} {'rows':>7} {'seconds':>8} {'test acc.':>9}")
    for name, size, seconds, accuracy in rows:
        print(f"{name:<30} {size:>7} {seconds:>8.1f} {accuracy:>9.4f}")
    report = {
        "benchmark": "train_probe",
        "data": os.path.basename(args.data),
        "features": "raw pixels / 255 (784)",
        "test_rows": int(len(x_test)),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
        "results": [
            {"probe": n, "rows": s, "seconds": round(t, 2), "test_accuracy": a}
            for n, s, t, a in rows
        ],
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".tmp", "w") as handle:
        json.dump(report, handle, indent=2)
    os.replace(args.out + ".tmp", args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
