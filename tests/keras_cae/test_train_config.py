"""`keras_cae.train_config.TrainConfig`: checks, the JSON round trip, the job's use of it."""

from __future__ import annotations

import dataclasses
import json

import pytest

from keras_cae.cli import main
from keras_cae.train_config import TrainConfig


def test_hidden_units_become_a_tuple_and_defaults_match_dense_autoencoder_arguments() -> None:
    assert TrainConfig(hidden_units=16).hidden_units == (16,)
    assert TrainConfig(hidden_units=[32, 8]).hidden_units == (32, 8)
    kwargs = TrainConfig(hidden_units=[32, 8], seed=3).model_kwargs()
    assert kwargs == {
        "hidden_units": [32, 8],
        "activation": "sigmoid",
        "output_activation": "sigmoid",
        "tied_weights": False,
        "contractive_weight": 0.1,
        "penalty": "auto",
        "learning_rate": 3e-3,
        "seed": 3,
    }


def test_metrics_json_config_rebuilds_the_same_config() -> None:
    config = TrainConfig(hidden_units=[32, 8], epochs=3, steps_per_epoch=5, tied_weights=True)
    recorded = json.loads(json.dumps(dataclasses.asdict(config)))
    assert recorded["hidden_units"] == [32, 8]
    assert TrainConfig(**recorded) == config


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("epochs", 0, "a positive integer"),
        ("epochs", 2.0, "a positive integer"),
        ("batch_size", True, "a positive integer"),
        ("shuffle_buffer", -1, "a positive integer"),
        ("steps_per_epoch", 0, "a positive integer"),
        ("seed", 1.5, "an integer"),
        ("tied_weights", "yes", "True or False"),
        ("learning_rate", -0.1, "a non-negative finite number"),
        ("learning_rate", float("nan"), "a non-negative finite number"),
        ("test_fraction", 0.0, "a number in (0, 1): the summary is measured on held-out"),
        ("test_fraction", 1.0, "a number in (0, 1)"),
        ("validation_split", 1.0, "a number in [0, 1)"),
        ("validation_split", "0.1", "a number in [0, 1)"),
    ],
)
def test_bad_settings_name_the_field_what_is_allowed_and_the_value(field, value, allowed) -> None:
    with pytest.raises(ValueError) as raised:
        TrainConfig(hidden_units=8, **{field: value})
    message = str(raised.value)
    assert message.startswith(f"`{field}` should be {allowed}"), message
    assert message.endswith(f"Received: {field}={value!r}"), message


def test_zero_validation_split_is_allowed() -> None:
    assert TrainConfig(hidden_units=8, validation_split=0).validation_split == 0


def test_the_cli_reports_a_bad_setting_in_one_line(tmp_path, capsys) -> None:
    code = main(["train", "--test-fraction", "0", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("keras-cae train: error: `test_fraction` should be a number in (0, 1)")
    assert not (tmp_path / "run").exists()


def test_in_memory_training_refuses_steps_per_epoch() -> None:
    from keras_cae import training
    from keras_cae.data import load_digits

    config = TrainConfig(hidden_units=8, steps_per_epoch=3)
    with pytest.raises(ValueError, match="applies to streamed training.*steps_per_epoch=3"):
        training.train(config, load_digits())
