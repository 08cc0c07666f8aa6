"""Small ONNX encoders built with `onnx.helper` (no TensorFlow, no tf2onnx), and their
independent float64 numpy reference. The fixtures in conftest.py build on these."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FEATURES, CODE = 6, 3


def dense_sigmoid_model(
    path: str, w: np.ndarray, b: np.ndarray, elem: int = TensorProto.FLOAT
) -> None:
    """``code = sigmoid(x @ w + b)`` with a dynamic batch axis, like our exports."""
    dtype = np.float32 if elem == TensorProto.FLOAT else np.float64
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["pre"]),
            helper.make_node("Sigmoid", ["pre"], ["code"]),
        ],
        "encoder",
        [helper.make_tensor_value_info("x", elem, ["batch", w.shape[0]])],
        [helper.make_tensor_value_info("code", elem, ["batch", w.shape[1]])],
        [
            numpy_helper.from_array(w.astype(dtype), "w"),
            numpy_helper.from_array(b.astype(dtype), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"keras_cae.part": "encoder", "keras_cae.code_size": str(CODE)})
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def reference(x: np.ndarray, weights: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """`dense_sigmoid_model`'s codes in float64 numpy."""
    w, b = weights
    return sigmoid(np.asarray(x, dtype=np.float64) @ w + b)
