"""The export formats: a name for each, mapped to the writer that produces it.

`export_encoder` validates its arguments, runs Keras on the probe batch and then,
for every part and format, asks the format's writer to write the part into the
staging directory and to load it back for the parity check. A writer knows one
format and nothing of the others. Adding a format is one module with a writer plus
one entry in `WRITERS` (`export/triton.py` is one).

Example:

>>> from export.formats import FORMATS, WRITERS                      # doctest: +SKIP
>>> FORMATS
('onnx', 'saved_model', 'triton')
>>> WRITERS["onnx"].file_name.format(part="encoder", name="encoder")
'encoder.onnx'
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from export.onnx import ONNX_WRITER
from export.saved_model import SAVED_MODEL_WRITER
from export.triton import TRITON_WRITER

__all__ = ["DEFAULT_FORMATS", "FORMATS", "WRITERS", "FormatWriter", "PartExport"]


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

    file_name: str
    write_step: str
    load_step: str
    metadata_keys: tuple[str, ...]

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


#: Format name -> its writer, in the order `export_encoder(formats=...)` writes them.
WRITERS: dict[str, FormatWriter] = {
    "onnx": ONNX_WRITER,
    "saved_model": SAVED_MODEL_WRITER,
    "triton": TRITON_WRITER,
}
#: Export formats: an ONNX file (tf2onnx), a TensorFlow SavedModel directory and a
#: Triton model repository (ONNX + config.pbtxt).
FORMATS = tuple(WRITERS)
#: What `export_encoder` writes unless told: the formats that need no extra package
#: (the Triton check needs tritonclient).
DEFAULT_FORMATS = ("onnx", "saved_model")
