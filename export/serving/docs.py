"""The OpenAPI document (``/openapi.json``) and the interactive docs (``/docs``).

Swagger UI 5 (OpenAPI 3.1 needs 5 or later) is served from the files installed with
the `serve` extra (the fastapi-offline package), so that ``/docs`` works where the
service has no internet access, as inference services usually have none.
"""

from __future__ import annotations

import os
from typing import Any

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from starlette.responses import FileResponse, HTMLResponse

from keras_cae.export.serving import schemas
from keras_cae.export.serving.dataplane import DataPlane
from keras_cae.export.serving.errors import NotFound

__all__ = ["install_openapi", "add_docs"]

# Swagger UI 5 (OpenAPI 3.1 needs >= 5), as installed with the `serve` extra.
_ASSETS = {
    name: os.path.join(os.path.dirname(fastapi_offline.__file__), "static", name)
    for name in ("swagger-ui-bundle.js", "swagger-ui.css")
}


def add_docs(app: FastAPI) -> None:
    """Interactive docs at ``/docs`` that load nothing from outside the server (an
    inference service usually has no internet access)."""

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} - docs",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="data:,",  # No icon request at all.
            swagger_ui_parameters={"validatorUrl": None},  # No call to swagger.io.
        )

    @app.get("/docs/assets/{file}", include_in_schema=False)
    async def docs_asset(file: str) -> FileResponse:
        if file not in _ASSETS:
            raise NotFound(f"No docs asset {file!r}; see /docs.")
        return FileResponse(_ASSETS[file], headers={"Cache-Control": "max-age=86400"})


def install_openapi(app: FastAPI, service: DataPlane) -> None:
    """Makes `app`'s OpenAPI document describe the bodies the handlers parse themselves,
    with the served model's names, datatype, shapes and value range."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
            )
            components = document.setdefault("components", {}).setdefault("schemas", {})
            for model in (schemas.V2InferRequest, schemas.TFPredictRequest):
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(schema.pop("$defs", {}))
                components[model.__name__] = schema
            for model_name, properties in schemas.model_specific(service).items():
                for key, schema in properties.items():
                    old = components[model_name]["properties"][key]
                    components[model_name]["properties"][key] = {
                        **schema,
                        **{k: old[k] for k in ("title", "description") if k in old},
                    }
            components.update(schemas.model_components(service))
            components["V2InferRequest"]["properties"]["inputs"].update(maxItems=1)
            # Exactly one of the two formats.
            components["TFPredictRequest"]["oneOf"] = [
                {"required": ["instances"]}, {"required": ["inputs"]}
            ]  # fmt: skip
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
