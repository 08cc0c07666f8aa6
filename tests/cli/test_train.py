"""`keras-cae train` end to end on the bundled digits and a user's file, and the checks it
makes before any work: its one-line errors, the row counts of its splits
(`keras_cae.cli.sizes`), unscaled pixels and an `--out` that is taken. Data with its own
split, progress lines and `--probe none`: `test_train_data.py`.
"""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest

from tests._cli import main_without_tensorflow, run


@pytest.mark.slow  # 33 s on a loaded 2-core machine (--durations).
def test_train_on_digits_writes_a_loadable_model_and_metrics(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run(
        capsys, "train", "--out", str(out), "--epochs", "2", "--hidden-units", "16", "--quiet"
    )
    assert code == 0
    assert sorted(os.listdir(out)) == ["held_out.npy", "metrics.json", "model.keras"]
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
    # The rows `keras-cae export` checks parity on: the first held-out rows.
    np.testing.assert_array_equal(np.load(out / "held_out.npy"), x_test[:64])


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


@pytest.mark.slow  # 46 s on a loaded 2-core machine (--durations).
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
    assert sorted(os.listdir(out)) == ["held_out.npy", "metrics.json", "model.keras"]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".out")]  # No staging left.


def test_unscaled_pixels_are_refused_with_the_fix(tmp_path, capsys):
    path = tmp_path / "pixels.npy"
    np.save(path, np.random.default_rng(0).integers(0, 256, (300, 28, 28), dtype=np.uint8))
    code, _, stderr = run(
        capsys, "train", "--data", str(path), "--out", str(tmp_path / "out"), "--quiet"
    )
    assert code == 2
    assert "divide by 255" in stderr and "'sigmoid'" in stderr and "[0, 255]" in stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------
# Row counts: is there data left after each split?


def test_too_few_rows_fail_before_tensorflow_naming_the_flag(tmp_path):
    for rows in (1, 2):
        np.save(tmp_path / f"rows{rows}.npy", np.random.default_rng(rows).random((rows, 4)))
    argv = [
        ["train", "--data", str(tmp_path / "rows1.npy"), "--out", str(tmp_path / "a")],
        ["train", "--data", str(tmp_path / "rows2.npy"), "--out", str(tmp_path / "b")],
        ["compare", "--data", str(tmp_path / "rows2.npy"), "--out", str(tmp_path / "c")],
    ]
    codes, (one, two, compare) = main_without_tensorflow(argv)
    assert codes == [2, 2, 2]
    assert "has 1 row: --test-fraction 0.2 leaves no training rows" in one
    assert "give more rows or change --test-fraction" in one
    assert "--validation-split 0.1 of the remaining 1 leaves no training rows" in two
    assert "give more rows or change --validation-split" in two
    assert "the validation search 0.2 of the remaining 1 leaves no training rows" in compare


def test_row_counts_match_what_scikit_learn_and_keras_split():
    from keras.src.trainers.data_adapters.array_slicing import train_validation_split
    from sklearn.model_selection import train_test_split

    from keras_cae.cli.sizes import held_out_split

    for rows in range(2, 40):
        for fraction in (0.05, 0.1, 0.2, 0.33, 0.5, 0.9):
            try:
                kept, held = train_test_split(np.arange(rows), test_size=fraction, random_state=0)
            except ValueError:  # scikit-learn refuses an empty part: so must we.
                assert 0 in held_out_split(rows, fraction, "ceil"), (rows, fraction)
            else:
                assert held_out_split(rows, fraction, "ceil") == (len(kept), len(held))
            try:
                (kept, _), (held, _) = train_validation_split((np.arange(rows), None), fraction)
            except ValueError:  # Keras refuses an empty part: so must we.
                assert 0 in held_out_split(rows, fraction, "floor"), (rows, fraction)
                continue
            assert held_out_split(rows, fraction, "floor") == (len(kept), len(held))
