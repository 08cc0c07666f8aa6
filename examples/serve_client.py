"""Call a running `keras-cae serve` with nothing but the standard library and numpy.

Reads the model metadata, encodes a few rows in [0, 1] three ways (Open Inference
Protocol JSON, its binary tensor extension, TensorFlow Serving's ``instances``) and
checks that the three answers are identical.

Usage::

    keras-cae serve exported/encoder.onnx --name digits &
    python examples/serve_client.py --url http://127.0.0.1:8000 --model digits
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from typing import Any

import numpy as np


def call(url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
    """Returns (headers, body bytes); raises with the server's error message on 4xx/5xx."""
    request = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.headers, response.read()
    except urllib.error.HTTPError as error:
        raise SystemExit(f"{url}: HTTP {error.code}: {error.read().decode()}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--model", default="encoder")
    parser.add_argument("--rows", type=int, default=3)
    args = parser.parse_args()

    _, raw = call(f"{args.url}/v2/models/{args.model}")
    metadata = json.loads(raw)
    [tensor] = metadata["inputs"]
    features = tensor["shape"][1:]
    x = np.random.default_rng(0).random((args.rows, *features)).astype(np.float32)
    print(f"model {metadata['name']!r}: input {tensor['name']} {tensor['shape']} "
          f"{tensor['datatype']} -> output {metadata['outputs'][0]['shape']}")  # fmt: skip

    # 1. Open Inference Protocol, JSON: row-major flattened data.
    infer = f"{args.url}/v2/models/{args.model}/infer"
    body = {"inputs": [{"name": tensor["name"], "shape": list(x.shape), "datatype": "FP32",
                        "data": x.ravel().tolist()}]}  # fmt: skip
    _, raw = call(infer, json.dumps(body).encode(), {"Content-Type": "application/json"})
    output = json.loads(raw)["outputs"][0]
    codes_json = np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])

    # 2. The binary tensor data extension: JSON header, then raw little-endian bytes.
    data = x.astype("<f4").tobytes()
    header = json.dumps({
        "inputs": [{"name": tensor["name"], "shape": list(x.shape), "datatype": "FP32",
                    "parameters": {"binary_data_size": len(data)}}],
        "parameters": {"binary_data_output": True},
    }).encode()  # fmt: skip
    headers, raw = call(infer, header + data, {"Inference-Header-Content-Length": str(len(header))})
    length = int(headers["Inference-Header-Content-Length"])
    output = json.loads(raw[:length])["outputs"][0]
    codes_binary = np.frombuffer(raw[length:], dtype="<f4").reshape(output["shape"])

    # 3. TensorFlow Serving's row format.
    predict = f"{args.url}/v1/models/{args.model}:predict"
    _, raw = call(predict, json.dumps({"instances": x.tolist()}).encode())
    codes_tf = np.asarray(json.loads(raw)["predictions"], dtype=np.float32)

    assert np.array_equal(codes_json, codes_binary) and np.array_equal(codes_json, codes_tf)
    print(f"codes {codes_json.shape}, identical over JSON, binary and TF Serving; first row:")
    print(np.array2string(codes_json[0], precision=4, max_line_width=88))


if __name__ == "__main__":
    main()
