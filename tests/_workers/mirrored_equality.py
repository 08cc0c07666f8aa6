"""Trains each configuration on one device and under a two-replica MirroredStrategy.

Run as a script in a fresh process (the CPU must be split into two logical devices
before TensorFlow initialises). Writes a JSON file with, for every case, the
per-epoch losses and final weights of both runs, and evaluation results.

Usage: python mirrored_equality.py OUT.json [--cases=a,b,...] [--naive-noise]

``--naive-noise`` replaces `replica_random` by a plain draw on each replica (what a
model gets without it), to show that the equality test can fail.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_cae.distribute import get_strategy, split_cpu  # noqa: E402

DEVICES = split_cpu(2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_cae.model  # noqa: E402
import keras_cae.penalties  # noqa: E402
from keras_cae import dense_autoencoder  # noqa: E402

CASES = {
    "batch_jacobian": {"penalty": "batch_jacobian"},
    "closed_form": {"penalty": "closed_form"},
    "auto": {"penalty": "auto"},
    "cae_h": {"penalty": "closed_form", "hessian_weight": 0.5, "hessian_noise_stddev": 0.3},
    "cae_h_batch_jacobian": {
        "penalty": "batch_jacobian",
        "hessian_weight": 0.5,
        "hessian_noise_stddev": 0.3,
    },
    "hutchinson": {"penalty": "hutchinson", "num_projections": 2},
    "dae_gaussian": {"contractive_weight": 0.0, "corruption": "gaussian", "corruption_level": 0.3},
    "dae_masking": {"contractive_weight": 0.0, "corruption": "masking", "corruption_level": 0.3},
}


def make_model(units: list[int], **kwargs: object) -> keras.Model:
    model = dense_autoencoder(12, units, seed=3, **kwargs)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    return model


def run_case(strategy, x, units, kwargs):
    reference = make_model(units, **kwargs)
    initial = reference.get_weights()
    single = reference.fit(x, batch_size=8, epochs=2, shuffle=False, verbose=0).history
    single_eval = reference.evaluate(x, batch_size=8, verbose=0, return_dict=True)
    with strategy.scope():
        model = make_model(units, **kwargs)
        model.set_weights(initial)
    mirrored = model.fit(x, batch_size=8, epochs=2, shuffle=False, verbose=0).history
    mirrored_eval = model.evaluate(x, batch_size=8, verbose=0, return_dict=True)
    return {
        "single": {"history": single, "evaluate": single_eval},
        "mirrored": {"history": mirrored, "evaluate": mirrored_eval},
        "single_weights": [w.tolist() for w in reference.get_weights()],
        "mirrored_weights": [w.tolist() for w in model.get_weights()],
        "replicas": strategy.num_replicas_in_sync,
        "input_range": {
            "data": [float(x.min()), float(x.max())],
            "single": reference.input_range,
            "mirrored": model.input_range,
        },
    }


def main() -> None:
    out = sys.argv[1]
    flags = sys.argv[2:]
    names = list(CASES) + ["one_row_last_batch"]
    for flag in flags:
        if flag.startswith("--cases="):
            names = flag.split("=", 1)[1].split(",")
    if "--naive-noise" in flags:

        def naive(draw, shape, batch_axis=0):
            return draw(shape)

        keras_cae.model.replica_random = naive
        keras_cae.penalties.replica_random = naive
    strategy = get_strategy("mirrored", DEVICES)
    # 27 rows in batches of 8: the last global batch (3 rows) splits unevenly, 2 + 1.
    x = np.random.default_rng(0).random((27, 12)).astype("float32")
    results = {}
    for name in names:
        started = time.perf_counter()
        if name == "one_row_last_batch":
            # 25 rows: the last global batch has 1 row, so one replica gets none.
            results[name] = run_case(strategy, x[:25], [6], CASES["cae_h"])
        else:
            # Two encoder layers for the exact methods, so the closed form's chain is used.
            units = [8, 5] if name in ("closed_form", "auto", "batch_jacobian") else [6]
            results[name] = run_case(strategy, x, units, CASES[name])
        print(f"{name}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    with strategy.scope():
        model = make_model([6])
    try:
        model.fit(x, batch_size=9, epochs=1, verbose=0)  # 9 rows cannot split over 2.
        results["odd_batch_error"] = None
    except ValueError as error:
        results["odd_batch_error"] = str(error)
    with open(out, "w") as handle:
        json.dump(results, handle)


if __name__ == "__main__":
    main()
