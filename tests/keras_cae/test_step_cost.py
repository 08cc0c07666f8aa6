"""The train-step cost estimate against multiply-adds counted by hand."""

from __future__ import annotations

import keras
import pytest

from keras_cae._step_cost import auto_fallback_notice, forward_macs, step_cost_ratio

layers = keras.layers


def test_forward_macs_match_a_hand_count():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            # Output 4×4×4, each of the 64 values from 3·3·1 taps: 576.
            layers.Conv2D(4, 3, strides=2, padding="same", activation="relu"),
            # Output 2×2×6, each from 3·3 taps of 4 / 2 channels: 24 · 18 = 432.
            layers.Conv2D(6, 3, groups=2),
            layers.BatchNormalization(),
            layers.Flatten(),
            layers.Dense(5),  # 24 · 5 = 120.
            layers.Reshape((5, 1)),
            # Output 5×3, each from 2 taps (dilation changes no count) · 1 channel: 30.
            layers.Conv1D(3, 2, padding="causal", dilation_rate=2),
            layers.Dense(2),  # Per step of 5: 3 · 2, so 30.
        ]
    )
    assert forward_macs(model, (None, 8, 8, 1)) == 576 + 432 + 120 + 30 + 30


def test_transposed_convolutions_count_per_input_element():
    decoder = keras.Sequential(
        [
            keras.Input((6,)),
            layers.Dense(16),  # 96
            layers.Reshape((2, 2, 4)),
            # Each of the 16 input values scatters to 3·3 taps × 5 filters: 720.
            layers.Conv2DTranspose(5, 3, strides=2, padding="same"),
            # 4·4·5 = 80 input values × 2 taps × 1 filter: 160 (on a (16, 5) sequence).
            layers.Reshape((16, 5)),
            layers.Conv1DTranspose(1, 2),
        ]
    )
    assert forward_macs(decoder, (None, 6)) == 96 + 720 + 160


def test_unknown_layers_and_branches_give_none():
    inputs = keras.Input((4,))
    branched = keras.Model(inputs, layers.Add()([layers.Dense(3)(inputs), layers.Dense(3)(inputs)]))
    assert forward_macs(branched, (None, 4)) is None
    embedding = keras.Sequential([keras.Input((3,), dtype="int32"), layers.Embedding(10, 2)])
    assert forward_macs(embedding, (None, 3)) is None


def test_step_cost_ratio_follows_the_documented_model():
    encoder = keras.Sequential([keras.Input((10,)), layers.Dense(4, "sigmoid")])  # E = 40
    decoder = keras.Sequential([keras.Input((4,)), layers.Dense(6), layers.Dense(10)])  # 84
    # batch_jacobian pays the code size, 4: 1 + 4 · 40 / 124.
    assert step_cost_ratio(encoder, decoder, (None, 10), "batch_jacobian") == pytest.approx(
        1 + 4 * 40 / 124
    )
    assert step_cost_ratio(encoder, decoder, (None, 10), "hutchinson", 3) == pytest.approx(
        1 + 3 * 40 / 124
    )
    with pytest.raises(ValueError, match=r"method='closed_form'.*\['batch_jacobian'"):
        step_cost_ratio(encoder, decoder, (None, 10), "closed_form")


def test_the_notice_quotes_both_estimates_or_says_why_it_has_none():
    encoder = keras.Sequential([keras.Input((10,)), layers.Dense(4, "sigmoid")], name="enc")
    decoder = keras.Sequential([keras.Input((4,)), layers.Dense(10)])  # E = D = 40
    notice = auto_fallback_notice(encoder, decoder, (None, 10), "a reason", 2)
    assert "penalty='auto' uses the exact 'batch_jacobian' for encoder 'enc'" in notice
    assert "(the closed form does not apply: a reason)" in notice
    assert "per code unit (4): a train step will cost about 3.0× a plain step" in notice
    assert "penalty='hutchinson'" in notice and "2 probes, about 2.0× a plain step" in notice
    unknown = auto_fallback_notice(encoder, decoder, None, "a reason", 2)
    assert "can cost many times a plain step" in unknown
    assert "penalty='hutchinson'" in unknown and "2 forward-mode probes" in unknown
