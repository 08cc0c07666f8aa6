"""The service install (docs/install-service.md): no TensorFlow, and it serves.

`requirements-service.txt` lists what `keras-cae encode`/`serve` and `OnnxEncoder`
need; the slow test installs it into a fresh virtual environment exactly as documented,
from a copy of this checkout's tracked sources, proves TensorFlow, Keras, tf2onnx and
scikit-learn are absent, and has that environment's `keras-cae serve` and
`keras-cae encode` answer as `OnnxEncoder.encode` does in this process.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import venv
from pathlib import Path

import numpy as np
import pytest
import tomllib

import keras_cae
from keras_cae import export
from tests._loopback import free_port, running_server, v2_infer

ROOT = Path(__file__).resolve().parents[3]
REQUIREMENTS = ROOT / "requirements-service.txt"
# Base dependencies the service needs; the rest of the base is the training stack.
RUNTIME_BASE = ("numpy", "onnxruntime")
TRAINING_ONLY = ("tensorflow", "keras", "tf2onnx", "sklearn")


def _requirement_lines(path: Path) -> list[str]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def _project_name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower()


def test_service_requirements_are_the_runtime_base_plus_the_serve_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = {_project_name(r): r for r in project["dependencies"]}
    wanted = [base[name] for name in RUNTIME_BASE] + project["optional-dependencies"]["serve"]
    assert sorted(_requirement_lines(REQUIREMENTS)) == sorted(wanted)
    training = set(base) - set(RUNTIME_BASE)
    assert training.isdisjoint(_project_name(r) for r in wanted)


def _run(*command: str | os.PathLike[str], cwd: Path | None = None) -> str:
    done = subprocess.run(
        [os.fspath(c) for c in command], cwd=cwd, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def service_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment installed the documented way; returns its bin/."""
    root = tmp_path_factory.mktemp("service")
    # The tracked sources, so that the build's staging stays out of the checkout.
    sources = root / "keras-cae"
    tracked = _run("git", "ls-files", "-z", "pyproject.toml", "README.md", "keras_cae", "export",
                   cwd=ROOT).split("\0")  # fmt: skip
    for name in filter(None, tracked):
        (sources / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, sources / name)
    venv.create(root / "venv", with_pip=True)
    bin_dir = root / "venv" / "bin"
    _run(bin_dir / "pip", "install", "-q", "-r", REQUIREMENTS)
    _run(bin_dir / "pip", "install", "-q", "--no-deps", ".", cwd=sources)
    return bin_dir


@pytest.mark.slow
def test_service_install_has_no_training_stack(service_env):
    script = (
        "import importlib.util, sys\n"
        f"absent = [m for m in {TRAINING_ONLY!r} if importlib.util.find_spec(m) is None]\n"
        # The serve and encode paths run for real in the next test.
        "import keras_cae, keras_cae.export, keras_cae.cli\n"
        "from keras_cae.export import OnnxEncoder\n"
        "print(absent, sorted({m.split('.')[0] for m in sys.modules} & set(absent)))\n"
    )
    out = _run(service_env / "python", "-c", script, cwd=service_env)
    assert out.strip() == f"{list(TRAINING_ONLY)} []"


@pytest.mark.slow
def test_service_install_serves_and_encodes(service_env, tmp_path, rng):
    model = keras_cae.dense_autoencoder(12, 3, seed=5)
    result = export.export_encoder(model, tmp_path / "exported", formats="onnx")
    model_path = result.path("onnx")
    x = rng.random((4, 12), dtype=np.float32)
    expected = export.OnnxEncoder(model_path).encode(x)

    port = free_port()
    command = [service_env / "keras-cae", "serve", model_path, "--name", "enc", "--port", str(port)]
    with running_server([os.fspath(c) for c in command], port, str(tmp_path / "log")) as url:
        codes = v2_infer(url, "enc", "x", "FP32", x, "code")
    np.testing.assert_array_equal(codes, expected)

    np.save(tmp_path / "x.npy", x)
    _run(service_env / "keras-cae", "encode", model_path, tmp_path / "x.npy",
         "--out", tmp_path / "codes.npy")  # fmt: skip
    np.testing.assert_array_equal(np.load(tmp_path / "codes.npy"), expected)
