"""ContractiveAutoencoder: training semantics, Keras integration, serialization, bad input."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_cae import ContractiveAutoencoder, contractive_penalty, dense_autoencoder
from tests._variants import user_conv, user_single_conv


@pytest.fixture
def x(rng) -> np.ndarray:
    return rng.random((48, 12)).astype("float32")


def small_model(**kwargs) -> ContractiveAutoencoder:
    kwargs.setdefault("seed", 0)
    return dense_autoencoder(12, kwargs.pop("hidden_units", 5), **kwargs)


def test_history_has_every_term_and_validation_versions(x):
    model = small_model()
    history = model.fit(x, epochs=2, batch_size=16, validation_split=0.25, verbose=0)
    expected = {"loss", "reconstruction_loss", "contractive_loss"}
    assert set(history.history) == expected | {f"val_{key}" for key in expected}


def test_logged_terms_equal_an_independent_computation(x, rng):
    model = small_model(contractive_weight=0.3)
    weights = rng.random(len(x)).astype("float32") * 2
    logs = model.evaluate(
        x, x, sample_weight=weights, batch_size=len(x), verbose=0, return_dict=True
    )
    reconstruction = np.asarray(model(x))
    squared_error = np.mean((reconstruction - x) ** 2, axis=1)
    jacobian = contractive_penalty(model.encoder, x, "batch_jacobian").numpy()
    # Keras's sum_over_batch_size reduction, applied to both terms.
    expected_reconstruction = np.sum(weights * squared_error) / len(x)
    expected_contractive = np.sum(weights * jacobian) / len(x)
    np.testing.assert_allclose(logs["reconstruction_loss"], expected_reconstruction, rtol=1e-5)
    np.testing.assert_allclose(logs["contractive_loss"], expected_contractive, rtol=1e-5)
    np.testing.assert_allclose(
        logs["loss"], expected_reconstruction + 0.3 * expected_contractive, rtol=1e-5
    )


def test_gradient_step_matches_hand_written_sgd(x):
    # One SGD step of the model equals a step on the loss written out by hand.
    model = small_model(contractive_weight=0.5, hidden_units=[6, 4])
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model_weights = model.trainable_weights
    variables = [tf.Variable(w.numpy()) for w in model_weights]
    with tf.GradientTape() as tape:
        for variable, value in zip(model_weights, variables):
            variable.assign(value)
        reconstruction = model(x)
        loss = tf.reduce_mean(tf.square(reconstruction - x)) + 0.5 * tf.reduce_mean(
            contractive_penalty(model.encoder, x, "batch_jacobian")
        )
    gradients = tape.gradient(loss, model_weights)
    expected = [w.numpy() - 0.1 * g.numpy() for w, g in zip(model_weights, gradients)]
    model.fit(x, epochs=1, batch_size=len(x), shuffle=False, verbose=0)
    assert len(model_weights) == len(expected)
    for actual, wanted in zip(model_weights, expected):
        np.testing.assert_allclose(actual.numpy(), wanted, rtol=1e-5, atol=1e-7)


def test_zero_weight_trains_exactly_like_a_plain_autoencoder(x):
    model = small_model(contractive_weight=0.0, hidden_units=[8, 4])
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    plain = keras.Sequential([keras.Input((12,)), model.encoder, model.decoder])
    plain_weights = model.encoder.get_weights() + model.decoder.get_weights()
    plain = keras.models.clone_model(plain)
    plain.set_weights(plain_weights)
    plain.compile(optimizer=keras.optimizers.SGD(0.5), loss="mean_squared_error")
    cae_history = model.fit(x, epochs=3, batch_size=16, shuffle=False, verbose=0)
    plain_history = plain.fit(x, x, epochs=3, batch_size=16, shuffle=False, verbose=0)
    trained = model.encoder.get_weights() + model.decoder.get_weights()
    assert len(trained) == len(plain.get_weights())
    for actual, expected in zip(trained, plain.get_weights()):
        np.testing.assert_array_equal(actual, expected)
    np.testing.assert_allclose(
        cae_history.history["loss"], plain_history.history["loss"], rtol=1e-6
    )
    assert "contractive_loss" not in cae_history.history


def test_training_lowers_both_terms_and_contracts_more_than_an_autoencoder(rng):
    data = rng.random((128, 12)).astype("float32")
    runs = {}
    for weight in (0.0, 0.05):
        model = small_model(contractive_weight=weight, hidden_units=8, learning_rate=0.01)
        before = model.evaluate(data, verbose=0, return_dict=True)
        model.fit(data, epochs=15, batch_size=32, verbose=0)
        runs[weight] = (before, model.evaluate(data, verbose=0, return_dict=True))
    before, after = runs[0.05]
    assert after["reconstruction_loss"] < before["reconstruction_loss"]
    assert after["contractive_loss"] < before["contractive_loss"]
    assert after["contractive_loss"] < 0.5 * runs[0.0][1]["contractive_loss"]


def test_explicit_targets_are_the_reconstruction_targets(x, rng):
    noisy = np.clip(x + rng.normal(scale=0.1, size=x.shape), 0, 1).astype("float32")
    model = small_model()
    logs = model.evaluate(noisy, x, batch_size=len(x), verbose=0, return_dict=True)
    expected = np.mean((np.asarray(model(noisy)) - x) ** 2)
    np.testing.assert_allclose(logs["reconstruction_loss"], expected, rtol=1e-5)
    history = model.fit(noisy, x, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_tf_data_input_trains_like_numpy_input(x):
    first, second = small_model(), small_model()
    second.set_weights(first.get_weights())
    first.fit(x, epochs=2, batch_size=16, shuffle=False, verbose=0)
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(16)
    second.fit(dataset, epochs=2, shuffle=False, verbose=0, validation_data=dataset)
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_callbacks_see_the_logged_terms(x):
    seen = []

    class Recorder(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(dict(logs))

    model = small_model()
    stopper = keras.callbacks.EarlyStopping(monitor="val_contractive_loss", mode="min", patience=0)
    model.fit(x, epochs=3, validation_split=0.25, callbacks=[Recorder(), stopper], verbose=0)
    assert seen and {"contractive_loss", "val_contractive_loss"} <= set(seen[0])


def test_compiled_metrics_are_reported(x):
    model = small_model()
    model.compile(optimizer="adam", metrics=["mae"])
    logs = model.evaluate(x, verbose=0, return_dict=True)
    expected = np.mean(np.abs(np.asarray(model(x)) - x))
    np.testing.assert_allclose(logs["mae"], expected, rtol=1e-5)


def test_tied_decoder_uses_transposed_encoder_kernels(x):
    model = small_model(tied_weights=True, hidden_units=4, activation="sigmoid")
    kernel, bias = model.encoder.layers[-1].get_weights()
    decoder_bias = model.decoder.get_weights()[0]
    h = 1 / (1 + np.exp(-(x @ kernel + bias)))
    expected = 1 / (1 + np.exp(-(h @ kernel.T + decoder_bias)))
    np.testing.assert_allclose(np.asarray(model(x)), expected, rtol=1e-5, atol=1e-6)
    assert len(model.trainable_weights) == 3  # kernel, encoder bias, decoder bias


def test_conv_autoencoder_trains_with_auto_penalty(rng):
    model = user_conv(contractive_weight=0.1)
    model.compile()
    assert model.penalty_method == "batch_jacobian"
    data = rng.random((16, 8, 8, 1)).astype("float32")
    logs = model.fit(data, epochs=1, verbose=0).history
    assert np.isfinite(logs["contractive_loss"][0])


def test_cae_h_logs_its_own_term(x):
    model = small_model(hessian_weight=0.1, hessian_noise_stddev=0.2)
    history = model.fit(x, epochs=1, validation_split=0.25, verbose=0)
    assert {"hessian_loss", "val_hessian_loss"} <= set(history.history)


def test_encode_and_decode(x):
    model = small_model()
    code = model.encode(x)
    assert tuple(code.shape) == (len(x), 5)
    np.testing.assert_allclose(np.asarray(model.decode(code)), np.asarray(model(x)), rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"contractive_weight": -0.1}, r"contractive_weight.*Received: contractive_weight=-0.1"),
        ({"contractive_weight": float("nan")}, "contractive_weight=nan"),
        ({"contractive_weight": float("inf")}, "contractive_weight=inf"),
        ({"penalty": "exact"}, r"penalty='exact'.*\['auto', 'batch_jacobian'"),
        ({"hessian_weight": -1.0}, "hessian_weight=-1.0"),
        ({"corruption": "dropout"}, r"corruption='dropout'.*gaussian"),
        ({"corruption": "masking", "corruption_level": 1.0}, "corruption_level=1.0"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, match):
    encoder = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    decoder = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4)])
    with pytest.raises(ValueError, match=match):
        ContractiveAutoencoder(encoder, decoder, **kwargs)


def test_decoder_output_shape_mismatch_is_reported_at_build():
    # Built parts: the model is built, and checked, when it is made.
    encoder = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    decoder = keras.Sequential([keras.Input((3,)), keras.layers.Dense(5)])
    with pytest.raises(ValueError, match=r"\(None, 6\).*\(None, 5\)"):
        ContractiveAutoencoder(encoder, decoder)
    # Parts without an Input: when the first batch builds it.
    model = ContractiveAutoencoder(keras.layers.Dense(3), keras.layers.Dense(5))
    model.compile()
    with pytest.raises(ValueError, match=r"\(None, 6\).*\(None, 5\)"):
        model.fit(np.zeros((4, 6), "float32"), epochs=1, verbose=0)


@pytest.mark.parametrize("parts", ["built", "unbuilt"])
def test_model_is_built_from_its_parts_or_by_fit_evaluate_and_train_on_batch(parts, x):
    def make() -> ContractiveAutoencoder:
        inputs = [keras.Input((12,))] if parts == "built" else []
        encoder = keras.Sequential([*inputs, keras.layers.Dense(4, "sigmoid")])
        decoder = keras.Sequential([keras.layers.Dense(12, "sigmoid")])
        model = ContractiveAutoencoder(encoder, decoder, contractive_weight=0.1)
        model.compile()
        return model

    assert make().built is (parts == "built")
    if parts == "built":
        return
    for run in (
        lambda m: m.fit(x, epochs=1, verbose=0),
        lambda m: m.fit(
            tf.data.Dataset.from_tensor_slices(x).batch(16), epochs=1, shuffle=False, verbose=0
        ),
        lambda m: m.evaluate(x, verbose=0),
        lambda m: m.train_on_batch(x),
        lambda m: m.predict(x, verbose=0),
    ):
        model = make()
        run(model)
        assert model.built
        assert model.get_build_config() == {"input_shape": (None, 12)}


def test_non_finite_rows_are_rejected_before_training(x):
    model = small_model()
    before = [np.array(w) for w in model.get_weights()]
    bad = x.copy()
    bad[[3, 7], 0] = np.nan
    bad[9, 2] = np.inf
    with pytest.raises(ValueError, match=r"3 of 48 rows \(first bad row: 3\)"):
        model.fit(bad, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="validation_data"):
        model.fit(x, epochs=1, verbose=0, validation_data=(bad, bad))
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_wrong_feature_count_is_rejected_before_training(rng):
    model = small_model()
    with pytest.raises(ValueError, match=r"shape \(batch, 12\).*Received: x.shape=\(8, 10\)"):
        model.fit(rng.random((8, 10)).astype("float32"), epochs=1, verbose=0)


def test_images_train_a_flat_encoder_as_their_flattened_rows(x):
    """`to_model_input`'s rule: (n, 3, 4) samples train a Dense encoder built on 12."""
    images = x.reshape(48, 3, 4)
    flat, shaped = small_model(), small_model()
    shaped.set_weights(flat.get_weights())
    flat.fit(x, batch_size=16, epochs=1, shuffle=False, verbose=0)
    shaped.fit(images, batch_size=16, epochs=1, shuffle=False, verbose=0,
               validation_data=(images[:8], images[:8]))  # fmt: skip
    for a, b in zip(flat.get_weights(), shaped.get_weights(), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-6)
    assert shaped.evaluate(images, verbose=0) == pytest.approx(flat.evaluate(x, verbose=0))
    assert shaped.predict(images, verbose=0).shape == (48, 12)
    with pytest.raises(ValueError, match=r"samples of any shape holding 12 values"):
        flat.fit(x.reshape(48, 2, 6)[:, :, :5], epochs=1, verbose=0)


def test_input_range_is_recorded_by_fit_and_saved(x, tmp_path):
    model = small_model()
    model.compile(optimizer="sgd")
    assert model.input_range is None  # Never trained.
    model.fit(x * 2 - 0.5, batch_size=16, epochs=1, verbose=0)
    expected = (float((x * 2 - 0.5).min()), float((x * 2 - 0.5).max()))
    assert model.input_range == expected
    model.fit(x, batch_size=16, epochs=1, verbose=0)  # A running range: only widens.
    assert model.input_range == expected
    model.save(tmp_path / "model.keras")
    assert keras.models.load_model(tmp_path / "model.keras").input_range == expected
    # The range is not among the Keras weights: get_weights() is the encoder's and decoder's.
    parts = [*model.encoder.get_weights(), *model.decoder.get_weights()]
    assert len(model.get_weights()) == len(parts)
    # An archive saved before the range was recorded has no input range in its store.
    old = small_model()
    old.load_own_variables({})
    assert old.input_range is None


def test_input_range_is_recorded_under_xla(x):
    model = small_model(contractive_weight=0.0)  # The plain auto-encoder keeps XLA.
    model.compile(optimizer="sgd", jit_compile=True)
    model.fit(x - 3, batch_size=16, epochs=1, verbose=0)
    assert model.jit_compile is True
    assert model.input_range == (float((x - 3).min()), float((x - 3).max()))


def test_auto_penalty_resolves_to_closed_form_for_dense_chains():
    assert small_model().penalty_method == "closed_form"
    assert small_model(penalty="hutchinson").penalty_method == "hutchinson"


def test_auto_penalty_takes_the_closed_form_for_one_convolution_and_says_nothing(rng, caplog):
    model = user_single_conv(contractive_weight=0.1, seed=0)
    model.compile()
    with caplog.at_level("WARNING", logger="keras_cae"):
        model.fit(rng.random((8, 8, 8, 1)).astype("float32"), epochs=1, verbose=0)
    assert model.penalty_method == "closed_form"
    assert not _notices(caplog)


@pytest.mark.slow
def test_auto_fallback_to_batch_jacobian_says_once_before_training_what_it_costs(rng, caplog):
    model = user_conv(contractive_weight=0.1, seed=0)
    model.compile()
    data = rng.random((8, 8, 8, 1)).astype("float32")
    steps = []
    callback = keras.callbacks.LambdaCallback(
        on_train_batch_begin=lambda batch, logs=None: steps.append(len(_notices(caplog)))
    )
    with caplog.at_level("WARNING", logger="keras_cae"):
        model.fit(data, epochs=2, batch_size=4, verbose=0, callbacks=[callback])
        model.fit(data, epochs=1, verbose=0)
    assert model.penalty_method == "batch_jacobian"
    assert len(_notices(caplog)) == 1 and steps[0] == 1  # Once, before the first step.
    # Hand count: encoder 4·4·4·9 (conv) + 64·6 (dense) = 960 multiply-adds, decoder
    # 6·64 + 64·9 (transposed conv) = 960, code 6: 1 + 6·960/1920 = 4; 4 probes: 3.
    message = _notices(caplog)[0].getMessage()
    assert "uses the exact 'batch_jacobian'" in message and "(Dense) follows the Conv2D" in message
    assert "a train step will cost about 4.0× a plain step" in message
    assert "penalty='hutchinson'" in message and "4 probes, about 3.0× a plain step" in message


def test_no_notice_without_a_penalty_or_with_an_explicit_method(rng, caplog):
    data = rng.random((8, 8, 8, 1)).astype("float32")
    with caplog.at_level("WARNING", logger="keras_cae"):
        for kwargs in ({"contractive_weight": 0.0}, {"penalty": "batch_jacobian"}):
            model = user_conv(**kwargs)
            model.compile()
            model.fit(data, epochs=1, verbose=0)
    assert not _notices(caplog)


def test_conv_train_step_with_the_closed_form_equals_batch_jacobian(rng):
    data = rng.random((6, 8, 8, 1)).astype("float32")
    updates, losses = {}, {}
    for penalty in ("closed_form", "batch_jacobian"):
        model = user_single_conv(contractive_weight=0.5, penalty=penalty, seed=0)
        model.compile(optimizer=keras.optimizers.SGD(1.0))
        model.set_weights(_fixed_weights(model))
        before = [w.numpy() for w in model.trainable_weights]
        logs = model.train_on_batch(data, return_dict=True)
        losses[penalty] = (logs["loss"], logs["contractive_loss"])
        updates[penalty] = [b - w.numpy() for b, w in zip(before, model.trainable_weights)]
    np.testing.assert_allclose(losses["closed_form"], losses["batch_jacobian"], rtol=1e-5)
    for update, reference in zip(updates["closed_form"], updates["batch_jacobian"]):
        # With SGD(1.0) the update is the gradient.
        assert np.linalg.norm(update - reference) <= 1e-5 * np.linalg.norm(reference)


def _notices(caplog):
    return [record for record in caplog.records if record.name == "keras_cae"]


def _fixed_weights(model):
    """The same weights for every model of one architecture, with non-zero biases."""
    weights_rng = np.random.default_rng(11)
    return [weights_rng.normal(scale=0.3, size=w.shape).astype("float32") for w in model.weights]


@pytest.mark.parametrize(
    "imports",
    [
        # A fresh interpreter each (TensorFlow imported anew): about 12 s apiece.
        pytest.param("import keras_cae\nimport keras", marks=pytest.mark.slow),
        pytest.param("import keras\nimport keras_cae", marks=pytest.mark.slow),
        pytest.param("import tensorflow\nimport keras_cae\nimport keras", marks=pytest.mark.slow),
        pytest.param("import keras_cae\nimport tensorflow\nimport keras", marks=pytest.mark.slow),
        # A submodule that imports TensorFlow first, while the training modules import it.
        pytest.param(
            "from keras_cae import distribute\nimport keras\nimport keras_cae",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_load_model_works_in_every_import_order(imports, tmp_path):
    # A fresh process each: `keras.models.load_model` and `keras_cae.load_model` both
    # find the classes, whichever of keras_cae, keras and tensorflow comes first.
    import subprocess
    import sys

    path = str(tmp_path / "model.keras")
    small_model(tied_weights=True, hidden_units=[6, 3]).save(path)
    code = (
        f"{imports}\n"
        f"print(type(keras.models.load_model({path!r})).__name__)\n"
        f"print(type(keras_cae.load_model({path!r})).__name__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error::UserWarning", "-c", code],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["ContractiveAutoencoder"] * 2
