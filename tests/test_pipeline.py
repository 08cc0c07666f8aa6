"""The user's pipeline, end to end, for every model variant in `tests/_variants.py`.

fit (no `build`, no call) → `.keras` save → `keras_cae.load_model` (equal outputs,
optimizer state restored, no warnings) → `export_encoder` (ONNX and SavedModel, parity
with Keras at batch sizes 1, 7 and 300) → `OnnxEncoder` (bit for bit a bare
onnxruntime session) → one request to `keras-cae serve` on a loopback port → training
resumes after the reload exactly as it goes on in the original.

The parity figures of each run are written to ``$KERAS_CAE_PIPELINE_TABLE`` when set.
"""

from __future__ import annotations

import json
import os
from typing import Any

import keras
import numpy as np
import onnxruntime
import pytest
import tensorflow as tf

import keras_cae
from keras_cae import export
from keras_cae.export import saved_model as saved_model_module
from tests._harness import assert_config_round_trip, assert_no_warnings, serve_one_request
from tests._variants import ModelVariant, dtype_policy, variant_params

BATCH_SIZES = (1, 7, 300)
TRAIN_ROWS = 48
# Keras and the exported graphs run the same float32 graph, with kernels that may sum
# in another order: a few ulps (as in test_export). float16 compute rounds each
# layer's output to 11 significant bits (2**-11 ≈ 5e-4).
TOLERANCE = {None: (1e-5, 1e-6), "mixed_float16": (2e-3, 2e-3)}


def _numpy(value: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(value))


def _optimizer_state(model: keras.Model) -> list[np.ndarray]:
    return [_numpy(v) for v in model.optimizer.variables]


# Every variant trains, exports and starts a server: about two minutes in all.
@pytest.mark.slow
@pytest.mark.parametrize("variant", variant_params())
def test_pipeline(variant: ModelVariant, tmp_path: Any) -> None:
    x = variant.data(TRAIN_ROWS)
    rtol, atol = TOLERANCE[variant.policy]

    # ---- fit, as a user does: no build, no call.
    model = variant.build()
    model.fit(x, epochs=1, batch_size=16, verbose=0)
    assert model.built
    # Keras's Sequential.from_config gives the container (not its layers) the global
    # dtype policy, so the config round trip runs under the variant's policy.
    with dtype_policy(variant.policy):
        assert_config_round_trip(model)

    # ---- .keras save and reload: same outputs, optimizer state, no warnings.
    path = str(tmp_path / "model.keras")
    with assert_no_warnings():
        model.save(path)
        loaded = keras_cae.load_model(path)
    assert type(loaded) is type(model) and loaded.built
    assert type(loaded.encoder) is type(model.encoder)
    assert type(loaded.decoder) is type(model.decoder)
    for key in ("contractive_weight", "penalty", "hessian_weight", "corruption"):
        assert getattr(loaded, key) == getattr(model, key)
    # Shared (tied) kernels stay shared: the same number of variables, not copies.
    assert len(loaded.trainable_weights) == len(model.trainable_weights)
    np.testing.assert_array_equal(
        _numpy(loaded.predict(x, verbose=0)), _numpy(model.predict(x, verbose=0))
    )
    np.testing.assert_array_equal(_numpy(loaded.encode(x)), _numpy(model.encode(x)))
    saved_state = _optimizer_state(model)
    assert int(_numpy(model.optimizer.iterations)) == TRAIN_ROWS // 16
    for a, b in zip(_optimizer_state(loaded), saved_state, strict=True):
        np.testing.assert_array_equal(a, b)

    # ---- export: ONNX and SavedModel, parity at batch 1, 7 and 300.
    result = export.export_encoder(model, tmp_path / "exported", probe=x)
    onnx_path = result.path("onnx")
    runtime = export.OnnxEncoder(onnx_path)
    session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    [session_input] = session.get_inputs()
    _keep_alive, signature = saved_model_module.load_signature(result.path("saved_model"))
    figures: dict[str, dict[int, float]] = {"onnx": {}, "saved_model": {}}
    for batch in BATCH_SIZES:
        batch_x = variant.data(batch, seed=batch)
        expected = _numpy(model.encoder(batch_x, training=False)).astype(np.float32)
        got_onnx = runtime.encode(batch_x)
        got_sm = signature(x=tf.constant(batch_x))["code"].numpy()
        assert got_onnx.shape == got_sm.shape == expected.shape
        np.testing.assert_allclose(got_onnx, expected, rtol=rtol, atol=atol, err_msg="onnx")
        np.testing.assert_allclose(got_sm, expected, rtol=rtol, atol=atol, err_msg="SavedModel")
        figures["onnx"][batch] = float(np.max(np.abs(got_onnx - expected)))
        figures["saved_model"][batch] = float(
            np.max(np.abs(got_sm - expected.astype(got_sm.dtype)))
        )
        # ---- OnnxEncoder is the bare onnxruntime session, bit for bit.
        [bare] = session.run(None, {session_input.name: batch_x})
        np.testing.assert_array_equal(got_onnx, bare)

    # ---- one request to a served copy.
    request = variant.data(3, seed=99)
    served = serve_one_request(onnx_path, request, str(tmp_path / "serve.log"))
    np.testing.assert_array_equal(served, runtime.encode(request))

    # ---- training resumes after the reload where it stopped.
    before = model.get_weights()
    model.fit(x, epochs=1, batch_size=16, shuffle=False, verbose=0)
    history = loaded.fit(x, epochs=1, batch_size=16, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    for a, b in zip(loaded.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)

    table = os.environ.get("KERAS_CAE_PIPELINE_TABLE")
    if table:
        with open(table, "a", encoding="utf-8") as out:
            out.write(json.dumps({"variant": variant.name, **figures}) + "\n")
