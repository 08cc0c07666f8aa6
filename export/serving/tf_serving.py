"""TensorFlow Serving's REST API.

``POST /v1/models/{name}[/versions/{version}]:predict`` with ``{"instances": ...}``
(row format, answered with ``{"predictions": ...}``) or ``{"inputs": ...}`` (columnar
format, answered with ``{"outputs": ...}``, as TF Serving does), and
``GET /v1/models/{name}[/versions/{version}]`` and ``.../metadata``. A thin adapter:
`infer_types.InferRequest.from_tf_rest` parses, `dataplane.DataPlane.infer` checks
and encodes, `infer_types.InferResponse.to_tf_rest` renders.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter

from keras_cae.export.serving import schemas
from keras_cae.export.serving.dataplane import VERSION, DataPlane
from keras_cae.export.serving.infer_types import InferRequest
from keras_cae.export.serving.rest import BodyReader, ModelRoute, Reply, add_model_routes

__all__ = ["TFHandlers", "router", "TAG"]

TAG = "TensorFlow Serving REST"
_V2_TO_TF = {"FP32": "DT_FLOAT", "FP64": "DT_DOUBLE", "FP16": "DT_HALF"}


class TFHandlers:
    """The API's handlers for the model of `dataplane`.

    Args:
        dataplane: the served model.
        reader: reads request bodies within the size limit.
    """

    def __init__(self, dataplane: DataPlane, reader: BodyReader) -> None:
        self.dataplane = dataplane
        self.reader = reader

    async def predict(
        self, headers: dict[bytes, bytes], body: bytes, name: str, version: str | None
    ) -> Reply:
        """Encodes the request's batch; see the module docstring."""
        dataplane = self.dataplane
        dataplane.check_model(name, version)
        request = InferRequest.from_tf_rest(body, name, version, dataplane.encoder.input_name)
        return Reply((await dataplane.infer(request)).to_tf_rest())

    async def status(self, name: str, version: str | None) -> dict[str, Any]:
        self.dataplane.check_model(name, version)
        ok = {"error_code": "OK", "error_message": ""}
        return {"model_version_status": [{"version": VERSION, "state": "AVAILABLE", "status": ok}]}

    async def metadata(self, name: str, version: str | None) -> dict[str, Any]:
        """The signature, from the dataplane's model metadata."""
        metadata = self.dataplane.model_metadata(name, version)

        def tensor_info(tensor: dict[str, Any]) -> dict[str, Any]:
            dims: Sequence[int] = tensor["shape"]
            return {
                "dtype": _V2_TO_TF[tensor["datatype"]],
                "tensor_shape": {
                    "dim": [{"size": str(d), "name": ""} for d in dims],
                    "unknown_rank": False,
                },
                "name": tensor["name"],
            }

        signature = {
            "inputs": {t["name"]: tensor_info(t) for t in metadata["inputs"]},
            "outputs": {t["name"]: tensor_info(t) for t in metadata["outputs"]},
            "method_name": "tensorflow/serving/predict",
        }
        return {
            "model_spec": {"name": metadata["name"], "signature_name": "", "version": VERSION},
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
    add_model_routes(api, handlers.reader, "/v1/models/{name}", routes)
    return api
