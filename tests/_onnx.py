"""Small ONNX encoders built with `onnx.helper` (no TensorFlow, no tf2onnx), and their
independent float64 numpy reference. The fixtures in conftest.py build on these; so
does every test that needs an encoder of another size, a recorded input range or a
graph that can overflow."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FEATURES, CODE = 6, 3


def seeded_weights(
    features: int = FEATURES, code: int = CODE, seed: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Float64 weights `(w, b)` of shapes `(features, code)` and `(code,)`, drawn from a
    standard normal with `seed` (the defaults are the `weights` fixture's)."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(features, code)), rng.normal(size=code)


def dense_sigmoid_model(
    path: str,
    w: np.ndarray,
    b: np.ndarray,
    elem: int = TensorProto.FLOAT,
    metadata: dict[str, str] | None = None,
) -> None:
    """``code = sigmoid(x @ w + b)`` with a dynamic batch axis, like our exports.

    Args:
        path: where to save the model.
        w: the weights, `(features, code)`.
        b: the bias, `(code,)`.
        elem: the ONNX element type of the input, weights and output.
        metadata: more `metadata_props`, as `keras-cae export` records them (e.g. the
            training input range).
    """
    dtype = np.float32 if elem == TensorProto.FLOAT else np.float64
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["pre"]),
        helper.make_node("Sigmoid", ["pre"], ["code"]),
    ]
    initializers = [
        numpy_helper.from_array(w.astype(dtype), "w"),
        numpy_helper.from_array(b.astype(dtype), "b"),
    ]
    props = {"keras_cae.part": "encoder", "keras_cae.code_size": str(w.shape[1])}
    _save(path, nodes, initializers, w.shape, elem, {**props, **(metadata or {})})


def linear_model(path: str, w: np.ndarray) -> None:
    """``code = x @ w`` in float32: unlike a sigmoid, a finite input can give an
    infinite code."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["code"])]
    initializers = [numpy_helper.from_array(w.astype(np.float32), "w")]
    _save(path, nodes, initializers, w.shape, TensorProto.FLOAT, {})


def _save(
    path: str,
    nodes: list[onnx.NodeProto],
    initializers: list[onnx.TensorProto],
    shape: tuple[int, ...],
    elem: int,
    metadata: dict[str, str],
) -> None:
    """Checks and saves the graph `x [batch, shape[0]] -> code [batch, shape[1]]`."""
    graph = helper.make_graph(
        nodes,
        "encoder",
        [helper.make_tensor_value_info("x", elem, ["batch", shape[0]])],
        [helper.make_tensor_value_info("code", elem, ["batch", shape[1]])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # Loadable by every onnxruntime that supports opset 17.
    if metadata:
        helper.set_model_props(model, metadata)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def reference(x: np.ndarray, weights: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """`dense_sigmoid_model`'s codes in float64 numpy."""
    w, b = weights
    return sigmoid(np.asarray(x, dtype=np.float64) @ w + b)
