"""Train-step time with and without XLA (`jit_compile=True`) for each penalty method.

For each configuration the same model's `train_step` is wrapped twice, as
``tf.function(train_step, jit_compile=False)`` and ``jit_compile=True``, and both are
timed round-robin with every other configuration (same machine load for all; the
table quotes medians and the XLA / no-XLA ratio). The first call of each, which
traces and compiles, is reported separately.

`ContractiveAutoencoder.compile(jit_compile=True)` refuses XLA (warning, then runs
without it) for `penalty="batch_jacobian"`; that case is measured here anyway, on a
small encoder and in a subprocess with a time limit, to show why.

Configurations (encoder 784 → 256 → 64 sigmoid unless named; batch 128):

* ``plain``: contractive_weight 0 (a plain auto-encoder);
* ``closed_form``, ``hutchinson``: the contractive penalty;
* ``cae_h``: closed form + CAE+H term (hessian_weight 0.1);
* ``dae``: masking noise 0.2, no penalty;
* ``conv_hutchinson``: the conv encoder of benchmarks/train_step.py, Hutchinson;
* ``batch_jacobian``: 784 → 64 (forced under XLA, subprocess, ``--bj-timeout``).

Usage::

    python benchmarks/xla.py              # writes benchmarks/results/xla.json
    python benchmarks/xla.py --quick
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

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = ("plain", "closed_form", "hutchinson", "cae_h", "dae", "conv_hutchinson")


def build(name: str, input_dim: int = 784, units=(256, 64)):
    from keras_cae import dense_autoencoder

    if name == "conv_hutchinson":
        sys.path.insert(0, HERE)
        from train_step import build as build_conv  # The lead's conv encoder.

        return build_conv("conv", "hutchinson")
    kwargs = {
        "plain": {"contractive_weight": 0.0},
        "closed_form": {"penalty": "closed_form"},
        "hutchinson": {"penalty": "hutchinson"},
        "cae_h": {"penalty": "closed_form", "hessian_weight": 0.1},
        "dae": {"contractive_weight": 0.0, "corruption": "masking", "corruption_level": 0.2},
        "batch_jacobian": {"penalty": "batch_jacobian"},
    }[name]
    return dense_autoencoder(input_dim, list(units), seed=0, **kwargs)


def steps_for(model, batch_size: int):
    import numpy as np
    import tensorflow as tf

    shape = (batch_size, *model.encoder.input_shape[1:])
    x = tf.constant(np.random.default_rng(0).random(shape, dtype=np.float32))
    runs = {}
    for jit in (False, True):
        step = tf.function(model.train_step, jit_compile=jit)
        runs[jit] = lambda step=step: float(step((x,))["loss"])
    return runs


def batch_jacobian_child(batch_size: int, steps: int) -> None:
    """Runs in a subprocess: times batch_jacobian with and without XLA, prints JSON."""
    model = build("batch_jacobian", units=(64,))
    result = {}
    for jit, run in steps_for(model, batch_size).items():
        started = time.perf_counter()
        run()
        first = time.perf_counter() - started
        times = []
        for _ in range(steps):
            started = time.perf_counter()
            run()
            times.append(time.perf_counter() - started)
        result["xla" if jit else "no_xla"] = {
            "first_call_s": first,
            "median_ms": statistics.median(times) * 1e3,
        }
        print(json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5, help="steps per timed repeat")
    parser.add_argument("--bj-timeout", type=int, default=300, help="seconds for batch_jacobian")
    parser.add_argument("--quick", action="store_true", help="3 repeats of 3 steps")
    parser.add_argument("--child-batch-jacobian", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "xla.json"))
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.steps = 3, 3
    if args.child_batch_jacobian:
        batch_jacobian_child(args.batch_size, args.steps)
        return

    # batch_jacobian first, alone, in a subprocess that is killed at the time limit.
    command = [
        sys.executable,
        __file__,
        "--child-batch-jacobian",
        "--batch-size",
        str(args.batch_size),
    ]
    bj: dict = {}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.bj_timeout)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        bj = json.loads(lines[-1]) if lines else {"error": done.stderr[-500:]}
    except subprocess.TimeoutExpired as expired:
        out = expired.stdout.decode() if isinstance(expired.stdout, bytes) else expired.stdout or ""
        lines = [line for line in out.splitlines() if line.startswith("{")]
        bj = json.loads(lines[-1]) if lines else {}
        bj["xla"] = {"timed_out_after_s": args.bj_timeout}
    print("batch_jacobian (784 → 64):", bj, flush=True)

    runs, first_call = {}, {}
    for name in args.configs:
        model = build(name)
        for jit, run in steps_for(model, args.batch_size).items():
            started = time.perf_counter()
            run()  # Trace (and, with XLA, compile).
            first_call[(name, jit)] = time.perf_counter() - started
            run()
            runs[(name, jit)] = run
    samples: dict = {key: [] for key in runs}
    for _ in range(args.repeats):
        for key, run in runs.items():
            started = time.perf_counter()
            for _ in range(args.steps):
                run()
            samples[key].append((time.perf_counter() - started) / args.steps * 1e3)

    rows = []
    for name in args.configs:
        plain, xla = (
            statistics.median(samples[(name, False)]),
            statistics.median(samples[(name, True)]),
        )
        rows.append(
            {
                "config": name,
                "no_xla_ms": round(plain, 3),
                "xla_ms": round(xla, 3),
                "xla_ratio": round(xla / plain, 3),
                "no_xla_first_call_s": round(first_call[(name, False)], 2),
                "xla_first_call_s": round(first_call[(name, True)], 2),
                "no_xla_samples_ms": [round(v, 3) for v in samples[(name, False)]],
                "xla_samples_ms": [round(v, 3) for v in samples[(name, True)]],
            }
        )
    header = f"{'config':<16} {'no XLA ms':>10} {'XLA ms':>9} {'XLA/no':>7} {'XLA compile s':>14}"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['config']:<16} {row['no_xla_ms']:>10.2f} {row['xla_ms']:>9.2f} "
            f"{row['xla_ratio']:>7.2f} {row['xla_first_call_s']:>14.1f}"
        )
    payload = {
        "benchmark": "xla",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "config": {k: v for k, v in vars(args).items() if k not in ("out", "child_batch_jacobian")},
        "rows": rows,
        "batch_jacobian_784_64": bj,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".tmp", "w") as handle:
        json.dump(payload, handle, indent=2)
        handle.write("\n")
    os.replace(args.out + ".tmp", args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
