"""KServe's ModelServer (kserve 0.21.0) serving the encoder with onnxruntime.

A `kserve.Model` whose ``predict`` takes the parsed v2 `InferRequest`, runs the
onnxruntime session (1 intra-op thread) on ``inputs[0].as_numpy()`` and answers a v2
`InferResponse` with JSON data (its id the request's, or a new UUID: KServe needs one).
As a user would run it for throughput: no per-request latency log line, uvicorn's
access log unconfigured, gRPC off. Runs in benchmarks/.venvs/kserve, started by
``benchmarks/serve.py --peers``::

    python server.py --model encoder.onnx --port 8000 --name encoder
"""

from __future__ import annotations

import argparse
import sys

# kserve.model_server parses sys.argv when imported: give it only its own options.
_parser = argparse.ArgumentParser()
_parser.add_argument("--model", required=True)
_parser.add_argument("--port", type=int, required=True)
_parser.add_argument("--name", default="encoder")
ARGS = _parser.parse_args()
sys.argv = [sys.argv[0], "--http_port", str(ARGS.port), "--enable_grpc", "false",
            "--enable_latency_logging", "false", "--configure_logging", "false",
            "--model_name", ARGS.name]  # fmt: skip

import kserve  # noqa: E402
import onnxruntime as ort  # noqa: E402
from kserve import InferOutput, InferRequest, InferResponse  # noqa: E402
from kserve.utils.utils import generate_uuid  # noqa: E402


class Encoder(kserve.Model):
    """The encoder as a KServe model: v2 in, v2 out."""

    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.ready = True

    def predict(
        self,
        payload: InferRequest,
        headers: dict | None = None,
        response_headers: dict | None = None,
    ) -> InferResponse:
        code = self.session.run(None, {self.input: payload.inputs[0].as_numpy()})[0]
        output = InferOutput(name="code", shape=list(code.shape), datatype="FP32")
        output.set_data_from_numpy(code, binary_data=False)
        return InferResponse(
            response_id=payload.id or generate_uuid(), model_name=self.name, infer_outputs=[output]
        )


if __name__ == "__main__":
    kserve.ModelServer().start([Encoder(ARGS.name, ARGS.model)])
