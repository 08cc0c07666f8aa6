"""Conversion of a Keras model to ONNX with tf2onnx.

This is the only module of the package that calls tf2onnx. It converts a
`tf.function` with an explicit input signature (`tf2onnx.convert.from_function`)
rather than the Keras model itself: `tf2onnx.convert.from_keras` fails on a plain
Keras 3 `Sequential` in tf2onnx 1.17.0 (``KeyError: 'keras_tensor_1'``), while the
traced function converts exactly.

Nothing here mutates numpy globally: tf2onnx 1.17.0 needs no numpy-2 alias on the
conversion path that we use (a test checks that numpy's namespace is unchanged
after an export). Where a future tf2onnx does fail on a numpy 2 alias, the error
says so rather than patching numpy for every other user in the process.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

__all__ = ["DEFAULT_OPSET", "SUPPORTED_OPSETS", "to_onnx", "check_opset"]

#: The ONNX opset used unless one is chosen: supported by tf2onnx 1.17 and by every
#: onnxruntime release since 1.12 (2022).
DEFAULT_OPSET = 17
#: Opsets that `to_onnx` accepts: 13 (the first with today's `Squeeze`/`ReduceSum`
#: signatures) up to the newest that tf2onnx 1.17 emits.
SUPPORTED_OPSETS = tuple(range(13, 19))


def _import_tf2onnx() -> Any:
    try:
        import tf2onnx
    except ImportError as error:
        raise ImportError(
            "Exporting to ONNX needs tf2onnx and onnx: `pip install tf2onnx onnx`."
        ) from error
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

    with _quiet_tf2onnx():
        try:
            proto, _ = tf2onnx.convert.from_function(
                function, input_signature=input_signature, opset=opset
            )
        except AttributeError as error:
            if "numpy" in str(error) or "np." in str(error):
                raise RuntimeError(
                    f"tf2onnx {tf2onnx.__version__} failed on an attribute that numpy 2 "
                    f"removed ({error}); install a tf2onnx release that supports your numpy."
                ) from error
            raise
    _name_batch_axis(proto)
    proto.doc_string = doc_string
    if metadata:
        onnx.helper.set_model_props(proto, {str(k): str(v) for k, v in metadata.items()})
    onnx.checker.check_model(proto, full_check=True)
    onnx.save_model(proto, os.fspath(path))
    return proto
