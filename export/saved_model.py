"""Export of a Keras model as a TensorFlow SavedModel with a `serving_default` signature."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from keras_cae.export.writer import PartExport

__all__ = ["SAVED_MODEL_WRITER", "SIGNATURE_KEY", "to_saved_model", "load_signature"]

#: The signature that TensorFlow Serving, `tf.saved_model.load(...).signatures` and
#: `keras.layers.TFSMLayer` use by default.
SIGNATURE_KEY = "serving_default"


def to_saved_model(
    layer: Any,
    function: Callable[..., Any],
    input_signature: list[Any],
    path: str | os.PathLike[str],
) -> None:
    """Writes `layer` as a SavedModel whose `serving_default` signature is `function`.

    Uses `keras.export.ExportArchive`, which tracks the Keras 3 variables of `layer`;
    variables that `function` captures from elsewhere (a tied decoder reads the
    encoder's kernels) are saved with the traced function (the tied-decoder parity
    test checks it).

    Args:
        layer: the Keras layer or model whose variables `function` uses.
        function: a Python function returning a dict ``{output_name: tensor}``, traced
            with `input_signature`; the dict keys become the signature's output names.
        input_signature: its `tf.TensorSpec` list; the spec names become the
            signature's input names.
        path: the SavedModel directory to write (must not exist).

    Example:

    >>> import tensorflow as tf                                           # doctest: +SKIP
    >>> tf.saved_model.load(path).signatures["serving_default"](x=x)      # doctest: +SKIP
    {'code': <tf.Tensor: shape=(7, 32), dtype=float32, numpy=...>}
    """
    import keras

    archive = keras.export.ExportArchive()
    archive.track(layer)
    archive.add_endpoint(name=SIGNATURE_KEY, fn=function, input_signature=input_signature)
    archive.write_out(os.fspath(path), verbose=False)


def load_signature(path: str | os.PathLike[str]) -> tuple[Any, Callable[..., Any]]:
    """Loads a SavedModel; returns the loaded object and its `serving_default` signature.

    Keep the loaded object alive while the signature is used: it owns the variables.
    """
    import tensorflow as tf

    loaded = tf.saved_model.load(os.fspath(path))
    return loaded, loaded.signatures[SIGNATURE_KEY]


class _SavedModelWriter:
    """The `"saved_model"` format of `export_encoder`: ``<part>_saved_model/``, run back
    through its `serving_default` signature."""

    file_name = "{part}_saved_model"
    write_step = "save the {part} as a SavedModel"
    load_step = "load the {part} SavedModel"
    metadata_keys = ()

    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        return dict(options)

    def metadata(self, options: Mapping[str, Any]) -> dict[str, str]:
        return {}

    def write(self, job: PartExport, path: str) -> None:
        # Looked up at call time, so that a test can make the write fail.
        to_saved_model(job.layer, job.function, job.input_signature, path)

    @contextlib.contextmanager
    def load(self, job: PartExport, path: str) -> Iterator[Callable[[np.ndarray], np.ndarray]]:
        import tensorflow as tf

        loaded, signature = load_signature(path)

        def run(x: np.ndarray) -> np.ndarray:
            return signature(**{job.input_name: tf.constant(x)})[job.output_name].numpy()

        yield run  # `loaded` owns the variables: keep it alive until the check is done.


#: The writer `keras_cae.export.formats.WRITERS` maps `"saved_model"` to.
SAVED_MODEL_WRITER = _SavedModelWriter()
