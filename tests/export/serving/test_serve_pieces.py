"""In-process checks of the pieces `keras-cae serve` is made of: the protocol routers
without the fast path, the refusal of non-finite codes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import numpy as np

from tests._onnx import linear_model
from tests.export.serving._serving import NAME, batch, v2_body


def test_routers_answer_without_the_fast_path(model_path: str) -> None:
    """The protocol routers are complete on their own (the app puts a raw ASGI fast
    path for inference in front of them): the same answers, errors included."""
    from fastapi import FastAPI

    from keras_cae.export.serving import create_app, kserve_v2, tf_serving
    from keras_cae.export.serving.rest import BodyReader, add_error_handlers

    fast = create_app(model_path, name=NAME)
    dataplane = fast.state.dataplane
    reader = BodyReader(dataplane.max_body_bytes)
    plain = FastAPI()
    plain.include_router(kserve_v2.router(kserve_v2.V2Handlers(dataplane, reader)))
    plain.include_router(tf_serving.router(tf_serving.TFHandlers(dataplane, reader)))
    add_error_handlers(plain)
    requests = [
        ("/v2/models/enc/versions/1/infer", v2_body(batch(3))),
        ("/v1/models/enc:predict", {"instances": batch(2).tolist()}),
        ("/v2/models/enc/infer", {"inputs": []}),
        ("/v1/models/nope:predict", {"instances": []}),
    ]

    async def answers(app: Any) -> list[tuple[int, bytes]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return [
                (r.status_code, r.content)
                for r in [await http.post(path, json=body) for path, body in requests]
            ]

    expected = asyncio.run(answers(fast))
    assert [status for status, _ in expected] == [200, 200, 400, 404]
    assert asyncio.run(answers(plain)) == expected


def test_non_finite_codes_are_a_clear_400(tmp_path: Any) -> None:
    from keras_cae.export.serving import create_app

    # code = x @ W with W = 2: a finite input near float32's maximum overflows to inf.
    path = str(tmp_path / "linear.onnx")
    linear_model(path, np.full((2, 1), 2.0))

    async def post(body: dict[str, Any]) -> Any:
        transport = httpx.ASGITransport(app=create_app(path, name="linear"))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return await http.post("/v1/models/linear:predict", json=body)

    response = asyncio.run(post({"instances": [[1.0, 2.0], [3e38, 3e38]]}))
    assert response.status_code == 400
    assert "infinite codes for 1 of 2 rows" in response.json()["error"]
    response = asyncio.run(post({"instances": [[1.0, 2.0]]}))
    assert response.json() == {"predictions": [[6.0]]}
