"""The habits of a maintained library, checked by the README's test command (and so by CI):
lint and format (ruff), types of every module (mypy), the import contracts
(import-linter) and the API reference (mkdocs + mkdocstrings, warnings as errors).

Each tool comes with the ``test`` extra (``pip install -e '.[test]'``); a missing tool
fails its test, naming the install command. mypy and import-linter cannot follow the
editable install's import hook (``export/`` installs as ``keras_cae.export``), so they
run on a copy of the sources laid out as installed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests import ROOT

PYPROJECT = os.path.join(ROOT, "pyproject.toml")


def _tool(module: str) -> list[str]:
    """``python -m module`` with this interpreter (whatever folder its scripts landed in),
    or a failure saying how to install it."""
    if importlib.util.find_spec(module) is None:
        pytest.fail(f"{module} is not installed; run: pip install -e '.[test]'")
    return [sys.executable, "-m", module]


def _run(command: list[str], cwd: str = ROOT, **environment: str) -> str:
    env = {**os.environ, **environment}
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{output[-6000:]}"
    return output


@pytest.fixture(scope="module")
def installed_layout(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A folder holding ``keras_cae/`` with ``export/`` as its subpackage, as installed."""
    folder = tmp_path_factory.mktemp("layout")
    skip = shutil.ignore_patterns("__pycache__")
    shutil.copytree(os.path.join(ROOT, "keras_cae"), folder / "keras_cae", ignore=skip)
    shutil.copytree(os.path.join(ROOT, "export"), folder / "keras_cae" / "export", ignore=skip)
    return str(folder)


def test_ruff_check():
    _run([*_tool("ruff"), "check", "."])


def test_ruff_format():
    _run([*_tool("ruff"), "format", "--check", "."])


@pytest.mark.slow
def test_types_of_every_module(installed_layout, tmp_path):
    """mypy on every module of keras_cae and keras_cae.export (pyproject.toml's [tool.mypy])."""
    output = _run(
        [*_tool("mypy"), "--config-file", PYPROJECT, "--cache-dir", str(tmp_path / "cache")],
        cwd=installed_layout,
    )
    assert "Success: no issues found" in output


def test_the_type_check_covers_every_module():
    """[tool.mypy] checks the whole package as installed: only protoc's generated
    messages (``*_pb2.py`` and their ``.pyi`` stub) are left out, so a new module
    cannot slip past."""
    import tomllib

    with open(PYPROJECT, "rb") as stream:
        config = tomllib.load(stream)["tool"]["mypy"]
    assert config["packages"] == ["keras_cae"]
    assert not {"modules", "files"} & set(config)
    installed = {"keras_cae": "keras_cae", "export": "keras_cae/export"}
    sources = [
        os.path.relpath(os.path.join(folder, name), ROOT).replace(os.sep, "/")
        for top in installed
        for folder, _, names in os.walk(os.path.join(ROOT, top))
        for name in names
        if name.endswith((".py", ".pyi"))
    ]
    as_installed = [
        installed[path.split("/", 1)[0]] + "/" + path.split("/", 1)[1] for path in sources
    ]
    patterns = config["exclude"]  # A list in TOML: mypy joins them with |.
    excluded = sorted(
        path for path in as_installed if any(re.search(pattern, path) for pattern in patterns)
    )
    assert excluded == sorted(path for path in as_installed if "_pb2" in path)
    assert excluded, "the generated messages moved; update [tool.mypy] exclude"


def test_import_contracts(installed_layout):
    """pyproject.toml's [tool.importlinter] contracts: CLI -> export -> library, and a
    transport-free serving dataplane."""
    output = _run(
        [
            *_tool("importlinter")[:1],
            "-c",
            "from importlinter.cli import lint_imports_command; lint_imports_command()",
            "--config",
            PYPROJECT,
            "--no-cache",
        ],  # fmt: skip
        cwd=installed_layout,
        PYTHONPATH=installed_layout,
    )
    assert "0 broken" in output


def test_the_contracts_cover_every_library_module():
    """The library contract names its source modules one by one: every top-level module
    and package of keras_cae except the CLI and export, so a new one cannot slip past."""
    import tomllib

    with open(PYPROJECT, "rb") as stream:
        contracts = tomllib.load(stream)["tool"]["importlinter"]["contracts"]
    (library,) = [c for c in contracts if c["id"] == "library"]
    folder = os.path.join(ROOT, "keras_cae")
    found = {
        f"keras_cae.{name.removesuffix('.py')}"
        for name in os.listdir(folder)
        if (name.endswith(".py") and name != "__init__.py")
        or os.path.exists(os.path.join(folder, name, "__init__.py"))
    } - {"keras_cae.cli"}
    assert sorted(library["source_modules"]) == sorted(found)
    assert sorted(library["forbidden_modules"]) == ["keras_cae.cli", "keras_cae.export"]


@pytest.mark.slow
def test_the_api_reference_builds_without_warnings(tmp_path):
    """mkdocs.yml: the reference from the docstrings, offline, warnings as errors."""
    _run([*_tool("mkdocs"), "build", "--strict", "--site-dir", str(tmp_path / "site")])
    assert os.path.exists(tmp_path / "site" / "export" / "index.html")


MAX_TEST_FILE_LINES = 500


def test_test_files_are_short_and_their_folders_mirror_the_packages():
    """Every test file is at most `MAX_TEST_FILE_LINES` lines, and every folder of tests/
    (but helpers' ``_*`` folders) is named after a package: tests/keras_cae/studies/ for
    keras_cae/studies/, tests/export/serving/ for export/serving/, tests/cli/ for
    keras_cae/cli/."""
    sources = {"keras_cae": "keras_cae", "export": "export", "cli": "keras_cae/cli"}
    tests = os.path.join(ROOT, "tests")
    long, strays = [], []
    for folder, folders, names in os.walk(tests):
        folders[:] = [f for f in folders if not f.startswith(("_", "."))]
        relative = os.path.relpath(folder, tests).replace(os.sep, "/")
        if relative != ".":
            top, _, rest = relative.partition("/")
            package = os.path.join(ROOT, sources.get(top, "?"), rest)
            if not os.path.exists(os.path.join(package, "__init__.py")):
                strays.append(relative)
        for name in names:
            if name.endswith(".py"):
                with open(os.path.join(folder, name), encoding="utf-8") as stream:
                    lines = sum(1 for _ in stream)
                if lines > MAX_TEST_FILE_LINES:
                    long.append(f"{relative}/{name}: {lines} lines")
    assert not long, f"split these by the module or concept they test: {long}"
    assert not strays, f"test folders that mirror no package: {strays}"
