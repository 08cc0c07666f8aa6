"""Shared test set-up: quiet TensorFlow logs and deterministic seeds."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="module")
def weights() -> tuple[np.ndarray, np.ndarray]:
    """Float64 weights `(w, b)` of `model_path`'s encoder, 6 -> 3 features."""
    rng = np.random.default_rng(3)
    return rng.normal(size=(6, 3)), rng.normal(size=3)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, weights) -> str:
    """An ONNX encoder ``code = sigmoid(x @ w + b)`` built with `onnx.helper` (no
    TensorFlow). Test modules may define their own `weights` and `model_path`."""
    from tests.test_runtime import _dense_sigmoid_model

    path = str(tmp_path_factory.mktemp("onnx") / "encoder.onnx")
    _dense_sigmoid_model(path, *weights)
    return path
