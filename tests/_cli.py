"""Running the `keras-cae` command line in tests: in this process (`run`), or in a fresh
interpreter as a user's shell would (`fresh_python`, `main_without_tensorflow`), and
reading its one-line errors (`one_line_error`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest

from keras_cae.cli import main
from tests import ROOT


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``keras-cae *argv`` in this process: its exit code, stdout and stderr."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """What the command wrote on stderr, asserted to be exactly one non-empty line."""
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and len(err.splitlines()) == 1, err
    return err


def fresh_python(code: str, **env: str) -> subprocess.CompletedProcess:
    """Runs `code` in a new interpreter, as a user's shell would (no test log settings)."""
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**environment, **env},
    )


def main_without_tensorflow(argvs: list[list[str]]) -> tuple[list[int], list[str]]:
    """Runs `main` on each argv in one fresh process; asserts TensorFlow was not imported."""
    result = fresh_python(
        "import sys\n"
        "from keras_cae.cli import main\n"
        f"codes = [main(argv) for argv in {argvs!r}]\n"
        "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'\n"
        "print(codes)\n"
    )
    assert result.returncode == 0, result.stderr
    # `train` announces its phases on stdout ("loading ..."); the codes come last.
    return json.loads(result.stdout.splitlines()[-1]), result.stderr.splitlines()


def not_a_keras_archive(path: os.PathLike[str]) -> str:
    """A zip file that is no Keras archive (no config.json)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "not a model")
    return str(path)
