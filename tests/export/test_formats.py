"""The format registry: a format is one writer plus one entry in `WRITERS`."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import pytest

import keras_cae
from keras_cae import export
from keras_cae.export import formats

FEATURES = 12


class _KerasFileWriter:
    """A third format, as a user would add one: the part as a `.keras` file."""

    file_name = "{part}.keras"
    write_step = "save the {part} as a .keras file"
    load_step = "load the {part} .keras file"
    metadata_keys = ("keras_file_writer",)

    def __init__(self, shift: float = 0.0) -> None:
        self.shift = shift  # A converter bug, when not 0.

    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        return dict(options)

    def metadata(self, options: Mapping[str, Any]) -> dict[str, str]:
        return {"keras_file_writer": "1"}

    def write(self, job: formats.PartExport, path: str) -> None:
        job.layer.save(path)

    @contextlib.contextmanager
    def load(self, job: formats.PartExport, path: str) -> Iterator[Callable[[Any], Any]]:
        import keras

        model = keras.saving.load_model(path)
        yield lambda x: np.asarray(model(x, training=False)) + self.shift


def test_registry_lists_the_formats_in_order():
    assert export.FORMATS == formats.FORMATS == tuple(formats.WRITERS)
    assert export.FORMATS == ("onnx", "saved_model", "triton")
    assert export.DEFAULT_FORMATS == ("onnx", "saved_model")
    names = [w.file_name.format(part="encoder", name="digits") for w in formats.WRITERS.values()]
    assert names == ["encoder.onnx", "encoder_saved_model", "triton/digits"]


def test_a_new_format_is_one_writer_and_one_entry(tmp_path, monkeypatch):
    model = keras_cae.dense_autoencoder(FEATURES, 3, seed=5)
    monkeypatch.setitem(formats.WRITERS, "keras", _KerasFileWriter())
    result = export.export_encoder(model, tmp_path / "out", formats=("keras", "onnx"))
    assert sorted(os.listdir(tmp_path / "out")) == [
        "encoder.keras",
        "encoder.onnx",
        "manifest.json",
    ]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [a["format"] for a in manifest["artifacts"]] == ["keras", "onnx"]
    assert manifest["metadata"]["keras_file_writer"] == "1"
    assert result.path("keras").endswith("encoder.keras")
    # The same model through a different file: the same float32 kernels, so equal.
    assert result.artifacts[0].max_abs_diff == {1: 0.0, 32: 0.0}
    with pytest.raises(ValueError, match="filled in by the export itself"):
        export.export_encoder(model, tmp_path / "o2", metadata={"keras_file_writer": "2"})

    monkeypatch.setitem(formats.WRITERS, "keras", _KerasFileWriter(shift=1e-3))
    with pytest.raises(export.ParityError, match=r"keras encoder differs from Keras"):
        export.export_encoder(model, tmp_path / "o3", formats="keras")
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_unknown_format_is_refused_keras_style(tmp_path):
    model = keras_cae.dense_autoencoder(FEATURES, 3, seed=5)
    with pytest.raises(
        ValueError,
        match=r"^Unrecognized format='tflite'. Supported formats are: "
        r"\['onnx', 'saved_model', 'triton'\]$",
    ):
        export.export_encoder(model, tmp_path / "out", formats="tflite")
    assert os.listdir(tmp_path) == []
