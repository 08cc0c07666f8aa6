"""Milliseconds per train step and peak memory for each contractive-penalty method.

Measures one `ContractiveAutoencoder.train_step` (forward, penalty, backward and the
Adam update) on a fixed batch, after warm-up, for a plain auto-encoder
(`contractive_weight=0`) and each penalty method, on four encoders:

* ``dense1``: 784 → 256 (sigmoid), decoder 256 → 784;
* ``dense2``: 784 → 256 → 64 (sigmoid), decoder mirrored;
* ``conv``: 28×28×1 → two strided 3×3 convs → Dense 64, decoder mirrored (no closed
  form: ``auto`` is ``batch_jacobian``);
* ``conv1``: 28×28×1 → one strided 3×3 conv, 4 filters, sigmoid → Flatten (a 784-unit
  code), decoder one transposed conv (the conv closed form applies).

``--epoch-data mnist.npz`` times whole epochs instead: ``model.fit`` on the first
``--epoch-images`` training images (``/ 255``), batch 128, after a warm-up fit that
traces the step, repeats interleaved round-robin, timed from the first step's start to
the last step's end; the table extrapolates the median linearly to 60,000 images.
Every row also gives the estimate of `keras_cae._step_cost.step_cost_ratio` (the one
``penalty="auto"`` quotes when it falls back to ``batch_jacobian``) beside the
measured ratio.

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
    python benchmarks/train_step.py --encoders conv1 conv --methods closed_form \
        hutchinson batch_jacobian --epoch-data ../shared/data/mnist.npz \
        --epoch-images 1280 --repeats 9 --slow-repeats 2
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

ENCODERS = ("dense1", "dense2", "conv", "conv1")
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
    if encoder_name == "conv1":
        encoder = keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                layers.Conv2D(4, 3, strides=2, padding="same", activation="sigmoid"),
                layers.Flatten(),
            ],
            name="encoder",
        )
        decoder = keras.Sequential(
            [
                keras.Input((14 * 14 * 4,)),
                layers.Reshape((14, 14, 4)),
                layers.Conv2DTranspose(1, 3, strides=2, padding="same", activation="sigmoid"),
            ],
            name="decoder",
        )
        model = ContractiveAutoencoder(encoder, decoder, contractive_weight=weight, penalty=penalty)
        model.compile(optimizer="adam")
        return model
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


def estimated_ratio(model, method: str) -> float | None:
    """`step_cost_ratio` for the method `method` resolves to (None for the others)."""
    from keras_cae._step_cost import step_cost_ratio

    resolved = model.penalty_method if method != "plain" else "plain"
    if resolved not in ("batch_jacobian", "hutchinson"):
        return None
    ratio = step_cost_ratio(
        model.encoder, model.decoder, model.encoder.input_shape, resolved, model.num_projections
    )
    return None if ratio is None else round(ratio, 2)


def load_images(path: str, count: int, flat: bool):
    """The first `count` training images of a Keras-layout .npz, scaled to [0, 1]."""
    import numpy as np

    with np.load(path) as data:
        images = data["x_train"][:count].astype("float32") / 255.0
    if len(images) < count:
        raise SystemExit(f"--epoch-images {count}: {path} holds only {len(images)} images")
    return images.reshape(count, 784) if flat else images[..., None]


def _step_clock():
    """A callback that records when the first step began and the last one ended."""
    import keras

    class StepClock(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0:
                self.began = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.ended = time.perf_counter()

    return StepClock()


def time_epochs(
    configs, path: str, count: int, batch_size: int, repeats: int, slow_repeats: int
) -> dict:
    """Median seconds of the steps of one `model.fit` epoch over `count` images.

    Timed from the first step's start to the last step's end: the set-up of each
    `fit` call (about 0.3 s here, once per epoch) is left out, as it would otherwise be
    multiplied by the extrapolation to 60,000 images. `batch_jacobian` configurations
    are timed in the first `slow_repeats` rounds only.
    """
    runs = {}
    for encoder_name, method in configs:
        model = build(encoder_name, method)
        images = load_images(path, count, flat=encoder_name.startswith("dense"))
        # Traces the train function; later fits reuse it.
        model.fit(images[: 2 * batch_size], epochs=1, batch_size=batch_size, verbose=0)
        resolved = model.penalty_method if method != "plain" else "-"
        runs[(encoder_name, method)] = (model, images, resolved, estimated_ratio(model, method))
    samples: dict = {key: [] for key in runs}
    for round_number in range(repeats):
        for key, (model, images, resolved, _) in runs.items():
            if resolved == "batch_jacobian" and round_number >= slow_repeats:
                continue
            clock = _step_clock()
            model.fit(
                images, epochs=1, batch_size=batch_size, shuffle=False, verbose=0, callbacks=[clock]
            )
            samples[key].append(clock.ended - clock.began)
    return {
        key: (statistics.median(values), runs[key][2], runs[key][3], values)
        for key, values in samples.items()
    }


def make_step(model, batch_size: int):
    import numpy as np
    import tensorflow as tf

    shape = (batch_size, *model.encoder.input_shape[1:])
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
        resolved = model.penalty_method if method != "plain" else "-"
        runs[(encoder_name, method)] = (run, resolved, estimated_ratio(model, method))
    samples: dict = {key: [] for key in runs}
    for _ in range(repeats):
        for key, (run, _, _) in runs.items():
            started = time.perf_counter()
            for _ in range(steps):
                run()
            samples[key].append((time.perf_counter() - started) / steps * 1e3)
    return {
        key: (statistics.median(values), runs[key][1], runs[key][2], values)
        for key, values in samples.items()
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


def print_table(rows: list[dict], epoch: bool, memory: bool) -> None:
    if epoch:
        header = (
            f"{'encoder':8} {'method':15} {'resolved':15} {'s/epoch':>8} "
            f"{'s/60k (extrap.)':>16} {'× plain':>8} {'min ×':>6} {'est. ×':>7}"
        )
    else:
        header = (
            f"{'encoder':8} {'method':15} {'resolved':15} {'ms/step':>9} {'× plain':>8} "
            f"{'min ×':>6} {'est. ×':>7}"
        )
        if memory:
            header += f" {'+MB b128':>9} {'+MB b512':>9}"
    print(header)
    for row in rows:
        estimate = "-" if row["estimated_ratio"] is None else f"{row['estimated_ratio']:.1f}"
        line = f"{row['encoder']:8} {row['method']:15} {row['resolved']:15} "
        if epoch:
            line += (
                f"{row['s_per_epoch']:8.2f} {row['s_per_60000_extrapolated']:16.1f} "
                f"{row['ratio_to_plain']:8.2f} {row['min_ratio_to_plain']:6.2f} {estimate:>7}"
            )
        else:
            line += (
                f"{row['ms_per_step']:9.2f} {row['ratio_to_plain']:8.2f} "
                f"{row['min_ratio_to_plain']:6.2f} {estimate:>7}"
            )
            if memory:
                line += f" {row['step_memory_mb_b128']:9.0f} {row['step_memory_mb_b512']:9.0f}"
        print(line)


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
    parser.add_argument(
        "--epoch-data", help="time epochs of model.fit on this .npz's x_train instead of steps"
    )
    parser.add_argument(
        "--epoch-images", type=int, default=2560, help="images per timed epoch (--epoch-data)"
    )
    parser.add_argument(
        "--slow-repeats",
        type=int,
        help="repeats for batch_jacobian with --epoch-data (default --repeats)",
    )
    parser.add_argument(
        "--out", help="JSON path (default results/train_step.json, or train_epoch.json)"
    )
    args = parser.parse_args()
    epoch = args.epoch_data is not None
    if args.out is None:
        args.out = os.path.join(RESULTS, "train_epoch.json" if epoch else "train_step.json")
    if args.quick:
        args.repeats, args.steps, args.no_memory = 3, 3, True
    if epoch:
        args.no_memory = True
    methods = list(args.methods)
    if "plain" not in methods:
        methods.insert(0, "plain")
    configs = [(e, m) for e in args.encoders for m in methods if applicable(e, m)]
    if epoch:
        timings = time_epochs(
            configs,
            args.epoch_data,
            args.epoch_images,
            args.batch_size,
            args.repeats,
            args.repeats if args.slow_repeats is None else args.slow_repeats,
        )
    else:
        timings = time_all(configs, args.batch_size, args.warmup, args.repeats, args.steps)
    rows = []
    for encoder_name, method in configs:
        median, resolved, estimate, values = timings[(encoder_name, method)]
        plain = timings[(encoder_name, "plain")][0]
        row = {"encoder": encoder_name, "method": method, "resolved": resolved}
        if epoch:
            row["s_per_epoch"] = round(median, 3)
            row["s_per_60000_extrapolated"] = round(median * 60000 / args.epoch_images, 1)
            row["samples_s"] = [round(v, 3) for v in values]
        else:
            row["ms_per_step"] = round(median, 3)
            row["samples_ms"] = [round(v, 3) for v in values]
        row["ratio_to_plain"] = round(median / plain, 3)
        # On a shared machine the fastest repeat is the least disturbed one.
        row["min_ratio_to_plain"] = round(min(values) / min(timings[(encoder_name, "plain")][3]), 3)
        row["estimated_ratio"] = estimate
        if not args.no_memory:
            row["step_memory_mb_b128"] = round(peak_rss_mb(encoder_name, method, 128), 1)
            row["step_memory_mb_b512"] = round(peak_rss_mb(encoder_name, method, 512), 1)
        rows.append(row)
    print_table(rows, epoch, not args.no_memory)
    import keras
    import tensorflow as tf

    payload = {
        "benchmark": "train_epoch" if epoch else "train_step",
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "load_average": os.getloadavg(),
        "devices": [d.device_type for d in tf.config.list_logical_devices()],
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": rows,
    }
    if epoch:
        payload["epoch_data"] = os.path.basename(args.epoch_data)
        payload["epoch_images"] = args.epoch_images
        payload["slow_repeats"] = args.slow_repeats
        payload["note"] = "s_per_60000_extrapolated = s_per_epoch × 60000 / epoch_images"
    else:
        payload["steps_per_repeat"] = args.steps
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    staging = args.out + ".tmp"
    with open(staging, "w") as handle:
        json.dump(payload, handle, indent=2)
    os.replace(staging, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
