"""Conversion of a Keras model to ONNX with tf2onnx.

This is the only module of the package that calls tf2onnx. It converts a
`tf.function` with an explicit input signature (`tf2onnx.convert.from_function`)
rather than the Keras model itself: `tf2onnx.convert.from_keras` fails on a plain
Keras 3 `Sequential` in tf2onnx 1.17.0 (``KeyError: 'keras_tensor_1'``), while the
traced function converts exactly.

tf2onnx 1.17 is the first release that runs on numpy 2 (1.16 calls `np.cast` and
`np.product`, which numpy 2 removed); it is the floor in `pyproject.toml`, and an
older one is refused with the `pip install` that fixes it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from keras_cae.export.writer import PartExport

__all__ = ["DEFAULT_OPSET", "ONNX_WRITER", "SUPPORTED_OPSETS", "to_onnx", "check_opset"]

#: The ONNX opset used unless one is chosen: supported by tf2onnx 1.17 and by every
#: onnxruntime release since 1.12 (2022).
DEFAULT_OPSET = 17
#: Opsets that `to_onnx` accepts: 13 (the first with today's `Squeeze`/`ReduceSum`
#: signatures) up to the newest that tf2onnx 1.17 emits.
SUPPORTED_OPSETS = tuple(range(13, 19))


# tf2onnx converts in TensorFlow's global graph state: one conversion at a time.
_CONVERT_LOCK = threading.Lock()
# The first tf2onnx release that runs on numpy 2.
_TF2ONNX_MINIMUM = (1, 17)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def _import_tf2onnx() -> Any:
    try:
        import tf2onnx
    except ImportError as error:
        raise ImportError(
            "Exporting to ONNX needs tf2onnx and onnx: `pip install tf2onnx onnx`."
        ) from error
    if _version(tf2onnx.__version__) < _TF2ONNX_MINIMUM:
        raise ImportError(
            f"Exporting to ONNX needs tf2onnx >= 1.17 (the first that runs on numpy 2); "
            f"tf2onnx {tf2onnx.__version__} is installed: `pip install -U 'tf2onnx>=1.17'`."
        )
    return tf2onnx


def check_opset(opset: int | None) -> int:
    """Returns `opset`, or `DEFAULT_OPSET` for `None`; raises `ValueError` if unsupported."""
    if opset is None:
        return DEFAULT_OPSET
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in SUPPORTED_OPSETS:
        raise ValueError(
            f"Unsupported opset={opset!r}. Supported opsets are: {list(SUPPORTED_OPSETS)}"
        )
    return opset


@contextlib.contextmanager
def _quiet_tf2onnx() -> Iterator[None]:
    """Lowers tf2onnx's INFO chatter to warnings for the duration of a conversion."""
    logger = logging.getLogger("tf2onnx")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def _name_batch_axis(proto: Any, name: str = "batch") -> None:
    """Gives the dynamic first axis of every graph input and output one readable name.

    tf2onnx names unknown dimensions `unk__N`; one shared name also tells a reader
    that the output batch equals the input batch.
    """
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = name


def to_onnx(
    function: Callable[..., Any],
    input_signature: list[Any],
    path: str | os.PathLike[str],
    opset: int | None = None,
    metadata: Mapping[str, str] | None = None,
    doc_string: str = "",
) -> Any:
    """Converts a `tf.function` to an ONNX file, checks it and writes it to `path`.

    Args:
        function: a `tf.function` returning a dict ``{output_name: tensor}``; the dict
            keys become the ONNX output names.
        input_signature: its `tf.TensorSpec` list; the spec names become the ONNX
            input names and `None` dimensions become dynamic axes.
        path: the `.onnx` file to write.
        opset: the ONNX opset. Defaults to `DEFAULT_OPSET`.
        metadata: string key/value pairs stored as the model's `metadata_props`.
        doc_string: the model's description.

    Returns:
        The `onnx.ModelProto` written.

    Raises:
        ValueError: an unsupported `opset`.
        onnx.checker.ValidationError: the converted model fails `onnx.checker`'s full
            check (with shape inference).
    """
    opset = check_opset(opset)
    tf2onnx = _import_tf2onnx()
    import onnx

    with _CONVERT_LOCK, _quiet_tf2onnx():
        proto, _ = tf2onnx.convert.from_function(
            function, input_signature=input_signature, opset=opset
        )
    _name_batch_axis(proto)
    proto.doc_string = doc_string
    if metadata:
        onnx.helper.set_model_props(proto, {str(k): str(v) for k, v in metadata.items()})
    onnx.checker.check_model(proto, full_check=True)
    onnx.save_model(proto, os.fspath(path))
    return proto


class _OnnxWriter:
    """The `"onnx"` format of `export_encoder`: ``<part>.onnx``, run back in onnxruntime."""

    file_name = "{part}.onnx"
    write_step = "convert the {part} to ONNX"
    load_step = "load the {part} ONNX file in onnxruntime"
    metadata_keys = ("opset", "tf2onnx_version")

    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        return {**options, "opset": check_opset(options.get("opset"))}

    def metadata(self, options: Mapping[str, Any]) -> dict[str, str]:
        return {"opset": str(options["opset"]), "tf2onnx_version": _import_tf2onnx().__version__}

    def write(self, job: PartExport, path: str) -> None:
        import tensorflow as tf

        from keras_cae.export.runtime import METADATA_PREFIX

        to_onnx(
            tf.function(job.function, input_signature=job.input_signature, autograph=False),
            job.input_signature,
            path,
            opset=job.options["opset"],
            metadata={METADATA_PREFIX + k: v for k, v in job.metadata.items()},
            doc_string=job.description,
        )

    @contextlib.contextmanager
    def load(self, job: PartExport, path: str) -> Iterator[Callable[[np.ndarray], np.ndarray]]:
        from keras_cae.export.runtime import OnnxEncoder

        yield OnnxEncoder(path, check_finite=False, check_range=False).encode


#: The writer `keras_cae.export.formats.WRITERS` maps `"onnx"` to.
ONNX_WRITER = _OnnxWriter()
