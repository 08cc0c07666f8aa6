"""Request and response schemas of both protocols, as pydantic models.

They validate requests and generate the OpenAPI document; `model_specific` adds what
depends on the served model (tensor names, datatype, shape, value range), so that the
document says what this server accepts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal, Protocol, get_args

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

__all__ = [
    "ErrorResponse", "TFPredictRequest", "TFPredictResponse", "V2InferRequest",
    "V2InferResponse", "V2ModelMetadata", "V2ModelReady", "V2Live", "V2Ready",
    "V2ServerMetadata", "V2Tensor", "ERRORS", "model_specific", "model_components",
    "request_body", "V2_DATATYPES", "MAX_RANK", "NUMBERS", "Dimension", "ServedModel",
]  # fmt: skip

V2Datatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BF16", "BYTES",
]  # fmt: skip
#: Every datatype name of the protocol.
V2_DATATYPES: tuple[str, ...] = get_args(V2Datatype)


def _json_integer(value: Any) -> Any:
    """A JSON integer only (``2`` or ``2.0``, as JSON Schema's "integer"); pydantic's
    lax mode would also take ``"2"`` and ``true``, which the OpenAPI schema refuses."""
    if isinstance(value, (bool, str)):
        raise ValueError(f"a dimension must be a JSON integer, not a {type(value).__name__}")
    return value


#: A dimension of a request's shape.
Dimension = Annotated[int, BeforeValidator(_json_integer)]
#: The most dimensions a request's shape may have (`infer_types.MAX_RANK`).
MAX_RANK = 32


class _Schema(BaseModel):
    # Unknown fields are ignored, as the protocols allow extensions.
    model_config = ConfigDict(extra="ignore")


class V2RequestInput(_Schema):
    """One input tensor of an Open Inference Protocol request."""

    name: str = Field(description="The input tensor name, as in the model metadata.")
    shape: list[Dimension] = Field(
        description="The full shape of the tensor, batch first, e.g. [2, 64].",
        json_schema_extra={"items": {"type": "integer", "minimum": 0}},
    )
    datatype: V2Datatype = Field(description="Must equal the model's input datatype.")
    parameters: dict[str, Any] | None = Field(
        default=None,
        description="Optional; `binary_data_size` marks data sent in the binary extension.",
    )
    data: list[Any] | None = Field(
        default=None,
        description="The tensor elements (JSON numbers) in row-major order, flattened "
        "or nested to the tensor's shape. Omitted when sent as binary data.",
    )


class V2RequestOutput(_Schema):
    """An output tensor requested in an Open Inference Protocol request."""

    name: str
    parameters: dict[str, Any] | None = Field(
        default=None, description="Optional; `binary_data: true` asks for binary output."
    )


class V2InferRequest(_Schema):
    """An Open Inference Protocol (KServe v2) inference request."""

    id: str | None = Field(default=None, description="Echoed in the response.")
    parameters: dict[str, Any] | None = Field(
        default=None, description="Optional; `binary_data_output: true` asks for binary output."
    )
    inputs: list[V2RequestInput] = Field(min_length=1)
    outputs: list[V2RequestOutput] | None = None


class V2Tensor(_Schema):
    """A tensor in a model metadata or inference response."""

    name: str
    datatype: str
    shape: list[int] = Field(description="-1 marks a variable-size dimension in metadata.")


class V2ResponseOutput(V2Tensor):
    """One output tensor of an inference response."""

    parameters: dict[str, Any] | None = None
    data: list[float] | None = Field(default=None, description="Row-major, flattened.")


class V2InferResponse(_Schema):
    """An Open Inference Protocol inference response."""

    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[V2ResponseOutput]


class V2ModelMetadata(_Schema):
    """Open Inference Protocol model metadata."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[V2Tensor]
    outputs: list[V2Tensor]


class V2ServerMetadata(_Schema):
    name: str
    version: str
    extensions: list[str]


class V2Live(_Schema):
    live: bool


class V2Ready(_Schema):
    ready: bool


class V2ModelReady(_Schema):
    name: str
    ready: bool


class TFPredictRequest(_Schema):
    """A TensorFlow Serving predict request: exactly one of `instances` or `inputs`."""

    signature_name: str | None = Field(default=None, description='"serving_default" or omitted.')
    instances: list[Any] | None = Field(
        default=None,
        description="Row format: one entry per example, either the feature values or "
        "an object keyed by the input name.",
    )
    inputs: list[Any] | dict[str, Any] | None = Field(
        default=None,
        description="Columnar format: the whole batch, or an object keyed by the input name.",
    )


class TFPredictResponse(_Schema):
    """`predictions` answers the row format, `outputs` the columnar format."""

    predictions: list[list[float]] | None = None
    outputs: list[list[float]] | None = None


class ErrorResponse(_Schema):
    """Every error: what was wrong, in one sentence or two."""

    error: str


ERRORS = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in [
        (400, "Malformed JSON, or a tensor of the wrong shape, datatype or values."),
        (404, "Unknown model name or version."),
        (413, "The request body is larger than the server accepts."),
    ]
}


class ServedModel(Protocol):
    """What `model_specific` reads of the served model (a `dataplane.DataPlane`)."""

    encoder: Any
    input_dtype: np.dtype
    input_datatype: str
    sample_shape: tuple[int | None, ...]
    rank: int
    max_batch: int


def model_specific(service: ServedModel) -> dict[str, dict[str, Any]]:
    """The parts of the request schemas that depend on the served model: its tensor
    names, datatype, sample shape and value range, so that the OpenAPI document says
    what this server accepts (a JSON Schema cannot say that `data` holds as many
    values as `shape` counts, nor that codes stay finite)."""
    encoder = service.encoder
    largest = float(np.finfo(service.input_dtype).max)
    number: dict[str, Any] = {"type": "number", "minimum": -largest, "maximum": largest}

    def nested(dims: Sequence[int | None], leaf: dict[str, Any]) -> dict[str, Any]:
        schema = leaf
        for dim in reversed(dims):
            schema = {"type": "array", "items": schema}
            if dim is not None:
                schema.update(minItems=dim, maxItems=dim)
        return schema

    flat = len(service.sample_shape) == 1 and service.sample_shape[0] is not None
    deep = {"$ref": f"#/components/schemas/{NUMBERS}"}  # Arrays nested to any depth.
    sample = nested(service.sample_shape, number)
    if flat:  # Or any sample shape of as many values, flattened (`to_model_input`).
        sample = {"anyOf": [sample, {"type": "array", "items": deep}]}
    batch = {**nested((None,), sample), "maxItems": service.max_batch}
    name = encoder.input_name
    keyed = {"type": "object", "required": [name], "additionalProperties": False}
    # V2 `data`: flattened, or nested like the tensor (at most `rank` levels deep).
    element = number
    for _ in range(service.rank - 1):
        element = {"anyOf": [number, {"type": "array", "items": element}]}
    rows = {"type": "integer", "minimum": 0, "maximum": service.max_batch}
    exact_shape = {
        "type": "array",
        "prefixItems": [
            rows,
            *(
                {"type": "integer", "minimum": 0} if d is None else {"const": d}
                for d in service.sample_shape
            ),
        ],
        "items": False,
        "minItems": service.rank,
    }
    shape: dict[str, Any] = exact_shape
    if flat:
        element = {"anyOf": [number, deep]}
        shape = {
            "anyOf": [
                exact_shape,
                {
                    "type": "array",
                    "prefixItems": [rows],
                    "items": {"type": "integer", "minimum": 1},
                    "minItems": 3,
                    "maxItems": MAX_RANK,
                    "description": f"Or any sample shape of {service.sample_shape[0]} values.",
                },
            ]
        }
    flag = {"type": "boolean"}

    def nullable(schema: dict[str, Any]) -> dict[str, Any]:
        # Optional in the pydantic model: the server takes null as absent.
        return {"anyOf": [schema, {"type": "null"}]}

    return {
        "V2RequestInput": {
            "name": {"type": "string", "const": name},
            "datatype": {"type": "string", "enum": [service.input_datatype]},
            "shape": shape,
            "data": {"type": "array", "items": element},
            "parameters": nullable({"type": "object", "properties": {
                "binary_data_size": {"type": "integer", "minimum": 0}}}),
        },
        "V2RequestOutput": {
            "name": {"type": "string", "const": encoder.output_name},
            "parameters": nullable({"type": "object", "properties": {"binary_data": flag}}),
        },
        "V2InferRequest": {
            "parameters": nullable(
                {"type": "object", "properties": {"binary_data_output": flag}}),
        },
        "TFPredictRequest": {
            "signature_name": nullable({"type": "string", "enum": ["serving_default"]}),
            "instances": {"anyOf": [
                batch,
                {"type": "array", "maxItems": service.max_batch,
                 "items": {**keyed, "properties": {name: sample}}},
            ]},
            "inputs": {"anyOf": [batch, {**keyed, "properties": {name: batch}}]},
        },
    }  # fmt: skip


#: The component of JSON numbers in arrays nested to any depth (`model_components`).
NUMBERS = "JSONNumberArray"


def model_components(service: ServedModel) -> dict[str, dict[str, Any]]:
    """The components that `model_specific`'s schemas refer to."""
    largest = float(np.finfo(service.input_dtype).max)
    number = {"type": "number", "minimum": -largest, "maximum": largest}
    ref = {"$ref": f"#/components/schemas/{NUMBERS}"}
    return {NUMBERS: {"type": "array", "items": {"anyOf": [number, ref]}}}


def request_body(schema: type[BaseModel], description: str) -> dict[str, Any]:
    """An OpenAPI requestBody for a handler that parses its body itself (see
    `keras_cae.export.serving.service.endpoint`); `keras_cae.export.serving.docs` adds
    the schemas."""
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{schema.__name__}"}}
            },
        }
    }
