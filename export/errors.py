"""The errors of `export_encoder`, and the helper that names the failed step."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["ExportError", "ParityError", "step"]


class ExportError(RuntimeError):
    """An export step failed; the message names the step. Nothing was written."""


class ParityError(ExportError):
    """An exported artifact's outputs differ from the Keras model's beyond the tolerance."""


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """Re-raises any failure inside the block as an `ExportError` naming the step.

    Example:

    >>> with step("write manifest.json"):                            # doctest: +SKIP
    ...     raise OSError("disk full")
    ExportError: Export failed at step 'write manifest.json': OSError: disk full. ...
    """
    try:
        yield
    except ExportError:
        raise
    except Exception as error:
        message = " ".join(str(error).split()).rstrip(".") or type(error).__name__
        if len(message) > 500:
            message = message[:500] + " ..."
        raise ExportError(
            f"Export failed at step {name!r}: {type(error).__name__}: {message}. "
            "Nothing was written."
        ) from error
