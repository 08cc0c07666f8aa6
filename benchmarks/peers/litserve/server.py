"""LitServe (litserve 0.2.19) serving the encoder with onnxruntime.

A `litserve.LitAPI` at ``/v2/models/NAME/infer`` that takes the KServe v2 JSON
request (``decode_request``: the first input's data and shape as a float32 array),
runs the onnxruntime session (1 intra-op thread) in LitServe's inference worker and
answers the v2 JSON response. One inference worker on the CPU, one API server, no
batching (LitServe's defaults for a CPU model). Runs in benchmarks/.venvs/litserve,
started by ``benchmarks/serve.py --peers``::

    python server.py --model encoder.onnx --port 8000 --name encoder
"""

# No `from __future__ import annotations`: LitServe reads decode_request's annotation
# as a type to choose how it parses the request body.

import argparse
from typing import Any

import litserve as ls
import numpy as np
import onnxruntime as ort


class Encoder(ls.LitAPI):
    """The encoder as a LitAPI: v2 JSON in, v2 JSON out."""

    def __init__(self, path: str, name: str) -> None:
        super().__init__(api_path=f"/v2/models/{name}/infer")
        self.path, self.name = path, name

    def setup(self, device: str) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def decode_request(self, request: dict[str, Any]) -> np.ndarray:
        tensor = request["inputs"][0]
        return np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: x})[0]

    def encode_response(self, code: np.ndarray) -> dict[str, Any]:
        output = {"name": "code", "datatype": "FP32", "shape": list(code.shape),
                  "data": code.ravel().tolist()}  # fmt: skip
        return {"model_name": self.name, "outputs": [output]}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="encoder")
    args = parser.parse_args()
    server = ls.LitServer(Encoder(args.model, args.name), accelerator="cpu", workers_per_device=1)
    server.run(host="127.0.0.1", port=args.port, log_level="warning",
               generate_client_file=False, access_log=False)  # fmt: skip
