"""The bare floor: a raw ASGI app on uvicorn (uvloop + httptools), orjson, one
onnxruntime InferenceSession (1 intra-op thread), no checks at all.

It answers every POST with the KServe v2 JSON response of its first input, whatever
the path; anything that goes wrong is uvicorn's 500. Runs in benchmarks/.venvs/floor
(see requirements.txt beside this file), started by ``benchmarks/serve.py --peers``::

    python server.py --model encoder.onnx --port 8000 --name encoder
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
import uvicorn

_state: dict[str, Any] = {}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """KServe v2 ``/infer`` without a check: parse, run, answer."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    tensor = orjson.loads(b"".join(chunks))["inputs"][0]
    x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    code = _state["session"].run(None, {_state["input"]: x})[0]
    body = orjson.dumps(
        {
            "model_name": _state["name"],
            "outputs": [
                {
                    "name": "code",
                    "datatype": "FP32",
                    "shape": list(code.shape),
                    "data": code.ravel(),
                }
            ],
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="encoder")
    args = parser.parse_args()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    _state.update(session=session, input=session.get_inputs()[0].name, name=args.name)
    uvicorn.run(app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools",
                log_level="warning", access_log=False, server_header=False)  # fmt: skip


if __name__ == "__main__":
    main()
