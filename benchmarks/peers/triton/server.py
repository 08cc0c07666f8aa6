"""Triton Inference Server 2.51 through PyTriton 0.7.0 (its bundled ``tritonserver``,
the python backend) serving the encoder with onnxruntime.

PyTriton binds a Python function (``@batch``: the request's rows as one float32
array) to a Triton model named NAME with input ``x`` of 784 features and output
``code``; Triton answers KServe v2 at ``/v2/models/NAME/infer`` natively. Two
settings are needed here: PyTriton's default ``max_batch_size`` of 4 refuses 64-row
requests, so it is set to 1024 (keras-cae's ``--max-batch`` default), and the python
backend's stub loads libpython, so the venv's own libpython directory goes on
``LD_LIBRARY_PATH``. Dynamic batching stays as PyTriton sets it. Runs in
benchmarks/.venvs/triton, started by ``benchmarks/serve.py --peers``::

    python server.py --model encoder.onnx --port 8000 --name encoder
"""

from __future__ import annotations

import argparse
import os
import socket
import sysconfig

import numpy as np
import onnxruntime as ort


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="encoder")
    args = parser.parse_args()
    libdir = sysconfig.get_config_var("LIBDIR")
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (libdir, os.environ.get("LD_LIBRARY_PATH")) if p
    )

    from pytriton.decorators import batch
    from pytriton.model_config import ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    name, features = session.get_inputs()[0].name, session.get_inputs()[0].shape[1]

    @batch
    def infer(x: np.ndarray) -> dict[str, np.ndarray]:
        return {"code": session.run(None, {name: x})[0]}

    config = TritonConfig(http_address="127.0.0.1", http_port=args.port,
                          grpc_address="127.0.0.1", grpc_port=_free_port(),
                          metrics_port=_free_port(), log_verbose=0)  # fmt: skip
    with Triton(config=config) as triton:
        triton.bind(
            model_name=args.name,
            infer_func=infer,
            inputs=[Tensor(name="x", dtype=np.float32, shape=(features,))],
            outputs=[Tensor(name="code", dtype=np.float32, shape=(-1,))],
            config=ModelConfig(max_batch_size=1024),
        )
        triton.serve()


if __name__ == "__main__":
    main()
