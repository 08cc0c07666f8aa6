"""The `keras-cae train` job: split, fit, and measure a Dense contractive auto-encoder."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

import keras_cae
from keras_cae.builders import dense_autoencoder
from keras_cae.data import Dataset
from keras_cae.model import ContractiveAutoencoder
from keras_cae.penalties import contractive_penalty

__all__ = ["TrainResult", "train", "probe_accuracy", "format_summary", "split"]


@dataclass
class TrainResult:
    """The trained model and the figures written to `metrics.json`."""

    model: ContractiveAutoencoder
    metrics: dict[str, Any]


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


def probe_accuracy(
    train_features: np.ndarray, y_train: np.ndarray, test_features: np.ndarray, y_test: np.ndarray
) -> float:
    """Test accuracy of a standardised logistic-regression probe fit on the train part."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    probe.fit(train_features.reshape(len(train_features), -1), y_train)
    return float(probe.score(test_features.reshape(len(test_features), -1), y_test))


def train(
    dataset: Dataset,
    hidden_units: list[int],
    activation: str = "sigmoid",
    output_activation: str = "sigmoid",
    tied_weights: bool = False,
    epochs: int = 60,
    batch_size: int = 32,
    contractive_weight: float = 0.1,
    penalty: str = "auto",
    learning_rate: float = 3e-3,
    seed: int = 0,
    validation_split: float = 0.1,
    test_fraction: float = 0.2,
    verbose: int = 2,
) -> TrainResult:
    """Trains a Dense CAE on `dataset` and measures it on a held-out split.

    Returns:
        A `TrainResult`; `metrics` holds the configuration, the training history, the
        held-out reconstruction error (MSE), the held-out mean ``‖J_f(x)‖²_F``, and,
        when labels exist, logistic-regression probe accuracy on codes and raw inputs.
    """
    keras.utils.set_random_seed(seed)
    x_train, x_test, y_train, y_test = split(dataset, test_fraction, seed)
    flat_train = x_train.reshape(len(x_train), -1)
    flat_test = x_test.reshape(len(x_test), -1)
    model = dense_autoencoder(
        flat_train.shape[1],
        hidden_units,
        activation=activation,
        output_activation=output_activation,
        tied_weights=tied_weights,
        contractive_weight=contractive_weight,
        penalty=penalty,
        learning_rate=learning_rate,
        seed=seed,
    )
    started = time.perf_counter()
    history = model.fit(
        flat_train,
        epochs=epochs,
        batch_size=batch_size,
        validation_split=validation_split,
        verbose=verbose,
    )
    train_seconds = time.perf_counter() - started
    reconstruction = model.predict(flat_test, batch_size=256, verbose=0)
    test_mse = float(np.mean((reconstruction - flat_test) ** 2))
    exact = "closed_form" if model.penalty_method == "closed_form" else "batch_jacobian"
    jacobian_norm = contractive_penalty(model.encoder, flat_test, method=exact).numpy()
    metrics: dict[str, Any] = {
        "keras_cae_version": keras_cae.__version__,
        "data": dataset.name,
        "scaling": dataset.scaling,
        "input_dim": int(flat_train.shape[1]),
        "num_train": int(len(flat_train)),
        "num_test": int(len(flat_test)),
        "config": {
            "hidden_units": list(hidden_units),
            "activation": activation,
            "output_activation": output_activation,
            "tied_weights": tied_weights,
            "epochs": epochs,
            "batch_size": batch_size,
            "contractive_weight": contractive_weight,
            "penalty": penalty,
            "penalty_method": model.penalty_method,
            "learning_rate": learning_rate,
            "seed": seed,
            "validation_split": validation_split,
            "test_fraction": test_fraction,
        },
        "history": {key: [float(v) for v in values] for key, values in history.history.items()},
        "train_seconds": round(train_seconds, 3),
        "test_reconstruction_mse": test_mse,
        "test_mean_jacobian_frobenius_sq": float(np.mean(jacobian_norm)),
    }
    if y_train is not None and y_test is not None:
        codes_train = model.encoder.predict(flat_train, batch_size=256, verbose=0)
        codes_test = model.encoder.predict(flat_test, batch_size=256, verbose=0)
        metrics["probe_accuracy_codes"] = probe_accuracy(codes_train, y_train, codes_test, y_test)
        metrics["probe_accuracy_raw"] = probe_accuracy(flat_train, y_train, flat_test, y_test)
    return TrainResult(model=model, metrics=metrics)


def format_summary(metrics: dict[str, Any], out: str) -> str:
    """The short summary `keras-cae train` prints."""
    lines = [
        f"data: {metrics['data']} ({metrics['num_train']} train / {metrics['num_test']} held out), "
        f"penalty: {metrics['config']['penalty_method']}, trained in {metrics['train_seconds']:.1f} s",
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
