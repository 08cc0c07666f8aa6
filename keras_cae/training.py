"""The `keras-cae train` job: split, fit, and measure a Dense contractive auto-encoder."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from typing import Any

import keras
import numpy as np

import keras_cae
from keras_cae.builders import dense_autoencoder
from keras_cae.data import Dataset, check_output_range, to_model_input
from keras_cae.model import ContractiveAutoencoder
from keras_cae.penalties import contractive_penalty
from keras_cae.train_config import TrainConfig

__all__ = [
    "TrainConfig",
    "TrainResult",
    "train",
    "train_stream",
    "fit_probe",
    "probe_accuracy",
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


def train(
    config: TrainConfig,
    dataset: Dataset,
    *,
    verbose: int = 2,
    strategy: Any = None,
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> TrainResult:
    """Trains a Dense CAE on in-memory `dataset` and measures it on a held-out split.

    With a `tf.distribute.Strategy` the model is built and compiled in its scope;
    `callbacks` (e.g. `keras.callbacks.BackupAndRestore`) are passed to `fit`.

    Args:
        config: the job's settings; `shuffle_buffer` is not used (the data is shuffled
            whole) and `steps_per_epoch` must be `None`.
        dataset: the data (`keras_cae.data.Dataset`), split by `config.test_fraction`.
        verbose: Keras's progress output (0, 1 or 2). Defaults to `2`.
        strategy: a `tf.distribute.Strategy`, or `None` for the default one.
            Defaults to `None`.
        callbacks: passed to `fit`. Defaults to `None`.

    Returns:
        A `TrainResult`; `metrics` holds the configuration, the training history, the
        held-out reconstruction error (MSE), the held-out mean ``‖J_f(x)‖²_F``, and,
        when labels exist, logistic-regression probe accuracy on codes and raw inputs.

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
    input_shape = (None, int(np.prod(dataset.x.shape[1:])))
    check_output_range(dataset.x, config.output_activation, dataset.name)
    keras.utils.set_random_seed(config.seed)
    x_train, x_test, y_train, y_test = split(dataset, config.test_fraction, config.seed)
    flat_train = to_model_input(x_train, input_shape, dataset.name)
    flat_test = to_model_input(x_test, input_shape, dataset.name)
    model = _build_model(config, flat_train.shape[1], strategy)
    history, train_seconds = _timed_fit(
        model,
        flat_train,
        epochs=config.epochs,
        batch_size=config.batch_size,
        validation_split=config.validation_split,
        verbose=verbose,
        callbacks=callbacks,
    )
    reconstruction = model.predict(flat_test, batch_size=256, verbose=0)
    jacobian_norm = contractive_penalty(model.encoder, flat_test, method=_exact_method(model))
    data = {
        "data": dataset.name,
        "scaling": dataset.scaling,
        "input_dim": int(flat_train.shape[1]),
        "num_train": int(len(flat_train)),
        "num_test": int(len(flat_test)),
    }
    held_out = {
        "test_reconstruction_mse": float(np.mean((reconstruction - flat_test) ** 2)),
        "test_mean_jacobian_frobenius_sq": float(np.mean(jacobian_norm.numpy())),
    }
    metrics = _metrics(config, model, history, train_seconds, data, held_out)
    if y_train is not None and y_test is not None:
        codes_train = model.encoder.predict(flat_train, batch_size=256, verbose=0)
        codes_test = model.encoder.predict(flat_test, batch_size=256, verbose=0)
        metrics["probe_accuracy_codes"] = probe_accuracy(codes_train, y_train, codes_test, y_test)
        metrics["probe_accuracy_raw"] = probe_accuracy(flat_train, y_train, flat_test, y_test)
    return TrainResult(model=model, metrics=metrics, held_out=flat_test[:HELD_OUT_ROWS])


def format_summary(metrics: dict[str, Any], out: str) -> str:
    """The short summary `keras-cae train` prints."""
    lines = [
        f"data: {metrics['data']} ({metrics['num_train'] or '?'} train / "
        f"{metrics['num_test']} held out), "
        f"penalty: {metrics['config']['penalty_method']}, "
        f"trained in {metrics['train_seconds']:.1f} s",
        f"held-out reconstruction MSE: {metrics['test_reconstruction_mse']:.5f}",
        f"held-out mean ||J_f(x)||_F^2: {metrics['test_mean_jacobian_frobenius_sq']:.4f}",
    ]
    if "probe_accuracy_codes" in metrics:
        lines.append(
            f"logistic-regression probe accuracy: codes {metrics['probe_accuracy_codes']:.3f}, "
            f"raw inputs {metrics['probe_accuracy_raw']:.3f}"
        )
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
    return TrainResult(
        model=model, metrics=_metrics(config, model, history, train_seconds, data, held_out)
    )
