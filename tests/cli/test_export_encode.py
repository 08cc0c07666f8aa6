"""`keras-cae export` and `keras-cae encode`: a trained run exported and its data encoded,
the model path a user gives `export`, the data contract `encode` shares with `train`,
and their one-line errors (raw pixels into an encoder trained on scaled ones among them).
`export.export_encoder` itself is tested in `tests/export/`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_cae.cli import main
from keras_cae.export import OnnxEncoder
from tests._cli import not_a_keras_archive, one_line_error, run


@pytest.mark.slow
def test_cli_train_export_encode_round_trip(tmp_path, capsys):
    run, out = tmp_path / "run", tmp_path / "exported"
    assert (
        main(["train", "--out", str(run), "--epochs", "1", "--hidden-units", "8", "--quiet"]) == 0
    )
    capsys.readouterr()
    assert main(["export", str(run / "model.keras"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (
        "encoder  onnx" in printed
        and "encoder  saved_model" in printed
        and "max|Δ| @batch 64" in printed
    )
    runtime = OnnxEncoder(out / "encoder.onnx")
    assert runtime.metadata["keras_cae.training_data"] == "sklearn-digits"
    assert runtime.metadata["keras_cae.input_scaling"] == "x / 16"

    from keras_cae.data import load_digits

    x = load_digits().x
    np.save(tmp_path / "x.npy", x)
    codes_path = tmp_path / "codes.npy"
    # In a fresh process, to check that `keras-cae encode` imports no TensorFlow.
    script = (
        "import sys; from keras_cae.cli import main; "
        f"rc = main(['encode', {str(out / 'encoder.onnx')!r}, {str(tmp_path / 'x.npy')!r}, "
        f"'--out', {str(codes_path)!r}]); "
        "assert not [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')]; "
        "sys.exit(rc)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "wrote codes of shape (1797, 8)" in proc.stdout
    codes = np.load(codes_path)
    model = keras.models.load_model(run / "model.keras")
    np.testing.assert_allclose(codes, model.encoder(x).numpy(), rtol=1e-5, atol=1e-6)

    # Refusals: one line on stderr, exit code 2, nothing changed.
    assert (
        main(
            ["encode", str(out / "encoder.onnx"), str(tmp_path / "x.npy"), "--out", str(codes_path)]
        )
        == 2
    )
    assert "exists; choose another file or pass --overwrite" in one_line_error(capsys)
    assert main(["export", str(run / "model.keras"), "--out", str(out)]) == 2
    assert "exists and is not empty" in one_line_error(capsys)
    np.savetxt(tmp_path / "narrow.csv", x[:, :10], delimiter=",")
    narrow = [
        "encode",
        str(out / "encoder.onnx"),
        str(tmp_path / "narrow.csv"),
        "--out",
        str(tmp_path / "n.npy"),
    ]
    assert main(narrow) == 2
    error = one_line_error(capsys)
    assert "`INPUT` should have samples of shape (64)" in error and "(1797, 10)" in error
    assert not (tmp_path / "n.npy").exists()
    assert (
        main([*narrow[:2], str(tmp_path / "x.npy"), "--out", str(codes_path), "--overwrite"]) == 0
    )


def test_cli_export_and_encode_errors(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing.keras"), "--out", str(tmp_path / "o")]) == 2
    assert "model file not found" in one_line_error(capsys)
    assert (
        main(["export", str(tmp_path / "m.keras"), "--out", str(tmp_path / "o"), "--opset", "9"])
        == 2
    )
    assert "--opset" in one_line_error(capsys)
    (tmp_path / "m.keras").write_text("not a zip")
    assert main(["export", str(tmp_path / "m.keras"), "--out", str(tmp_path / "o")]) == 2
    assert "is not a Keras archive" in one_line_error(capsys)
    assert (
        main(["encode", str(tmp_path / "missing.onnx"), str(tmp_path / "x.npy"), "--out", "c.npy"])
        == 2
    )
    assert "not found" in one_line_error(capsys)
    assert main(["encode", "e.onnx", "x.npy", "--out", str(tmp_path / "codes.txt")]) == 2
    assert "should be a .npy file" in one_line_error(capsys)
    assert not os.path.exists(tmp_path / "o")


def _mnist_layout(path: os.PathLike[str], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A tiny file in Keras's mnist.npz layout: uint8 4×4 images, labels 0 and 1."""
    arrays = {
        "x_train": rng.integers(0, 256, (80, 4, 4)).astype(np.uint8),
        "y_train": np.arange(80) % 2,
        "x_test": rng.integers(0, 256, (20, 4, 4)).astype(np.uint8),
        "y_test": np.arange(20) % 2,
    }
    arrays["x_test"][0, 0, 0], arrays["x_test"][1, 0, 0] = 0, 255
    np.savez(path, **arrays)
    return arrays


@pytest.mark.slow
def test_cli_raw_pixels_are_refused_in_one_line_scaled_ones_encoded(tmp_path, capsys):
    """The user path of issue 19: train on an mnist.npz (scaled /255 by `train`), export,
    then encode the raw uint8 test images (refused, naming the fix) and the scaled ones."""
    arrays = _mnist_layout(tmp_path / "digits.npz", np.random.default_rng(4))
    run, out = tmp_path / "run", tmp_path / "exported"
    train = ["train", "--data", str(tmp_path / "digits.npz"), "--out", str(run)]
    assert main([*train, "--epochs", "1", "--hidden-units", "3", "--quiet"]) == 0
    held_out = np.load(run / "held_out.npy")
    assert held_out.ndim == 2 and held_out.shape[1] == 16 and 2 <= len(held_out) <= 64
    capsys.readouterr()
    assert main(["export", str(run), "--out", str(out), "--format", "onnx"]) == 0
    printed = capsys.readouterr().out
    source = f"the first {len(held_out)} held-out rows of digits.npz (held_out.npy"
    assert f"parity checked on {source}" in printed
    with open(out / "manifest.json") as stream:
        manifest = json.load(stream)
    assert manifest["probe"].startswith(source) and manifest["probe_rows"] == len(held_out)
    assert manifest["metadata"]["input_scaling"] == "x / 255"
    model = keras.models.load_model(run / "model.keras")
    assert json.loads(manifest["metadata"]["input_range"]) == list(model.input_range)
    low, high = model.input_range
    assert 0 <= low < 0.05 and 0.95 < high <= 1

    raw, scaled = tmp_path / "raw.npy", tmp_path / "scaled.npy"
    np.save(raw, arrays["x_test"])  # uint8 0..255, (20, 4, 4)
    np.save(scaled, arrays["x_test"] / np.float32(255))
    encoder = str(out / "encoder.onnx")
    assert main(["encode", encoder, str(raw), "--out", str(tmp_path / "c.npy")]) == 2
    error = one_line_error(capsys)
    assert "raw.npy: The input holds values from 0 to 255" in error
    assert f"trained on, [{low:.6g}, {high:.6g}]" in error
    assert "divide the inputs by 255, as `keras-cae train` did (x / 255)" in error
    assert error.endswith("To encode it anyway, pass --no-range-check.")
    assert not (tmp_path / "c.npy").exists()
    with pytest.raises(ValueError, match="divide the inputs by 255.*check_range=False"):
        OnnxEncoder(encoder).encode(arrays["x_test"])

    flat = arrays["x_test"].reshape(20, 16) / np.float32(255)
    assert main(["encode", encoder, str(scaled), "--out", str(tmp_path / "c.npy")]) == 0
    codes = np.load(tmp_path / "c.npy")
    np.testing.assert_allclose(codes, model.encoder(flat).numpy(), rtol=1e-5, atol=1e-6)
    # Skipping the check is a deliberate choice: the raw values are encoded as given.
    skip = ["--out", str(tmp_path / "r.npy"), "--no-range-check"]
    assert main(["encode", encoder, str(raw), *skip]) == 0
    np.testing.assert_allclose(
        np.load(tmp_path / "r.npy"), model.encoder(flat * 255).numpy(), rtol=1e-5, atol=1e-6
    )

    shards = tmp_path / "shards"
    shards.mkdir()
    np.save(shards / "a.npy", arrays["x_test"][:10] / np.float32(255))
    np.save(shards / "b.npy", arrays["x_test"][10:])  # Raw.
    assert main(["encode", encoder, str(shards), "--out", str(tmp_path / "codes")]) == 2
    error = one_line_error(capsys)
    assert "b.npy: The input holds values from" in error and "--no-range-check" in error

    # A Keras archive where the ONNX file goes: named, with the export command.
    for command in (["encode", str(run / "model.keras"), str(scaled), "--out", "x.npy"],
                    ["serve", str(run / "model.keras")]):  # fmt: skip
        assert main(command) == 2
        error = one_line_error(capsys)
        assert "is a Keras archive (.keras), not an ONNX file" in error
        assert f"keras-cae export {run / 'model.keras'} --out exported" in error


# ------------------------------------------------------------------------------------------
# Messages a user can act on.


@pytest.mark.parametrize(
    "name, words",
    [
        ("fake.keras", "is not a Keras archive"),  # A .npy file renamed.
        ("metrics.json", "is not a Keras archive"),
        ("run", "is a directory without model.keras"),
    ],
)
def test_export_says_what_the_model_path_is(name, words, tmp_path, capsys):
    path = tmp_path / name
    if name == "run":
        path.mkdir()
    elif name == "metrics.json":
        path.write_text("{}")
    else:
        with open(path, "wb") as stream:
            np.save(stream, np.ones(3))
    code, _, stderr = run(capsys, "export", str(path), "--out", str(tmp_path / "o"))
    assert code == 2 and f"{str(path)!r} {words}" in stderr and "not found" not in stderr


def test_export_reads_a_run_directory_as_its_model_keras(tmp_path):
    from keras_cae.cli.export import resolve_model_path

    model = not_a_keras_archive(tmp_path / "model.keras")
    assert resolve_model_path(str(tmp_path)) == model
    assert resolve_model_path(model) == model


def test_keras_load_errors_are_printed_whole(tmp_path, capsys):
    path = not_a_keras_archive(tmp_path / "model.zip")
    with pytest.raises(Exception) as raised:
        keras.models.load_model(path)
    whole = " ".join(str(raised.value).split())
    assert len(whole) > 300  # Long enough to have been cut before.
    code, _, stderr = run(capsys, "export", path, "--out", str(tmp_path / "o"))
    assert code == 2
    assert stderr.rstrip("\n").endswith(f"{type(raised.value).__name__}: {whole}"), stderr


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
