"""The `keras-cae train` job: split, fit, and measure a Dense contractive auto-encoder."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

import keras_cae
from keras_cae._phases import PhaseClock
from keras_cae.builders import dense_autoencoder
from keras_cae.data import Dataset, check_output_range, to_model_input
from keras_cae.model import ContractiveAutoencoder
from keras_cae.penalties import contractive_penalty
from keras_cae.train_config import TrainConfig

__all__ = [
    "TrainConfig",
    "TrainResult",
    "PhaseClock",
    "train",
    "train_stream",
    "fit_probe",
    "probe_accuracy",
    "quick_probe_accuracy",
    "format_summary",
    "split",
]


@dataclasses.dataclass
class TrainResult:
    """The trained model, the figures written to `metrics.json`, and the first
    `HELD_OUT_ROWS` held-out rows (model-shaped; None for streamed data), which
    `keras-cae export` checks the exported files on."""

    model: ContractiveAutoencoder
    metrics: dict[str, Any]
    held_out: np.ndarray | None = None


#: How many held-out rows `train` keeps for the export's parity check.
HELD_OUT_ROWS = 64


def split(
    dataset: Dataset, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Splits into train and held-out test parts (stratified when labels exist)."""
    from sklearn.model_selection import train_test_split

    if dataset.y is None:
        x_train, x_test = train_test_split(dataset.x, test_size=test_fraction, random_state=seed)
        return x_train, x_test, None, None
    x_train, x_test, y_train, y_test = train_test_split(
        dataset.x, dataset.y, test_size=test_fraction, random_state=seed, stratify=dataset.y
    )
    return x_train, x_test, y_train, y_test


def fit_probe(train_features: np.ndarray, y_train: np.ndarray) -> Any:
    """Fits the linear probe: standardisation, then logistic regression (scikit-learn)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return probe.fit(train_features.reshape(len(train_features), -1), y_train)


def probe_accuracy(
    train_features: np.ndarray, y_train: np.ndarray, test_features: np.ndarray, y_test: np.ndarray
) -> float:
    """Test accuracy of a standardised logistic-regression probe fit on the train part."""
    probe = fit_probe(train_features, y_train)
    return float(probe.score(test_features.reshape(len(test_features), -1), y_test))


#: Rows the probe of `keras-cae train` is fit on at most (a stratified subsample).
PROBE_ROWS = 10_000
#: Its solver's tolerance and iteration cap (scikit-learn's lbfgs).
PROBE_TOL = 1e-3
PROBE_MAX_ITER = 500


def probe_rows(y: np.ndarray, max_rows: int, seed: int) -> np.ndarray:
    """Indices of a stratified subsample of at most `max_rows` rows, in their order.

    Example:

    >>> import numpy as np
    >>> probe_rows(np.repeat([0, 1], 50), 10, 0).size
    10
    >>> probe_rows(np.arange(5), 10, 0).tolist()
    [0, 1, 2, 3, 4]
    """
    if len(y) <= max_rows:
        return np.arange(len(y))
    from sklearn.model_selection import train_test_split

    kept, _ = train_test_split(
        np.arange(len(y)), train_size=max_rows, random_state=seed, stratify=y
    )
    return np.sort(kept)


def quick_probe_accuracy(
    train_features: np.ndarray,
    y_train: np.ndarray,
    test_features: np.ndarray,
    y_test: np.ndarray,
    *,
    max_rows: int = PROBE_ROWS,
    seed: int = 0,
) -> float:
    """The probe of `keras-cae train`: `probe_accuracy` made fast at MNIST size.

    Standardisation then logistic regression (lbfgs, ``tol=PROBE_TOL``,
    ``max_iter=PROBE_MAX_ITER``), fit on a stratified subsample of at most `max_rows`
    training rows and scored on every test row. On MNIST's raw pixels this fits in
    seconds where `probe_accuracy` (all 50,000 rows, default tolerance) takes minutes,
    for an accuracy within half a point (`benchmarks/train_probe.py`). The studies
    keep `probe_accuracy`.

    Args:
        train_features: features of the training rows, ``(n, ...)``.
        y_train: their labels.
        test_features: features of the test rows.
        y_test: their labels.
        max_rows: the most training rows fit. Defaults to `PROBE_ROWS`.
        seed: picks the subsample. Defaults to `0`.

    Returns:
        The test accuracy.

    Example:

    >>> import numpy as np
    >>> x = np.repeat(np.eye(2), 20, axis=0)
    >>> quick_probe_accuracy(x, x.argmax(1), x, x.argmax(1), max_rows=10)
    1.0
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rows = probe_rows(y_train, max_rows, seed)
    features = train_features.reshape(len(train_features), -1)[rows]
    probe = make_pipeline(
        StandardScaler(), LogisticRegression(tol=PROBE_TOL, max_iter=PROBE_MAX_ITER)
    )
    with warnings.catch_warnings():
        # The cap is part of the recipe; the accuracy is what is reported.
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe.fit(features, y_train[rows])
    return float(probe.score(test_features.reshape(len(test_features), -1), y_test))


def _build_model(config: TrainConfig, input_dim: int, strategy: Any) -> ContractiveAutoencoder:
    """`dense_autoencoder` for `config`, in the strategy's scope if one is given."""
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        return dense_autoencoder(input_dim, **config.model_kwargs())


def _timed_fit(model: ContractiveAutoencoder, data: Any, **fit_kwargs: Any) -> tuple[Any, float]:
    """`model.fit(data, **fit_kwargs)`; returns the history and the seconds it took."""
    started = time.perf_counter()
    history = model.fit(data, **fit_kwargs)
    return history, time.perf_counter() - started


def _exact_method(model: ContractiveAutoencoder) -> str:
    """The exact method for the held-out ‖J‖² (a model trained with Hutchinson included)."""
    return "closed_form" if model.penalty_method == "closed_form" else "batch_jacobian"


def _metrics(
    config: TrainConfig,
    model: ContractiveAutoencoder,
    history: Any,
    train_seconds: float,
    data: dict[str, Any],
    held_out: dict[str, float],
) -> dict[str, Any]:
    """The figures of `metrics.json`: `data` describes the data, `held_out` the summary.

    ``"config"`` is ``dataclasses.asdict(config)`` with what the run resolved added:
    the exact `penalty_method` behind `"auto"` and the number of `replicas`.
    """
    return {
        "keras_cae_version": keras_cae.__version__,
        **data,
        "config": {
            **dataclasses.asdict(config),
            "penalty_method": model.penalty_method,
            "replicas": model.distribute_strategy.num_replicas_in_sync,
        },
        "history": {key: [float(v) for v in values] for key, values in history.history.items()},
        "train_seconds": round(train_seconds, 3),
        **held_out,
    }


def _held_out_jacobian(
    model: ContractiveAutoencoder, x: np.ndarray, chunk: int = 512
) -> np.ndarray:
    """Exact ‖J_f(x)‖²_F of every row of `x`, a chunk at a time (bounded memory)."""
    method = _exact_method(model)
    parts = [
        np.asarray(contractive_penalty(model.encoder, x[start : start + chunk], method=method))
        for start in range(0, len(x), chunk)
    ]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def _validation_rows(num_rows: int, validation_split: float | None, own_split: bool) -> int:
    """Rows held out for validation from the end of the training part (Keras's rule).

    `None` means the data's default: the last sixth of a file's own training part
    (MNIST's 10,000 of 60,000, the usual 50,000 / 10,000 split of its training
    images), else 0.1 of it.
    """
    if validation_split is None:
        if own_split:
            return num_rows // 6
        validation_split = 0.1
    return num_rows - int(math.floor(num_rows * (1.0 - validation_split)))


def train(
    config: TrainConfig,
    dataset: Dataset,
    *,
    verbose: int = 2,
    strategy: Any = None,
    callbacks: list[keras.callbacks.Callback] | None = None,
    progress: Callable[[str], None] | None = None,
) -> TrainResult:
    """Trains a Dense CAE on in-memory `dataset` and measures it on a held-out split.

    The held-out part is the file's own test part when it has one
    (`Dataset.x_test`, e.g. MNIST's 10,000 test images, used only for the held-out
    figures and the probe); otherwise `config.test_fraction` of the rows, split at
    random (stratified when labels exist). Validation rows are taken from the end of
    the training part (`config.validation_split`; by default the last sixth of a
    file's own training part, so 50,000 train / 10,000 validation on MNIST, else
    0.1). With a `tf.distribute.Strategy` the model is
    built and compiled in its scope; `callbacks` (e.g.
    `keras.callbacks.BackupAndRestore`) are passed to `fit`.

    Args:
        config: the job's settings; `shuffle_buffer` is not used (the data is shuffled
            whole) and `steps_per_epoch` must be `None`.
        dataset: the data (`keras_cae.data.Dataset`).
        verbose: Keras's progress output (0, 1 or 2). Defaults to `2`.
        strategy: a `tf.distribute.Strategy`, or `None` for the default one.
            Defaults to `None`.
        callbacks: passed to `fit`. Defaults to `None`.
        progress: called with a line as each phase starts (`print`, say).
            Defaults to `None` (silent).

    Returns:
        A `TrainResult`; `metrics` holds the configuration, the
        training history, the held-out reconstruction error (MSE), the held-out mean
        ``‖J_f(x)‖²_F``, when labels exist and `config.probe` is ``"logistic"`` the
        probe accuracy on codes and raw inputs (`quick_probe_accuracy`), and the wall
        seconds of each phase (``phase_seconds``).

    Raises:
        ValueError: if `config.steps_per_epoch` is set (in-memory data makes one pass
            per epoch).

    Example:

    >>> from keras_cae.data import load_digits
    >>> config = TrainConfig(hidden_units=16, epochs=1)
    >>> result = train(config, load_digits(), verbose=0)
    >>> result.metrics["config"]["hidden_units"], result.metrics["config"]["penalty_method"]
    ((16,), 'closed_form')
    """
    if config.steps_per_epoch is not None:
        raise ValueError(
            "`steps_per_epoch` applies to streamed training (`train_stream`); in-memory "
            f"data makes one pass per epoch. Received: steps_per_epoch={config.steps_per_epoch}"
        )
    say = progress or (lambda line: None)
    clock = PhaseClock(say)
    input_shape = (None, int(np.prod(dataset.x.shape[1:])))
    check_output_range(dataset.x, config.output_activation, dataset.name)
    if dataset.x_test is not None:
        check_output_range(dataset.x_test, config.output_activation, dataset.name)
    keras.utils.set_random_seed(config.seed)
    with clock("split"):
        if dataset.x_test is not None:  # The file's own split (`dataset.has_split`).
            x_train, y_train = dataset.x, dataset.y
            x_test, y_test = dataset.x_test, dataset.y_test
        else:
            x_train, x_test, y_train, y_test = split(dataset, config.test_fraction, config.seed)
        flat_train = to_model_input(x_train, input_shape, dataset.name)
        flat_test = to_model_input(x_test, input_shape, dataset.name)
        num_val = _validation_rows(len(flat_train), config.validation_split, dataset.has_split)
        x_fit, x_val = (
            flat_train[: len(flat_train) - num_val],
            flat_train[len(flat_train) - num_val :],
        )
    if dataset.has_split:
        split_text = (
            f"its own split: {len(x_fit)} train / {len(x_val)} validation (the last "
            f"{len(x_val)} rows of x_train) / {len(flat_test)} test (x_test, used only "
            "for the held-out figures and the probe)"
        )
    else:
        split_text = (
            f"{len(x_fit)} train / {len(x_val)} validation / {len(flat_test)} held out "
            f"(a random {config.test_fraction:g} held out)"
        )
    say(f"data: {dataset.name}, {split_text}")
    keras.utils.set_random_seed(config.seed)
    model = _build_model(config, flat_train.shape[1], strategy)
    epochs = f"{config.epochs} epoch{'s' * (config.epochs != 1)}"
    with clock("training", f"training: {epochs} of {len(x_fit)} rows"):
        history, train_seconds = _timed_fit(
            model,
            x_fit,
            epochs=config.epochs,
            batch_size=config.batch_size,
            validation_data=(x_val,) if len(x_val) else None,
            verbose=verbose,
            callbacks=callbacks,
        )
    with clock("held_out", f"held-out figures on {len(flat_test)} rows"):
        reconstruction = model.predict(flat_test, batch_size=256, verbose=0)
        jacobian_norm = _held_out_jacobian(model, flat_test)
    data = {
        "data": dataset.name,
        "scaling": dataset.scaling,
        "split": "file" if dataset.has_split else "random",
        "input_dim": int(flat_train.shape[1]),
        "num_train": int(len(flat_train)),
        "num_validation": int(len(x_val)),
        "num_test": int(len(flat_test)),
    }
    held_out = {
        "test_reconstruction_mse": float(np.mean((reconstruction - flat_test) ** 2)),
        "test_mean_jacobian_frobenius_sq": float(np.mean(jacobian_norm)),
    }
    metrics = _metrics(config, model, history, train_seconds, data, held_out)
    if config.probe == "none":
        metrics["probe_skipped"] = "--probe none"
    elif y_train is None or y_test is None:
        metrics["probe_skipped"] = f"no labels: {dataset.no_labels or 'the data has none'}"
    else:
        rows = min(len(flat_train), PROBE_ROWS)
        probe = f"linear probe: logistic regression on {rows} training rows"
        with clock("probe_codes", f"{probe}, codes"):
            codes_train = model.encoder.predict(flat_train, batch_size=256, verbose=0)
            codes_test = model.encoder.predict(flat_test, batch_size=256, verbose=0)
            metrics["probe_accuracy_codes"] = quick_probe_accuracy(
                codes_train, y_train, codes_test, y_test, seed=config.seed
            )
        with clock("probe_raw", f"{probe}, raw inputs ({flat_train.shape[1]} values each)"):
            metrics["probe_accuracy_raw"] = quick_probe_accuracy(
                flat_train, y_train, flat_test, y_test, seed=config.seed
            )
        metrics["probe_rows"] = rows
    metrics["phase_seconds"] = clock.seconds
    return TrainResult(model=model, metrics=metrics, held_out=flat_test[:HELD_OUT_ROWS])


#: How `format_summary` names the phases of ``metrics["phase_seconds"]``.
PHASE_NAMES = {
    "load": "load data",
    "tensorflow": "import TensorFlow",
    "split": "split",
    "training": "training",
    "held_out": "held-out figures",
    "probe_codes": "probe on codes",
    "probe_raw": "probe on raw inputs",
    "save": "save",
}


def format_summary(metrics: dict[str, Any], out: str) -> str:
    """The short summary `keras-cae train` prints."""
    config = metrics["config"]
    if metrics.get("split") == "file":
        where = (
            f"its own split: {metrics['num_train'] - metrics['num_validation']} train + "
            f"{metrics['num_validation']} validation from x_train / {metrics['num_test']} "
            "test = x_test"
        )
    else:
        where = f"{metrics['num_train'] or '?'} train / {metrics['num_test']} held out"
    if config["contractive_weight"] == 0:
        penalty = "none computed (λ = 0: a plain auto-encoder)"
    else:
        penalty = config["penalty_method"]
    lines = [
        f"data: {metrics['data']} ({where}), penalty: {penalty}, "
        f"trained in {metrics['train_seconds']:.1f} s",
    ]
    if "contractive_weight_reason" in metrics:
        lines.append(
            f"λ = {config['contractive_weight']:g}: {metrics['contractive_weight_reason']}"
        )
    lines += [
        f"held-out reconstruction MSE: {metrics['test_reconstruction_mse']:.5f}",
        f"held-out mean ||J_f(x)||_F^2: {metrics['test_mean_jacobian_frobenius_sq']:.4f}",
    ]
    if "probe_accuracy_codes" in metrics:
        lines.append(
            f"logistic-regression probe accuracy (fit on {metrics['probe_rows']} training "
            f"rows): codes {metrics['probe_accuracy_codes']:.3f}, "
            f"raw inputs {metrics['probe_accuracy_raw']:.3f}"
        )
    elif "probe_skipped" in metrics:
        lines.append(f"probe skipped: {metrics['probe_skipped']}")
    phases = metrics.get("phase_seconds")
    if phases:
        parts = [f"{PHASE_NAMES.get(name, name)} {seconds:.1f}" for name, seconds in phases.items()]
        lines.append(f"wall seconds: {', '.join(parts)} (total {sum(phases.values()):.1f})")
    lines.append(f"wrote {out}/model.keras and {out}/metrics.json")
    return "\n".join(lines)


def train_stream(
    config: TrainConfig,
    source: Any,
    *,
    verbose: int = 2,
    strategy: Any = None,
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> TrainResult:
    """Trains a Dense CAE on sharded data streamed from disk (`keras_cae.streaming`).

    The data never has to fit in memory: whole shards are held out for the summary
    (``round(config.test_fraction * shards)``, at least one, so at least two shards
    are needed), and the held-out figures are accumulated batch by batch. There is no
    validation split (`config.validation_split` is not used) and no probe accuracy
    (streamed shards carry no labels).

    Args:
        config: the job's settings, including `steps_per_epoch` (`None`: one pass over
            the training shards) and `shuffle_buffer`.
        source: a `keras_cae.streaming.ShardSource`.
        verbose: Keras's progress output (0, 1 or 2). Defaults to `2`.
        strategy: a `tf.distribute.Strategy`, or `None` for the default one.
            Defaults to `None`.
        callbacks: passed to `fit`. Defaults to `None`.

    Returns:
        A `TrainResult` with the same figures as :func:`train`, less the probe
        accuracies.

    Raises:
        ValueError: with fewer than two shards.
    """
    from keras_cae import streaming

    if len(source.paths) < 2:
        raise ValueError(
            f"Streamed data needs at least 2 shards, as whole shards are held out for the "
            f"summary. Received: {len(source.paths)} shard in {source.name!r}"
        )
    keras.utils.set_random_seed(config.seed)
    num_shards = len(source.paths)
    num_test = min(num_shards - 1, max(1, round(config.test_fraction * num_shards)))
    # The held-out shards are chosen by a seeded permutation, not by name order.
    order = np.random.default_rng(config.seed).permutation(num_shards)
    test_paths = tuple(source.paths[i] for i in sorted(order[:num_test]))
    train_paths = tuple(p for p in source.paths if p not in test_paths)
    train_source = streaming.open_shards_from(source, train_paths)
    test_source = streaming.open_shards_from(source, test_paths)
    input_dim = int(np.prod(source.row_shape))
    train_data = streaming.shard_dataset(
        train_source,
        config.batch_size,
        seed=config.seed,
        shuffle_buffer=config.shuffle_buffer,
        flatten=True,
    )
    if config.steps_per_epoch is not None:
        train_data = train_data.repeat()
    model = _build_model(config, input_dim, strategy)
    with streaming.data_errors():
        history, train_seconds = _timed_fit(
            model,
            train_data,
            epochs=config.epochs,
            steps_per_epoch=config.steps_per_epoch,
            shuffle=False,  # The stream shuffles itself.
            verbose=verbose,
            callbacks=callbacks,
        )
    exact = _exact_method(model)
    squared_error = jacobian_sum = 0.0
    num_rows = 0
    with streaming.data_errors():
        for batch in streaming.shard_dataset(test_source, 256, shuffle=False, flatten=True):
            reconstruction = model(batch, training=False)
            squared_error += float(np.sum((np.asarray(reconstruction) - batch.numpy()) ** 2))
            jacobian_sum += float(np.sum(contractive_penalty(model.encoder, batch, method=exact)))
            num_rows += int(batch.shape[0])
    data = {
        "data": source.name,
        "data_format": f"{source.kind} shards (streamed)",
        "scaling": "none",
        "input_dim": input_dim,
        "num_train": train_source.num_rows,
        "num_test": num_rows,
        "train_shards": len(train_paths),
        "test_shards": [os.path.basename(p) for p in test_paths],
    }
    held_out = {
        "test_reconstruction_mse": squared_error / (num_rows * input_dim),
        "test_mean_jacobian_frobenius_sq": jacobian_sum / num_rows,
    }
    metrics = _metrics(config, model, history, train_seconds, data, held_out)
    metrics["probe_skipped"] = "streamed shards carry no labels"
    return TrainResult(model=model, metrics=metrics)
