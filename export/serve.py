"""The former home of the server, kept so that ``from export.serve import ...`` works.

The server now lives in the package `export.serving`, one module per concern.
"""

from __future__ import annotations

from export.serving import DEFAULT_MAX_BATCH, SERVER_NAME, create_app, serve

__all__ = ["create_app", "serve", "DEFAULT_MAX_BATCH", "SERVER_NAME"]
