"""Every example runs on a tiny budget."""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np
import pytest

from tests import ROOT

EXAMPLES = os.path.join(ROOT, "examples")


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(EXAMPLES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_digits_example(tmp_path):
    path = tmp_path / "model.keras"
    logs = load("train_digits").main(["--epochs", "2", "--out", str(path)])
    assert path.exists()
    assert np.isfinite(logs["contractive_loss"]) and logs["contractive_loss"] > 0


@pytest.mark.parametrize("penalty", ["auto", "hutchinson"])
def test_conv_encoder_example(penalty):
    logs = load("conv_encoder").main(["--epochs", "1", "--penalty", penalty])
    assert np.isfinite(logs["loss"]) and logs["contractive_loss"] > 0


def test_compare_models_example_says_matplotlib_is_missing_before_training(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails.
    monkeypatch.setattr(sys, "argv", ["compare_models.py", "--epochs", "1", "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as exited:
        load("compare_models").main()
    assert "pip install 'keras-cae[plot]'" in str(exited.value.code)
    assert "mean ||J_f(x)||_F" not in capsys.readouterr().out  # Nothing was trained.


@pytest.mark.slow
def test_export_and_encode_example(tmp_path, capsys):
    diff = load("export_and_encode").main(["--epochs", "1", "--out", str(tmp_path / "exported")])
    assert 0 <= diff < 1e-5
    assert "encoder  onnx" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path / "exported")) == [
        "encoder.onnx",
        "encoder_saved_model",
        "manifest.json",
    ]
