"""What a format writer is given (`PartExport`) and what it provides (`FormatWriter`).

The registry of formats is `keras_cae.export.formats`; each format's writer lives in its own
module and imports only this one, so the writers never import the registry back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

__all__ = ["FormatWriter", "PartExport"]


@dataclass(frozen=True)
class PartExport:
    """One part of a model to write in one format: everything a writer needs.

    Attributes:
        part: `"encoder"`, `"decoder"` or `"autoencoder"`.
        layer: the Keras layer or model; its variables are the part's weights.
        function: ``x -> {output_name: layer(x)}`` in inference mode.
        input_signature: `[tf.TensorSpec((None, *features), tf.float32, name=input_name)]`.
        input_name: the graph input name.
        output_name: the graph output name.
        metadata: string metadata describing the part (keys without prefix).
        description: one line for the artifact's doc string.
        options: the format options, as the writers' `check_options` returned them
            (``{"opset": 17, "model_name": None}``).
    """

    part: str
    layer: Any
    function: Callable[[Any], dict[str, Any]]
    input_signature: list[Any]
    input_name: str
    output_name: str
    metadata: Mapping[str, str]
    description: str
    options: Mapping[str, Any]


class FormatWriter(Protocol):
    """Writes a part in one format and loads it back for the parity check.

    Attributes:
        file_name: the artifact's name in the export directory, with ``{part}`` and
            optionally ``{name}``, the part's model name in a model repository.
        write_step: names the write in error messages, with ``{part}``.
        load_step: names the load in error messages, with ``{part}``.
        metadata_keys: the keys `metadata` returns (reserved for the export).
    """

    # Read-only, so that a writer may declare them as plain class attributes.
    @property
    def file_name(self) -> str: ...

    @property
    def write_step(self) -> str: ...

    @property
    def load_step(self) -> str: ...

    @property
    def metadata_keys(self) -> tuple[str, ...]: ...

    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Returns `options` with this format's entries checked and normalised (raises
        `ValueError`); called before anything is imported or written."""
        ...

    def metadata(self, options: Mapping[str, Any]) -> dict[str, str]:
        """Metadata this format adds to every artifact (e.g. its converter's version)."""
        ...

    def write(self, job: PartExport, path: str) -> None:
        """Writes `job` to `path`, which does not exist yet."""
        ...

    def load(
        self, job: PartExport, path: str
    ) -> contextlib.AbstractContextManager[Callable[[np.ndarray], Any]]:
        """Loads what `write` wrote; yields ``x -> outputs``, released on exit."""
        ...
