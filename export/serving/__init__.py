"""`keras-cae serve`: an HTTP inference service for an exported encoder.

The service runs an `OnnxEncoder` (onnxruntime, no TensorFlow) behind one
transport-neutral dataplane (`dataplane.DataPlane`: every check and every encode,
on `infer_types.InferRequest` / `InferResponse`) and thin adapters for the protocols
that existing inference clients use: the Open Inference Protocol (KServe v2) over HTTP
(`kserve_v2`) and over gRPC (`kserve_v2_grpc`, with ``--grpc-port``), and TensorFlow
Serving's REST API (`tf_serving`); ``GET /metrics`` in the Prometheus text format
(`metrics`) and the OpenAPI document at ``/openapi.json``, interactive at ``/docs``
(`docs`). `app` assembles them, `server` runs them. Every client error is a 4xx
response whose JSON body is ``{"error": "<what was wrong>"}`` (gRPC: a status code).

This package needs the `serve` extra: ``pip install 'keras-cae[serve]'``.

Example:

>>> from keras_cae.export.serving import create_app                     # doctest: +SKIP
>>> app = create_app("exported/encoder.onnx", name="digits")  # doctest: +SKIP
>>> # uvicorn.run(app, port=8000), or from the shell:
>>> # keras-cae serve exported/encoder.onnx --name digits --port 8000
"""

from __future__ import annotations

try:
    import fastapi  # noqa: F401
    import fastapi_offline  # noqa: F401
    import grpc  # noqa: F401
    import orjson  # noqa: F401
    import prometheus_client  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the environment.
    raise ImportError(
        "`keras-cae serve` needs FastAPI, uvicorn, orjson, prometheus-client, "
        f"fastapi-offline and grpcio, which are not all installed ({error}). Install them with: "
        "pip install 'keras-cae[serve]'"
    ) from error

from keras_cae.export.serving.app import DEFAULT_MAX_BATCH, create_app
from keras_cae.export.serving.dataplane import SERVER_NAME
from keras_cae.export.serving.server import serve

__all__ = ["create_app", "serve", "DEFAULT_MAX_BATCH", "SERVER_NAME"]
