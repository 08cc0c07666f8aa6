"""`export.export_encoder` and the `keras-cae export` / `keras-cae encode` commands.

Parity is checked by one harness, parametrised over model variants: every exported
artifact (ONNX in onnxruntime, SavedModel in TensorFlow) is run at batch sizes 1, 7
and 300 and compared with the Keras model and, for Dense models, with an independent
float64 numpy forward pass.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

NP_NAMESPACE_BEFORE = {name: id(value) for name, value in vars(np).items()}

import keras  # noqa: E402
import onnx  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_cae  # noqa: E402
from keras_cae import export  # noqa: E402
from keras_cae.cli import main  # noqa: E402
from keras_cae.export import OnnxEncoder, _export  # noqa: E402
from keras_cae.export import saved_model as saved_model_module  # noqa: E402
from tests import ROOT  # noqa: E402
from tests._variants import FEATURES, VARIANTS_BY_NAME  # noqa: E402

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


def _functional_model() -> Any:
    inputs = keras.Input((FEATURES,))
    h = keras.layers.Dense(9, "relu", kernel_initializer=keras.initializers.GlorotUniform(3))(
        inputs
    )
    outputs = keras.layers.Dense(5, "tanh", kernel_initializer=keras.initializers.GlorotUniform(4))(
        h
    )
    return keras.Model(inputs, outputs, name="plain_encoder")


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
    Variant("functional", _functional_model, reference=_dense_reference),
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
def test_saved_model_signature_and_tfsm_layer(exported, small_model):
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
# Atomicity, refusal and failures.


@pytest.fixture(scope="module")
def small_model() -> Any:
    return keras_cae.dense_autoencoder(FEATURES, 3, seed=5)


def _listing(path: os.PathLike[str]) -> list[str]:
    return sorted(os.listdir(path))


def test_numpy_namespace_unchanged_by_export(tmp_path, small_model):
    export.export_encoder(small_model, tmp_path / "out", formats="onnx")
    after = {name: id(value) for name, value in vars(np).items()}
    # TensorFlow imports numpy submodules (attributes appear); nothing may be replaced,
    # and no removed numpy-1 alias (np.object, np.bool, np.cast, ...) may be put back.
    changed = {name for name in NP_NAMESPACE_BEFORE if after.get(name) != NP_NAMESPACE_BEFORE[name]}
    assert not changed
    added = set(after) - set(NP_NAMESPACE_BEFORE)
    assert not added & {"object", "bool", "int", "float", "str", "cast", "product", "NaN", "float_"}


def test_refuses_existing_directory_unless_overwrite(tmp_path, small_model):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(ValueError, match="exists and is not empty.*overwrite"):
        export.export_encoder(small_model, out, formats="onnx")
    assert _listing(out) == ["keep.txt"]
    result = export.export_encoder(small_model, out, formats="onnx", overwrite=True)
    assert _listing(out) == ["encoder.onnx", "manifest.json"]
    assert result.paths == {"encoder.onnx": str(out / "encoder.onnx")}
    assert _listing(tmp_path) == ["out"]


def test_failure_mid_export_leaves_nothing_behind(tmp_path, monkeypatch, small_model):
    def broken_save(layer: Any, function: Any, signature: Any, path: str) -> None:
        os.makedirs(path)
        with open(os.path.join(path, "half-written.pb"), "wb") as stream:
            stream.write(b"\0" * 100)
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(saved_model_module, "to_saved_model", broken_save)
    with pytest.raises(
        export.ExportError, match="step 'save the encoder as a SavedModel'.*disk full"
    ):
        export.export_encoder(small_model, tmp_path / "new")
    assert _listing(tmp_path) == []  # Not the target, not the staged ONNX file.

    old = tmp_path / "old"
    old.mkdir()
    (old / "encoder.onnx").write_text("previous export")
    with pytest.raises(export.ExportError, match="SavedModel"):
        export.export_encoder(small_model, old, overwrite=True)
    assert _listing(tmp_path) == ["old"]
    assert (old / "encoder.onnx").read_text() == "previous export"


@pytest.mark.slow
def test_export_killed_late_is_cleaned_up_by_the_next_export(tmp_path, small_model):
    """SIGKILL cannot be caught: the next export into the same parent cleans up."""
    script = (
        "import sys, keras_cae, export; "
        "export.export_encoder(keras_cae.dense_autoencoder(12, 3, seed=5), sys.argv[1])"
    )
    killed = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "out")])
    try:
        deadline = time.monotonic() + 240
        staged = []
        while not staged:  # Late in the run: the ONNX file is staged, the SavedModel not yet.
            assert killed.poll() is None and time.monotonic() < deadline, _listing(tmp_path)
            staged = [
                name for name in os.listdir(tmp_path) if (tmp_path / name / "encoder.onnx").exists()
            ]
            time.sleep(0.01)
        killed.kill()
    finally:
        killed.kill()
        killed.wait()
    assert staged[0].startswith(f".out.tmp-{killed.pid}-")
    # Its lock file too: the kernel released the lock, nobody removed the file.
    assert _listing(tmp_path) == sorted([*staged, ".out.keras-cae-lock"])
    result = export.export_encoder(small_model, tmp_path / "out", formats="onnx")
    assert _listing(tmp_path) == ["out"]
    assert _listing(tmp_path / "out") == ["encoder.onnx", "manifest.json"]
    assert result.max_abs_diff < 1e-6


def test_parity_failure_raises_and_writes_nothing(tmp_path, monkeypatch, small_model):
    original = _export._serving_function

    def off_by_a_little(layer: Any, output_name: str) -> Any:
        serve = original(layer, output_name)
        return lambda x: {k: v + 1e-3 for k, v in serve(x).items()}  # A converter bug.

    monkeypatch.setattr(_export, "_serving_function", off_by_a_little)
    with pytest.raises(
        export.ParityError, match=r"onnx encoder differs from Keras by max \|Δ\| = 0\.001"
    ):
        export.export_encoder(small_model, tmp_path / "out")
    assert _listing(tmp_path) == []
    # The same export passes with a tolerance above the injected error.
    result = export.export_encoder(small_model, tmp_path / "out", formats="onnx", tolerance=2e-3)
    assert 0.9e-3 < result.max_abs_diff < 1.1e-3


def test_never_built_model_is_refused(tmp_path):
    encoder = keras.Sequential([keras.layers.Dense(3)])
    decoder = keras.Sequential([keras.layers.Dense(FEATURES)])
    model = keras_cae.ContractiveAutoencoder(encoder, decoder)
    with pytest.raises(ValueError, match="never built or called"):
        export.export_encoder(model, tmp_path / "out")
    with pytest.raises(ValueError, match="never built or called"):
        export.export_encoder(keras.Sequential([keras.layers.Dense(3)]), tmp_path / "out")
    assert _listing(tmp_path) == []


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


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"formats": ("onnx", "tflite")},
            r"Unrecognized format='tflite'. Supported formats are: "
            r"\['onnx', 'saved_model', 'triton'\]",
        ),
        ({"formats": ()}, "at least one"),
        ({"parts": ("encoder", "head")}, "Unrecognized part='head'"),
        ({"opset": 12}, r"Unsupported opset=12. Supported opsets are: \[13, 14, 15, 16, 17, 18\]"),
        ({"opset": "17"}, "Unsupported opset='17'"),
        ({"tolerance": 0}, "tolerance=0"),
        ({"metadata": {"opset": "3"}}, "filled in by the export itself"),
        ({"metadata": {"training_data": ["a"]}}, r"metadata\['training_data'\]"),
        ({"probe": np.zeros((1, FEATURES))}, r"n >= 2. Received: probe of shape \(1, 12\)"),
        ({"probe": np.zeros((4, FEATURES + 1))}, "probe of shape"),
        ({"overwrite": "yes"}, "overwrite='yes'"),
    ],
)
def test_bad_arguments_are_refused_before_writing(tmp_path, kwargs, match, small_model):
    with pytest.raises(ValueError, match=match):
        export.export_encoder(small_model, tmp_path / "out", **kwargs)
    assert _listing(tmp_path) == []


def test_decoder_of_a_plain_model_is_refused(tmp_path):
    with pytest.raises(ValueError, match="needs a ContractiveAutoencoder"):
        export.export_encoder(_functional_model(), tmp_path / "out", parts=("decoder",))
    with pytest.raises(ValueError, match="should be a ContractiveAutoencoder or a Keras model"):
        export.export_encoder(object(), tmp_path / "out")


def test_chosen_opset_and_real_probe(tmp_path, small_model):
    model = small_model
    probe = np.random.default_rng(9).random((50, FEATURES)).astype(np.float32)
    result = export.export_encoder(model, tmp_path / "out", formats=["onnx"], opset=13, probe=probe)
    proto = onnx.load(result.path("onnx"))
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {13}
    assert set(result.artifacts[0].max_abs_diff) == {1, 50}


# --------------------------------------------------------------------------------------
# CLI.


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err, err
    return err


@pytest.mark.slow
def test_cli_train_export_encode_round_trip(tmp_path, capsys):
    run, out = tmp_path / "run", tmp_path / "exported"
    assert (
        main(["train", "--out", str(run), "--epochs", "1", "--hidden-units", "8", "--quiet"]) == 0
    )
    capsys.readouterr()
    assert main(["export", str(run / "model.keras"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (
        "encoder  onnx" in printed
        and "encoder  saved_model" in printed
        and "max|Δ| @batch 64" in printed
    )
    runtime = OnnxEncoder(out / "encoder.onnx")
    assert runtime.metadata["keras_cae.training_data"] == "sklearn-digits"
    assert runtime.metadata["keras_cae.input_scaling"] == "x / 16"

    from keras_cae.data import load_digits

    x = load_digits().x
    np.save(tmp_path / "x.npy", x)
    codes_path = tmp_path / "codes.npy"
    # In a fresh process, to check that `keras-cae encode` imports no TensorFlow.
    script = (
        "import sys; from keras_cae.cli import main; "
        f"rc = main(['encode', {str(out / 'encoder.onnx')!r}, {str(tmp_path / 'x.npy')!r}, "
        f"'--out', {str(codes_path)!r}]); "
        "assert not [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')]; "
        "sys.exit(rc)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "wrote codes of shape (1797, 8)" in proc.stdout
    codes = np.load(codes_path)
    model = keras.models.load_model(run / "model.keras")
    np.testing.assert_allclose(codes, model.encoder(x).numpy(), rtol=1e-5, atol=1e-6)

    # Refusals: one line on stderr, exit code 2, nothing changed.
    assert (
        main(
            ["encode", str(out / "encoder.onnx"), str(tmp_path / "x.npy"), "--out", str(codes_path)]
        )
        == 2
    )
    assert "exists; choose another file or pass --overwrite" in _one_line_error(capsys)
    assert main(["export", str(run / "model.keras"), "--out", str(out)]) == 2
    assert "exists and is not empty" in _one_line_error(capsys)
    np.savetxt(tmp_path / "narrow.csv", x[:, :10], delimiter=",")
    narrow = [
        "encode",
        str(out / "encoder.onnx"),
        str(tmp_path / "narrow.csv"),
        "--out",
        str(tmp_path / "n.npy"),
    ]
    assert main(narrow) == 2
    error = _one_line_error(capsys)
    assert "`INPUT` should have samples of shape (64)" in error and "(1797, 10)" in error
    assert not (tmp_path / "n.npy").exists()
    assert (
        main([*narrow[:2], str(tmp_path / "x.npy"), "--out", str(codes_path), "--overwrite"]) == 0
    )


def test_cli_export_and_encode_errors(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing.keras"), "--out", str(tmp_path / "o")]) == 2
    assert "model file not found" in _one_line_error(capsys)
    assert (
        main(["export", str(tmp_path / "m.keras"), "--out", str(tmp_path / "o"), "--opset", "9"])
        == 2
    )
    assert "--opset" in _one_line_error(capsys)
    (tmp_path / "m.keras").write_text("not a zip")
    assert main(["export", str(tmp_path / "m.keras"), "--out", str(tmp_path / "o")]) == 2
    assert "is not a Keras archive" in _one_line_error(capsys)
    assert (
        main(["encode", str(tmp_path / "missing.onnx"), str(tmp_path / "x.npy"), "--out", "c.npy"])
        == 2
    )
    assert "not found" in _one_line_error(capsys)
    assert main(["encode", "e.onnx", "x.npy", "--out", str(tmp_path / "codes.txt")]) == 2
    assert "should be a .npy file" in _one_line_error(capsys)
    assert not os.path.exists(tmp_path / "o")


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


def test_tf2onnx_older_than_1_17_is_refused_with_the_fix(monkeypatch):
    """tf2onnx 1.16 calls `np.cast` and `np.product`, which numpy 2 removed."""
    from keras_cae.export import onnx as onnx_module

    old = type(sys)("tf2onnx")
    old.__version__ = "1.16.1"
    monkeypatch.setitem(sys.modules, "tf2onnx", old)
    with pytest.raises(
        ImportError, match=r"tf2onnx 1.16.1 is installed: `pip install -U 'tf2onnx>=1.17'`"
    ):
        onnx_module._import_tf2onnx()


def test_diverged_model_is_refused(tmp_path):
    model = keras_cae.dense_autoencoder(FEATURES, 3, seed=7)
    kernel = model.encoder.layers[0].kernel
    kernel.assign(np.full(kernel.shape, np.nan, dtype=np.float32))
    with pytest.raises(export.ExportError, match="run the Keras encoder.*NaN or infinite"):
        export.export_encoder(model, tmp_path / "out")
    assert _listing(tmp_path) == []


@pytest.mark.slow
def test_export_and_encode_example(tmp_path, capsys):
    import importlib.util

    path = os.path.join(ROOT, "examples", "export_and_encode.py")
    spec = importlib.util.spec_from_file_location("export_and_encode", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    diff = module.main(["--epochs", "1", "--out", str(tmp_path / "exported")])
    assert 0 <= diff < 1e-5
    assert "encoder  onnx" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path / "exported")) == [
        "encoder.onnx",
        "encoder_saved_model",
        "manifest.json",
    ]


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


def _mnist_layout(path: os.PathLike[str], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A tiny file in Keras's mnist.npz layout: uint8 4×4 images, labels 0 and 1."""
    arrays = {
        "x_train": rng.integers(0, 256, (80, 4, 4)).astype(np.uint8),
        "y_train": np.arange(80) % 2,
        "x_test": rng.integers(0, 256, (20, 4, 4)).astype(np.uint8),
        "y_test": np.arange(20) % 2,
    }
    arrays["x_test"][0, 0, 0], arrays["x_test"][1, 0, 0] = 0, 255
    np.savez(path, **arrays)
    return arrays


@pytest.mark.slow
def test_cli_raw_pixels_are_refused_in_one_line_scaled_ones_encoded(tmp_path, capsys):
    """The user path of issue 19: train on an mnist.npz (scaled /255 by `train`), export,
    then encode the raw uint8 test images (refused, naming the fix) and the scaled ones."""
    arrays = _mnist_layout(tmp_path / "digits.npz", np.random.default_rng(4))
    run, out = tmp_path / "run", tmp_path / "exported"
    train = ["train", "--data", str(tmp_path / "digits.npz"), "--out", str(run)]
    assert main([*train, "--epochs", "1", "--hidden-units", "3", "--quiet"]) == 0
    held_out = np.load(run / "held_out.npy")
    assert held_out.ndim == 2 and held_out.shape[1] == 16 and 2 <= len(held_out) <= 64
    capsys.readouterr()
    assert main(["export", str(run), "--out", str(out), "--format", "onnx"]) == 0
    printed = capsys.readouterr().out
    source = f"the first {len(held_out)} held-out rows of digits.npz (held_out.npy"
    assert f"parity checked on {source}" in printed
    with open(out / "manifest.json") as stream:
        manifest = json.load(stream)
    assert manifest["probe"].startswith(source) and manifest["probe_rows"] == len(held_out)
    assert manifest["metadata"]["input_scaling"] == "x / 255"
    model = keras.models.load_model(run / "model.keras")
    assert json.loads(manifest["metadata"]["input_range"]) == list(model.input_range)
    low, high = model.input_range
    assert 0 <= low < 0.05 and 0.95 < high <= 1

    raw, scaled = tmp_path / "raw.npy", tmp_path / "scaled.npy"
    np.save(raw, arrays["x_test"])  # uint8 0..255, (20, 4, 4)
    np.save(scaled, arrays["x_test"] / np.float32(255))
    encoder = str(out / "encoder.onnx")
    assert main(["encode", encoder, str(raw), "--out", str(tmp_path / "c.npy")]) == 2
    error = _one_line_error(capsys)
    assert "raw.npy: The input holds values from 0 to 255" in error
    assert f"trained on, [{low:.6g}, {high:.6g}]" in error
    assert "divide the inputs by 255, as `keras-cae train` did (x / 255)" in error
    assert error.endswith("To encode it anyway, pass --no-range-check.")
    assert not (tmp_path / "c.npy").exists()
    with pytest.raises(ValueError, match="divide the inputs by 255.*check_range=False"):
        OnnxEncoder(encoder).encode(arrays["x_test"])

    flat = arrays["x_test"].reshape(20, 16) / np.float32(255)
    assert main(["encode", encoder, str(scaled), "--out", str(tmp_path / "c.npy")]) == 0
    codes = np.load(tmp_path / "c.npy")
    np.testing.assert_allclose(codes, model.encoder(flat).numpy(), rtol=1e-5, atol=1e-6)
    # Skipping the check is a deliberate choice: the raw values are encoded as given.
    skip = ["--out", str(tmp_path / "r.npy"), "--no-range-check"]
    assert main(["encode", encoder, str(raw), *skip]) == 0
    np.testing.assert_allclose(
        np.load(tmp_path / "r.npy"), model.encoder(flat * 255).numpy(), rtol=1e-5, atol=1e-6
    )

    shards = tmp_path / "shards"
    shards.mkdir()
    np.save(shards / "a.npy", arrays["x_test"][:10] / np.float32(255))
    np.save(shards / "b.npy", arrays["x_test"][10:])  # Raw.
    assert main(["encode", encoder, str(shards), "--out", str(tmp_path / "codes")]) == 2
    error = _one_line_error(capsys)
    assert "b.npy: The input holds values from" in error and "--no-range-check" in error

    # A Keras archive where the ONNX file goes: named, with the export command.
    for command in (["encode", str(run / "model.keras"), str(scaled), "--out", "x.npy"],
                    ["serve", str(run / "model.keras")]):  # fmt: skip
        assert main(command) == 2
        error = _one_line_error(capsys)
        assert "is a Keras archive (.keras), not an ONNX file" in error
        assert f"keras-cae export {run / 'model.keras'} --out exported" in error
