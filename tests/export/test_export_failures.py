"""`export.export_encoder`: what it refuses, and how it fails without leaving anything
behind (the target directory is written whole or not at all, even when the process is
killed). What a successful export writes is in `test_export.py`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pytest

NP_NAMESPACE_BEFORE = {name: id(value) for name, value in vars(np).items()}

import keras  # noqa: E402

import keras_cae  # noqa: E402
from keras_cae import export  # noqa: E402
from keras_cae.export import _export  # noqa: E402
from keras_cae.export import saved_model as saved_model_module  # noqa: E402
from tests._variants import FEATURES, plain_functional_encoder  # noqa: E402


def _listing(path: os.PathLike[str]) -> list[str]:
    return sorted(os.listdir(path))


def test_numpy_namespace_unchanged_by_export(tmp_path, small_model):
    export.export_encoder(small_model, tmp_path / "out", formats="onnx")
    after = {name: id(value) for name, value in vars(np).items()}
    # TensorFlow imports numpy submodules (attributes appear); nothing may be replaced,
    # and no removed numpy-1 alias (np.object, np.bool, np.cast, ...) may be put back.
    changed = {name for name in NP_NAMESPACE_BEFORE if after.get(name) != NP_NAMESPACE_BEFORE[name]}
    assert not changed
    added = set(after) - set(NP_NAMESPACE_BEFORE)
    assert not added & {"object", "bool", "int", "float", "str", "cast", "product", "NaN", "float_"}


def test_refuses_existing_directory_unless_overwrite(tmp_path, small_model):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(ValueError, match="exists and is not empty.*overwrite"):
        export.export_encoder(small_model, out, formats="onnx")
    assert _listing(out) == ["keep.txt"]
    result = export.export_encoder(small_model, out, formats="onnx", overwrite=True)
    assert _listing(out) == ["encoder.onnx", "manifest.json"]
    assert result.paths == {"encoder.onnx": str(out / "encoder.onnx")}
    assert _listing(tmp_path) == ["out"]


def test_failure_mid_export_leaves_nothing_behind(tmp_path, monkeypatch, small_model):
    def broken_save(layer: Any, function: Any, signature: Any, path: str) -> None:
        os.makedirs(path)
        with open(os.path.join(path, "half-written.pb"), "wb") as stream:
            stream.write(b"\0" * 100)
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(saved_model_module, "to_saved_model", broken_save)
    with pytest.raises(
        export.ExportError, match="step 'save the encoder as a SavedModel'.*disk full"
    ):
        export.export_encoder(small_model, tmp_path / "new")
    assert _listing(tmp_path) == []  # Not the target, not the staged ONNX file.

    old = tmp_path / "old"
    old.mkdir()
    (old / "encoder.onnx").write_text("previous export")
    with pytest.raises(export.ExportError, match="SavedModel"):
        export.export_encoder(small_model, old, overwrite=True)
    assert _listing(tmp_path) == ["old"]
    assert (old / "encoder.onnx").read_text() == "previous export"


@pytest.mark.slow
def test_export_killed_late_is_cleaned_up_by_the_next_export(tmp_path, small_model):
    """SIGKILL cannot be caught: the next export into the same parent cleans up."""
    script = (
        "import sys, keras_cae, export; "
        "export.export_encoder(keras_cae.dense_autoencoder(12, 3, seed=5), sys.argv[1])"
    )
    killed = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "out")])
    try:
        deadline = time.monotonic() + 240
        staged = []
        while not staged:  # Late in the run: the ONNX file is staged, the SavedModel not yet.
            assert killed.poll() is None and time.monotonic() < deadline, _listing(tmp_path)
            staged = [
                name for name in os.listdir(tmp_path) if (tmp_path / name / "encoder.onnx").exists()
            ]
            time.sleep(0.01)
        killed.kill()
    finally:
        killed.kill()
        killed.wait()
    assert staged[0].startswith(f".out.tmp-{killed.pid}-")
    # Its lock file too: the kernel released the lock, nobody removed the file.
    assert _listing(tmp_path) == sorted([*staged, ".out.keras-cae-lock"])
    result = export.export_encoder(small_model, tmp_path / "out", formats="onnx")
    assert _listing(tmp_path) == ["out"]
    assert _listing(tmp_path / "out") == ["encoder.onnx", "manifest.json"]
    assert result.max_abs_diff < 1e-6


def test_parity_failure_raises_and_writes_nothing(tmp_path, monkeypatch, small_model):
    original = _export._serving_function

    def off_by_a_little(layer: Any, output_name: str) -> Any:
        serve = original(layer, output_name)
        return lambda x: {k: v + 1e-3 for k, v in serve(x).items()}  # A converter bug.

    monkeypatch.setattr(_export, "_serving_function", off_by_a_little)
    with pytest.raises(
        export.ParityError, match=r"onnx encoder differs from Keras by max \|Δ\| = 0\.001"
    ):
        export.export_encoder(small_model, tmp_path / "out")
    assert _listing(tmp_path) == []
    # The same export passes with a tolerance above the injected error.
    result = export.export_encoder(small_model, tmp_path / "out", formats="onnx", tolerance=2e-3)
    assert 0.9e-3 < result.max_abs_diff < 1.1e-3


def test_never_built_model_is_refused(tmp_path):
    encoder = keras.Sequential([keras.layers.Dense(3)])
    decoder = keras.Sequential([keras.layers.Dense(FEATURES)])
    model = keras_cae.ContractiveAutoencoder(encoder, decoder)
    with pytest.raises(ValueError, match="never built or called"):
        export.export_encoder(model, tmp_path / "out")
    with pytest.raises(ValueError, match="never built or called"):
        export.export_encoder(keras.Sequential([keras.layers.Dense(3)]), tmp_path / "out")
    assert _listing(tmp_path) == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"formats": ("onnx", "tflite")},
            r"Unrecognized format='tflite'. Supported formats are: "
            r"\['onnx', 'saved_model', 'triton'\]",
        ),
        ({"formats": ()}, "at least one"),
        ({"parts": ("encoder", "head")}, "Unrecognized part='head'"),
        ({"opset": 12}, r"Unsupported opset=12. Supported opsets are: \[13, 14, 15, 16, 17, 18\]"),
        ({"opset": "17"}, "Unsupported opset='17'"),
        ({"tolerance": 0}, "tolerance=0"),
        ({"metadata": {"opset": "3"}}, "filled in by the export itself"),
        ({"metadata": {"training_data": ["a"]}}, r"metadata\['training_data'\]"),
        ({"probe": np.zeros((1, FEATURES))}, r"n >= 2. Received: probe of shape \(1, 12\)"),
        ({"probe": np.zeros((4, FEATURES + 1))}, "probe of shape"),
        ({"overwrite": "yes"}, "overwrite='yes'"),
    ],
)
def test_bad_arguments_are_refused_before_writing(tmp_path, kwargs, match, small_model):
    with pytest.raises(ValueError, match=match):
        export.export_encoder(small_model, tmp_path / "out", **kwargs)
    assert _listing(tmp_path) == []


def test_decoder_of_a_plain_model_is_refused(tmp_path):
    with pytest.raises(ValueError, match="needs a ContractiveAutoencoder"):
        export.export_encoder(plain_functional_encoder(), tmp_path / "out", parts=("decoder",))
    with pytest.raises(ValueError, match="should be a ContractiveAutoencoder or a Keras model"):
        export.export_encoder(object(), tmp_path / "out")


def test_tf2onnx_older_than_1_17_is_refused_with_the_fix(monkeypatch):
    """tf2onnx 1.16 calls `np.cast` and `np.product`, which numpy 2 removed."""
    from keras_cae.export import onnx as onnx_module

    old = type(sys)("tf2onnx")
    old.__version__ = "1.16.1"
    monkeypatch.setitem(sys.modules, "tf2onnx", old)
    with pytest.raises(
        ImportError, match=r"tf2onnx 1.16.1 is installed: `pip install -U 'tf2onnx>=1.17'`"
    ):
        onnx_module._import_tf2onnx()


def test_diverged_model_is_refused(tmp_path):
    model = keras_cae.dense_autoencoder(FEATURES, 3, seed=7)
    kernel = model.encoder.layers[0].kernel
    kernel.assign(np.full(kernel.shape, np.nan, dtype=np.float32))
    with pytest.raises(export.ExportError, match="run the Keras encoder.*NaN or infinite"):
        export.export_encoder(model, tmp_path / "out")
    assert _listing(tmp_path) == []
