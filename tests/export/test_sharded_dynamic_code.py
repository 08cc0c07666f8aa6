"""`encode_shards` with an encoder whose code size is dynamic in its ONNX graph.

Found by the type check (issue 22): an empty shard's codes were built from the
encoder's declared code shape, whose `None` dimension made ``np.zeros`` raise a
TypeError. The encoder now says the size itself, by encoding no rows.
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper

from keras_cae.export.runtime import OnnxEncoder
from keras_cae.export.sharded import MANIFEST, encode_shards

FEATURES = 6


def _identity_model(path: str) -> None:
    """``code = x``, every dimension symbolic: onnxruntime cannot infer the code size."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["code"])],
        "encoder",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "features"])],
        [helper.make_tensor_value_info("code", TensorProto.FLOAT, ["batch", "features"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def test_an_empty_shard_with_a_dynamic_code_size(tmp_path) -> None:
    _identity_model(str(tmp_path / "encoder.onnx"))
    encoder = OnnxEncoder(str(tmp_path / "encoder.onnx"))
    assert encoder.output_shape == (None, None)
    data = tmp_path / "data"
    data.mkdir()
    rows = np.arange(4 * FEATURES, dtype=np.float32).reshape(4, FEATURES) / 100
    np.save(data / "part-0.npy", np.zeros((0, FEATURES), np.float32))
    np.save(data / "part-1.npy", rows)

    result = encode_shards(encoder, str(data), tmp_path / "codes")

    assert (result.num_shards, result.num_rows, result.code_shape) == (2, 4, (FEATURES,))
    empty = np.load(tmp_path / "codes" / "part-0.npy")
    assert empty.shape == (0, FEATURES) and empty.dtype == np.float32
    np.testing.assert_array_equal(np.load(tmp_path / "codes" / "part-1.npy"), rows)
    with open(os.path.join(tmp_path / "codes", MANIFEST)) as stream:
        assert json.load(stream)["code_shape"] == [FEATURES]
