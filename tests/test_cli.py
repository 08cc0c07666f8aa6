"""`keras-cae train` end to end, and its one-line errors."""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest

from keras_cae.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_train_on_digits_writes_a_loadable_model_and_metrics(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run(
        capsys, "train", "--out", str(out), "--epochs", "2", "--hidden-units", "16", "--quiet"
    )
    assert code == 0
    assert sorted(os.listdir(out)) == ["metrics.json", "model.keras"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"] == "sklearn-digits"
    assert metrics["num_train"] + metrics["num_test"] == 1797
    assert metrics["config"]["penalty_method"] == "closed_form"
    assert len(metrics["history"]["loss"]) == 2
    for key in ("probe_accuracy_codes", "probe_accuracy_raw"):
        assert 0.1 < metrics[key] <= 1.0
    assert "held-out reconstruction MSE" in stdout and "probe accuracy" in stdout
    model = keras.models.load_model(out / "model.keras")
    assert model.encoder.output_shape == (None, 16)
    # The summary's figures are the model's: recompute the held-out MSE independently.
    from keras_cae.data import load_digits
    from keras_cae.training import split

    _, x_test, _, _ = split(load_digits(), 0.2, 0)
    mse = float(np.mean((np.asarray(model.predict(x_test, verbose=0)) - x_test) ** 2))
    np.testing.assert_allclose(metrics["test_reconstruction_mse"], mse, rtol=1e-5)


def test_train_on_user_csv_without_labels(tmp_path, capsys, rng):
    path = tmp_path / "x.csv"
    np.savetxt(path, rng.random((40, 6)), delimiter=",", header="a,b,c,d,e,f", comments="")
    out = tmp_path / "run"
    code, stdout, _ = run(
        capsys, "train", "--data", str(path), "--out", str(out), "--epochs", "1", "--quiet"
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["input_dim"] == 6 and "probe_accuracy_codes" not in metrics


@pytest.mark.parametrize(
    "make, argv_extra, message",
    [
        (None, ["--data", "missing.npy"], "no such file"),
        ("text.csv", [], "row 2, column 2 is not a number: 'abc'"),
        ("bad.txt", [], "Supported suffixes are"),
        ("nan.npy", [], "NaN or infinite values in 1 of 5 rows"),
        (None, ["--epochs", "0"], "expected a positive integer"),
        (None, ["--contractive-weight", "-1"], "non-negative"),
        (None, ["--penalty", "exact"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, make, argv_extra, message):
    argv = ["train", "--out", str(tmp_path / "out"), "--epochs", "1", "--quiet"]
    if make is not None:
        path = tmp_path / make
        if make.endswith(".csv"):
            path.write_text("1,2,3\n4,abc,6\n")
        elif make.endswith(".npy"):
            data = np.ones((5, 3))
            data[2, 1] = np.nan
            np.save(path, data)
        else:
            path.write_text("1 2 3\n")
        argv += ["--data", str(path)]
    argv += [a if a != "missing.npy" else str(tmp_path / a) for a in argv_extra]
    code, stdout, stderr = run(capsys, *argv)
    assert code == 2
    assert message in stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert not (tmp_path / "out").exists()


def test_existing_output_is_never_overwritten_without_overwrite(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    code, _, stderr = run(capsys, "train", "--out", str(out), "--epochs", "1", "--quiet")
    assert code == 2 and "--overwrite" in stderr and stderr.count("\n") == 1
    assert (out / "keep.txt").read_text() == "precious"
    code, _, _ = run(
        capsys,
        "train",
        "--out",
        str(out),
        "--epochs",
        "1",
        "--hidden-units",
        "4",
        "--quiet",
        "--overwrite",
    )
    assert code == 0
    assert sorted(os.listdir(out)) == ["metrics.json", "model.keras"]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".out")]  # No staging left.


def test_unknown_subcommand_is_one_line(capsys):
    code, _, stderr = run(capsys, "fly")
    assert code == 2 and stderr.count("\n") == 1 and "invalid choice" in stderr
