"""`export.export_encoder`: what it writes.

Parity is checked by one harness, parametrised over model variants: every exported
artifact (ONNX in onnxruntime, SavedModel in TensorFlow) is run at batch sizes 1, 7
and 300 and compared with the Keras model and, for Dense models, with an independent
float64 numpy forward pass. The graphs' names, opset and dynamic batch axis, the
metadata and manifest, and the training input range are checked on the files written.
What the export refuses, and how it fails without leaving anything behind, is in
`test_export_failures.py`; the `keras-cae export` and `encode` commands are tested in
`tests/cli/test_export_encode.py`.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import onnx
import pytest
import tensorflow as tf

import keras_cae
from keras_cae import export
from keras_cae.export import OnnxEncoder, _export
from keras_cae.export import saved_model as saved_model_module
from tests._variants import FEATURES, VARIANTS_BY_NAME, plain_functional_encoder

BATCH_SIZES = (1, 7, 300)

_NP_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0.0),
    "linear": lambda z: z,
}


def _dense_chain_float64(layers: list[Any], x: np.ndarray) -> np.ndarray:
    """A float64 numpy forward pass through Keras Dense layers (no TensorFlow)."""
    h = np.asarray(x, dtype=np.float64)
    for layer in [layer for layer in layers if isinstance(layer, keras.layers.Dense)]:
        kernel, bias = (np.asarray(w, dtype=np.float64) for w in layer.get_weights())
        h = _NP_ACTIVATIONS[layer.get_config()["activation"]](h @ kernel + bias)
    return h


def _tied_decoder_float64(model: Any, codes: np.ndarray) -> np.ndarray:
    """The tied decoder in float64: transposed encoder kernels, the decoder's own biases."""
    dense = [layer for layer in model.encoder.layers if isinstance(layer, keras.layers.Dense)]
    h = np.asarray(codes, dtype=np.float64)
    biases = [np.asarray(b, dtype=np.float64) for b in model.decoder.get_weights()]
    for layer, bias, name in zip(
        reversed(dense), biases, model.decoder.activation_names, strict=True
    ):
        h = _NP_ACTIVATIONS[name](h @ np.asarray(layer.kernel, dtype=np.float64).T + bias)
    return h


@dataclass
class Variant:
    name: str
    build: Callable[[], Any]
    parts: tuple[str, ...] = ("encoder",)
    # part -> float64 reference computed from the weights, or None.
    reference: Callable[[Any, str, np.ndarray], np.ndarray | None] = lambda m, p, x: None


def _dense_reference(model: Any, part: str, x: np.ndarray) -> np.ndarray | None:
    encoder = model.encoder if hasattr(model, "encoder") else model
    if part == "encoder":
        return _dense_chain_float64(encoder.layers, x)
    return None


def _tied_reference(model: Any, part: str, x: np.ndarray) -> np.ndarray:
    if part == "encoder":
        return _dense_chain_float64(model.encoder.layers, x)
    if part == "decoder":
        return _tied_decoder_float64(model, x)
    return _tied_decoder_float64(model, _dense_chain_float64(model.encoder.layers, x))


# The model variants come from the one list (`tests/_variants.py`), untrained; the
# extras are export-only cases: a deeper Dense chain and a plain (non-CAE) model.
VARIANTS = [
    Variant("dense-1", VARIANTS_BY_NAME["dense"].build, reference=_dense_reference),
    Variant("sequential", VARIANTS_BY_NAME["sequential"].build, reference=_dense_reference),
    Variant(
        "dense-3",
        lambda: keras_cae.dense_autoencoder(FEATURES, [10, 8, 4], activation="tanh", seed=1),
        reference=_dense_reference,
    ),
    Variant(
        "tied",
        VARIANTS_BY_NAME["tied"].build,
        parts=("encoder", "decoder", "autoencoder"),
        reference=_tied_reference,
    ),
    Variant("conv", VARIANTS_BY_NAME["conv"].build, parts=("encoder", "autoencoder")),
    Variant("functional", plain_functional_encoder, reference=_dense_reference),
]


@pytest.fixture(scope="module")
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Exports each variant once (ONNX + SavedModel) for the module's tests."""
    variant: Variant = request.param
    if variant.name in _EXPORTED:  # Tests parametrised separately share the export.
        return _EXPORTED[variant.name]
    model = variant.build()
    out = tmp_path_factory.mktemp(variant.name) / "exported"
    result = export.export_encoder(
        model,
        out,
        parts=variant.parts,
        metadata={"training_data": "unit-test", "input_scaling": "none"},
    )
    _EXPORTED[variant.name] = variant, model, result
    return _EXPORTED[variant.name]


_EXPORTED: dict[str, tuple[Variant, Any, Any]] = {}


def _inputs(model: Any, part: str, batch: int) -> np.ndarray:
    """Random inputs in [0, 1); for a decoder, the codes of such inputs."""
    rng = np.random.default_rng(batch)
    encoder = model.encoder if hasattr(model, "encoder") else model
    x = rng.random((batch, *encoder.inputs[0].shape[1:])).astype(np.float32)
    return encoder(x).numpy() if part == "decoder" else x


def _keras_part(model: Any, part: str) -> Any:
    return {
        "encoder": getattr(model, "encoder", model),
        "decoder": getattr(model, "decoder", None),
    }.get(part, model)


# --------------------------------------------------------------------------------------
# The parity harness.


@pytest.mark.parametrize("exported", VARIANTS, ids=[v.name for v in VARIANTS], indirect=True)
def test_parity_onnx_and_saved_model(exported):
    variant, model, result = exported
    for part in variant.parts:
        layer = _keras_part(model, part)
        runtime = OnnxEncoder(result.path("onnx", part))
        _, signature = saved_model_module.load_signature(result.path("saved_model", part))
        in_name, out_name = _export._IO_NAMES[part]
        for batch in BATCH_SIZES:
            x = _inputs(model, part, batch)
            expected = keras.ops.convert_to_numpy(layer(x, training=False))
            got_onnx = runtime.encode(x)
            got_sm = signature(**{in_name: tf.constant(x)})[out_name].numpy()
            assert got_onnx.shape == got_sm.shape == expected.shape
            # Same float32 graph, kernels that may sum in another order: a few ulps.
            np.testing.assert_allclose(
                got_onnx, expected, rtol=1e-5, atol=1e-6, err_msg=f"{part} onnx"
            )
            np.testing.assert_allclose(
                got_sm, expected, rtol=1e-5, atol=1e-6, err_msg=f"{part} SavedModel"
            )
            reference = variant.reference(model, part, x)
            if reference is not None:
                # float32 against float64 through a few layers of ≤ 12-term dot products.
                np.testing.assert_allclose(
                    got_onnx, reference, rtol=0, atol=2e-6, err_msg=f"{part} f64"
                )
        for artifact in result.artifacts:
            if artifact.part == part:
                assert set(artifact.max_abs_diff) == {1, _export.DEFAULT_PROBE_SIZE}
                assert 0 <= max(artifact.max_abs_diff.values()) <= artifact.bound


@pytest.mark.parametrize("exported", [VARIANTS[3]], ids=["tied"], indirect=True)
def test_graph_names_dynamic_batch_and_metadata(exported):
    _, model, result = exported
    for part, (in_name, out_name) in _export._IO_NAMES.items():
        proto = onnx.load(result.path("onnx", part))
        onnx.checker.check_model(proto, full_check=True)
        assert [i.name for i in proto.graph.input] == [in_name]
        assert [o.name for o in proto.graph.output] == [out_name]
        for value in (proto.graph.input[0], proto.graph.output[0]):
            dims = value.type.tensor_type.shape.dim
            assert dims[0].dim_param == "batch" and not dims[0].HasField("dim_value")
            assert all(d.HasField("dim_value") for d in dims[1:])
        assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {17}

    metadata = OnnxEncoder(result.path("onnx")).metadata
    assert metadata["keras_cae.package_version"] == keras_cae.__version__
    assert metadata["keras_cae.part"] == "encoder"
    assert metadata["keras_cae.input_shape"] == f"[null, {FEATURES}]"
    assert metadata["keras_cae.output_shape"] == "[null, 4]"
    assert metadata["keras_cae.code_size"] == "4"
    assert float(metadata["keras_cae.contractive_weight"]) == model.contractive_weight
    assert metadata["keras_cae.penalty_method"] == model.penalty_method
    assert metadata["keras_cae.training_data"] == "unit-test"
    assert metadata["keras_cae.input_scaling"] == "none"
    assert metadata["keras_cae.opset"] == "17"
    exported_at = datetime.datetime.fromisoformat(metadata["keras_cae.export_time"])
    age = datetime.datetime.now(datetime.timezone.utc) - exported_at
    assert datetime.timedelta(0) <= age < datetime.timedelta(hours=1)
    assert OnnxEncoder(result.path("onnx", "decoder")).metadata["keras_cae.part"] == "decoder"

    with open(result.manifest) as stream:
        manifest = json.load(stream)
    assert manifest["metadata"]["training_data"] == "unit-test"
    assert len(manifest["artifacts"]) == 6
    for record in manifest["artifacts"]:
        assert os.path.exists(os.path.join(result.out_dir, record["path"]))
        assert max(record["max_abs_diff"].values()) <= record["bound"]
    assert sorted(os.listdir(result.out_dir)) == sorted(
        ["manifest.json"]
        + [f"{p}.onnx" for p in _export.PARTS]
        + [f"{p}_saved_model" for p in _export.PARTS]
    )
    assert "max|Δ| @batch 1" in result.summary()


@pytest.mark.parametrize("exported", [VARIANTS[0]], ids=["dense-1"], indirect=True)
def test_saved_model_signature_and_tfsm_layer(exported):
    _, model, result = exported
    path = result.path("saved_model")
    loaded = tf.saved_model.load(path)
    signature = loaded.signatures["serving_default"]
    _, inputs = signature.structured_input_signature
    assert list(inputs) == ["x"] and inputs["x"].shape.as_list() == [None, FEATURES]
    assert inputs["x"].dtype == tf.float32
    assert list(signature.structured_outputs) == ["code"]
    layer = keras.layers.TFSMLayer(path, call_endpoint="serving_default")
    x = _inputs(model, "encoder", 7)
    out = layer(x)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(out["code"]), model.encoder(x).numpy(), rtol=1e-5, atol=1e-6
    )


# --------------------------------------------------------------------------------------
# Other models and options, and exporting again after training.


class _SubclassedEncoder(keras.Model):  # A leading underscore: see _serving_function.
    def __init__(self) -> None:
        super().__init__()
        self.dense = keras.layers.Dense(3, "sigmoid")

    def call(self, x: Any) -> Any:
        return self.dense(x)


def test_subclassed_model_uses_the_shape_it_was_called_with(tmp_path):
    model = _SubclassedEncoder()
    x = np.random.default_rng(0).random((5, 4)).astype(np.float32)
    model(x)
    result = export.export_encoder(model, tmp_path / "out", formats="onnx")
    runtime = OnnxEncoder(result.path("onnx"))
    assert runtime.input_shape == (None, 4)
    np.testing.assert_allclose(
        runtime.encode(x), _dense_chain_float64([model.dense], x), rtol=0, atol=1e-6
    )


def test_chosen_opset_and_real_probe(tmp_path, small_model):
    model = small_model
    probe = np.random.default_rng(9).random((50, FEATURES)).astype(np.float32)
    result = export.export_encoder(model, tmp_path / "out", formats=["onnx"], opset=13, probe=probe)
    proto = onnx.load(result.path("onnx"))
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {13}
    assert set(result.artifacts[0].max_abs_diff) == {1, 50}


def test_model_still_trains_saves_and_reexports_after_an_export(tmp_path):
    model = keras_cae.dense_autoencoder(FEATURES, 3, tied_weights=True, seed=6)
    x = np.random.default_rng(6).random((64, FEATURES)).astype(np.float32)
    export.export_encoder(model, tmp_path / "out", formats="onnx", parts=("encoder", "decoder"))
    before = OnnxEncoder(tmp_path / "out" / "encoder.onnx").encode(x)
    model.fit(x, epochs=2, batch_size=16, verbose=0)
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(reloaded.encoder(x).numpy(), model.encoder(x).numpy())
    export.export_encoder(model, tmp_path / "out", formats="onnx", overwrite=True)
    after = OnnxEncoder(tmp_path / "out" / "encoder.onnx").encode(x)
    assert np.abs(after - before).max() > 1e-4  # The new weights were exported...
    np.testing.assert_allclose(after, model.encoder(x).numpy(), rtol=1e-5, atol=1e-6)  # ...exactly.


# --------------------------------------------------------------------------------------
# The training input range: recorded by `fit`, exported, checked by the runtime.


def test_export_records_the_training_range_for_the_inputs_only(tmp_path):
    model = keras_cae.dense_autoencoder(FEATURES, 3, tied_weights=True, seed=2)
    x = np.random.default_rng(2).random((64, FEATURES)).astype(np.float32)
    model.fit(x, epochs=1, batch_size=16, verbose=0)
    result = export.export_encoder(model, tmp_path / "out", formats="onnx", parts=_export.PARTS)
    recorded = json.dumps([float(x.min()), float(x.max())])
    encoder = OnnxEncoder(result.path("onnx"))
    assert encoder.metadata["keras_cae.input_range"] == recorded
    assert encoder.input_range == model.input_range == (float(x.min()), float(x.max()))
    autoencoder = OnnxEncoder(result.path("onnx", "autoencoder"))
    assert autoencoder.input_range == encoder.input_range
    # The decoder's input is a code, not x: no range of x on it.
    assert OnnxEncoder(result.path("onnx", "decoder")).input_range is None
    with open(result.manifest) as stream:
        manifest = json.load(stream)
    assert manifest["metadata"]["input_range"] == recorded
    assert manifest["probe"] == result.probe
    assert (
        result.probe.startswith("32 seeded uniform random rows in [") and "training" in result.probe
    )
    np.testing.assert_allclose(encoder.encode(x), model.encoder(x).numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="outside the range this model was trained on"):
        encoder.encode(np.round(x * 255))
    # An untrained model has no range: nothing to record, nothing checked.
    untrained = keras_cae.dense_autoencoder(FEATURES, 3, seed=2)
    result = export.export_encoder(untrained, tmp_path / "untrained", formats="onnx")
    assert OnnxEncoder(result.path("onnx")).input_range is None
