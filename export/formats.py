"""The export formats: a name for each, mapped to the writer that produces it.

`export_encoder` validates its arguments, runs Keras on the probe batch and then,
for every part and format, asks the format's writer to write the part into the
staging directory and to load it back for the parity check. A writer knows one
format and nothing of the others. Adding a format is one module with a writer plus
one entry in `WRITERS` (`export/triton.py` is one).

Example:

>>> from keras_cae.export.formats import FORMATS, WRITERS                      # doctest: +SKIP
>>> FORMATS
('onnx', 'saved_model', 'triton')
>>> WRITERS["onnx"].file_name.format(part="encoder", name="encoder")
'encoder.onnx'
"""

from __future__ import annotations

from keras_cae.export.onnx import ONNX_WRITER
from keras_cae.export.saved_model import SAVED_MODEL_WRITER
from keras_cae.export.triton import TRITON_WRITER
from keras_cae.export.writer import FormatWriter, PartExport

__all__ = ["DEFAULT_FORMATS", "FORMATS", "WRITERS", "FormatWriter", "PartExport"]


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
