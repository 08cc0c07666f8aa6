"""The export formats: a name for each, mapped to the writer that produces it.

`export_encoder` validates its arguments, runs Keras on the probe batch and then,
for every part and format, asks the format's writer to write the part into the
staging directory and to load it back for the parity check. A writer knows one
format and nothing of the others. Adding a format (a Triton model repository, say)
is one module with a writer plus one entry in `WRITERS`.

Example:

>>> from export.formats import FORMATS, WRITERS                      # doctest: +SKIP
>>> FORMATS
('onnx', 'saved_model')
>>> WRITERS["onnx"].file_name.format(part="encoder")
'encoder.onnx'
"""

from __future__ import annotations

from export.onnx import ONNX_WRITER
from export.saved_model import SAVED_MODEL_WRITER
from export.writer import FormatWriter, PartExport

__all__ = ["FORMATS", "WRITERS", "FormatWriter", "PartExport"]


#: Format name -> its writer, in the default order of `export_encoder(formats=...)`.
WRITERS: dict[str, FormatWriter] = {
    "onnx": ONNX_WRITER,
    "saved_model": SAVED_MODEL_WRITER,
}
#: Export formats: an ONNX file (tf2onnx) and a TensorFlow SavedModel directory.
FORMATS = tuple(WRITERS)
