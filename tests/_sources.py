"""The library's source modules by their installed names (`export/` installs as
`keras_cae.export`), read from the folders: for the doctest and import-graph tests."""

from __future__ import annotations

import os

from tests import ROOT

# Source folder -> the package it installs as (pyproject.toml's package-dir).
PACKAGES = {"keras_cae": "keras_cae", "export": "keras_cae.export"}


def source_modules() -> dict[str, str]:
    """Module name -> file, for every .py file of the packages (a package by its
    ``__init__.py``)."""
    found = {}
    for source, package in PACKAGES.items():
        for folder, _, files in os.walk(os.path.join(ROOT, source)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    parts = os.path.relpath(path, os.path.join(ROOT, source))[:-3].split(os.sep)
                    if parts[-1] == "__init__":
                        parts.pop()
                    found[".".join([package, *parts])] = path
    return found
