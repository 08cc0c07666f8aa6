"""The Open Inference Protocol (KServe v2; Triton, KServe, Seldon MLServer) over HTTP.

``GET /v2``, ``GET /v2/health/live``, ``GET /v2/health/ready``,
``GET /v2/models/{name}[/versions/{version}]``, ``.../ready`` and
``POST /v2/models/{name}[/versions/{version}]/infer``, including Triton's binary
tensor data extension for inputs and outputs. A thin adapter: the request is parsed
by `infer_types.InferRequest.from_rest`, checked and encoded by
`dataplane.DataPlane.infer`, and rendered by `infer_types.InferResponse.to_rest`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from keras_cae.export.serving import schemas
from keras_cae.export.serving.dataplane import SERVER_NAME, DataPlane
from keras_cae.export.serving.infer_types import InferRequest
from keras_cae.export.serving.rest import BodyReader, ModelRoute, Reply, add_model_routes

__all__ = ["V2Handlers", "router", "SERVER_NAME", "TAG"]

TAG = "Open Inference Protocol (KServe v2)"


class V2Handlers:
    """The protocol's HTTP handlers for the model of `dataplane`.

    Args:
        dataplane: the served model.
        reader: reads request bodies within the size limit.
    """

    def __init__(self, dataplane: DataPlane, reader: BodyReader) -> None:
        self.dataplane = dataplane
        self.reader = reader

    async def server_metadata(self) -> dict[str, Any]:
        return self.dataplane.server_metadata()

    async def model_metadata(self, name: str, version: str | None) -> dict[str, Any]:
        return self.dataplane.model_metadata(name, version)

    async def model_ready(self, name: str, version: str | None) -> dict[str, Any]:
        self.dataplane.check_model(name, version)
        return {"name": name, "ready": True}

    async def infer(
        self, headers: dict[bytes, bytes], body: bytes, name: str, version: str | None
    ) -> Reply:
        """Encodes the request's batch; see the module docstring."""
        self.dataplane.check_model(name, version)
        request = InferRequest.from_rest(body, headers, name, version)
        content, media_type, extra = (await self.dataplane.infer(request)).to_rest()
        return Reply(content, media_type=media_type, headers=extra)


def router(handlers: V2Handlers) -> APIRouter:
    """The protocol's routes, each model route with and without ``/versions/{version}``."""
    api = APIRouter(tags=[TAG])

    @api.get("/v2", response_model=schemas.V2ServerMetadata)
    async def server_metadata() -> dict[str, Any]:
        """Server metadata: name, version and supported extensions."""
        return await handlers.server_metadata()

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
    add_model_routes(api, handlers.reader, "/v2/models/{name}", routes)
    return api
