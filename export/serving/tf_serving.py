"""TensorFlow Serving's REST API.

``POST /v1/models/{name}[/versions/{version}]:predict`` with ``{"instances": ...}``
(row format, answered with ``{"predictions": ...}``) or ``{"inputs": ...}`` (columnar
format, answered with ``{"outputs": ...}``, as TF Serving does), and
``GET /v1/models/{name}[/versions/{version}]`` and ``.../metadata``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from fastapi import APIRouter

from keras_cae.export.serving import schemas
from keras_cae.export.serving.codec import dumps, flatten_numbers, parse_json, to_float64, validate
from keras_cae.export.serving.errors import ClientError
from keras_cae.export.serving.service import (
    VERSION,
    ModelRoute,
    ModelService,
    Reply,
    add_model_routes,
)

__all__ = ["TFHandlers", "router", "TAG"]

TAG = "TensorFlow Serving REST"
_NUMPY_TO_TF = {"float32": "DT_FLOAT", "float64": "DT_DOUBLE", "float16": "DT_HALF"}


class TFHandlers:
    """The API's handlers for one served model."""

    def __init__(self, service: ModelService) -> None:
        self.service = service

    async def predict(
        self, headers: dict[bytes, bytes], body: bytes, name: str, version: str | None
    ) -> Reply:
        """Encodes the request's batch; see the module docstring."""
        service = self.service
        service.check_model(name, version)
        payload = validate(schemas.TFPredictRequest, parse_json(body, "a predict request"))
        if payload.signature_name not in (None, "serving_default"):
            raise ClientError(
                400, f"Unknown signature_name {payload.signature_name!r}; the model has "
                "only 'serving_default'.",
            )  # fmt: skip
        if (payload.instances is None) == (payload.inputs is None):
            raise ClientError(
                400, "Expected exactly one of 'instances' (row format) or 'inputs' "
                "(columnar format).",
            )  # fmt: skip
        input_name = service.encoder.input_name
        if payload.instances is not None:
            rows = payload.instances
            if rows and all(isinstance(row, dict) for row in rows):
                if any(list(row) != [input_name] for row in rows):
                    raise ClientError(
                        400, f"Each instance object must have exactly the key {input_name!r}."
                    )
                rows = [row[input_name] for row in rows]
            where, values = "'instances'", rows
        else:
            where, values = "'inputs'", payload.inputs
            if isinstance(values, dict):
                if list(values) != [input_name]:
                    raise ClientError(
                        400, f"'inputs' must have exactly the key {input_name!r}; received "
                        f"{list(values)}.",
                    )  # fmt: skip
                values = values[input_name]
                if not isinstance(values, list):
                    raise ClientError(400, f"'inputs'[{input_name!r}] must be an array.")
        flatten_numbers(values, service.rank, where)  # Type checks only.
        x = to_float64(values, where)
        if x.size == 0 and x.ndim == 1:
            x = x.reshape((0, *service.sample_shape))  # `[]` is an empty batch.
        service.check_batch(x, where)
        codes = await service.encode(x, "tfserving")
        key = "predictions" if payload.instances is not None else "outputs"
        return Reply(dumps({key: codes.tolist()}))

    async def status(self, name: str, version: str | None) -> dict[str, Any]:
        self.service.check_model(name, version)
        ok = {"error_code": "OK", "error_message": ""}
        return {"model_version_status": [{"version": VERSION, "state": "AVAILABLE", "status": ok}]}

    async def metadata(self, name: str, version: str | None) -> dict[str, Any]:
        service = self.service
        service.check_model(name, version)
        encoder = service.encoder

        def tensor_info(tensor_name: str, dtype: str, shape: Sequence[int | None]) -> dict:
            dims = [{"size": str(-1 if d is None else d), "name": ""} for d in shape]
            return {
                "dtype": dtype,
                "tensor_shape": {"dim": dims, "unknown_rank": False},
                "name": tensor_name,
            }

        dtype = _NUMPY_TO_TF[np.dtype(encoder.input_dtype).name]
        signature = {
            "inputs": {
                encoder.input_name: tensor_info(encoder.input_name, dtype, encoder.input_shape)
            },
            "outputs": {
                encoder.output_name: tensor_info(
                    encoder.output_name, "DT_FLOAT", encoder.output_shape
                )
            },
            "method_name": "tensorflow/serving/predict",
        }
        return {
            "model_spec": {"name": service.name, "signature_name": "", "version": VERSION},
            "metadata": {"signature_def": {"signature_def": {"serving_default": signature}}},
        }


def router(handlers: TFHandlers) -> APIRouter:
    """The API's routes, each with and without ``/versions/{version}``."""
    api = APIRouter(tags=[TAG])
    not_found: dict[int | str, dict[str, Any]] = {404: schemas.ERRORS[404]}
    predict_body = schemas.request_body(
        schemas.TFPredictRequest, "A predict request, row or columnar format."
    )
    routes: list[ModelRoute] = [
        (":predict", "POST", handlers.predict, True, "tf_predict",
         "Encodes a batch: `instances` -> `predictions`, `inputs` -> `outputs`.",
         {"response_model": schemas.TFPredictResponse, "response_model_exclude_none": True,
          "responses": dict(schemas.ERRORS), "openapi_extra": predict_body}),
        ("/metadata", "GET", handlers.metadata, False, "tf_metadata",
         "The model's signature (TF Serving's GetModelMetadata).", {"responses": not_found}),
        ("", "GET", handlers.status, False, "tf_status",
         "The model's version status (TF Serving's GetModelStatus).", {"responses": not_found}),
    ]  # fmt: skip
    add_model_routes(api, handlers.service, "/v1/models/{name}", routes)
    return api
