"""The one list of model variants every pipeline and round-trip test runs over.

Each variant is built the way a user builds it: encoder and decoder made with the
public Keras API (or `dense_autoencoder`), then `compile` and `fit`, with no explicit
`build` or call. A new model feature is added here once, and `tests/test_pipeline.py`
takes it through fit → `.keras` save/load → export → `OnnxEncoder` → a served copy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import pytest

from keras_cae import ContractiveAutoencoder, dense_autoencoder

FEATURES = 12
IMAGE_SHAPE = (8, 8, 1)


@keras.saving.register_keras_serializable(package="keras_cae_tests")
class SubclassedEncoder(keras.Model):
    """A user's own encoder: a subclassed `keras.Model` with a `get_config`."""

    def __init__(self, units: int = 6, code_size: int = 4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = units
        self.code_size = code_size
        self.hidden = keras.layers.Dense(units, "tanh")
        self.code = keras.layers.Dense(code_size, "sigmoid")

    def call(self, inputs: Any) -> Any:
        return self.code(self.hidden(inputs))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"units": self.units, "code_size": self.code_size})
        return config


def _decoder(code_size: int, name: str = "decoder") -> keras.Sequential:
    return keras.Sequential(
        [
            keras.Input((code_size,)),
            keras.layers.Dense(8, "tanh"),
            keras.layers.Dense(FEATURES, "sigmoid"),
        ],
        name=name,
    )


def user_sequential(**kwargs: Any) -> ContractiveAutoencoder:
    """Sequential encoder and decoder, each starting with a `keras.Input`."""
    encoder = keras.Sequential(
        [keras.Input((FEATURES,)), keras.layers.Dense(8, "tanh"), keras.layers.Dense(4, "sigmoid")],
        name="encoder",
    )
    return ContractiveAutoencoder(encoder, _decoder(4), contractive_weight=0.05, seed=0, **kwargs)


def user_functional_skip() -> ContractiveAutoencoder:
    """A Functional encoder with a skip connection (an `Add` of two paths)."""
    inputs = keras.Input((FEATURES,))
    hidden = keras.layers.Dense(6, "tanh")(inputs)
    skip = keras.layers.Dense(6)(inputs)
    merged = keras.layers.Add()([hidden, skip])
    code = keras.layers.Dense(4, "sigmoid")(merged)
    encoder = keras.Model(inputs, code, name="encoder")
    return ContractiveAutoencoder(encoder, _decoder(4), contractive_weight=0.05, seed=0)


def user_subclassed() -> ContractiveAutoencoder:
    """A subclassed encoder and a decoder without `Input`: nothing is built before `fit`."""
    decoder = keras.Sequential(
        [keras.layers.Dense(8, "tanh"), keras.layers.Dense(FEATURES, "sigmoid")], name="decoder"
    )
    return ContractiveAutoencoder(
        SubclassedEncoder(name="encoder"), decoder, contractive_weight=0.05, seed=0
    )


def user_conv(**kwargs: Any) -> ContractiveAutoencoder:
    """A small conv auto-encoder on 8×8×1 images."""
    layers = keras.layers
    encoder = keras.Sequential(
        [
            keras.Input(IMAGE_SHAPE),
            layers.Conv2D(4, 3, strides=2, padding="same", activation="tanh"),
            layers.Flatten(),
            layers.Dense(6, activation="sigmoid"),
        ],
        name="encoder",
    )
    decoder = keras.Sequential(
        [
            keras.Input((6,)),
            layers.Dense(4 * 4 * 4, activation="relu"),
            layers.Reshape((4, 4, 4)),
            layers.Conv2DTranspose(1, 3, strides=2, padding="same", activation="sigmoid"),
        ],
        name="decoder",
    )
    return ContractiveAutoencoder(encoder, decoder, **kwargs)


def user_single_conv(**kwargs: Any) -> ContractiveAutoencoder:
    """A one-convolution encoder on 8×8×1 images, whose exact penalty is the closed form."""
    layers = keras.layers
    encoder = keras.Sequential(
        [
            keras.Input(IMAGE_SHAPE),
            layers.Conv2D(4, 3, strides=2, padding="same", activation="sigmoid"),
            layers.Flatten(),
        ],
        name="encoder",
    )
    decoder = keras.Sequential(
        [
            keras.Input((4 * 4 * 4,)),
            layers.Reshape((4, 4, 4)),
            layers.Conv2DTranspose(1, 3, strides=2, padding="same", activation="sigmoid"),
        ],
        name="decoder",
    )
    return ContractiveAutoencoder(encoder, decoder, **kwargs)


def plain_functional_encoder() -> keras.Model:
    """A plain Keras model, not a `ContractiveAutoencoder`: an encoder exported on its own
    (it has no decoder to export)."""
    inputs = keras.Input((FEATURES,))
    h = keras.layers.Dense(9, "relu", kernel_initializer=keras.initializers.GlorotUniform(3))(
        inputs
    )
    outputs = keras.layers.Dense(5, "tanh", kernel_initializer=keras.initializers.GlorotUniform(4))(
        h
    )
    return keras.Model(inputs, outputs, name="plain_encoder")


@contextlib.contextmanager
def dtype_policy(name: str | None) -> Iterator[None]:
    """Sets Keras's global dtype policy for the block (layers keep it afterwards)."""
    if name is None:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@dataclass(frozen=True)
class ModelVariant:
    """One way to build a model, and the data it trains on."""

    name: str
    make: Callable[[], ContractiveAutoencoder]
    sample_shape: tuple[int, ...] = (FEATURES,)
    policy: str | None = None
    marks: tuple[Any, ...] = field(default=())

    def build(self) -> ContractiveAutoencoder:
        """A fresh, compiled, never-called model, as a user has it before `fit`."""
        with dtype_policy(self.policy):
            model = self.make()
            if not getattr(model, "compiled", False):
                model.compile(optimizer="adam")
        return model

    def data(self, rows: int, seed: int = 0) -> np.ndarray:
        """Inputs in [0, 1), the range of the sigmoid decoders."""
        rng = np.random.default_rng(seed)
        return rng.random((rows, *self.sample_shape), dtype=np.float32)

    def param(self) -> Any:
        return pytest.param(self, id=self.name, marks=self.marks)


VARIANTS: list[ModelVariant] = [
    ModelVariant("sequential", user_sequential),
    ModelVariant("functional-skip", user_functional_skip),
    ModelVariant("subclassed", user_subclassed),
    ModelVariant("dense", lambda: dense_autoencoder(FEATURES, 5, seed=0)),
    ModelVariant("tied", lambda: dense_autoencoder(FEATURES, [8, 4], tied_weights=True, seed=0)),
    ModelVariant("conv", lambda: user_conv(contractive_weight=0.1, seed=0), IMAGE_SHAPE),
    ModelVariant(
        "conv-closed-form", lambda: user_single_conv(contractive_weight=0.1, seed=0), IMAGE_SHAPE
    ),
    ModelVariant(
        "dae",
        lambda: dense_autoencoder(
            FEATURES, 5, corruption="masking", corruption_level=0.2, contractive_weight=0.0, seed=0
        ),
    ),
    ModelVariant("cae-h", lambda: dense_autoencoder(FEATURES, 5, hessian_weight=0.1, seed=0)),
    ModelVariant("hutchinson", lambda: user_sequential(penalty="hutchinson")),
    ModelVariant(
        "mixed_float16", lambda: dense_autoencoder(FEATURES, 5, seed=0), policy="mixed_float16"
    ),
]

VARIANTS_BY_NAME = {variant.name: variant for variant in VARIANTS}


def variant_params(*names: str) -> list[Any]:
    """`pytest.param`s for the named variants (all of them without names)."""
    chosen = [VARIANTS_BY_NAME[name] for name in names] if names else VARIANTS
    return [variant.param() for variant in chosen]
