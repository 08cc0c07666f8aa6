"""`keras-cae compare`: AE, DAE, CAE and CAE+H trained on equal footing, then measured.

The four models are one class, `keras_cae.ContractiveAutoencoder`, with different
arguments, built by `keras_cae.dense_autoencoder` with the same architecture,
optimizer, data, epochs, batch size and seeds:

- ``AE``: a plain auto-encoder (``contractive_weight=0``);
- ``DAE``: a denoising auto-encoder (Vincent et al., 2008): Gaussian (or masking)
  noise on the encoder input in training only, clean targets;
- ``CAE``: the contractive auto-encoder (Rifai et al., ICML 2011), ``+ λ‖J_f(x)‖²_F``;
- ``CAE+H``: the CAE plus the Hessian term ``γ E‖J_f(x) − J_f(x + ε)‖²_F`` (Rifai et
  al., ECML PKDD 2011).

Protocol (also written into every report):

1. The data is split once (seed 0, stratified when labelled) into a train part and a
   held-out test part. The test part is used only for the final measurements.
2. Validation search: the train part is split again (seed 0, 20 %) into a fit part and
   a validation part. Each candidate of `SEARCH_GRIDS` is trained on the fit part with
   the first seed and scored on the validation part; the best is kept (criterion:
   `selection`). ``CAE+H`` searches γ with λ fixed to the λ the ``CAE`` search chose.
3. Final runs: each model, with its selected hyper-parameters, is trained on the whole
   train part once per seed, then measured on the test part: reconstruction MSE, mean
   ``‖J_f(x)‖_F``, linear-probe accuracy on the codes, its drop under Gaussian input
   noise, the contraction curve and the Jacobian spectrum.
4. Noise protocol: the probe (standardised logistic regression,
   `keras_cae.training.probe_accuracy`) is fit on the codes of the clean train part
   and evaluated on the codes of ``x_test + σ·z``, ``z ~ N(0, I)``, *not clipped* to
   the input range. The same noise draws (per seed) are used for every model and for
   the raw-input baseline.

Example:

>>> from keras_cae import compare, load_digits  # doctest: +SKIP
>>> result = compare.compare_models(load_digits(), seeds=3, epochs=60)  # doctest: +SKIP
>>> compare.write_report(result, "runs/compare")  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from keras_cae import _io
from keras_cae.data import Dataset

__all__ = [
    "MODELS",
    "SEARCH_GRIDS",
    "NOISE_LEVELS",
    "SELECTIONS",
    "ComparisonResult",
    "compare_models",
    "write_report",
    "format_markdown",
    "add_parser",
    "run_cli",
]

MODELS = ("AE", "DAE", "CAE", "CAE+H")

# The validation search (step 2 of the protocol): the DAE's noise level (Gaussian σ or
# masking probability), the CAE's λ and the CAE+H's γ. Ordered from the weakest to the
# strongest regularisation; ties go to the first. λ is small because the
# reconstruction loss is a *mean* over inputs while ‖J‖²_F is a *sum* over code units
# and inputs (measured on the digits: λ = 0.1 collapses the codes, ‖J‖_F ≈ 0.09).
SEARCH_GRIDS: dict[str, tuple[float, ...]] = {
    "DAE/gaussian": (0.1, 0.2, 0.4),
    "DAE/masking": (0.1, 0.25, 0.5),
    "CAE": (3e-4, 1e-3, 3e-3),
    "CAE+H": (0.01, 0.1, 1.0),
}
# The ContractiveAutoencoder argument each searched model's grid sets.
SEARCHED_ARGUMENT = {
    "DAE": "corruption_level",
    "CAE": "contractive_weight",
    "CAE+H": "hessian_weight",
}
NOISE_LEVELS = (0.05, 0.1, 0.2)
SELECTIONS = ("probe", "noisy-probe", "reconstruction")
RADII = tuple(float(r) for r in np.geomspace(0.01, 10.0, 10))
SPLIT_SEED = 0
VALIDATION_FRACTION = 0.2
NUM_DIRECTIONS = 4
TANGENTS = 5


@dataclass
class ComparisonResult:
    """What `compare_models` measured: the JSON report and the arrays behind the figures."""

    report: dict[str, Any]
    spectra: dict[str, np.ndarray] = field(default_factory=dict)
    curves: dict[str, np.ndarray] = field(default_factory=dict)
    examples: np.ndarray | None = None
    reconstructions: dict[str, np.ndarray] = field(default_factory=dict)
    tangents: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    image_shape: tuple[int, ...] | None = None


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` should be a positive integer. Received: {name}={value!r}")
    return int(value)


def _summary(values: Sequence[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value) over seeds."""
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return {"mean": float(array.mean()), "std": std, "values": [float(v) for v in array]}


def _model_params(name: str, dae_corruption: str, params: dict[str, Any]) -> dict[str, Any]:
    """The `ContractiveAutoencoder` arguments of a model with search parameters `params`."""
    base: dict[str, Any] = {"contractive_weight": 0.0}
    if name == "DAE":
        base["corruption"] = dae_corruption
    return {**base, **params}


def _image_shape(input_shape: tuple[int, ...]) -> tuple[int, ...] | None:
    from keras_cae.plots import infer_image_shape

    try:
        return infer_image_shape(input_shape)
    except ValueError:
        return None


def _check_grids(
    grids: Mapping[str, Sequence[float]] | None, dae_corruption: str
) -> dict[str, tuple[float, ...]]:
    """Returns the search values of DAE, CAE and CAE+H, or raises `ValueError`."""
    defaults = {
        "DAE": SEARCH_GRIDS[f"DAE/{dae_corruption}"],
        "CAE": SEARCH_GRIDS["CAE"],
        "CAE+H": SEARCH_GRIDS["CAE+H"],
    }
    grids = dict(grids or {})
    unknown = sorted(set(grids) - set(defaults))
    if unknown:
        raise ValueError(
            f"`grids` has values for {unknown}; only {list(defaults)} are searched "
            "(the AE has no hyper-parameter)"
        )
    result = {}
    for name, default in defaults.items():
        values = grids.get(name, default)
        try:
            array = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            array = np.asarray([np.nan])
        upper = 1.0 if name == "DAE" and dae_corruption == "masking" else np.inf
        if array.ndim != 1 or array.size == 0 or not np.all((array >= 0) & (array < upper)):
            allowed = "probabilities in [0, 1)" if upper == 1.0 else "non-negative finite numbers"
            raise ValueError(
                f"`grids[{name!r}]` should be a non-empty sequence of {allowed}. "
                f"Received: {values!r}"
            )
        result[name] = tuple(float(v) for v in array)
    return result


def _probe_scores(
    train_features: np.ndarray,
    y_train: np.ndarray,
    eval_features: Sequence[np.ndarray],
    y_eval: np.ndarray,
) -> list[float]:
    """`keras_cae.training.probe_accuracy` on several test sets with one probe fit."""
    from keras_cae.training import fit_probe

    probe = fit_probe(train_features, y_train)
    return [float(probe.score(f.reshape(len(f), -1), y_eval)) for f in eval_features]


def _pick_examples(y: np.ndarray | None, count: int, available: int) -> np.ndarray:
    """Indices of the first test sample of each of up to `count` classes (else the first)."""
    if y is None:
        return np.arange(min(count, available))
    picks = [int(np.flatnonzero(y == label)[0]) for label in np.unique(y)[:count]]
    return np.asarray(picks)


def compare_models(
    dataset: Dataset,
    seeds: int = 3,
    epochs: int = 60,
    batch_size: int = 32,
    hidden_units: int | Sequence[int] = 32,
    learning_rate: float = 3e-3,
    test_fraction: float = 0.2,
    dae_corruption: str = "gaussian",
    selection: str | None = None,
    grids: Mapping[str, Sequence[float]] | None = None,
    progress: Callable[[str], None] | None = None,
) -> ComparisonResult:
    """Searches, trains and measures AE, DAE, CAE and CAE+H on `dataset` (see module doc).

    Args:
        dataset: the data (`keras_cae.load_digits()` or `keras_cae.load_array(...)`).
            Without labels, probe accuracy is not measured.
        seeds: final runs per model, with seeds ``0 .. seeds-1``. Defaults to `3`.
        epochs: training epochs of every run (search and final). Defaults to `60`.
        batch_size: Defaults to `32`.
        hidden_units: code size, or encoder layer sizes. Defaults to `32`.
        learning_rate: Adam's learning rate. Defaults to `3e-3`.
        test_fraction: share of the data held out for the final measurements.
            Defaults to `0.2`.
        dae_corruption: the DAE's noise, `"gaussian"` or `"masking"`. Defaults to
            `"gaussian"`.
        selection: search criterion: `"probe"` (validation probe accuracy on clean
            inputs), `"noisy-probe"` (its mean over clean and the `NOISE_LEVELS`
            inputs) or `"reconstruction"` (validation MSE; it favours the weakest
            regularisation). Defaults to `"probe"` with labels, else `"reconstruction"`.
        grids: the values to search, by model: `"DAE"` (noise levels), `"CAE"` (λ),
            `"CAE+H"` (γ; λ is the CAE's choice). A model with one value is not
            searched. Missing models get `SEARCH_GRIDS`.
        progress: called with one line of text per step. Defaults to silence.

    Returns:
        A `ComparisonResult`; write it with `write_report`.

    Raises:
        ValueError: for an invalid argument, or a selection that needs labels on
            unlabelled data.
    """
    seeds = _check_positive_int("seeds", seeds)
    epochs = _check_positive_int("epochs", epochs)
    batch_size = _check_positive_int("batch_size", batch_size)
    if not 0 < test_fraction < 1:
        raise ValueError(
            f"`test_fraction` should be in (0, 1). Received: test_fraction={test_fraction!r}"
        )
    if dae_corruption not in ("gaussian", "masking"):
        raise ValueError(
            "`dae_corruption` should be 'gaussian' or 'masking'. "
            f"Received: dae_corruption={dae_corruption!r}"
        )
    labelled = dataset.y is not None
    if selection is None:
        selection = "probe" if labelled else "reconstruction"
    if selection not in SELECTIONS:
        raise ValueError(
            f"`selection` should be one of {list(SELECTIONS)}. Received: selection={selection!r}"
        )
    if selection != "reconstruction" and not labelled:
        raise ValueError(
            f"selection={selection!r} needs labels, and dataset {dataset.name!r} has none; "
            "use selection='reconstruction'"
        )
    values = _check_grids(grids, dae_corruption)
    units = [hidden_units] if isinstance(hidden_units, (int, np.integer)) else list(hidden_units)
    if not units:
        raise ValueError(f"`hidden_units` should not be empty. Received: {hidden_units!r}")
    units = [_check_positive_int("hidden_units", size) for size in units]
    if not (isinstance(learning_rate, (int, float)) and 0 < learning_rate < math.inf):
        raise ValueError(
            f"`learning_rate` should be a positive finite number. Received: {learning_rate!r}"
        )
    say = progress or (lambda line: None)

    import keras  # TensorFlow from here on.

    from keras_cae import analysis, builders, training

    started = time.perf_counter()
    input_shape = tuple(dataset.x.shape[1:])
    x_train, x_test, y_train, y_test = training.split(dataset, test_fraction, SPLIT_SEED)
    x_fit, x_val, y_fit, y_val = training.split(
        Dataset(x_train, y_train, dataset.name, dataset.scaling), VALIDATION_FRACTION, SPLIT_SEED
    )
    flat = {
        name: part.reshape(len(part), -1).astype(np.float32)
        for name, part in (("train", x_train), ("test", x_test), ("fit", x_fit), ("val", x_val))
    }
    input_dim = flat["train"].shape[1]
    grid_of = {
        name: [{SEARCHED_ARGUMENT[name]: v} for v in values[name]] if name in values else [{}]
        for name in MODELS
    }
    searched = [name for name in MODELS if len(grid_of[name]) > 1]
    total_runs = sum(len(grid_of[name]) for name in searched) + len(MODELS) * seeds
    counter = {"run": 0}
    seed_list = list(range(seeds))

    def fit(x: np.ndarray, params: dict[str, Any], seed: int) -> tuple[Any, dict[str, float]]:
        keras.utils.set_random_seed(seed)
        model = builders.dense_autoencoder(
            input_dim, units, learning_rate=learning_rate, seed=seed, **params
        )
        begin, begin_cpu = time.perf_counter(), time.process_time()
        model.fit(x, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0)
        # CPU time (all threads of this process) is less sensitive than wall time to
        # other programs sharing the machine.
        return model, {
            "train_seconds": time.perf_counter() - begin,
            "train_cpu_seconds": time.process_time() - begin_cpu,
        }

    def noisy(x: np.ndarray, rng: np.random.Generator) -> dict[float, np.ndarray]:
        # One draw per level, shared by every model (common random numbers).
        return {s: (x + s * rng.standard_normal(x.shape)).astype(np.float32) for s in NOISE_LEVELS}

    def codes(model: Any, x: np.ndarray) -> np.ndarray:
        # A direct call: `predict` builds a new tf.function per model, slower on small data.
        parts = [model.encoder(x[i : i + 512], training=False) for i in range(0, len(x), 512)]
        return np.concatenate([np.asarray(p) for p in parts])

    def reconstruct(model: Any, x: np.ndarray) -> np.ndarray:
        return np.asarray(model.decoder(codes(model, x), training=False))

    def probes(
        train_codes: np.ndarray, y_a: Any, eval_x: dict, encode: Callable, y_b: Any
    ) -> tuple[float, dict[str, float]]:
        scores = _probe_scores(train_codes, y_a, [encode(eval_x[k]) for k in eval_x], y_b)
        return scores[0], {str(s): score for s, score in zip(NOISE_LEVELS, scores[1:], strict=True)}

    def step(text: str) -> None:
        counter["run"] += 1
        elapsed = time.perf_counter() - started
        say(f"[{counter['run']}/{total_runs}] {text} ({elapsed:.0f} s elapsed)")

    # ---------------------------------------------------------------- validation search.
    say(
        f"compare: {dataset.name}, {len(flat['train'])} train ({len(flat['fit'])} fit + "
        f"{len(flat['val'])} validation) / {len(flat['test'])} test, {epochs} epochs, "
        f"seeds {seed_list}, {total_runs} training runs"
    )
    val_noise = noisy(flat["val"], np.random.default_rng([seed_list[0], 1]))
    val_inputs = {"clean": flat["val"], **val_noise}
    search: dict[str, Any] = {}
    selected: dict[str, dict[str, Any]] = {}
    for name in MODELS:
        grid = [dict(candidate) for candidate in grid_of[name]]
        if name == "CAE+H":
            grid = [
                {"contractive_weight": selected["CAE"]["contractive_weight"], **c} for c in grid
            ]
        if len(grid) == 1:
            selected[name] = grid[0]
            search[name] = {"candidates": [], "selected": grid[0]}
            continue
        candidates = []
        for params in grid:
            model, seconds = fit(
                flat["fit"], _model_params(name, dae_corruption, params), seed_list[0]
            )
            recon = reconstruct(model, flat["val"])
            scores: dict[str, Any] = {
                "reconstruction_mse": float(np.mean((recon - flat["val"]) ** 2)),
            }
            if labelled:
                clean, noisy_acc = probes(
                    codes(model, flat["fit"]),
                    y_fit,
                    val_inputs,
                    lambda x, m=model: codes(m, x),
                    y_val,
                )
                scores["probe_accuracy"] = clean
                scores["noisy_probe_accuracy"] = noisy_acc
                scores["mean_probe_accuracy"] = float(np.mean([clean, *noisy_acc.values()]))
            candidates.append({"params": params, "validation": scores, **seconds})
            shown = ", ".join(f"{k}={v:g}" for k, v in params.items())
            probe_text = f", val probe {scores['probe_accuracy']:.3f}" if labelled else ""
            step(
                f"search {name} {shown}: val MSE {scores['reconstruction_mse']:.4f}"
                f"{probe_text}, {seconds['train_seconds']:.1f} s"
            )
        key = {
            "probe": lambda c: c["validation"]["probe_accuracy"],
            "noisy-probe": lambda c: c["validation"]["mean_probe_accuracy"],
            "reconstruction": lambda c: -c["validation"]["reconstruction_mse"],
        }[selection]
        best = int(np.argmax([key(c) for c in candidates]))  # First of equals: weakest.
        selected[name] = candidates[best]["params"]
        search[name] = {"candidates": candidates, "selected": selected[name]}
        say(f"selected {name}: {selected[name]}")

    # --------------------------------------------------------------------- final runs.
    image_shape = _image_shape(input_shape)
    examples = _pick_examples(y_test, 10, len(flat["test"]))
    tangent_examples = examples[:6]
    result = ComparisonResult(report={}, image_shape=image_shape)
    result.examples = flat["test"][examples]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in MODELS}
    raw_runs: list[dict[str, Any]] = []
    spectra: dict[str, list[np.ndarray]] = {name: [] for name in MODELS}
    curves: dict[str, list[np.ndarray]] = {name: [] for name in MODELS}
    for seed in seed_list:
        test_inputs = {
            "clean": flat["test"],
            **noisy(flat["test"], np.random.default_rng([seed, 0])),
        }
        if labelled:
            clean, noisy_acc = probes(flat["train"], y_train, test_inputs, lambda x: x, y_test)
            raw_runs.append(
                {"seed": seed, "probe_accuracy": clean, "noisy_probe_accuracy": noisy_acc}
            )
        for name in MODELS:
            params = _model_params(name, dae_corruption, selected[name])
            model, seconds = fit(flat["train"], params, seed)
            recon = reconstruct(model, flat["test"])
            spectrum = analysis.jacobian_spectrum(model.encoder, flat["test"])
            curve = analysis.contraction_curve(
                model.encoder, flat["test"], RADII, num_directions=NUM_DIRECTIONS, seed=seed
            )
            run: dict[str, Any] = {
                "seed": seed,
                **seconds,
                "reconstruction_mse": float(np.mean((recon - flat["test"]) ** 2)),
                "jacobian_frobenius": float(
                    analysis.jacobian_norm(model.encoder, flat["test"]).mean()
                ),
                "contraction_curve": [float(v) for v in curve],
                "mean_spectrum": [float(v) for v in spectrum.mean(axis=0)],
            }
            if labelled:
                clean, noisy_acc = probes(
                    codes(model, flat["train"]), y_train, test_inputs,
                    lambda x, m=model: codes(m, x), y_test,
                )  # fmt: skip
                run["probe_accuracy"] = clean
                run["noisy_probe_accuracy"] = noisy_acc
                run["probe_drop"] = {s: clean - acc for s, acc in noisy_acc.items()}
            runs[name].append(run)
            spectra[name].append(spectrum)
            curves[name].append(curve)
            if seed == seed_list[0]:
                result.reconstructions[name] = recon[examples]
                if name in ("AE", "CAE") and image_shape is not None:
                    chosen = flat["test"][tangent_examples]
                    k = min(TANGENTS, spectrum.shape[1])
                    result.tangents[name] = (
                        analysis.tangent_directions(model.encoder, chosen, k=k),
                        spectrum[tangent_examples],
                    )
            probe_text = f", test probe {run['probe_accuracy']:.3f}" if labelled else ""
            step(
                f"seed {seed} {name}: test MSE {run['reconstruction_mse']:.4f}, "
                f"mean ||J||_F {run['jacobian_frobenius']:.3f}{probe_text}, "
                f"{seconds['train_seconds']:.1f} s"
            )
            keras.backend.clear_session()  # Frees the graphs of finished runs.

    result.spectra = {name: np.concatenate(spectra[name]) for name in MODELS}
    result.curves = {name: np.stack(curves[name]) for name in MODELS}
    result.report = _build_report(
        dataset, input_shape, flat, selected, search, runs, raw_runs, dae_corruption, selection,
        dict(seeds=seed_list, epochs=epochs, batch_size=batch_size, hidden_units=units,
             learning_rate=learning_rate, test_fraction=test_fraction,
             grids={name: list(v) for name, v in values.items()}),
        time.perf_counter() - started,
    )  # fmt: skip
    return result


def _build_report(
    dataset: Dataset,
    input_shape: tuple[int, ...],
    flat: dict[str, np.ndarray],
    selected: dict[str, dict[str, Any]],
    search: dict[str, Any],
    runs: dict[str, list[dict[str, Any]]],
    raw_runs: list[dict[str, Any]],
    dae_corruption: str,
    selection: str,
    config: dict[str, Any],
    seconds: float,
) -> dict[str, Any]:
    import keras_cae

    models: dict[str, Any] = {}
    for name in MODELS:
        model_runs = runs[name]
        summary = {
            key: _summary([r[key] for r in model_runs])
            for key in (
                "reconstruction_mse",
                "jacobian_frobenius",
                "train_seconds",
                "train_cpu_seconds",
            )
        }
        if "probe_accuracy" in model_runs[0]:
            summary["probe_accuracy"] = _summary([r["probe_accuracy"] for r in model_runs])
            for s in map(str, NOISE_LEVELS):
                summary[f"noisy_probe_accuracy@{s}"] = _summary(
                    [r["noisy_probe_accuracy"][s] for r in model_runs]
                )
                summary[f"probe_drop@{s}"] = _summary([r["probe_drop"][s] for r in model_runs])
        models[name] = {
            "params": _model_params(name, dae_corruption, selected[name]),
            "summary": summary,
            "contraction_curve": {
                "mean": np.mean([r["contraction_curve"] for r in model_runs], axis=0).tolist(),
                "std": np.std([r["contraction_curve"] for r in model_runs], axis=0).tolist(),
            },
            "mean_spectrum": np.mean([r["mean_spectrum"] for r in model_runs], axis=0).tolist(),
            "runs": model_runs,
        }
    raw: dict[str, Any] | None = None
    if raw_runs:
        raw = {
            "probe_accuracy": _summary([r["probe_accuracy"] for r in raw_runs]),
            "runs": raw_runs,
        }
        for s in map(str, NOISE_LEVELS):
            raw[f"probe_drop@{s}"] = _summary(
                [r["probe_accuracy"] - r["noisy_probe_accuracy"][s] for r in raw_runs]
            )
    return {
        "keras_cae_version": keras_cae.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "data": {
            "name": dataset.name,
            "scaling": dataset.scaling,
            "input_shape": list(input_shape),
            "labelled": dataset.y is not None,
            "num_train": len(flat["train"]),
            "num_fit": len(flat["fit"]),
            "num_validation": len(flat["val"]),
            "num_test": len(flat["test"]),
        },
        "config": {
            **config,
            "architecture": "Dense, sigmoid encoder and decoder, untied weights, MSE, Adam",
            "dae_corruption": dae_corruption,
            "selection": selection,
            "noise_levels": list(NOISE_LEVELS),
            "radii": list(RADII),
            "contraction_directions_per_sample": NUM_DIRECTIONS,
            "split_seed": SPLIT_SEED,
            "validation_fraction": VALIDATION_FRACTION,
        },
        "search": search,
        "models": models,
        "raw_inputs": raw,
        "total_seconds": seconds,
    }


# ------------------------------------------------------------------------------------------
# Writing the report.

_COLUMNS: list[tuple[str, str, str, bool]] = [
    # (summary key, header, format, lower is better)
    ("reconstruction_mse", "test MSE", "{:.4f}", True),
    ("jacobian_frobenius", "mean ‖J_f(x)‖_F", "{:.2f}", True),
    ("probe_accuracy", "probe acc.", "{:.3f}", False),
    *[(f"probe_drop@{s}", f"drop σ={s}", "{:.3f}", True) for s in NOISE_LEVELS],
    ("train_seconds", "train wall (s)", "{:.1f}", True),
    ("train_cpu_seconds", "train CPU (s)", "{:.1f}", True),
]


def _params_text(params: dict[str, Any]) -> str:
    names = {
        "contractive_weight": "λ",
        "hessian_weight": "γ",
        "corruption_level": "noise",
        "corruption": "",
    }
    parts = []
    for key, value in params.items():
        if key == "contractive_weight" and value == 0:
            continue
        if key == "corruption":
            parts.append(str(value))
        else:
            parts.append(f"{names.get(key, key)}={value:g}")
    return ", ".join(parts) or "—"


def _ranking(models: dict[str, Any], columns: list[tuple[str, str, str, bool]]) -> list[str]:
    """One line per column: the order of the models, and whether the lead is within noise.

    The lead is called "within noise" when the gap between the first two means is at
    most ``sqrt(std₁² + std₂²)`` (one combined standard deviation over seeds).
    """
    lines = []
    for key, header, fmt, lower in columns:
        stats = {name: models[name]["summary"][key] for name in MODELS}
        order = sorted(MODELS, key=lambda n: stats[n]["mean"], reverse=not lower)
        first, second = stats[order[0]], stats[order[1]]
        gap = abs(first["mean"] - second["mean"])
        noise = math.hypot(first["std"], second["std"])
        verdict = "within noise of the runner-up" if gap <= noise else "ahead by more than 1 std"
        ranked = " < ".join(order) if lower else " > ".join(order)
        direction = "lower is better" if lower else "higher is better"
        lines.append(
            f"- {header} ({direction}): {ranked}; {order[0]} is {verdict} "
            f"({fmt.format(first['mean'])} vs {fmt.format(second['mean'])})."
        )
    return lines


_GRID_FLAGS = {"DAE": "--dae-levels", "CAE": "--cae-weights", "CAE+H": "--hessian-weights"}


def _edge_notes(report: dict[str, Any]) -> list[str]:
    """Notes for searches whose choice is the smallest or largest value of the grid."""
    notes = []
    for name, flag in _GRID_FLAGS.items():
        grid = report["config"].get("grids", {}).get(name, [])
        if len(grid) < 2:
            continue
        value = report["search"][name]["selected"][SEARCHED_ARGUMENT[name]]
        if value in (min(grid), max(grid)):
            end = "smallest" if value == min(grid) else "largest"
            notes.append(
                f"- {name}: the selected {SEARCHED_ARGUMENT[name]}={value:g} is the {end} value "
                f"searched; a wider grid ({flag}) might choose differently."
            )
    return ["", *notes] if notes else []


def format_markdown(report: dict[str, Any], command: str | None = None) -> str:
    """Renders `report` (from `compare_models`) as the Markdown of `report.md`."""
    data, config, models = report["data"], report["config"], report["models"]
    columns = [c for c in _COLUMNS if c[0] in models[MODELS[0]]["summary"]]
    lines = [f"# AE / DAE / CAE / CAE+H on {data['name']}", ""]
    if command:
        lines += ["Generated by:", "", "```", command, "```", ""]
    lines += [
        f"Data: {data['name']} (scaling {data['scaling']}), "
        f"input shape {tuple(data['input_shape'])}; "
        f"{data['num_train']} train ({data['num_fit']} fit + {data['num_validation']} validation "
        f"for the search) / {data['num_test']} held-out test samples. Every model: "
        f"{config['architecture']}, code {config['hidden_units']}, {config['epochs']} epochs, "
        f"batch {config['batch_size']}, learning rate {config['learning_rate']:g}; seeds "
        f"{config['seeds']}. Numbers are mean ± std (ddof=1) over seeds, on the test split.",
        "",
        "| model | selected | " + " | ".join(c[1] for c in columns) + " |",
        "|---|---|" + "---:|" * len(columns),
    ]
    best = {}
    for key, _, _, lower in columns:
        means = [models[name]["summary"][key]["mean"] for name in MODELS]
        best[key] = min(means) if lower else max(means)
    for name in MODELS:
        summary = models[name]["summary"]
        cells = []
        for key, _, fmt, _ in columns:
            mean, std = summary[key]["mean"], summary[key]["std"]
            cell = f"{fmt.format(mean)} ± {fmt.format(std)}"
            cells.append(f"**{cell}**" if fmt.format(mean) == fmt.format(best[key]) else cell)
        lines.append(
            f"| {name} | {_params_text(models[name]['params'])} | " + " | ".join(cells) + " |"
        )
    raw = report.get("raw_inputs")
    if raw:
        cells = []
        for key, _, fmt, _ in columns:
            if key in raw:
                cells.append(f"{fmt.format(raw[key]['mean'])} ± {fmt.format(raw[key]['std'])}")
            else:
                cells.append("")
        lines.append("| raw pixels (no encoder) | — | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Bold: best mean in the column (for the four models). "
        "*drop σ*: clean probe accuracy minus probe accuracy on noisy test inputs.",
        "",
        "## Ranking",
        "",
        *_ranking(models, columns),
        "",
        "## What is measured",
        "",
        "- **test MSE**: mean squared reconstruction error over test samples and inputs.",
        "- **mean ‖J_f(x)‖_F**: Frobenius norm of the encoder Jacobian (exact), averaged "
        "over test samples. Lower = more contractive.",
    ]
    if raw:
        lines += [
            "- **probe acc.**: a standardised logistic-regression probe "
            "(`keras_cae.training.probe_accuracy`) fit on the codes of the clean train split, "
            "scored on the codes of the clean test split.",
            "- **drop σ**: the same probe (fit on clean train codes) scored on the codes of "
            "`x_test + σ·z`, `z ~ N(0, I)`, **not clipped** to the input range; one noise draw "
            "per seed, shared by all models and by the raw-pixel baseline.",
        ]
    lines += [
        "- **train wall / CPU**: wall-clock and process CPU time (all threads) of `model.fit` "
        "on the whole train split. On a shared machine wall time is noisy; CPU time is the "
        "steadier measure of cost.",
        f"- Contraction curve: mean of ‖f(x + r·u) − f(x)‖ / r over test samples and "
        f"{config['contraction_directions_per_sample']} random unit directions u per sample "
        "(`keras_cae.analysis.contraction_curve`).",
        "",
        "## Validation search",
        "",
        f"Criterion: `{config['selection']}` "
        + {
            "probe": "(validation probe accuracy on clean inputs; ties go to the weaker "
            "regularisation).",
            "noisy-probe": "(validation probe accuracy averaged over clean and noisy inputs).",
            "reconstruction": "(validation reconstruction MSE; favours weak regularisation).",
        }[config["selection"]]
        + f" Each candidate is trained on the fit split with seed {config['seeds'][0]} and "
        "scored on the validation split (never the test split). CAE+H searches γ with λ "
        "fixed to the CAE's choice.",
        "",
        "| model | candidate | val MSE | val probe acc. | val mean probe acc. (clean + noisy) |",
        "|---|---|---:|---:|---:|",
    ]
    for name in MODELS:
        for candidate in report["search"][name]["candidates"]:
            v = candidate["validation"]
            chosen = (
                " (selected)" if candidate["params"] == report["search"][name]["selected"] else ""
            )
            probe = f"{v['probe_accuracy']:.3f}" if "probe_accuracy" in v else ""
            mean_probe = f"{v['mean_probe_accuracy']:.3f}" if "mean_probe_accuracy" in v else ""
            lines.append(
                f"| {name} | {_params_text(candidate['params'])}{chosen} | "
                f"{v['reconstruction_mse']:.4f} | {probe} | {mean_probe} |"
            )
    lines += _edge_notes(report)
    lines += ["", "## Figures", ""]
    for file, caption in report.get("figures", {}).items():
        lines += [f"![{caption}]({file})", ""]
    lines.append(f"Total wall time: {report['total_seconds']:.0f} s.")
    return "\n".join(lines) + "\n"


def write_report(
    result: ComparisonResult,
    out: str | os.PathLike[str],
    overwrite: bool = False,
    command: str | None = None,
) -> list[str]:
    """Writes `report.json`, `report.md` and the PNGs into the new directory `out`.

    The directory is built beside `out` and renamed into place only when complete
    (`keras_cae._io.atomic_directory`); an existing non-empty `out` is refused unless
    `overwrite`.

    Args:
        result: from `compare_models`.
        out: the output directory.
        overwrite: replace an existing non-empty `out`. Defaults to `False`.
        command: the command line to record in the report.

    Returns:
        The names of the files written, sorted.

    Raises:
        ValueError: if `out` exists (non-empty) and not `overwrite`, or is a file.
        ImportError: if matplotlib is not installed (`pip install 'keras-cae[plot]'`).
    """
    from keras_cae import plots

    report = dict(result.report)
    if command:
        report["command"] = command
    figures: dict[str, str] = {}
    with _io.atomic_directory(out, overwrite=overwrite) as staging:

        def path(name: str) -> str:
            return os.path.join(staging, name)

        plots.plot_contraction_curves(RADII, result.curves, path("contraction_curves.png"))
        figures["contraction_curves.png"] = (
            "Contraction ratio against distance r in input space (mean ± std over seeds)"
        )
        plots.plot_spectra(result.spectra, path("jacobian_spectra.png"))
        figures["jacobian_spectra.png"] = (
            "Singular values of J_f(x) on test data (mean; band: 10th-90th percentile)"
        )
        if result.image_shape is not None:
            for name, (tangents, spectrum) in result.tangents.items():
                file = f"tangents_{name.lower().replace('+', 'h')}.png"
                rows = min(len(tangents), 6)
                plots.plot_tangents(
                    result.examples[: len(tangents)][:rows], tangents[:rows], path(file),
                    image_shape=result.image_shape, singular_values=spectrum[:rows],
                    title=f"{name}: leading tangent directions (first seed)",
                )  # fmt: skip
                figures[file] = (
                    f"{name}: test inputs and the top right singular vectors of J_f(x) "
                    "(red +, blue −), labelled with their singular values"
                )
            plots.plot_reconstructions(
                result.examples, result.reconstructions, path("reconstructions.png"),
                image_shape=result.image_shape,
            )  # fmt: skip
            figures["reconstructions.png"] = "Test inputs and reconstructions (first seed)"
        report["figures"] = figures
        _io.atomic_write_json(path("report.json"), report)
        with open(path("report.md"), "w", encoding="utf-8") as stream:
            stream.write(format_markdown(report, command))
        return sorted(os.listdir(staging))


# ------------------------------------------------------------------------------------------
# The `keras-cae compare` subcommand.


def add_parser(subparsers: Any) -> None:
    """Adds `keras-cae compare` to the `keras-cae` command line (imports no TensorFlow)."""
    from keras_cae.cli import _fraction, _non_negative_float, _positive_int, _units

    parser = subparsers.add_parser(
        "compare",
        help="train AE, DAE, CAE and CAE+H on equal footing and report how they compare",
        description="Train AE, DAE, CAE and CAE+H with identical architecture, data, seeds "
        "and budget (hyper-parameters from a small validation search), then write "
        "report.md, report.json and PNG figures into --out.",
    )
    add = parser.add_argument
    add("--data", help="a .npy, .npz (x, optional y) or .csv file; default: bundled digits")
    add("--out", help="output directory (new or empty unless --overwrite); "
        "default: runs/compare-<timestamp>")  # fmt: skip
    add("--overwrite", action="store_true", help="replace a non-empty --out")
    add(
        "--protocol",
        choices=PROTOCOLS,
        default="models",
        help="models: AE/DAE/CAE/CAE+H codes and probes; finetune: pre-train, then fine-tune "
        "with --label-budgets labels per class (docs/results-finetune.md) (default: models)",
    )
    add("--seeds", type=_positive_int, help="final runs per model (default: 3; finetune: 5)")
    add("--epochs", type=_positive_int, default=60, help="epochs of every run (default: 60)")
    add("--batch-size", type=_positive_int, default=32, help="default: 32")
    add("--hidden-units", type=_units, default=[32], help="code size(s) (default: 32)")
    add("--learning-rate", type=_non_negative_float, default=3e-3, help="Adam (default: 0.003)")
    add("--test-fraction", type=_fraction, default=0.2, help="held out (default: 0.2)")
    add("--dae-corruption", choices=["gaussian", "masking"], default="gaussian",
        help="the DAE's training noise (default: gaussian)")  # fmt: skip
    add("--selection", choices=list(SELECTIONS),
        help="search criterion (default: probe with labels, else reconstruction)")  # fmt: skip
    add(
        "--dae-levels",
        type=_floats,
        metavar="V,V,...",
        help="DAE noise levels to search (default: 0.1,0.2,0.4 gaussian; 0.1,0.25,0.5 masking)",
    )
    add(
        "--cae-weights",
        type=_floats,
        metavar="V,V,...",
        help="CAE λ values to search (default: 0.0003,0.001,0.003)",
    )
    add(
        "--hessian-weights",
        type=_floats,
        metavar="V,V,...",
        help="CAE+H γ values to search, λ from the CAE (default: 0.01,0.1,1)",
    )
    add(
        "--label-budgets",
        type=_budgets,
        default=[10, 30, 100, None],
        metavar="K,K,...",
        help="finetune: labelled images per class, 'all' for every one (default: 10,30,100,all)",
    )
    add(
        "--finetune-steps",
        type=_positive_int,
        default=2000,
        help="finetune: most fine-tuning steps (default: 2000)",
    )
    add(
        "--lambda-grid",
        type=_floats,
        metavar="V,V,...",
        help="finetune: CAE λ values of the λ sweep (default: 0,1e-4,3e-4,1e-3,3e-3,1e-2)",
    )
    add("--quiet", action="store_true", help="no progress lines")
    parser.set_defaults(run=run_cli)


PROTOCOLS = ["models", "finetune"]


def _budgets(text: str) -> list[int | None]:
    try:
        values = [None if part == "all" else int(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not values or any(v is not None and v < 1 for v in values):
        raise argparse.ArgumentTypeError(
            f"expected positive integers or 'all', such as 10,100,all, got {text!r}"
        )
    return values


def _floats(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers such as 0.001,0.01, got {text!r}"
        ) from None
    if not all(np.isfinite(values)) or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative finite numbers, got {text!r}")
    return values


_GRID_OPTIONS = (("DAE", "dae_levels"), ("CAE", "cae_weights"), ("CAE+H", "hessian_weights"))


def _command_line(args: argparse.Namespace, out: str) -> str:
    """The canonical command line, every option explicit, for the report."""
    parts = ["keras-cae", "compare"]
    if args.protocol != "models":
        parts += ["--protocol", args.protocol]
    if args.data:
        parts += ["--data", args.data]
    parts += [
        "--seeds", str(args.seeds), "--epochs", str(args.epochs),
        "--batch-size", str(args.batch_size),
        "--hidden-units", ",".join(map(str, args.hidden_units)),
        "--learning-rate", f"{args.learning_rate:g}", "--test-fraction", f"{args.test_fraction:g}",
        "--dae-corruption", args.dae_corruption,
    ]  # fmt: skip
    if args.selection:
        parts += ["--selection", args.selection]
    for _, option in _GRID_OPTIONS:
        if getattr(args, option):
            flag = "--" + option.replace("_", "-")
            parts += [flag, ",".join(f"{v:g}" for v in getattr(args, option))]
    if args.protocol == "finetune":
        budgets = ",".join("all" if b is None else str(b) for b in args.label_budgets)
        parts += ["--label-budgets", budgets, "--finetune-steps", str(args.finetune_steps)]
        if args.lambda_grid is not None:
            parts += ["--lambda-grid", ",".join(f"{v:g}" for v in args.lambda_grid)]
    parts += ["--out", out]
    return " ".join(shlex.quote(p) for p in parts)


def run_cli(args: argparse.Namespace) -> int:
    """Runs `keras-cae compare` with parsed arguments; returns the exit code."""
    from keras_cae import data
    from keras_cae.cli import CliError

    out = args.out or os.path.join(
        "runs", "compare-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    )
    _io.check_output_dir(out, args.overwrite, "--out")
    if args.test_fraction <= 0:
        raise CliError("--test-fraction must be > 0: the comparison is measured on held-out data")
    if args.learning_rate <= 0:
        raise CliError(f"--learning-rate must be > 0, got {args.learning_rate:g}")
    try:
        import matplotlib  # noqa: F401  Fail before training, not after.
    except ImportError:
        raise CliError(
            "keras-cae compare writes PNG figures and needs matplotlib: "
            "pip install 'keras-cae[plot]'"
        ) from None
    dataset = data.load_digits() if args.data is None else data.load_array(args.data)
    args.seeds = args.seeds or (5 if args.protocol == "finetune" else 3)

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if args.protocol == "finetune":
        return _run_finetune(args, dataset, out, None if args.quiet else progress)

    result = compare_models(
        dataset,
        seeds=args.seeds,
        epochs=args.epochs,
        batch_size=args.batch_size,
        hidden_units=args.hidden_units,
        learning_rate=args.learning_rate,
        test_fraction=args.test_fraction,
        dae_corruption=args.dae_corruption,
        selection=args.selection,
        grids={
            name: getattr(args, option) for name, option in _GRID_OPTIONS if getattr(args, option)
        },
        progress=None if args.quiet else progress,
    )
    command = _command_line(args, out)
    files = write_report(result, out, overwrite=args.overwrite, command=command)
    print(_console_summary(result.report))
    print(f"wrote {', '.join(files)} into {out}")
    return 0


def _run_finetune(args: argparse.Namespace, dataset: Dataset, out: str, progress: Any) -> int:
    """`keras-cae compare --protocol finetune`: `keras_cae.finetune_protocol.finetune_study`."""
    from keras_cae import finetune, finetune_protocol, finetune_report
    from keras_cae.cli import CliError

    if dataset.y is None:
        raise CliError(f"--protocol finetune needs labels, and {dataset.name} has none")
    if len(args.hidden_units) != 1:
        raise CliError("--protocol finetune takes one --hidden-units size (CAE-2 stacks two)")
    try:
        config = finetune.FinetuneConfig(
            seeds=tuple(range(args.seeds)), label_budgets=tuple(args.label_budgets),
            epochs=args.epochs, finetune_steps=args.finetune_steps, batch_size=args.batch_size,
            hidden_units=args.hidden_units[0], learning_rate=args.learning_rate,
            test_fraction=args.test_fraction, dae_corruption=args.dae_corruption,
            grids={n: tuple(getattr(args, o)) for n, o in _GRID_OPTIONS if getattr(args, o)},
            lambda_grid=finetune.LAMBDA_GRID if args.lambda_grid is None
            else tuple(args.lambda_grid),
        )  # fmt: skip
        study = finetune_protocol.finetune_study(dataset, config, progress=progress)
    except ValueError as error:
        raise CliError(str(error)) from None
    files = finetune_report.write_report(
        study, out, overwrite=args.overwrite, command=_command_line(args, out)
    )
    print(finetune_report.console_summary(study))
    print(f"wrote {', '.join(files)} into {out}")
    return 0


def _console_summary(report: dict[str, Any]) -> str:
    """A short table for the terminal."""
    models = report["models"]
    labelled = "probe_accuracy" in models[MODELS[0]]["summary"]
    header = f"{'model':<7} {'test MSE':>9} {'mean|J|_F':>10}"
    if labelled:
        header += f" {'probe':>6} {'drop@0.2':>9}"
    header += f" {'train s':>8}"
    lines = [header]
    for name in MODELS:
        s = models[name]["summary"]
        line = (
            f"{name:<7} {s['reconstruction_mse']['mean']:>9.4f} "
            f"{s['jacobian_frobenius']['mean']:>10.3f}"
        )
        if labelled:
            drop = s[f"probe_drop@{NOISE_LEVELS[-1]}"]["mean"]
            line += f" {s['probe_accuracy']['mean']:>6.3f} {drop:>9.3f}"
        line += f" {s['train_seconds']['mean']:>8.1f}"
        lines.append(line)
    return "\n".join(lines)
