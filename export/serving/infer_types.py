"""The one inference request and response, built from and rendered to each transport.

`InferRequest.from_rest` (KServe v2 JSON, with Triton's binary tensor data
extension), `InferRequest.from_tf_rest` (TensorFlow Serving's ``:predict``) and
`InferRequest.from_grpc` (KServe v2 ``ModelInferRequest``) parse what a transport
received into the same neutral request; `InferResponse.to_rest`, `.to_tf_rest` and
`.to_grpc` render the dataplane's answer back. Parsing checks only what the wire
format itself says (valid JSON, the protocol's envelope, which content fields are
filled); every check against the model is the dataplane's
(`keras_cae.export.serving.dataplane.DataPlane.infer`), once for all transports.

Tensor contents stay what they are on the wire until the dataplane reads them: a
JSON array (converted by `codec.json_numbers`), raw little-endian bytes (HTTP binary
extension, gRPC ``raw_input_contents``; read with ``np.frombuffer``) or gRPC typed
contents (read with ``np.asarray``, no Python list in between).

This module imports no web or RPC framework (the gRPC messages are protobuf
classes).

Example:

>>> request = InferRequest.from_rest(
...     b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}',
...     {}, model_name="enc", model_version=None)
>>> request.inputs[0].shape
(1, 2)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from keras_cae.export.serving import schemas
from keras_cae.export.serving._proto import grpc_predict_v2_pb2 as pb
from keras_cae.export.serving.codec import (
    FAST_PATH_MIN_BYTES,
    dumps,
    flag,
    may_hold_booleans,
    parse_json,
    parse_length,
    validate,
)
from keras_cae.export.serving.errors import InvalidRequest, echo, echo_list

__all__ = [
    "InferInput", "InferRequest", "InferResponse", "MAX_RANK", "BINARY_HEADER", "typed_array",
]  # fmt: skip

#: The most dimensions a request's shape may have; a longer shape is refused before
#: any work on it (numpy's own limit is 64). The OpenAPI schema says the same.
MAX_RANK = schemas.MAX_RANK
#: The HTTP header of Triton's binary extension: the JSON part's length.
BINARY_HEADER = b"inference-header-content-length"
# The typed contents field of each datatype that has one, and its wire dtype.
_TYPED_FIELD = {"FP32": "fp32_contents", "FP64": "fp64_contents"}
_TYPED_DTYPE: dict[str, np.dtype] = {
    "fp32_contents": np.dtype("<f4"),
    "fp64_contents": np.dtype("<f8"),
}
# The wire key of each typed field, packed (proto3 packs repeated numbers).
_PACKED_KEY = {
    name: pb.InferTensorContents.DESCRIPTOR.fields_by_name[name].number << 3 | 2
    for name in _TYPED_DTYPE
}
_V2_DATATYPES = frozenset(schemas.V2_DATATYPES)
_LITTLE_F4 = np.dtype("<f4")


@dataclass(eq=False, slots=True)
class InferInput:
    """One input tensor as received; at most one of `data`, `raw` and `array` is set.

    Attributes:
        name: the tensor name; `None` where the protocol has none (TF Serving).
        datatype: the protocol datatype (``"FP32"``); `None` for TF Serving's JSON.
        shape: the declared shape; `None` where the data's nesting gives it.
        label: how errors name the tensor where it has no name (``"'instances'"``);
            `where` is ``"Input 'x'"`` otherwise.
        data: a JSON array (flat or nested), as parsed.
        raw: little-endian bytes (HTTP binary extension, gRPC raw contents).
        raw_declared: the byte count the request declares for `raw`
            (``binary_data_size``); `None` where the transport has no such field.
        array: gRPC typed contents, already an array.
        may_hold_booleans: whether the JSON document may hold a boolean; `None`: not
            searched (see `codec.json_numbers`).
        no_typed_field: gRPC typed contents of a datatype that has no typed field.
    """

    name: str | None
    datatype: str | None
    shape: tuple[int, ...] | None
    label: str | None = None
    data: list[Any] | None = None
    raw: bytes | None = None
    raw_declared: Any = None
    array: np.ndarray | None = None
    may_hold_booleans: bool | None = None
    no_typed_field: bool = False

    @property
    def where(self) -> str:
        """How errors name the tensor (made only for an error: it echoes client text)."""
        return self.label or f"Input {echo(self.name)}"


@dataclass(eq=False, slots=True)
class InferRequest:
    """A transport-neutral inference request.

    Attributes:
        model_name: the model asked for.
        model_version: the version asked for; `None` for the served one.
        inputs: the input tensors, in order.
        protocol: the transport's label in the metrics (``v2``, ``tfserving``, ``v2_grpc``).
        id: the request id, echoed in the response.
        output_names: the outputs asked for; `None` (or empty) for all.
        binary_output: answer with binary tensor data (HTTP v2).
        unclaimed_binary: HTTP binary-extension bytes that no input declares.
        tf_key: the TF Serving response key (``predictions`` or ``outputs``).
    """

    model_name: str
    model_version: str | None
    inputs: list[InferInput]
    protocol: str
    id: str | None = None
    output_names: list[str] | None = None
    binary_output: bool = False
    unclaimed_binary: bool = False
    tf_key: str = "predictions"
    raw_output: bool = field(default=False)

    @classmethod
    def from_rest(
        cls, body: bytes, headers: dict[bytes, bytes], model_name: str, model_version: str | None
    ) -> InferRequest:
        """A KServe v2 HTTP request: JSON, or JSON and binary tensor data.

        Args:
            body: the request body.
            headers: the request headers, names in lower case (for the binary
                extension's ``Inference-Header-Content-Length``).
            model_name: from the URL.
            model_version: from the URL, or `None`.
        """
        length = parse_length(
            headers.get(BINARY_HEADER), "Inference-Header-Content-Length", len(body)
        )
        binary = b""
        if length is not None:
            body, binary = body[:length], body[length:]
        document = parse_json(body, "an inference request")
        envelope = _plain_envelope(document) or _validated_envelope(document)
        request_id, parameters, tensors, outputs, data = envelope
        has_data = any(values is not None for values in data)
        if request_id is not None:
            _check_text(request_id, "id")
        binary_output = flag(parameters, "binary_data_output", False, "parameters")
        output_names = None
        if outputs:  # An empty list, like no list, asks for every output.
            output_names = [output_name for output_name, _ in outputs]
            binary_output = any(
                flag(output_parameters, "binary_data", binary_output, f"outputs[{i}].parameters")
                for i, (_, output_parameters) in enumerate(outputs)
            )
        booleans = _booleans(body) if has_data else False
        inputs = []
        claimed = False
        for (name, datatype, shape, tensor_parameters), values in zip(tensors, data, strict=True):
            item = InferInput(name, datatype, shape, data=values)
            declared = (tensor_parameters or {}).get("binary_data_size")
            if declared is not None:
                if values is not None:
                    raise InvalidRequest(f"{item.where} has both `data` and `binary_data_size`.")
                # One input is served: its bytes are all that follows the JSON header.
                item.raw, item.raw_declared, claimed = binary, declared, True
            item.may_hold_booleans = booleans
            inputs.append(item)
        return cls(
            model_name, model_version, inputs, "v2", id=request_id, output_names=output_names,
            binary_output=binary_output, unclaimed_binary=bool(binary) and not claimed,
        )  # fmt: skip

    @classmethod
    def from_tf_rest(
        cls, body: bytes, model_name: str, model_version: str | None, input_name: str
    ) -> InferRequest:
        """A TensorFlow Serving ``:predict`` request, row (``instances``) or columnar
        (``inputs``) format.

        Args:
            body: the request body.
            model_name: from the URL.
            model_version: from the URL, or `None`.
            input_name: the model's input name, the key of keyed rows or columns.
        """
        document = parse_json(body, "a predict request")
        payload = validate(schemas.TFPredictRequest, document)
        if payload.signature_name not in (None, "serving_default"):
            raise InvalidRequest(
                f"Unknown signature_name {echo(payload.signature_name)}; the model has only "
                "'serving_default'."
            )
        # A key that is present counts, even when null: the schema says the same.
        present = [key for key in ("instances", "inputs") if key in document]
        if len(present) != 1:
            raise InvalidRequest(
                "Expected exactly one of 'instances' (row format) or 'inputs' (columnar format)."
            )
        key = present[0]
        values = payload.instances if key == "instances" else payload.inputs
        if values is None:
            raise InvalidRequest(
                f"'{key}' is null; send an array (or an object keyed by the input name)."
            )
        # Only 'inputs' may be an object (the schema's `instances` is an array).
        if isinstance(values, dict):
            where = "'inputs'"
            if list(values) != [input_name]:
                raise InvalidRequest(
                    f"'inputs' must have exactly the key {input_name!r}; received {_keys(values)}."
                )
            rows = values[input_name]
            if not isinstance(rows, list):
                raise InvalidRequest(f"'inputs'[{input_name!r}] must be an array.")
        elif key == "instances":
            rows = values
            if rows and all(isinstance(row, dict) for row in rows):
                if any(list(row) != [input_name] for row in rows):
                    raise InvalidRequest(
                        f"Each instance object must have exactly the key {input_name!r}."
                    )
                rows = [row[input_name] for row in rows]
            where = "'instances'"
        else:
            where, rows = "'inputs'", values
        item = InferInput(
            None, None, None, where, data=rows,
            may_hold_booleans=_booleans(body),
        )  # fmt: skip
        tf_key = "predictions" if key == "instances" else "outputs"
        return cls(model_name, model_version, [item], "tfserving", tf_key=tf_key)

    @classmethod
    def from_grpc(cls, request: pb.ModelInferRequest) -> InferRequest:
        """A KServe v2 ``ModelInferRequest`` (raw or typed contents)."""
        raw = request.raw_input_contents
        if raw and len(raw) != len(request.inputs):
            raise InvalidRequest(
                f"The request has {len(raw)} raw_input_contents for {len(request.inputs)} "
                "inputs; send one per input, in order, or none."
            )
        inputs = []
        for i, tensor in enumerate(request.inputs):
            if len(tensor.shape) > MAX_RANK:
                _refuse_rank(tensor.shape, tensor.name)
            item = InferInput(tensor.name, tensor.datatype, tuple(tensor.shape))
            filled = [field.name for field, _ in tensor.contents.ListFields()]
            if raw:
                if filled:
                    raise InvalidRequest(
                        f"{item.where} has both contents ({', '.join(filled)}) and "
                        "raw_input_contents; send one of them."
                    )
                item.raw = raw[i]
                item.raw_declared = len(raw[i])
            elif tensor.datatype in _TYPED_FIELD:
                typed = _TYPED_FIELD[tensor.datatype]
                if filled not in ([], [typed]):
                    raise InvalidRequest(
                        f"{item.where} has datatype {tensor.datatype}, but its contents are in "
                        f"{', '.join(filled)}; {tensor.datatype} values go in {typed} (or in "
                        "raw_input_contents)."
                    )
                item.array = typed_array(tensor.contents, typed)
            else:  # The dataplane names the datatype it expects, or the field this lacks.
                item.no_typed_field = True
            inputs.append(item)
        if not inputs or any(t.datatype not in _V2_DATATYPES for t in inputs):
            # The schema words the error, as for HTTP.
            validate(schemas.V2InferRequest, {"inputs": [
                {"name": t.name, "datatype": t.datatype, "shape": list(t.shape or ())}
                for t in inputs
            ]})  # fmt: skip
        output_names = [output.name for output in request.outputs] or None
        # An empty version, as proto3 sends an unset string, means the served one.
        return cls(
            request.model_name, request.model_version or None, inputs, "v2_grpc",
            id=request.id, output_names=output_names, raw_output=bool(raw),
        )  # fmt: skip


#: A KServe v2 request's envelope: (id, parameters, inputs as (name, datatype, shape,
#: parameters), outputs as (name, parameters) or `None`, each input's `data` or `None`).
_Envelope = tuple[
    "str | None", "dict[str, Any] | None", "list[tuple[str, str, tuple[int, ...], Any]]",
    "list[tuple[str, Any]] | None", "list[Any]",
]  # fmt: skip


def _plain_envelope(document: dict[str, Any]) -> _Envelope | None:
    """The envelope of a well-formed request, checked by hand; `None` for anything
    unusual (a wrong type, a missing field, a null `data`, a float dimension, a shape
    of more than `MAX_RANK` dimensions), which `_validated_envelope` then decides and
    words, with the schema.

    Accepts exactly what the schema (`schemas.V2InferRequest`) accepts with JSON's
    types, and returns what it would: nearly every request is well-formed, and pydantic
    costs more than this check (about 2 µs of a 1-row request's 90).
    """
    get = document.get
    request_id, parameters, tensors, outputs = (
        get("id"), get("parameters"), get("inputs"), get("outputs")
    )  # fmt: skip
    if (
        (request_id is not None and type(request_id) is not str)
        or (parameters is not None and type(parameters) is not dict)
        or type(tensors) is not list
        or not tensors
        or (outputs is not None and type(outputs) is not list)
    ):
        return None
    inputs, data = [], []
    for tensor in tensors:
        if type(tensor) is not dict:
            return None
        name, datatype, shape, tensor_parameters = (
            tensor.get("name"), tensor.get("datatype"), tensor.get("shape"),
            tensor.get("parameters"),
        )  # fmt: skip
        values = tensor.get("data")
        if (
            type(name) is not str
            or type(datatype) is not str
            or datatype not in _V2_DATATYPES
            or type(shape) is not list
            or len(shape) > MAX_RANK
            or (tensor_parameters is not None and type(tensor_parameters) is not dict)
            or (values is None and "data" in tensor)
            or (values is not None and type(values) is not list)
        ):
            return None
        for dimension in shape:
            if type(dimension) is not int:
                return None
        inputs.append((name, datatype, tuple(shape), tensor_parameters))
        data.append(values)
    named = None
    if outputs is not None:
        named = []
        for output in outputs:
            if type(output) is not dict:
                return None
            output_name, output_parameters = output.get("name"), output.get("parameters")
            if type(output_name) is not str or (
                output_parameters is not None and type(output_parameters) is not dict
            ):
                return None
            named.append((output_name, output_parameters))
    return request_id, parameters, inputs, named, data


def _validated_envelope(document: dict[str, Any]) -> _Envelope:
    """The envelope through the schema, which words what is wrong (`InvalidRequest`)."""
    # The envelope goes through the schema without the tensors' data (a list the
    # schema would copy element by element); `data` is checked by the dataplane.
    tensors = document.get("inputs")
    data: list[Any] = []
    has_data = False
    if isinstance(tensors, list):
        envelope_inputs = []
        for tensor in tensors:
            if isinstance(tensor, dict):
                shape = tensor.get("shape")
                if type(shape) is list and len(shape) > MAX_RANK:
                    _refuse_rank(shape, tensor.get("name"))
                if "data" in tensor:
                    has_data = True
                    tensor = dict(tensor)
                    data.append(tensor.pop("data"))
                    if data[-1] is None:
                        raise InvalidRequest(
                            f"Input {echo(tensor.get('name'))} has `data` null; send an "
                            "array of numbers, or leave `data` out when the tensor is "
                            "sent as binary data."
                        )
                else:
                    data.append(None)
            envelope_inputs.append(tensor)
        if has_data:
            document = {**document, "inputs": envelope_inputs}
    payload = validate(schemas.V2InferRequest, document)
    for i, value in enumerate(data):
        if value is not None and not isinstance(value, list):
            raise InvalidRequest(f"Invalid request: inputs.{i}.data: Input should be a valid list")
    outputs: list[tuple[str, Any]] | None = None
    if payload.outputs is not None:
        outputs = [(output.name, output.parameters) for output in payload.outputs]
    inputs: list[tuple[str, str, tuple[int, ...], Any]] = [
        (tensor.name, tensor.datatype, tuple(tensor.shape), tensor.parameters)
        for tensor in payload.inputs
    ]
    return payload.id, payload.parameters, inputs, outputs, data


def _booleans(document: bytes) -> bool | None:
    """Whether a JSON document may hold a boolean; `None` for a small one, whose tensors
    are checked element by element anyway (`codec.json_numbers`)."""
    return None if len(document) < FAST_PATH_MIN_BYTES else may_hold_booleans(document)


def _refuse_rank(shape: Any, name: Any) -> None:
    """Refuses a shape of more than `MAX_RANK` dimensions, before anything reads it."""
    raise InvalidRequest(
        f"Input {echo(name)} has a shape of {len(shape)} dimensions; at most {MAX_RANK} "
        "are accepted."
    )


def _check_text(value: str, what: str) -> None:
    """Refuses text that cannot be written back as UTF-8 (a lone surrogate)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(
            f"`{what}` holds a lone surrogate ({echo(value)}), which is not valid Unicode "
            "text; send valid text."
        ) from None


def _keys(values: dict[str, Any]) -> str:
    return echo_list(list(values))


@dataclass(eq=False, slots=True)
class InferResponse:
    """The dataplane's answer to an `InferRequest`: the codes and how to render them.

    Attributes:
        request: the request answered.
        model_name: the served model's name.
        model_version: the served version.
        output_name: the model's output tensor name.
        codes: float32 codes, ``[rows, *code_shape]``.
    """

    request: InferRequest
    model_name: str
    model_version: str
    output_name: str
    codes: np.ndarray

    def to_rest(self) -> tuple[bytes, str, dict[str, str]]:
        """The KServe v2 HTTP answer: (body, content type, extra headers); binary tensor
        data when the request asked for it."""
        codes = self.codes
        output: dict[str, Any] = {
            "name": self.output_name,
            "datatype": "FP32",
            "shape": list(codes.shape),
        }
        response: dict[str, Any] = {
            "model_name": self.model_name,
            "model_version": self.model_version,
        }
        if self.request.id is not None:
            response["id"] = self.request.id
        response["outputs"] = [output]
        if not self.request.binary_output:
            data = codes.reshape(-1).tolist()
            if self.request.id is None:  # Nearly always: the envelope's bytes are known.
                head = _json_head(self.model_name, self.model_version, self.output_name)
                body = b"".join((head, dumps(output["shape"]), b',"data":', dumps(data), b"}]}"))
                return body, "application/json", {}
            output["data"] = data
            return dumps(response), "application/json", {}
        raw = np.ascontiguousarray(codes, dtype=_LITTLE_F4).tobytes()
        if self.request.id is None:
            head = _json_head(self.model_name, self.model_version, self.output_name)
            header = b"".join((
                head, dumps(output["shape"]), b',"parameters":{"binary_data_size":',
                b"%d" % len(raw), b"}}]}",
            ))  # fmt: skip
        else:
            output["parameters"] = {"binary_data_size": len(raw)}
            header = dumps(response)
        return (
            header + raw,
            "application/octet-stream",
            {"Inference-Header-Content-Length": str(len(header))},
        )

    def to_tf_rest(self) -> bytes:
        """The TF Serving answer: ``predictions`` (row format) or ``outputs`` (columnar)."""
        return dumps({self.request.tf_key: self.codes.tolist()})

    def to_grpc(self) -> pb.ModelInferResponse:
        """The KServe v2 gRPC answer: raw output contents for raw input, typed otherwise."""
        codes = self.codes
        response = pb.ModelInferResponse(
            model_name=self.model_name, model_version=self.model_version, id=self.request.id or ""
        )
        output = response.outputs.add(name=self.output_name, datatype="FP32", shape=codes.shape)
        if self.request.raw_output:
            response.raw_output_contents.append(codes.astype("<f4", copy=False).tobytes())
        else:
            raw = codes.astype("<f4", copy=False).tobytes()
            key = _PACKED_KEY["fp32_contents"]
            output.contents.MergeFromString(_varint(key) + _varint(len(raw)) + raw)
        return response


@functools.lru_cache(maxsize=8)
def _json_head(model_name: str, model_version: str, output_name: str) -> bytes:
    """The bytes of a v2 JSON response up to its output's shape: what `dumps` writes for
    the response's dict (without `id`) before them (``test_serve_codec.py`` checks
    the whole body against `dumps`)."""
    return (
        b'{"model_name":' + dumps(model_name) + b',"model_version":' + dumps(model_version)
        + b',"outputs":[{"name":' + dumps(output_name) + b',"datatype":"FP32","shape":'
    )  # fmt: skip


def typed_array(contents: pb.InferTensorContents, field: str) -> np.ndarray:
    """A typed contents field (the only one set) as a numpy array, from its packed wire
    bytes: protobuf hands out a repeated field one Python float at a time (about 0.1 µs
    each), its serialization is a copy of the little-endian values.

    Args:
        contents: the tensor's contents, with only `field` set.
        field: ``fp32_contents`` or ``fp64_contents``.

    Returns:
        A read-only array of the field's values.

    Example:

    >>> contents = pb.InferTensorContents(fp32_contents=[0.5, 2.0])
    >>> typed_array(contents, "fp32_contents")
    array([0.5, 2. ], dtype=float32)
    """
    dtype = _TYPED_DTYPE[field]
    wire = contents.SerializeToString()
    if not wire:
        return np.empty(0, dtype)
    key, start = _read_varint(wire, 0)
    length, start = _read_varint(wire, start)
    if key != _PACKED_KEY[field] or start + length != len(wire) or length % dtype.itemsize:
        # Not one packed field (unknown fields kept, say): element by element.
        return np.asarray(getattr(contents, field), dtype=dtype)
    return np.frombuffer(wire, dtype, count=length // dtype.itemsize, offset=start)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes, start: int) -> tuple[int, int]:
    """The varint at `start` and the position after it (-1 if it runs past the end)."""
    value = shift = 0
    for position in range(start, min(start + 10, len(data))):
        byte = data[position]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position + 1
        shift += 7
    return -1, len(data) + 1
