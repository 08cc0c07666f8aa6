"""The shared fixtures of the suite (one module): quiet TensorFlow logs, seeds, a small
ONNX encoder, a small untrained auto-encoder, a small image data set."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

MAX_AUTO_WORKERS = 4


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (pyproject's addopts): one worker per core, at most `MAX_AUTO_WORKERS`,
    since each worker imports TensorFlow (about 0.5 GB) and the slow tests start
    processes of their own; none on one core (a lone worker only adds its start-up)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    return 0 if cores == 1 else min(cores, MAX_AUTO_WORKERS)


SLOW_SECONDS = 5.0
_unmarked_slow: list[tuple[str, float]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Notes every test not marked ``slow`` whose call took over `SLOW_SECONDS` (reports
    reach the controller under xdist too), for `pytest_terminal_summary`."""
    if report.when == "call" and report.duration > SLOW_SECONDS and "slow" not in report.keywords:
        _unmarked_slow.append((report.nodeid, report.duration))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Names the tests that should be marked ``slow`` (``-m "not slow"`` is the inner
    loop). A note, not a failure: a loaded machine stretches every test."""
    if _unmarked_slow:
        terminalreporter.section(f"tests over {SLOW_SECONDS:.0f} s not marked slow")
        for nodeid, seconds in sorted(_unmarked_slow, key=lambda item: -item[1]):
            terminalreporter.write_line(f"{seconds:6.1f} s  {nodeid}")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def weights() -> tuple[np.ndarray, np.ndarray]:
    """Float64 weights `(w, b)` of `model_path`'s encoder, 6 -> 3 features."""
    from tests._onnx import seeded_weights

    return seeded_weights()


@pytest.fixture(scope="session")
def model_path(tmp_path_factory, weights) -> str:
    """An ONNX encoder ``code = sigmoid(x @ w + b)`` built with `onnx.helper` (no
    TensorFlow): `tests._onnx.dense_sigmoid_model`. Session-wide (read only), so that
    the serving tests' package-wide server can serve it."""
    from tests._onnx import dense_sigmoid_model

    path = str(tmp_path_factory.mktemp("onnx") / "encoder.onnx")
    dense_sigmoid_model(path, *weights)
    return path


@pytest.fixture(scope="module")
def small_model():
    """An untrained `dense_autoencoder(12, 3, seed=5)` (12 = `tests._variants.FEATURES`)."""
    import keras_cae

    return keras_cae.dense_autoencoder(12, 3, seed=5)


@pytest.fixture(scope="module")
def tiny_images(tmp_path_factory):
    """150 digits as 8×8 images in a .npz (an image-shaped input, unlike the flat bundled
    data)."""
    from keras_cae.data import load_digits

    digits = load_digits()
    index = np.random.default_rng(0).permutation(len(digits.x))[:150]
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, x=digits.x[index].reshape(-1, 8, 8), y=digits.y[index])
    return path
