"""The AE / DAE / CAE / CAE+H study (`keras-cae compare`, ``--protocol models``).

`compare_models` runs the protocol described in `keras_cae.studies.compare` and returns a
`keras_cae.studies.compare.ComparisonResult`; `keras_cae.studies.compare_report` writes it.
The split, the search loop and the progress lines are the studies' shared engine
(`keras_cae.studies._engine`).

Example:

>>> from keras_cae import load_digits  # doctest: +SKIP
>>> from keras_cae.studies import compare_protocol  # doctest: +SKIP
>>> result = compare_protocol.compare_models(load_digits(), seeds=3)  # doctest: +SKIP
>>> result.search["CAE"].selected  # doctest: +SKIP
{'contractive_weight': 0.001}
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np

from keras_cae._checks import positive_int
from keras_cae.data import Dataset
from keras_cae.studies import _engine
from keras_cae.studies.compare import (
    MODELS,
    NOISE_LEVELS,
    NUM_DIRECTIONS,
    RADII,
    SELECTIONS,
    TANGENTS,
    Candidate,
    CompareConfig,
    ComparisonResult,
    DataSplit,
    ModelRun,
    RawRun,
    Search,
    model_params,
)

__all__ = ["compare_models"]


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
        test_fraction: share of the data held out for the final measurements; not
            used when `dataset` has its own test split (`Dataset.x_test`, the Keras
            layout), which is the test set then (as in `keras-cae train`).
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
        A `ComparisonResult`; write it with `keras_cae.studies.compare_report.write_report`.

    Raises:
        ValueError: for an invalid argument, or a selection that needs labels on
            unlabelled data.
    """
    config = _check_arguments(
        dataset, seeds, epochs, batch_size, hidden_units, learning_rate, test_fraction,
        dae_corruption, selection, grids,
    )  # fmt: skip
    say = progress or (lambda line: None)

    from keras_cae import training  # noqa: F401  (TensorFlow from here on)

    started = time.perf_counter()
    parts = _engine.split(dataset, config.test_fraction)
    data = DataSplit(
        name=dataset.name, scaling=dataset.scaling, input_shape=tuple(dataset.x.shape[1:]),
        labelled=dataset.y is not None, num_train=len(parts.x_train), num_fit=len(parts.x_fit),
        num_validation=len(parts.x_val), num_test=len(parts.x_test),
        own_test_split=parts.own_test_split,
    )  # fmt: skip
    grid_sizes = [len(_engine.search_grid(name, config.grids)) for name in MODELS]
    total_runs = sum(size for size in grid_sizes if size > 1) + len(MODELS) * len(config.seeds)
    progress_line = _engine.Progress(say, total_runs, started)
    say(
        f"compare: {dataset.name}, {data.num_train} train ({data.num_fit} fit + "
        f"{data.num_validation} validation) / {data.num_test} test"
        f"{_engine.own_split_note(data.own_test_split)}, {config.epochs} epochs, "
        f"seeds {list(config.seeds)}, {total_runs} training runs"
    )
    search = _search(config, parts, progress_line)
    result = ComparisonResult(
        config=config, data=data, search=search, runs={}, raw_runs=[], total_seconds=0.0,
        image_shape=_engine.image_shape(data.input_shape),
    )  # fmt: skip
    _final_runs(result, parts, progress_line)
    result.total_seconds = time.perf_counter() - started
    return result


def _check_arguments(
    dataset: Dataset,
    seeds: Any,
    epochs: Any,
    batch_size: Any,
    hidden_units: Any,
    learning_rate: Any,
    test_fraction: Any,
    dae_corruption: Any,
    selection: Any,
    grids: Any,
) -> CompareConfig:
    """The settings of `compare_models` as a `CompareConfig`, or `ValueError`."""
    seeds = positive_int("seeds", seeds)
    epochs = positive_int("epochs", epochs)
    batch_size = positive_int("batch_size", batch_size)
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
    values = _engine.check_grids(grids, dae_corruption)
    units = [hidden_units] if isinstance(hidden_units, (int, np.integer)) else list(hidden_units)
    if not units:
        raise ValueError(f"`hidden_units` should not be empty. Received: {hidden_units!r}")
    sizes = [positive_int("hidden_units", size) for size in units]
    if not (isinstance(learning_rate, (int, float)) and 0 < learning_rate < math.inf):
        raise ValueError(
            f"`learning_rate` should be a positive finite number. Received: {learning_rate!r}"
        )
    return CompareConfig(
        seeds=tuple(range(seeds)), epochs=epochs, batch_size=batch_size,
        hidden_units=tuple(sizes), learning_rate=learning_rate, test_fraction=test_fraction,
        dae_corruption=dae_corruption, selection=selection, grids=values,
    )  # fmt: skip


def _fit(
    config: CompareConfig, x: np.ndarray, params: dict[str, Any], seed: int
) -> tuple[Any, dict[str, float]]:
    """Builds and trains one model; returns it and its wall and CPU training seconds."""
    import keras

    from keras_cae import builders

    keras.utils.set_random_seed(seed)
    model = builders.dense_autoencoder(
        x.shape[1], list(config.hidden_units), learning_rate=config.learning_rate, seed=seed,
        **params,
    )  # fmt: skip
    begin, begin_cpu = time.perf_counter(), time.process_time()
    model.fit(x, epochs=config.epochs, batch_size=config.batch_size, shuffle=True, verbose=0)
    # CPU time (all threads of this process) is less sensitive than wall time to
    # other programs sharing the machine.
    return model, {
        "train_seconds": time.perf_counter() - begin,
        "train_cpu_seconds": time.process_time() - begin_cpu,
    }


def _codes(model: Any, x: np.ndarray) -> np.ndarray:
    # A direct call: `predict` builds a new tf.function per model, slower on small data.
    return _engine.batched(lambda batch: model.encoder(batch, training=False), x, 512)


def _reconstruct(model: Any, x: np.ndarray) -> np.ndarray:
    return np.asarray(model.decoder(_codes(model, x), training=False))


def _probes(
    train_codes: np.ndarray,
    y_train: np.ndarray,
    eval_inputs: dict[Any, np.ndarray],
    encode: Callable[[np.ndarray], np.ndarray],
    y_eval: np.ndarray,
) -> tuple[float, dict[str, float]]:
    """The probe's accuracy on the clean inputs and on each noise level's inputs."""
    features = [encode(eval_inputs[k]) for k in eval_inputs]
    scores = _probe_scores(train_codes, y_train, features, y_eval)
    return scores[0], {str(s): score for s, score in zip(NOISE_LEVELS, scores[1:], strict=True)}


_SELECTION_KEYS: dict[str, Callable[[Candidate], float]] = {
    "probe": lambda c: c.validation["probe_accuracy"],
    "noisy-probe": lambda c: c.validation["mean_probe_accuracy"],
    "reconstruction": lambda c: -c.validation["reconstruction_mse"],
}


def _search(
    config: CompareConfig, parts: _engine.Split, progress: _engine.Progress
) -> dict[str, Search]:
    """Step 2 of the protocol: each candidate on the fit part, scored on validation."""
    y_fit, y_val = parts.y_fit, parts.y_val
    labelled = y_val is not None
    first_seed = config.seeds[0]
    val_inputs: dict[Any, np.ndarray] = {
        "clean": parts.x_val,
        **_engine.noisy_inputs(parts.x_val, NOISE_LEVELS, np.random.default_rng([first_seed, 1])),
    }

    def evaluate(name: str, params: dict[str, float]) -> Candidate:
        model, seconds = _fit(
            config, parts.x_fit, model_params(name, config.dae_corruption, params), first_seed
        )
        recon = _reconstruct(model, parts.x_val)
        scores: dict[str, Any] = {
            "reconstruction_mse": float(np.mean((recon - parts.x_val) ** 2)),
        }
        if y_fit is not None and y_val is not None:
            clean, noisy_acc = _probes(
                _codes(model, parts.x_fit), y_fit, val_inputs, partial(_codes, model), y_val
            )
            scores["probe_accuracy"] = clean
            scores["noisy_probe_accuracy"] = noisy_acc
            scores["mean_probe_accuracy"] = float(np.mean([clean, *noisy_acc.values()]))
        shown = ", ".join(f"{k}={v:g}" for k, v in params.items())
        probe_text = f", val probe {scores['probe_accuracy']:.3f}" if labelled else ""
        progress.step(
            f"search {name} {shown}: val MSE {scores['reconstruction_mse']:.4f}"
            f"{probe_text}, {seconds['train_seconds']:.1f} s"
        )
        return Candidate(params=params, validation=scores, **seconds)

    found = _engine.search(
        MODELS, config.grids, evaluate, _SELECTION_KEYS[config.selection],
        selected=lambda name, params: progress.say(f"selected {name}: {params}"),
    )  # fmt: skip
    return {name: Search(candidates=c, selected=chosen) for name, (c, chosen) in found.items()}


def _final_runs(result: ComparisonResult, parts: _engine.Split, progress: _engine.Progress) -> None:
    """Step 3: each model on the whole train part per seed, measured on the test part.

    Fills `result`'s runs, raw-input runs and the arrays behind the figures.
    """
    import keras

    from keras_cae.studies import analysis

    labelled = parts.y_test is not None
    y_train, y_test = parts.y_train, parts.y_test
    seeds = result.config.seeds
    examples = _pick_examples(y_test, 10, len(parts.x_test))
    tangent_examples = examples[:6]
    result.examples = parts.x_test[examples]
    result.runs = {name: [] for name in MODELS}
    spectra: dict[str, list[np.ndarray]] = {name: [] for name in MODELS}
    curves: dict[str, list[np.ndarray]] = {name: [] for name in MODELS}
    for seed in seeds:
        test_inputs: dict[Any, np.ndarray] = {
            "clean": parts.x_test,
            **_engine.noisy_inputs(parts.x_test, NOISE_LEVELS, np.random.default_rng([seed, 0])),
        }
        if y_train is not None and y_test is not None:
            clean, noisy_acc = _probes(parts.x_train, y_train, test_inputs, lambda x: x, y_test)
            result.raw_runs.append(
                RawRun(seed=seed, probe_accuracy=clean, noisy_probe_accuracy=noisy_acc)
            )
        for name in MODELS:
            model, seconds = _fit(result.config, parts.x_train, result.params(name), seed)
            recon = _reconstruct(model, parts.x_test)
            spectrum = analysis.jacobian_spectrum(model.encoder, parts.x_test)
            curve = analysis.contraction_curve(
                model.encoder, parts.x_test, RADII, num_directions=NUM_DIRECTIONS, seed=seed
            )
            run = ModelRun(
                seed=seed,
                train_seconds=seconds["train_seconds"],
                train_cpu_seconds=seconds["train_cpu_seconds"],
                reconstruction_mse=float(np.mean((recon - parts.x_test) ** 2)),
                jacobian_frobenius=float(
                    analysis.jacobian_norm(model.encoder, parts.x_test).mean()
                ),
                contraction_curve=[float(v) for v in curve],
                mean_spectrum=[float(v) for v in spectrum.mean(axis=0)],
            )
            if y_train is not None and y_test is not None:
                clean, noisy_acc = _probes(
                    _codes(model, parts.x_train), y_train, test_inputs, partial(_codes, model),
                    y_test,
                )  # fmt: skip
                run.probe_accuracy = clean
                run.noisy_probe_accuracy = noisy_acc
                run.probe_drop = {s: clean - acc for s, acc in noisy_acc.items()}
            result.runs[name].append(run)
            spectra[name].append(spectrum)
            curves[name].append(curve)
            if seed == seeds[0]:
                result.reconstructions[name] = recon[examples]
                if name in ("AE", "CAE") and result.image_shape is not None:
                    chosen = parts.x_test[tangent_examples]
                    k = min(TANGENTS, spectrum.shape[1])
                    result.tangents[name] = (
                        analysis.tangent_directions(model.encoder, chosen, k=k),
                        spectrum[tangent_examples],
                    )
            probe_text = f", test probe {run.probe_accuracy:.3f}" if labelled else ""
            progress.step(
                f"seed {seed} {name}: test MSE {run.reconstruction_mse:.4f}, "
                f"mean ||J||_F {run.jacobian_frobenius:.3f}{probe_text}, "
                f"{seconds['train_seconds']:.1f} s"
            )
            keras.backend.clear_session()  # Frees the graphs of finished runs.
    result.spectra = {name: np.concatenate(spectra[name]) for name in MODELS}
    result.curves = {name: np.stack(curves[name]) for name in MODELS}
