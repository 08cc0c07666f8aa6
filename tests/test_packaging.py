"""The installed layout: the `export/` folder is the subpackage `keras_cae.export`, and no
top-level `export` module is installed (it would shadow, or be shadowed by, a user's
own `export.py` and an unrelated distribution of that name)."""

from __future__ import annotations

import os
import subprocess
import sys

import tomllib

from tests import ROOT


def _setuptools_config() -> dict:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as stream:
        return tomllib.load(stream)["tool"]["setuptools"]


def test_every_source_package_is_listed_under_its_installed_name():
    config = _setuptools_config()
    folders = config["package-dir"]
    found = set()
    for package, folder in folders.items():
        for directory, _, files in os.walk(os.path.join(ROOT, folder)):
            if "__init__.py" in files:
                relative = os.path.relpath(directory, os.path.join(ROOT, folder))
                parts = [] if relative == "." else relative.split(os.sep)
                found.add(".".join([package, *parts]))
    # A folder mapped on its own (keras_cae.export) also lies below no other mapping.
    assert sorted(config["packages"]) == sorted(found)


def test_the_install_has_keras_cae_export_and_no_top_level_export(tmp_path):
    # Outside the repository, so that only the installed packages can be found.
    code = (
        "import importlib.util, sys\n"
        "import keras_cae.export as e\n"
        "print(e.__file__)\n"
        "print(importlib.util.find_spec('export'))\n"
        "print('tensorflow' in sys.modules)\n"
    )
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    path, spec, tensorflow = result.stdout.split("\n")[:3]
    assert path == os.path.join(ROOT, "export", "__init__.py")
    assert spec == "None"
    assert tensorflow == "False"
