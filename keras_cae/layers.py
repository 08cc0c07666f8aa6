"""Layers used by the model builders."""

from __future__ import annotations

from typing import Any, cast

import keras
from keras import ops

__all__ = ["TiedDecoder"]


@keras.saving.register_keras_serializable(package="keras_cae")
class TiedDecoder(keras.layers.Layer):
    """A decoder whose kernels are the transposed kernels of a Dense encoder.

    Rifai et al. (ICML 2011) tie the decoder to the encoder, ``W′ = Wᵀ``. This layer
    owns only its biases; its kernels are read from the encoder's `Dense` layers at
    every call, so training updates one set of weights and saving stores each kernel
    once. `ContractiveAutoencoder` ties it to its encoder on construction (also after
    `keras.models.load_model`), by calling :meth:`tie`.

    Args:
        activations: one activation per decoder layer, from the code side to the
            output; the decoder has as many layers as the encoder has `Dense` layers.
        use_bias: whether each decoder layer adds a bias. Defaults to `True`.
        units: the output size of each decoder layer. Defaults to `None`: taken from
            the encoder by :meth:`tie` (saved configs record it, so a loaded decoder
            can be built before it is tied).
        **kwargs: passed to `keras.layers.Layer`.

    Example:

    >>> import keras
    >>> from keras_cae import TiedDecoder
    >>> encoder = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, "sigmoid")])
    >>> decoder = TiedDecoder(["sigmoid"])
    >>> decoder.tie(encoder)
    >>> tuple(decoder(encoder(keras.ops.ones((2, 6)))).shape)
    (2, 6)
    """

    def __init__(
        self,
        activations: list[Any],
        use_bias: bool = True,
        units: list[int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not activations:
            raise ValueError(
                f"`activations` should list one activation per layer. Received: "
                f"activations={activations!r}"
            )
        self.activation_names = [
            keras.activations.serialize(keras.activations.get(a)) for a in activations
        ]
        self._activations = [keras.activations.get(a) for a in activations]
        self.use_bias = use_bias
        self.units = None if units is None else [int(u) for u in units]
        object.__setattr__(self, "_tied_layers", None)

    def tie(self, encoder: keras.layers.Layer) -> None:
        """Ties the decoder to the `Dense` layers of `encoder`, in reverse order."""
        layers = getattr(encoder, "layers", [encoder])
        dense = [layer for layer in layers if isinstance(layer, keras.layers.Dense)]
        if len(dense) != len(self._activations):
            raise ValueError(
                f"TiedDecoder has {len(self._activations)} layers but the encoder "
                f"{encoder.name!r} has {len(dense)} Dense layers; they must match."
            )
        units = [int(layer.kernel.shape[0]) for layer in reversed(dense)]
        if self.units is not None and self.units != units:
            raise ValueError(
                f"TiedDecoder {self.name!r} has output sizes {self.units} but the "
                f"transposed kernels of encoder {encoder.name!r} give {units}."
            )
        self.units = units
        # Kept out of Keras's layer tracking: the encoder owns these kernels.
        object.__setattr__(self, "_tied_layers", tuple(reversed(dense)))

    def _layers_or_raise(self) -> tuple[keras.layers.Dense, ...]:
        if self._tied_layers is None:
            raise ValueError(
                f"TiedDecoder {self.name!r} is not tied to an encoder yet. Pass it as the "
                "decoder of a ContractiveAutoencoder, or call `decoder.tie(encoder)`."
            )
        return self._tied_layers

    def _known_units(self) -> list[int]:
        """`units`; known once given or tied (`tie` sets them), else `ValueError`."""
        if self.units is None:
            self._layers_or_raise()  # Untied: raises.
        return cast("list[int]", self.units)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        units = self._known_units()
        self.biases = []
        if self.use_bias:
            for index, size in enumerate(units):
                self.biases.append(
                    self.add_weight(shape=(size,), initializer="zeros", name=f"bias_{index}")
                )
        self.built = True

    def call(self, inputs: Any) -> Any:
        h = inputs
        for index, (dense, activation) in enumerate(
            zip(self._layers_or_raise(), self._activations)
        ):
            h = ops.matmul(h, ops.transpose(ops.cast(dense.kernel, self.compute_dtype)))
            if self.use_bias:
                h = h + ops.cast(self.biases[index], self.compute_dtype)
            h = activation(h)
        return h

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (*input_shape[:-1], self._known_units()[-1])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {"activations": self.activation_names, "use_bias": self.use_bias, "units": self.units}
        )
        return config
