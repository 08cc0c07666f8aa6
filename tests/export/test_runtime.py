"""`export.OnnxEncoder`: numerics, input validation, chunking, threads, no TensorFlow.

These tests build small ONNX graphs with `onnx.helper` (no TensorFlow, no tf2onnx)
and compare the runtime with an independent float64 numpy reference.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from keras_cae.export.runtime import OnnxEncoder, _session_runner
from tests._onnx import CODE, FEATURES, dense_sigmoid_model, reference


@pytest.fixture(scope="module")
def image_model_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A rank-3 input (batch, 2, 3) flattened and reduced: ``code = sum(x, axis=2)``."""
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axes"], ["code"], keepdims=0)],
        "image_encoder",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2, 3])],
        [helper.make_tensor_value_info("code", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(np.array([2], dtype=np.int64), "axes")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = str(tmp_path_factory.mktemp("runtime") / "image.onnx")
    onnx.save(model, path)
    return path


def test_specs_and_metadata(model_path):
    encoder = OnnxEncoder(model_path)
    assert encoder.path == model_path
    assert (encoder.input_name, encoder.output_name) == ("x", "code")
    assert encoder.input_shape == (None, FEATURES)
    assert encoder.output_shape == (None, CODE)
    assert encoder.metadata == {"keras_cae.part": "encoder", "keras_cae.code_size": "3"}
    assert encoder.providers == ["CPUExecutionProvider"]
    assert "input_shape=(None, 6)" in repr(encoder)


@pytest.mark.parametrize("batch", [1, 7, 300])
def test_matches_float64reference(model_path, weights, batch):
    x = np.random.default_rng(batch).normal(size=(batch, FEATURES)).astype(np.float32)
    codes = OnnxEncoder(model_path).encode(x)
    assert codes.dtype == np.float32 and codes.shape == (batch, CODE)
    # float32 sigmoid of a 6-term dot product: a few ulps of values in (0, 1).
    np.testing.assert_allclose(codes, reference(x, weights), rtol=0, atol=1e-6)


def test_chunks_give_the_same_codes(model_path):
    x = np.random.default_rng(0).normal(size=(1000, FEATURES)).astype(np.float32)
    whole = OnnxEncoder(model_path, batch_size=4096).encode(x)
    for batch_size in (1, 7, 333, 1000):
        np.testing.assert_array_equal(
            OnnxEncoder(model_path, batch_size=batch_size).encode(x), whole
        )


@pytest.mark.parametrize(
    "x",
    [
        np.arange(2 * FEATURES, dtype=np.float64).reshape(2, FEATURES) / 10,
        np.arange(2 * FEATURES, dtype=np.int64).reshape(2, FEATURES),
        np.arange(2 * FEATURES, dtype=np.uint8).reshape(2, FEATURES),
        np.arange(2 * FEATURES, dtype=np.float16).reshape(2, FEATURES),
        [[0.5] * FEATURES, [1] * FEATURES],
        np.asfortranarray(np.ones((FEATURES, 2), dtype=np.float32) / 3).T,  # Not C-contiguous.
    ],
    ids=["float64", "int64", "uint8", "float16", "list", "transposed"],
)
def test_casts_numeric_inputs(model_path, weights, x):
    codes = OnnxEncoder(model_path).encode(x)
    assert codes.dtype == np.float32
    expected = reference(np.asarray(x).astype(np.float32), weights)
    np.testing.assert_allclose(codes, expected, rtol=0, atol=1e-6)


def test_float64_model_returns_float32(tmp_path, weights):
    path = str(tmp_path / "double.onnx")
    dense_sigmoid_model(path, *weights, elem=TensorProto.DOUBLE)
    encoder = OnnxEncoder(path)
    x = np.random.default_rng(1).normal(size=(5, FEATURES))
    codes = encoder.encode(x)
    assert codes.dtype == np.float32
    x_bad = x.copy()
    x_bad[4, 0] = np.nan
    with pytest.raises(ValueError, match="first bad row: 4"):
        encoder.encode(x_bad)
    # Both sides are float64 results rounded to float32: at most one ulp (6e-8 below 1) apart.
    np.testing.assert_allclose(codes, reference(x, weights).astype(np.float32), rtol=0, atol=6e-8)


def test_single_sample_returns_single_code(model_path):
    encoder = OnnxEncoder(model_path)
    x = np.random.default_rng(3).normal(size=(4, FEATURES)).astype(np.float32)
    single = encoder.encode(x[2])
    assert single.shape == (CODE,)
    np.testing.assert_array_equal(single, encoder.encode(x)[2])


def test_rank3_input_and_single_sample(image_model_path):
    encoder = OnnxEncoder(image_model_path)
    assert encoder.input_shape == (None, 2, 3) and encoder.output_shape == (None, 2)
    x = np.arange(24, dtype=np.float32).reshape(4, 2, 3)
    np.testing.assert_array_equal(encoder.encode(x), x.sum(axis=2))
    np.testing.assert_array_equal(encoder.encode(x[1]), x[1].sum(axis=1))
    with pytest.raises(ValueError, match=r"\(None, 2, 3\).*received an input of shape \(4, 3, 2\)"):
        encoder.encode(x.reshape(4, 3, 2))
    with pytest.raises(ValueError, match=r"received an input of shape \(4, 6\)"):
        encoder.encode(x.reshape(4, 6))


def test_samples_that_flatten_to_a_flat_input_are_flattened(model_path, weights):
    """`keras_cae.data.to_model_input`'s rule, as `keras-cae encode` and `fit` apply it:
    (n, 2, 3) samples hold the 6 values of a (None, 6) model."""
    encoder = OnnxEncoder(model_path)
    x = np.random.default_rng(5).normal(size=(4, 2, 3))
    expected = reference(x.reshape(4, FEATURES), weights)
    np.testing.assert_allclose(encoder.encode(x), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(encoder.encode(x), encoder.encode(x.reshape(4, FEATURES)))
    with pytest.raises(ValueError, match=r"holding 6 values \(flattened\); received an input "
                       r"of shape \(4, 7\)"):  # fmt: skip
        encoder.encode(np.zeros((4, 7)))


def test_empty_batch(model_path):
    codes = OnnxEncoder(model_path).encode(np.zeros((0, FEATURES)))
    assert codes.shape == (0, CODE) and codes.dtype == np.float32


@pytest.mark.parametrize(
    "shape", [(2, FEATURES + 1), (FEATURES - 1,), (2, 1, FEATURES + 1), (), (1, 2, 3, 4)]
)
def test_wrong_shape_names_both_shapes(model_path, shape):
    with pytest.raises(ValueError) as info:
        OnnxEncoder(model_path).encode(np.zeros(shape, dtype=np.float32))
    message = str(info.value)
    assert "(None, 6)" in message
    received = "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"
    assert f"received an input of shape {received}" in message


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rejected_unless_opted_out(model_path, bad):
    x = np.zeros((5, FEATURES), dtype=np.float32)
    x[3, 1] = bad
    with pytest.raises(
        ValueError, match=r"NaN or infinite values in 1 of 5 rows \(first bad row: 3\)"
    ):
        OnnxEncoder(model_path).encode(x)
    codes = OnnxEncoder(model_path, check_finite=False).encode(x)
    assert np.isfinite(codes[[0, 1, 2, 4]]).all()
    # sigmoid(±inf) is 1 or 0; sigmoid(NaN) is NaN: the value reached onnxruntime.
    assert np.isnan(codes[3]).any() == bool(np.isnan(bad))


@pytest.mark.parametrize("batch", [1, 7, 300, 20_000])
def test_a_non_finite_value_is_caught_at_any_position(model_path, batch):
    """The check is one elementwise `isfinite` mask (no more dot-product shortcut with
    SIMD tails to cover position by position): the first and last cell, the first and
    last cell of each batch chunk's edge rows, and a seeded sample of positions."""
    encoder = OnnxEncoder(model_path, batch_size=4096)
    x = np.random.default_rng(batch).normal(size=(batch, FEATURES)).astype(np.float32)
    size = x.size
    edges = [0, FEATURES - 1, size - FEATURES, size - 1]
    positions = sorted({*edges, *np.random.default_rng(0).integers(0, size, 40).tolist()})
    for position in positions:
        for bad in (np.nan, np.inf, -np.inf):
            y = x.copy()
            y.flat[position] = bad
            with pytest.raises(ValueError, match=rf"first bad row: {position // FEATURES}\)"):
                encoder.encode(y)
    assert encoder.encode(x).shape == (batch, CODE)


def test_non_finite_rows_are_counted_across_chunks(model_path):
    x = np.zeros((100, FEATURES), dtype=np.float32)
    x[93, 5], x[50, 0], x[51, 2] = np.inf, np.nan, -np.inf
    with pytest.raises(ValueError, match=r"in 3 of 100 rows \(first bad row: 50\)"):
        OnnxEncoder(model_path, batch_size=7).encode(x)


def test_large_finite_values_are_not_flagged(model_path):
    # float32 max in every cell: a float32 sum would overflow to inf, the check must not.
    x = np.full((3, FEATURES), np.finfo(np.float32).max, dtype=np.float32)
    assert OnnxEncoder(model_path).encode(x).shape == (3, CODE)


@pytest.mark.parametrize(
    "x",
    [
        np.array([["a"] * FEATURES]),
        np.array([[object()] * FEATURES], dtype=object),
        np.ones((2, FEATURES), dtype=bool),
        np.ones((2, FEATURES), dtype=np.complex64),
        [[1.0] * FEATURES, [1.0] * (FEATURES - 1)],
        "not an array",
        None,
    ],
    ids=["str", "object", "bool", "complex", "ragged", "string", "none"],
)
def test_non_numeric_rejected(model_path, x):
    with pytest.raises(ValueError, match="numeric"):
        OnnxEncoder(model_path).encode(x)


def test_many_threads_share_one_instance(model_path, weights):
    encoder = OnnxEncoder(model_path, batch_size=16)
    inputs = [np.random.default_rng(i).normal(size=(1 + 13 * i, FEATURES)) for i in range(16)]
    expected = [encoder.encode(x) for x in inputs]
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(inputs))

    def work(i: int) -> None:
        try:
            barrier.wait()
            for _ in range(20):
                results[i] = encoder.encode(inputs[i])
                np.testing.assert_array_equal(results[i], expected[i])
        except BaseException as error:  # Reported in the main thread.
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]
    for i, x in enumerate(inputs):
        np.testing.assert_allclose(results[i], reference(x, weights), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size=0"),
        ({"batch_size": 2.5}, "batch_size=2.5"),
        ({"batch_size": True}, "batch_size=True"),
        ({"intra_op_num_threads": -1}, "intra_op_num_threads=-1"),
        ({"check_finite": "yes"}, "check_finite='yes'"),
        (
            {"providers": ["NoSuchExecutionProvider"]},
            "Unrecognized providers=.*Available providers",
        ),
        ({"providers": []}, "Unrecognized providers=\\[\\]"),
    ],
)
def test_bad_constructor_arguments(model_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        OnnxEncoder(model_path, **kwargs)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        OnnxEncoder(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a protobuf")
    with pytest.raises(ValueError, match="cannot load .*junk.onnx"):
        OnnxEncoder(junk)


def test_rejects_models_that_are_not_encoders(tmp_path):
    two_inputs = helper.make_model(
        helper.make_graph(
            [helper.make_node("Add", ["a", "b"], ["c"])],
            "add",
            [
                helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 2]),
                helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n", 2]),
            ],
            [helper.make_tensor_value_info("c", TensorProto.FLOAT, ["n", 2])],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    two_inputs.ir_version = 8
    onnx.save(two_inputs, tmp_path / "two.onnx")
    with pytest.raises(ValueError, match="exactly one input"):
        OnnxEncoder(tmp_path / "two.onnx")
    int_input = helper.make_model(
        helper.make_graph(
            [helper.make_node("Identity", ["a"], ["c"])],
            "ident",
            [helper.make_tensor_value_info("a", TensorProto.INT64, ["n", 2])],
            [helper.make_tensor_value_info("c", TensorProto.INT64, ["n", 2])],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    int_input.ir_version = 8
    onnx.save(int_input, tmp_path / "int.onnx")
    with pytest.raises(ValueError, match=r"tensor\(int64\)"):
        OnnxEncoder(tmp_path / "int.onnx")


def test_imports_no_tensorflow(model_path):
    """The runtime and `keras-cae encode` in a fresh process: no TF, Keras or tf2onnx."""
    code = f"""
import sys, numpy as np
from keras_cae.export import OnnxEncoder
from keras_cae.export.runtime import OnnxEncoder as Same
assert OnnxEncoder is Same
codes = OnnxEncoder({model_path!r}).encode(np.zeros((2, {FEATURES})))
assert codes.shape == (2, {CODE})
import keras_cae, keras_cae.data, keras_cae.cli
keras_cae.cli._build_parser()
roots = {{"tensorflow", "keras", "tf2onnx", "onnx"}}
heavy = sorted(m for m in sys.modules if m.split(".")[0] in roots)
print("HEAVY", heavy)
"""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout, result.stdout


def test_private_onnxruntime_api_for_the_fast_path(model_path):
    """onnxruntime has no public name for the C++ session's `run`; the one function
    that reads it is `keras_cae.export.runtime._session_runner`. If this test fails after an
    onnxruntime upgrade, rerun benchmarks/inference.py and update that function."""
    where = (
        f"onnxruntime {ort.__version__} changed the private `InferenceSession._sess` that "
        "keras_cae.export.runtime._session_runner calls for speed; update that function:"
    )
    encoder = OnnxEncoder(model_path)
    native = getattr(encoder.session, "_sess", None)
    assert callable(getattr(native, "run", None)), f"{where} `_sess.run` is gone"
    assert encoder._run == native.run, f"{where} the CPU fast path is not in use"
    x = np.random.default_rng(5).normal(size=(9, FEATURES)).astype(np.float32)
    public = encoder.session.run(["code"], {"x": x})[0]
    np.testing.assert_array_equal(native.run(["code"], {"x": x}, None)[0], public, err_msg=where)
    np.testing.assert_array_equal(encoder.encode(x), public)


def test_public_run_is_used_without_the_native_session_or_off_cpu():
    class Session:
        def run(self, output_names, feed, run_options=None):  # pragma: no cover - not called
            return []

    session = Session()
    assert _session_runner(session, ["CPUExecutionProvider"]) == session.run
    session._sess = Session()
    assert _session_runner(session, ["CPUExecutionProvider"]) == session._sess.run
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert _session_runner(session, providers) == session.run  # Keeps EP fallback.


# ------------------------------------------------------------------------------------------
# The training input range recorded by `keras-cae export` (the `keras_cae.input_range`
# metadata): inputs far outside it are refused, never encoded into wrong codes.


def _with_metadata(source: str, target: str, props: dict[str, str]) -> str:
    model = onnx.load(source)
    helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, **props})
    onnx.save(model, target)
    return target


@pytest.fixture(scope="module")
def ranged_path(tmp_path_factory: pytest.TempPathFactory, model_path: str) -> str:
    """The dense model, trained (as recorded) on pixels / 255 in [0, 1]."""
    target = str(tmp_path_factory.mktemp("runtime") / "ranged.onnx")
    props = {"keras_cae.input_range": "[0.0, 1.0]", "keras_cae.input_scaling": "x / 255"}
    return _with_metadata(model_path, target, props)


def test_the_recorded_range_is_read(ranged_path, model_path):
    encoder = OnnxEncoder(ranged_path)
    assert encoder.input_range == (0.0, 1.0) and encoder.input_scaling == "x / 255"
    unrecorded = OnnxEncoder(model_path)  # An export from before the range was recorded.
    assert unrecorded.input_range is None and unrecorded.input_scaling is None
    raw = np.full((2, FEATURES), 255, np.uint8)
    assert unrecorded.encode(raw).shape == (2, CODE)  # Not checked: nothing to check against.


def test_raw_pixels_are_refused_with_the_fix(ranged_path, weights):
    encoder = OnnxEncoder(ranged_path)
    raw = np.random.default_rng(0).integers(0, 256, (5, FEATURES)).astype(np.uint8)
    raw[0, 0], raw[1, 1] = 0, 255
    with pytest.raises(ValueError) as info:
        encoder.encode(raw)
    message = str(info.value)
    assert "values from 0 to 255" in message
    assert "trained on, [0, 1] (accepted: -1 to 2)" in message
    assert "divide the inputs by 255, as `keras-cae train` did (x / 255)" in message
    assert "check_range=False" in message
    # The fix works, and the skip is deliberate: the raw values are encoded as asked.
    np.testing.assert_allclose(encoder.encode(raw / 255), reference(raw / 255, weights),
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    skipped = OnnxEncoder(ranged_path, check_range=False).encode(raw)
    np.testing.assert_allclose(skipped, reference(raw, weights), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch_size", [1024, 7])  # One run, and chunks.
def test_one_range_width_either_side_is_accepted(ranged_path, batch_size):
    encoder = OnnxEncoder(ranged_path, batch_size=batch_size)
    x = np.random.default_rng(1).uniform(-1, 2, (50, FEATURES)).astype(np.float32)
    x[10, 2], x[40, 3] = -1.0, 2.0  # The edges of [0 - 1, 1 + 1].
    assert encoder.encode(x).shape == (50, CODE)
    for row, bad in ((0, -1.01), (49, 2.01), (23, 3.0)):
        y = x.copy()
        y[row, 0] = bad
        with pytest.raises(ValueError, match="outside the range this model was trained on"):
            encoder.encode(y)
        with pytest.raises(ValueError, match="trained on"):
            encoder.encode(y[row])  # One sample.


def test_non_finite_values_keep_their_own_check(ranged_path):
    x = np.zeros((4, FEATURES), np.float32)
    x[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinite values in 1 of 4 rows"):
        OnnxEncoder(ranged_path).encode(x)
    x[1, 1] = np.inf  # Passed through on request; the finite values are in range.
    assert OnnxEncoder(ranged_path, check_finite=False).encode(x).shape == (4, CODE)
    x[0, 0] = 255.0
    with pytest.raises(ValueError, match="values from 0 to 255"):
        OnnxEncoder(ranged_path, check_finite=False).encode(x)


@pytest.mark.parametrize("text", ["[1, 0]", "[0]", "nonsense", "[0, Infinity]", '{"a": 1}'])
def test_a_malformed_range_is_refused_at_load(model_path, tmp_path, text):
    path = _with_metadata(model_path, str(tmp_path / "bad.onnx"), {"keras_cae.input_range": text})
    with pytest.raises(ValueError, match="keras_cae.input_range"):
        OnnxEncoder(path)


def test_check_input_range_is_one_public_rule():
    from keras_cae.export.runtime import accepted_range, check_input_range

    assert accepted_range((0.0, 1.0)) == (-1.0, 2.0)
    assert accepted_range((3.0, 3.0)) == (0.0, 6.0)  # One value: widened by max(1, |3|).
    check_input_range(np.array([255.0]), None)  # Nothing recorded: nothing checked.
    check_input_range(np.zeros((0, 3)), (0.0, 1.0))
    with pytest.raises(ValueError, match=r"from 0 to 16.*scale of the training data.*--flag"):
        check_input_range(np.array([[0, 16]]), (0.0, 1.0), how_to_skip="pass --flag")


# ------------------------------------------------------------------------------------------
# A Keras or TensorFlow model where an ONNX file is expected.


@pytest.mark.parametrize("kind", ["keras", "hdf5", "saved_model", "run_directory"])
def test_a_keras_model_is_named_with_the_export_command(tmp_path, kind):
    import zipfile

    path = tmp_path / "model.keras"
    if kind == "keras":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("metadata.json", "{}")
            archive.writestr("config.json", "{}")
    elif kind == "hdf5":
        path = tmp_path / "model.h5"
        path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    else:
        path = tmp_path / "dir"
        path.mkdir()
        (path / ("saved_model.pb" if kind == "saved_model" else "model.keras")).write_bytes(b"")
    with pytest.raises(ValueError, match="not an ONNX file") as info:
        OnnxEncoder(path)
    assert "keras-cae export" in str(info.value) and "\n" not in str(info.value)
