"""MkDocs hook: the source laid out as installed, for mkdocstrings.

`export/` installs as `keras_cae.export` (pyproject.toml's package-dir), which a
reader of the source tree cannot see. Before the build this copies the sources into
``build/api-source/keras_cae/`` with ``export/`` as its subpackage (copies, not links:
griffe follows links back to the real folder), and mkdocs.yml points mkdocstrings there.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from mkdocs.plugins import event_priority


# Before mkdocstrings' own on_config (default priority 0), which drops handler paths that
# do not exist yet: on a clean checkout the layout must be there when it looks.
@event_priority(100)
def on_config(config: Any) -> Any:
    root = os.path.dirname(os.path.abspath(config.config_file_path))
    layout = os.path.join(root, "build", "api-source", "keras_cae")
    shutil.rmtree(os.path.dirname(layout), ignore_errors=True)
    skip = shutil.ignore_patterns("__pycache__")
    shutil.copytree(os.path.join(root, "keras_cae"), layout, ignore=skip)
    shutil.copytree(os.path.join(root, "export"), os.path.join(layout, "export"), ignore=skip)
    return config
