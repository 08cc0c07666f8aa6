"""`keras-cae train` on data with its own split (the Keras MNIST layout, `--data mnist`),
its progress lines and per-phase times, `--probe none`, and the λ it prints.

Every file here is small and made by the test; nothing is downloaded.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from keras_cae.cli import main
from tests._cli import run

slow = pytest.mark.slow  # Each trains a tiny model for one epoch, with a TensorFlow import.


def _keras_layout(path, n_train=36, n_test=9, shape=(4, 4), labels=True, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
        "x_test": rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
    }
    if labels:
        arrays["y_train"] = np.arange(n_train) % 3
        arrays["y_test"] = np.arange(n_test) % 3
    np.savez(path, **arrays)
    return arrays


def _train(capsys, tmp_path, *extra: str) -> tuple[int, str, str, dict]:
    out = tmp_path / "run"
    argv = ["train", "--out", str(out), "--epochs", "1", "--hidden-units", "3", "--quiet"]
    code, stdout, stderr = run(capsys, *argv, *extra)
    metrics = json.loads((out / "metrics.json").read_text()) if code == 0 else {}
    return code, stdout, stderr, metrics


@slow
def test_a_keras_layout_file_keeps_its_own_split_and_says_so(tmp_path, capsys):
    path = tmp_path / "mnist.npz"
    arrays = _keras_layout(path)
    code, stdout, _, metrics = _train(capsys, tmp_path, "--data", str(path))
    assert code == 0
    # Never joined: the held-out part is exactly x_test, validation the last sixth of x_train.
    assert metrics["split"] == "file"
    assert (metrics["num_train"], metrics["num_validation"], metrics["num_test"]) == (36, 6, 9)
    assert len(metrics["history"]["val_loss"]) == 1
    assert "its own split: 30 train / 6 validation (the last 6 rows of x_train) / 9 test" in stdout
    assert "x_test, used only for the held-out figures and the probe" in stdout
    assert "(its own split: 30 train + 6 validation from x_train / 9 test = x_test)" in stdout
    # The held-out MSE is measured on x_test: recompute it from the saved model.
    import keras

    model = keras.models.load_model(tmp_path / "run" / "model.keras")
    x_test = arrays["x_test"].reshape(9, -1).astype(np.float32) / 255
    mse = float(np.mean((np.asarray(model.predict(x_test, verbose=0)) - x_test) ** 2))
    np.testing.assert_allclose(metrics["test_reconstruction_mse"], mse, rtol=1e-5)


def test_test_fraction_is_refused_for_a_file_with_its_own_split(tmp_path, capsys):
    path = tmp_path / "mnist.npz"
    _keras_layout(path)
    code, _, stderr, _ = _train(capsys, tmp_path, "--data", str(path), "--test-fraction", "0.3")
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    assert "--test-fraction does not apply to --data" in stderr and "x_test" in stderr


@slow
def test_data_mnist_reads_keras_cache_under_keras_home(tmp_path, capsys, monkeypatch):
    home = tmp_path / "keras-home"
    (home / "datasets").mkdir(parents=True)
    _keras_layout(home / "datasets" / "mnist.npz", shape=(28, 28))
    monkeypatch.setenv("KERAS_HOME", str(home))
    code, stdout, _, metrics = _train(capsys, tmp_path, "--data", "mnist", "--probe", "none")
    assert code == 0 and metrics["data"] == "mnist" and metrics["num_test"] == 9
    # 28x28 images in the Keras layout get MNIST's λ, and the run says why.
    assert metrics["config"]["contractive_weight"] == 0.001
    assert "λ = 0.001: the default for 28x28 images in the Keras MNIST layout" in stdout


@slow
def test_labels_under_other_names_skip_the_probe_and_say_why(tmp_path, capsys):
    path = tmp_path / "renamed.npz"
    arrays = _keras_layout(path, labels=False)
    np.savez(path, **arrays, labels_train=np.zeros(36, np.int64))
    code, stdout, _, metrics = _train(capsys, tmp_path, "--data", str(path))
    assert code == 0 and "probe_accuracy_codes" not in metrics
    assert "probe skipped: no labels: it has no arrays named 'y_train' and 'y_test'" in stdout
    assert "labels_train" in metrics["probe_skipped"]


@slow
def test_probe_none_skips_the_probe_and_every_phase_is_announced_and_timed(tmp_path, capsys):
    code, stdout, _, metrics = _train(capsys, tmp_path, "--probe", "none")
    assert code == 0 and "probe_accuracy_codes" not in metrics
    assert metrics["probe_skipped"] == "--probe none" and "probe skipped: --probe none" in stdout
    for line in ("loading the bundled digits ...", "importing TensorFlow ...", "training: 1 epoch"):
        assert line in stdout
    assert "held-out figures on 360 rows ..." in stdout and "writing " in stdout
    phases = metrics["phase_seconds"]
    assert {"load", "tensorflow", "training", "held_out"} <= set(phases)
    assert "probe_codes" not in phases and all(seconds >= 0 for seconds in phases.values())
    summary = stdout.splitlines()[-2]
    assert summary.startswith("wall seconds: load data ") and "save " in summary


@slow
def test_the_probe_is_timed_and_the_default_lambda_and_why_are_printed(tmp_path, capsys):
    code, stdout, _, metrics = _train(capsys, tmp_path)
    assert code == 0 and 0 < metrics["probe_accuracy_codes"] <= 1
    assert "linear probe: logistic regression on 1437 training rows, codes ..." in stdout
    assert (
        "linear probe: logistic regression on 1437 training rows, raw inputs (64 values" in stdout
    )
    assert metrics["probe_rows"] == 1437
    assert {"probe_codes", "probe_raw"} <= set(metrics["phase_seconds"])
    expected = "λ = 0.003: the default for the bundled digits"
    assert stdout.count(expected) == 2  # Before training, and in the summary.
    assert metrics["config"]["contractive_weight"] == 0.003
    assert metrics["contractive_weight_reason"].startswith("the default for the bundled digits")


@slow
def test_contractive_weight_zero_says_no_penalty_is_computed(tmp_path, capsys):
    code, stdout, _, metrics = _train(
        capsys, tmp_path, "--contractive-weight", "0", "--probe", "none"
    )
    assert code == 0 and metrics["config"]["contractive_weight"] == 0
    assert "penalty: none computed (λ = 0: a plain auto-encoder)" in stdout
    assert "penalty: closed_form" not in stdout
    assert stdout.count("λ = 0: given (--contractive-weight 0)") == 2


def test_help_documents_the_layout_the_probe_and_the_defaults(capsys):
    from keras_cae import training
    from keras_cae.cli import train

    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for words in ("x_train, y_train, x_test, y_test", "--probe {logistic,none}", "'mnist'"):
        assert words in text
    assert train.PROBE_ROWS == training.PROBE_ROWS


def test_quick_probe_fits_a_stratified_subsample_as_scikit_learn_does():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from keras_cae.training import probe_rows, quick_probe_accuracy

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], [300, 200, 100])
    x = rng.normal(size=(600, 5)) + y[:, None]
    rows = probe_rows(y, 60, seed=0)
    assert np.bincount(y[rows]).tolist() == [30, 20, 10]  # Stratified, 10 %.
    x_test, y_test = (
        rng.normal(size=(90, 5)) + np.repeat([0, 1, 2], 30)[:, None],
        np.repeat([0, 1, 2], 30),
    )
    scaler = StandardScaler().fit(x[rows])
    reference = LogisticRegression(tol=1e-3, max_iter=500).fit(scaler.transform(x[rows]), y[rows])
    expected = reference.score(scaler.transform(x_test), y_test)
    assert quick_probe_accuracy(x, y, x_test, y_test, max_rows=60) == expected


def test_encode_picks_one_split_of_a_keras_layout_file_and_says_which(
    tmp_path, capsys, model_path, weights
):
    path = tmp_path / "mnist.npz"
    arrays = _keras_layout(path, n_train=7, n_test=4, shape=(2, 3))
    w, b = weights

    def expected(images):
        x = images.reshape(len(images), -1).astype(np.float64) / 255
        return 1 / (1 + np.exp(-(x @ w + b)))

    out = tmp_path / "codes.npy"
    code, stdout, _ = run(capsys, "encode", model_path, str(path), "--out", str(out))
    assert code == 0 and "encoding x_test of mnist.npz (4 rows; the default --split test)" in stdout
    np.testing.assert_allclose(np.load(out), expected(arrays["x_test"]), atol=1e-5)
    code, stdout, _ = run(
        capsys, "encode", model_path, str(path), "--out", str(out), "--overwrite", "--split", "all"
    )
    assert code == 0 and "(7 + 4 = 11 rows; --split all)" in stdout
    joined = np.concatenate([arrays["x_train"], arrays["x_test"]])
    np.testing.assert_allclose(np.load(out), expected(joined), atol=1e-5)
    np.save(tmp_path / "x.npy", np.zeros((3, 6), np.float32))
    argv = ["encode", model_path, str(tmp_path / "x.npy"), "--out", str(tmp_path / "c.npy")]
    code, _, stderr = run(capsys, *argv, "--split", "train")
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    assert "--split train: x.npy has no train/test split" in stderr
