"""The Open Inference Protocol (KServe v2; Triton, KServe, Seldon MLServer).

``GET /v2``, ``GET /v2/health/live``, ``GET /v2/health/ready``,
``GET /v2/models/{name}[/versions/{version}]``, ``.../ready`` and
``POST /v2/models/{name}[/versions/{version}]/infer``, including Triton's binary
tensor data extension for inputs and outputs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from fastapi import APIRouter

from keras_cae.export.serving import schemas
from keras_cae.export.serving.codec import (
    dumps,
    flag,
    flatten_numbers,
    parse_json,
    shape_text,
    to_float64,
    validate,
)
from keras_cae.export.serving.errors import ClientError
from keras_cae.export.serving.service import (
    VERSION,
    ModelRoute,
    ModelService,
    Reply,
    add_model_routes,
    parse_length,
)

__all__ = ["V2Handlers", "router", "SERVER_NAME", "TAG"]

#: The server name reported by ``GET /v2``.
SERVER_NAME = "keras-cae"
TAG = "Open Inference Protocol (KServe v2)"
_BINARY_HEADER = b"inference-header-content-length"
_EXTENSIONS = ["binary_tensor_data"]


class V2Handlers:
    """The protocol's handlers for one served model."""

    def __init__(self, service: ModelService, server_version: str) -> None:
        self.service = service
        self.server_version = server_version
        encoder = service.encoder
        self.metadata = {
            "name": service.name,
            "versions": [VERSION],
            "platform": "onnxruntime_onnx",
            "inputs": [
                {
                    "name": encoder.input_name,
                    "datatype": service.input_datatype,
                    "shape": [-1 if d is None else d for d in encoder.input_shape],
                }
            ],
            "outputs": [
                {
                    "name": encoder.output_name,
                    "datatype": "FP32",
                    "shape": [-1 if d is None else d for d in encoder.output_shape],
                }
            ],
        }

    async def model_metadata(self, name: str, version: str | None) -> dict[str, Any]:
        self.service.check_model(name, version)
        return self.metadata

    async def model_ready(self, name: str, version: str | None) -> dict[str, Any]:
        self.service.check_model(name, version)
        return {"name": name, "ready": True}

    async def infer(
        self, headers: dict[bytes, bytes], body: bytes, name: str, version: str | None
    ) -> Reply:
        """Encodes the request's batch; see the module docstring."""
        service = self.service
        service.check_model(name, version)
        length = parse_length(
            headers.get(_BINARY_HEADER), "Inference-Header-Content-Length", len(body)
        )
        binary = b""
        if length is not None:
            body, binary = body[:length], body[length:]
        payload = validate(schemas.V2InferRequest, parse_json(body, "an inference request"))
        x = self.read_input(payload, binary)
        codes = await service.encode(x, "v2")

        output_name = service.encoder.output_name
        binary_output = flag(payload.parameters, "binary_data_output", False, "parameters")
        if payload.outputs:  # An empty list, like no list, asks for every output.
            self.check_outputs([o.name for o in payload.outputs])
            binary_output = any(
                flag(output.parameters, "binary_data", binary_output, f"outputs[{i}].parameters")
                for i, output in enumerate(payload.outputs)
            )
        output: dict[str, Any] = {
            "name": output_name,
            "datatype": "FP32",
            "shape": list(codes.shape),
        }
        response: dict[str, Any] = {"model_name": service.name, "model_version": VERSION}
        if payload.id is not None:
            response["id"] = payload.id
        response["outputs"] = [output]
        if not binary_output:
            output["data"] = codes.reshape(-1).tolist()
            return Reply(dumps(response))
        raw = np.ascontiguousarray(codes, dtype="<f4").tobytes()
        output["parameters"] = {"binary_data_size": len(raw)}
        header = dumps(response)
        return Reply(
            header + raw,
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(len(header))},
        )

    def check_outputs(self, names: list[str]) -> None:
        """A 400 unless every requested output name is the model's output."""
        output_name = self.service.encoder.output_name
        unknown = [name for name in names if name != output_name]
        if unknown:
            raise ClientError(
                400, f"Unknown output(s) {unknown}; the model's output is {output_name!r}."
            )

    def read_input(self, payload: schemas.V2InferRequest, binary: bytes) -> np.ndarray:
        """The request's input batch, checked against the model; a `ClientError` if not.

        Args:
            payload: the validated request.
            binary: the tensor bytes of the binary extension (after the JSON header),
                declared by ``parameters.binary_data_size``; ``b""`` if none.
        """
        x = self._input(payload, binary)
        self.service.check_batch(x, f"Input {self.service.encoder.input_name!r}")
        return x

    def _input(self, payload: schemas.V2InferRequest, binary: bytes) -> np.ndarray:
        service = self.service
        expected = service.encoder.input_name
        names = [tensor.name for tensor in payload.inputs]
        if names != [expected]:
            raise ClientError(
                400, f"Expected exactly one input named {expected!r}; received inputs {names}."
            )
        tensor = payload.inputs[0]
        where = f"Input {expected!r}"
        if tensor.datatype != service.input_datatype:
            raise ClientError(
                400, f"{where} has datatype {tensor.datatype}; the model expects "
                f"{service.input_datatype}.",
            )  # fmt: skip
        shape = tuple(tensor.shape)
        if any(dim < 0 for dim in shape):
            raise ClientError(400, f"{where} has a negative dimension in shape {list(shape)}.")
        if len(shape) != service.rank or shape[1:] != service.sample_shape:
            raise ClientError(
                400, f"{where} has shape {list(shape)}; the model expects "
                f"{shape_text(service.encoder.input_shape)} (batch first).",
            )  # fmt: skip
        service.check_rows(shape[0])
        count = math.prod(shape)
        binary_size = (tensor.parameters or {}).get("binary_data_size")
        if binary_size is not None:
            if tensor.data is not None:
                raise ClientError(400, f"{where} has both `data` and `binary_data_size`.")
            itemsize = service.input_dtype.itemsize
            if (
                isinstance(binary_size, bool)
                or not isinstance(binary_size, int)
                or binary_size != len(binary)
                or binary_size != count * itemsize
            ):
                raise ClientError(
                    400, f"{where}: binary_data_size={binary_size!r}, but shape "
                    f"{list(shape)} of {service.input_datatype} needs {count * itemsize} bytes "
                    f"and the body holds {len(binary)} bytes after the JSON header.",
                )  # fmt: skip
            return np.frombuffer(binary, dtype=service.wire_dtype).reshape(shape)
        if binary:
            raise ClientError(400, "The body has binary data but no input declares it.")
        if tensor.data is None:
            raise ClientError(400, f"{where} has no `data`.")
        flat = flatten_numbers(tensor.data, service.rank, f"{where} data")
        if len(flat) != count:
            raise ClientError(
                400, f"{where} has {len(flat)} data elements; shape {list(shape)} needs {count}."
            )
        if flat is tensor.data:  # Flattened row-major, as the protocol allows.
            return to_float64(flat, f"{where} data").reshape(shape)
        # Nested: the nesting must be the declared shape, not re-split to fit it.
        x = to_float64(tensor.data, f"{where} data")
        if x.shape != shape:
            raise ClientError(
                400, f"{where} data is nested as shape {list(x.shape)}, which contradicts "
                f"its declared shape {list(shape)}; nest it exactly so, or flatten it.",
            )  # fmt: skip
        return x


def router(handlers: V2Handlers) -> APIRouter:
    """The protocol's routes, each model route with and without ``/versions/{version}``."""
    api = APIRouter(tags=[TAG])
    service = handlers.service

    @api.get("/v2", response_model=schemas.V2ServerMetadata)
    async def server_metadata() -> dict[str, Any]:
        """Server metadata: name, version and supported extensions."""
        return {"name": SERVER_NAME, "version": handlers.server_version, "extensions": _EXTENSIONS}

    @api.get("/v2/health/live", response_model=schemas.V2Live)
    async def server_live() -> dict[str, Any]:
        """Liveness: 200 while the server can answer requests."""
        return {"live": True}

    @api.get("/v2/health/ready", response_model=schemas.V2Ready)
    async def server_ready() -> dict[str, Any]:
        """Readiness: 200 once the model is loaded (it is loaded before the server listens)."""
        return {"ready": True}

    not_found: dict[int | str, dict[str, Any]] = {404: schemas.ERRORS[404]}
    infer_body = schemas.request_body(
        schemas.V2InferRequest,
        "An inference request. With Triton's binary tensor data extension, the header "
        "Inference-Header-Content-Length gives the JSON part's length and the raw "
        "little-endian tensor bytes follow it.",
    )
    routes: list[ModelRoute] = [
        ("", "GET", handlers.model_metadata, False, "model_metadata",
         "Model metadata: input and output names, datatypes and shapes (-1: any size).",
         {"response_model": schemas.V2ModelMetadata, "responses": not_found}),
        ("/ready", "GET", handlers.model_ready, False, "model_ready", "Model readiness.",
         {"response_model": schemas.V2ModelReady, "responses": not_found}),
        ("/infer", "POST", handlers.infer, True, "model_infer",
         "Encodes a batch: input [N, *features] -> output [N, *code], row-major.",
         {"response_model": schemas.V2InferResponse, "responses": dict(schemas.ERRORS),
          "openapi_extra": infer_body}),
    ]  # fmt: skip
    add_model_routes(api, service, "/v2/models/{name}", routes)
    return api
