"""Milliseconds per train step and peak memory for each contractive-penalty method.

Measures one `ContractiveAutoencoder.train_step` (forward, penalty, backward and the
Adam update) on a fixed batch, after warm-up, for a plain auto-encoder
(`contractive_weight=0`) and each penalty method, on three encoders:

* ``dense1``: 784 → 256 (sigmoid), decoder 256 → 784;
* ``dense2``: 784 → 256 → 64 (sigmoid), decoder mirrored;
* ``conv``: 28×28×1 → two strided 3×3 convs → Dense 64, decoder mirrored.

Timing: every configuration is built in this one process and the repeats are
interleaved round-robin, so all of them see the same machine load; the table quotes
medians and the ratio to the plain auto-encoder of the same encoder. Memory: each
configuration runs again in a fresh subprocess at batch 128 and at batch 512 and
reports the peak resident memory it adds while tracing and running five steps; the
growth between the two batch sizes shows what scales with batch × code × input.

Usage::

    python benchmarks/train_step.py                 # everything, writes JSON
    python benchmarks/train_step.py --quick         # fewer repeats, no memory runs
    python benchmarks/train_step.py --encoders dense1 --methods closed_form
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ENCODERS = ("dense1", "dense2", "conv")
METHODS = ("plain", "batch_jacobian", "closed_form", "auto", "hutchinson")
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def build(encoder_name: str, method: str, seed: int = 0):
    """Returns a compiled model for one configuration (plain = contractive_weight 0)."""
    import keras

    from keras_cae import ContractiveAutoencoder, dense_autoencoder

    weight = 0.0 if method == "plain" else 0.1
    penalty = "auto" if method == "plain" else method
    if encoder_name == "dense1":
        return dense_autoencoder(784, 256, contractive_weight=weight, penalty=penalty, seed=seed)
    if encoder_name == "dense2":
        return dense_autoencoder(
            784, [256, 64], contractive_weight=weight, penalty=penalty, seed=seed
        )
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    encoder = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(16, 3, strides=2, padding="same", activation="relu"),
            layers.Conv2D(32, 3, strides=2, padding="same", activation="relu"),
            layers.Flatten(),
            layers.Dense(64, activation="sigmoid"),
        ],
        name="encoder",
    )
    decoder = keras.Sequential(
        [
            keras.Input((64,)),
            layers.Dense(7 * 7 * 32, activation="relu"),
            layers.Reshape((7, 7, 32)),
            layers.Conv2DTranspose(16, 3, strides=2, padding="same", activation="relu"),
            layers.Conv2DTranspose(1, 3, strides=2, padding="same", activation="sigmoid"),
        ],
        name="decoder",
    )
    model = ContractiveAutoencoder(encoder, decoder, contractive_weight=weight, penalty=penalty)
    model.build((None, 28, 28, 1))
    model.compile(optimizer="adam")
    return model


def applicable(encoder_name: str, method: str) -> bool:
    return not (encoder_name == "conv" and method == "closed_form")


def make_step(model, batch_size: int):
    import numpy as np
    import tensorflow as tf

    shape = (
        (batch_size, 784) if model.encoder.input_shape[1:] == (784,) else (batch_size, 28, 28, 1)
    )
    x = tf.constant(np.random.default_rng(0).random(shape, dtype=np.float32))
    step = tf.function(model.train_step)

    def run() -> float:
        return float(step((x,))["loss"])

    return run


def time_all(configs, batch_size: int, warmup: int, repeats: int, steps: int) -> dict:
    runs = {}
    for encoder_name, method in configs:
        model = build(encoder_name, method)
        run = make_step(model, batch_size)
        for _ in range(warmup):
            run()
        runs[(encoder_name, method)] = (run, model.penalty_method if method != "plain" else "-")
    samples: dict = {key: [] for key in runs}
    for _ in range(repeats):
        for key, (run, _) in runs.items():
            started = time.perf_counter()
            for _ in range(steps):
                run()
            samples[key].append((time.perf_counter() - started) / steps * 1e3)
    return {
        key: (statistics.median(values), runs[key][1], values) for key, values in samples.items()
    }


def resident_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def step_memory_mb(encoder_name: str, method: str, batch_size: int) -> float:
    """Peak resident memory above the built model while tracing and running 5 steps.

    Sampled every millisecond from /proc/self/statm: ``ru_maxrss`` would report the
    import of TensorFlow itself (about 1.7 GB here), which hides everything else.
    """
    import threading

    run = make_step(build(encoder_name, method), batch_size)
    baseline = resident_mb()
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], resident_mb())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for _ in range(5):
        run()
    done.set()
    sampler.join()
    return max(peak[0], resident_mb()) - baseline


def peak_rss_mb(encoder_name: str, method: str, batch_size: int) -> float:
    """`step_memory_mb` in a fresh process, so configurations do not share allocations."""
    directory = os.path.dirname(os.path.abspath(__file__))
    code = (
        f"import sys; sys.path.insert(0, {directory!r})\n"
        "import train_step as b\n"
        f"print(b.step_memory_mb({encoder_name!r}, {method!r}, {batch_size}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=ENCODERS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5, help="steps per timed repeat")
    parser.add_argument("--quick", action="store_true", help="3 repeats of 3 steps, no memory runs")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--out", default=os.path.join(RESULTS, "train_step.json"))
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.steps, args.no_memory = 3, 3, True
    methods = list(args.methods)
    if "plain" not in methods:
        methods.insert(0, "plain")
    configs = [(e, m) for e in args.encoders for m in methods if applicable(e, m)]
    timings = time_all(configs, args.batch_size, args.warmup, args.repeats, args.steps)
    rows = []
    for encoder_name, method in configs:
        median, resolved, values = timings[(encoder_name, method)]
        plain = timings[(encoder_name, "plain")][0]
        row = {
            "encoder": encoder_name,
            "method": method,
            "resolved": resolved,
            "ms_per_step": round(median, 3),
            "ratio_to_plain": round(median / plain, 3),
            "samples_ms": [round(v, 3) for v in values],
        }
        if not args.no_memory:
            row["step_memory_mb_b128"] = round(peak_rss_mb(encoder_name, method, 128), 1)
            row["step_memory_mb_b512"] = round(peak_rss_mb(encoder_name, method, 512), 1)
        rows.append(row)
    header = f"{'encoder':8} {'method':15} {'resolved':15} {'ms/step':>9} {'× plain':>8}"
    if not args.no_memory:
        header += f" {'+MB b128':>9} {'+MB b512':>9}"
    print(header)
    for row in rows:
        line = (
            f"{row['encoder']:8} {row['method']:15} {row['resolved']:15} "
            f"{row['ms_per_step']:9.2f} {row['ratio_to_plain']:8.2f}"
        )
        if not args.no_memory:
            line += f" {row['step_memory_mb_b128']:9.0f} {row['step_memory_mb_b512']:9.0f}"
        print(line)
    import keras
    import tensorflow as tf

    payload = {
        "benchmark": "train_step",
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "steps_per_repeat": args.steps,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": rows,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    staging = args.out + ".tmp"
    with open(staging, "w") as handle:
        json.dump(payload, handle, indent=2)
    os.replace(staging, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
