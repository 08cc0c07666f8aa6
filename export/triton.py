"""A Triton Inference Server model repository: ``config.pbtxt`` beside the ONNX file.

The `"triton"` format of `export_encoder` writes one model of a Triton model
repository per exported part::

    <out_dir>/triton/             the repository: tritonserver --model-repository=<out_dir>/triton
        <name>/                   one model; <name> is the part ("encoder"), or model_name
            config.pbtxt          platform "onnxruntime_onnx", max_batch_size, inputs, outputs
            1/model.onnx          version 1: the same ONNX graph as the "onnx" format

The configuration is built and checked with Triton's own schema, the
``model_config.proto`` whose Python module ships with ``tritonclient``
(`tritonclient.grpc.model_config_pb2`); the export reads ``config.pbtxt`` back with
protobuf's text parser and checks that its names, data types and dimensions are the
ONNX graph's, then runs ``1/model.onnx`` in onnxruntime for the parity check.

Triton reports a model with ``max_batch_size > 0`` with the batch axis first, as
``-1``: its v2 model metadata then lists the same input and output names, data types
and shapes as ``keras-cae serve`` does for the same ONNX file, so one v2 request works
against both.

Example:

>>> import onnx                                                       # doctest: +SKIP
>>> print(model_config(onnx.load("exported/encoder.onnx"), "encoder"))  # doctest: +SKIP
name: "encoder"
platform: "onnxruntime_onnx"
max_batch_size: 1024
...
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from keras_cae.export.onnx import ONNX_WRITER

if TYPE_CHECKING:
    import numpy as np

    from keras_cae.export.writer import PartExport

__all__ = [
    "CONFIG_FILE",
    "MAX_BATCH_SIZE",
    "MODEL_FILE",
    "PLATFORM",
    "REPOSITORY",
    "TRITON_WRITER",
    "check_model_name",
    "model_config",
    "verify_model",
]

#: The repository directory inside the export directory.
REPOSITORY = "triton"
#: The configuration file of each model.
CONFIG_FILE = "config.pbtxt"
#: The model file in a version directory: the name Triton looks for by default.
MODEL_FILE = "model.onnx"
#: The one version written.
VERSION = "1"
#: Triton's platform name for ONNX models run by its onnxruntime backend.
PLATFORM = "onnxruntime_onnx"
#: The most rows per request and per dynamic batch: `keras-cae serve`'s default
#: `--max-batch`, so that both servers accept the same requests.
MAX_BATCH_SIZE = 1024

# A model name is a directory name and a URL path segment (/v2/models/<name>/infer);
# the same rule as `keras-cae serve --name`.
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

# ONNX TensorProto data type -> Triton DataType (as Triton's onnxruntime backend maps them).
_ONNX_TO_TRITON = {
    "FLOAT": "TYPE_FP32",
    "DOUBLE": "TYPE_FP64",
    "FLOAT16": "TYPE_FP16",
    "BFLOAT16": "TYPE_BF16",
    "BOOL": "TYPE_BOOL",
    "INT8": "TYPE_INT8",
    "INT16": "TYPE_INT16",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "UINT8": "TYPE_UINT8",
    "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64",
    "STRING": "TYPE_STRING",
}


def _model_config_pb2() -> Any:
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as error:
        raise ImportError(
            "The 'triton' export format writes and checks config.pbtxt with Triton's own "
            "model_config.proto, which ships with tritonclient: "
            "`pip install 'tritonclient[grpc]'` (or `pip install 'keras-cae[triton]'`)."
        ) from error
    return model_config_pb2


def check_model_name(name: Any, argument: str = "model_name") -> str:
    """Returns `name` if Triton and `keras-cae serve` accept it as a model name.

    Raises:
        ValueError: `name` is not 1-128 letters, digits, ``_``, ``.`` or ``-`` starting
            with a letter or digit (it names a directory and a URL path segment).
    """
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise ValueError(
            f"Invalid {argument}={name!r}: a model name is a directory in the model "
            "repository and a segment of /v2/models/<name>/infer; use 1-128 letters, "
            "digits, '_', '.' or '-', starting with a letter or digit."
        )
    return name


def _tensors(values: Any, what: str) -> list[tuple[str, str, list[int]]]:
    """``(name, Triton data type, dims without the batch axis)`` of ONNX graph values."""
    import onnx

    tensors = []
    for value in values:
        tensor_type = value.type.tensor_type
        onnx_type = onnx.TensorProto.DataType.Name(tensor_type.elem_type)
        if onnx_type not in _ONNX_TO_TRITON:
            raise ValueError(
                f"The graph {what} {value.name!r} has data type {onnx_type}, which Triton's "
                f"onnxruntime backend does not serve; supported: {sorted(_ONNX_TO_TRITON)}."
            )
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
        if not dims or dims[0] != -1:
            raise ValueError(
                f"The graph {what} {value.name!r} has shape {dims}; a batched Triton model "
                "needs a dynamic first (batch) axis."
            )
        tensors.append((value.name, _ONNX_TO_TRITON[onnx_type], dims[1:]))
    return tensors


def model_config(model: Any, name: str, max_batch_size: int = MAX_BATCH_SIZE) -> str:
    """The ``config.pbtxt`` that serves an ONNX model with Triton's onnxruntime backend.

    Args:
        model: the `onnx.ModelProto`; its graph inputs and outputs need a dynamic first
            (batch) axis.
        name: the model name (its directory in the repository); see `check_model_name`.
        max_batch_size: the most rows per request and per dynamic batch. Defaults to
            `MAX_BATCH_SIZE`.

    Returns:
        The configuration in protobuf text format, built with Triton's `ModelConfig`.

    Raises:
        ValueError: an invalid `name` or `max_batch_size`, a graph value without a
            dynamic batch axis or with a type Triton cannot serve.
        ImportError: tritonclient is not installed.
    """
    check_model_name(name, "name")
    if (
        isinstance(max_batch_size, bool)
        or not isinstance(max_batch_size, int)
        or max_batch_size < 1
    ):
        raise ValueError(
            f"`max_batch_size` should be a positive integer. Received: {max_batch_size!r}"
        )
    from google.protobuf import text_format

    pb2 = _model_config_pb2()
    config = pb2.ModelConfig(name=name, platform=PLATFORM, max_batch_size=max_batch_size)
    for field, values, what in (
        (config.input, model.graph.input, "input"),
        (config.output, model.graph.output, "output"),
    ):
        for tensor_name, data_type, dims in _tensors(values, what):
            field.add(name=tensor_name, data_type=pb2.DataType.Value(data_type), dims=dims)
    # Present and empty: Triton batches concurrent requests with its default settings.
    config.dynamic_batching.SetInParent()
    header = "# Triton model configuration written by keras-cae export.\n"
    return header + text_format.MessageToString(config)


def verify_model(model_dir: str | os.PathLike[str]) -> str:
    """Checks one model of a repository written by the `"triton"` format.

    Parses ``config.pbtxt`` with Triton's `ModelConfig` schema and checks it against the
    ONNX graph of ``1/model.onnx``, read with `onnx`: name = directory name, platform,
    a positive ``max_batch_size``, ``dynamic_batching``, and the graph's input and
    output names, data types and dimensions (without the batch axis), in order.

    Returns:
        The path of ``1/model.onnx``.

    Raises:
        ValueError: a file is missing or extra, the configuration does not parse, or it
            disagrees with the graph (the message says where).
    """
    import onnx
    from google.protobuf import text_format

    model_dir = os.fspath(model_dir)
    name = os.path.basename(os.path.normpath(model_dir))
    model_path = os.path.join(model_dir, VERSION, MODEL_FILE)
    found = sorted(os.listdir(model_dir))
    if found != sorted([CONFIG_FILE, VERSION]) or os.listdir(os.path.dirname(model_path)) != [
        MODEL_FILE
    ]:
        raise ValueError(
            f"{model_dir}: a model directory should hold exactly {CONFIG_FILE} and "
            f"{VERSION}/{MODEL_FILE}; found {found}."
        )
    pb2 = _model_config_pb2()
    with open(os.path.join(model_dir, CONFIG_FILE), encoding="utf-8") as file:
        text = file.read()
    try:
        config = text_format.Parse(text, pb2.ModelConfig())
    except text_format.ParseError as error:
        raise ValueError(
            f"{model_dir}/{CONFIG_FILE} does not parse with Triton's model_config.proto: {error}"
        ) from None
    graph = onnx.load(model_path, load_external_data=False).graph
    problems = []
    if config.name != name:
        problems.append(f"name {config.name!r} is not the directory name {name!r}")
    if config.platform != PLATFORM:
        problems.append(f"platform {config.platform!r} is not {PLATFORM!r}")
    if config.max_batch_size < 1:
        problems.append(f"max_batch_size {config.max_batch_size} is not positive")
    if not config.HasField("dynamic_batching"):
        problems.append("dynamic_batching is missing")
    for field, values, what in (
        (config.input, graph.input, "input"),
        (config.output, graph.output, "output"),
    ):
        configured = [(t.name, pb2.DataType.Name(t.data_type), list(t.dims)) for t in field]
        expected = _tensors(values, what)
        if configured != expected:
            problems.append(f"{what}s {configured} are not the graph's {expected}")
    if problems:
        raise ValueError(
            f"{model_dir}/{CONFIG_FILE} disagrees with the model: " + "; ".join(problems)
        )
    return model_path


class _TritonWriter:
    """The `"triton"` format of `export_encoder`: ``triton/<name>/`` with ``config.pbtxt``
    and ``1/model.onnx``; checked with Triton's schema, run back in onnxruntime."""

    file_name = REPOSITORY + "/{name}"
    write_step = "write the {part} Triton model"
    load_step = "check the {part} Triton model configuration and load it in onnxruntime"
    metadata_keys = ONNX_WRITER.metadata_keys

    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        options = ONNX_WRITER.check_options(options)
        if options.get("model_name") is not None:
            check_model_name(options["model_name"])
        return options

    def metadata(self, options: Mapping[str, Any]) -> dict[str, str]:
        _model_config_pb2()  # Missing tritonclient fails here, before anything is written.
        return ONNX_WRITER.metadata(options)

    def write(self, job: PartExport, path: str) -> None:
        import onnx

        model_path = os.path.join(path, VERSION, MODEL_FILE)
        os.makedirs(os.path.dirname(model_path))
        ONNX_WRITER.write(job, model_path)
        config = model_config(
            onnx.load(model_path, load_external_data=False), os.path.basename(path)
        )
        with open(os.path.join(path, CONFIG_FILE), "w", encoding="utf-8") as file:
            file.write(config)

    @contextlib.contextmanager
    def load(self, job: PartExport, path: str) -> Iterator[Callable[[np.ndarray], np.ndarray]]:
        from keras_cae.export.runtime import OnnxEncoder

        yield OnnxEncoder(verify_model(path), check_finite=False, check_range=False).encode


#: The writer `keras_cae.export.formats.WRITERS` maps `"triton"` to.
TRITON_WRITER = _TritonWriter()
