"""BentoML (bentoml 1.4.40) serving the encoder with onnxruntime.

A `bentoml.service` with one API at ``/v2/models/NAME/infer`` whose parameter is
the v2 request's ``inputs`` list (BentoML maps JSON body fields to parameters), which
runs the onnxruntime session (1 intra-op thread) on the first input and answers the
v2 JSON response. One worker, access log off. The model path and name come from the
environment (``BENCH_MODEL``, ``BENCH_NAME``), as BentoML imports this module itself.
Runs in benchmarks/.venvs/bentoml, started by ``benchmarks/serve.py --peers`` as::

    BENCH_MODEL=encoder.onnx BENCH_NAME=encoder bentoml serve service:Encoder --port 8000
"""

from __future__ import annotations

import os
from typing import Any

import bentoml
import numpy as np
import onnxruntime as ort

NAME = os.environ.get("BENCH_NAME", "encoder")


@bentoml.service(workers=1, logging={"access": {"enabled": False}})
class Encoder:
    """The encoder as a BentoML service: v2 JSON in, v2 JSON out."""

    def __init__(self) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(
            os.environ["BENCH_MODEL"], options, providers=["CPUExecutionProvider"]
        )
        self.input = self.session.get_inputs()[0].name

    @bentoml.api(route=f"/v2/models/{NAME}/infer")
    def infer(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        tensor = inputs[0]
        x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        code = self.session.run(None, {self.input: x})[0]
        output = {"name": "code", "datatype": "FP32", "shape": list(code.shape),
                  "data": code.ravel().tolist()}  # fmt: skip
        return {"model_name": NAME, "outputs": [output]}
