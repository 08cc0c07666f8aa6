"""XLA (`jit_compile=True`) is kept where it is faster and refused, with the reason,
where `benchmarks/xla.py` measured it slower (on CPU; this suite runs on CPU)."""

from __future__ import annotations

import warnings

import pytest
import tensorflow as tf

from keras_cae import dense_autoencoder

# The slowdowns other than batch_jacobian's were measured on CPU; accelerators keep XLA.
CPU_ONLY = all(d.device_type == "CPU" for d in tf.config.list_logical_devices())


@pytest.mark.parametrize(
    "kwargs, reason",
    [
        ({"penalty": "batch_jacobian"}, "penalty='batch_jacobian' very badly"),
        ({"penalty": "hutchinson"}, "penalty='hutchinson' runs .* times slower under XLA"),
        ({"penalty": "closed_form"}, "penalty='closed_form' runs .* times slower under XLA"),
        ({"penalty": "auto", "hessian_weight": 0.1}, "times with the CAE\\+H term"),
        (
            {"contractive_weight": 0.0, "corruption": "masking", "corruption_level": 0.2},
            "denoising corruption runs .* times slower",
        ),
    ],
)
def test_xla_is_refused_where_it_is_slower(kwargs: dict, reason: str) -> None:
    model = dense_autoencoder(8, 4, **kwargs)
    if CPU_ONLY or kwargs.get("penalty") == "batch_jacobian":
        with pytest.warns(UserWarning, match=f"jit_compile=True was turned off.*{reason}"):
            model.compile(optimizer="sgd", jit_compile=True)
        assert model.jit_compile is False
    else:
        model.compile(optimizer="sgd", jit_compile=True)
        assert model.jit_compile is True


def test_xla_is_kept_for_a_plain_autoencoder() -> None:
    """The plain auto-encoder's step is faster with XLA (0.60 times the time)."""
    model = dense_autoencoder(8, 4, contractive_weight=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.compile(optimizer="sgd", jit_compile=True)
    assert model.jit_compile is True
