"""Client errors, and the one error object both protocols answer with.

Every error response is ``{"error": "<what was wrong>"}`` with a 4xx status (the
error object of the Open Inference Protocol and of TensorFlow Serving), including
FastAPI's own errors (unknown route, wrong method, invalid parameters).
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

__all__ = ["ClientError", "CLIENT_CLOSED", "error_body", "internal_error_body",
           "describe_validation_error", "add_error_handlers"]  # fmt: skip

#: Counted as nginx does when the client goes away before its request is read.
CLIENT_CLOSED = 499


class ClientError(Exception):
    """A request error, answered with `status` and ``{"error": message}``.

    Example:

    >>> ClientError(404, "Unknown model 'x'.").status
    404
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_body(message: str) -> bytes:
    """The JSON error object."""
    return orjson.dumps({"error": message})


def internal_error_body(error: Exception) -> bytes:
    """The JSON error object of a 500: a bug, or a model that fails at run time."""
    return error_body(f"Internal server error: {type(error).__name__}: {error}")


def error_response(status: int, message: str) -> Response:
    return Response(error_body(message), status_code=status, media_type="application/json")


def describe_validation_error(error: ValidationError | RequestValidationError) -> str:
    """The first three problems of a failed validation, in one line."""
    parts = []
    for item in error.errors()[:3]:
        location = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
        parts.append(f"{location or 'body'}: {item.get('msg', 'invalid')}")
    more = len(error.errors()) - 3
    return "Invalid request: " + "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def add_error_handlers(app: FastAPI) -> None:
    """Makes every error of `app` the JSON error object."""

    async def client_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, ClientError)
        return error_response(error.status, error.message)

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        detail: Any = error.detail
        if error.status_code == 404 and detail == "Not Found":
            detail = f"No route for {request.method} {request.url.path}; see /docs."
        response = error_response(error.status_code, str(detail))
        for key, value in (error.headers or {}).items():
            response.headers[key] = value
        return response

    async def validation_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        return error_response(400, describe_validation_error(error))

    async def internal_error(request: Request, error: Exception) -> Response:
        # Reached only by a bug or a model that fails at run time; uvicorn logs the
        # traceback, the client gets JSON rather than a bare "Internal Server Error".
        return Response(internal_error_body(error), 500, media_type="application/json")

    app.add_exception_handler(ClientError, client_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, internal_error)
