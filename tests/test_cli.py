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


def _onnx_encoder(path, input_dims: list[int]) -> None:
    """A TensorFlow-free encoder: code = x summed over its last axis (flattened first
    for a flat input of 12 as a (3, 4) sum)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Reshape", ["x", "shape"], ["grid"])]
    nodes.append(helper.make_node("ReduceSum", ["grid", "axes"], ["code"], keepdims=0))
    graph = helper.make_graph(
        nodes,
        "encoder",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", *input_dims])],
        [helper.make_tensor_value_info("code", TensorProto.FLOAT, ["batch", 3])],
        [
            numpy_helper.from_array(np.array([-1, 3, 4], dtype=np.int64), "shape"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), "axes"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def test_train_and_encode_share_one_data_contract(tmp_path, capsys):
    images = np.random.default_rng(1).random((40, 3, 4)).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "flat.npy", images.reshape(40, 12))
    # train: a flat Dense model, so each (3, 4) image is flattened to 12 inputs.
    out = tmp_path / "run"
    code, _, stderr = run(
        capsys, "train", "--data", str(tmp_path / "images.npy"), "--out", str(out),
        "--epochs", "1", "--hidden-units", "3", "--quiet",
    )  # fmt: skip
    assert code == 0, stderr
    assert json.loads((out / "metrics.json").read_text())["input_dim"] == 12
    # encode: the same file into a flat encoder (flattened) and an image encoder (as is).
    expected = images.sum(axis=2)
    for dims in ([12], [3, 4]):
        model = tmp_path / f"encoder{len(dims)}.onnx"
        _onnx_encoder(str(model), dims)
        codes = tmp_path / f"codes{len(dims)}.npy"
        argv = ["encode", str(model), str(tmp_path / "images.npy"), "--out", str(codes)]
        code, _, stderr = run(capsys, *argv)
        assert code == 0, stderr
        np.testing.assert_allclose(np.load(codes), expected, rtol=1e-6)
    # Flat rows do not become images: refused, one line, exit 2.
    argv = ["encode", str(tmp_path / "encoder2.onnx"), str(tmp_path / "flat.npy")]
    code, _, stderr = run(capsys, *argv, "--out", str(tmp_path / "bad.npy"))
    assert code == 2 and "shape (3, 4)" in stderr and "(40, 12)" in stderr
    assert stderr.count("\n") == 1 and not (tmp_path / "bad.npy").exists()
