"""`TrainConfig`: the settings of one training job, importable without TensorFlow.

`keras_cae.training.train` (in-memory data) and `train_stream` (shards streamed from
disk) take the same `TrainConfig`, and record ``dataclasses.asdict(config)`` as the
``"config"`` of `metrics.json`. The command line builds it from its options before
TensorFlow is imported, so a bad setting costs a second, not a training run.

The model's own settings (`hidden_units`, the activations, `contractive_weight`,
`penalty`) are checked by `keras_cae.dense_autoencoder` when the job builds the
model; the settings of the job itself are checked here.

Example:

>>> config = TrainConfig(hidden_units=[32, 16], epochs=3)
>>> config.hidden_units
(32, 16)
>>> try:
...     TrainConfig(hidden_units=16, test_fraction=0.0)
... except ValueError as error:
...     print(error)  # doctest: +ELLIPSIS
`test_fraction` should be a number in (0, 1): ... Received: test_fraction=0.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from keras_cae._checks import check_bool

__all__ = ["TrainConfig", "PROBES", "default_contractive_weight"]

#: The probes `keras-cae train` can run (`TrainConfig.probe`).
PROBES = ("logistic", "none")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_positive_int(name: str, value: Any) -> None:
    if not _is_int(value) or value < 1:
        raise ValueError(f"`{name}` should be a positive integer. Received: {name}={value!r}")


def _check_fraction(name: str, value: Any, *, zero_allowed: bool, why: str = "") -> None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not (0 <= value < 1) or (value == 0 and not zero_allowed):
        allowed = "[0, 1)" if zero_allowed else "(0, 1)"
        raise ValueError(
            f"`{name}` should be a number in {allowed}{why}. Received: {name}={value!r}"
        )


@dataclass(frozen=True)
class TrainConfig:
    """The settings of a training job: the model, the optimisation and the held-out split.

    Args:
        hidden_units: code size, or the sizes of the encoder layers (the last is the
            code); stored as a tuple.
        activation: activation of the encoder layers and hidden decoder layers.
            Defaults to `"sigmoid"`.
        output_activation: activation of the reconstruction. Defaults to `"sigmoid"`.
        tied_weights: the decoder uses the transposed encoder kernels. Defaults to
            `False`.
        contractive_weight: λ, the weight of the contractive penalty. Defaults to
            `0.1` (`keras-cae train` uses `default_contractive_weight`).
        penalty: how ‖J‖² is computed (`keras_cae.PENALTY_METHODS`). Defaults to
            `"auto"`.
        learning_rate: Adam's learning rate, a non-negative finite number. Defaults
            to `3e-3`.
        seed: seeds Python, NumPy and TensorFlow, the weight initialisers and the
            split. Defaults to `0`.
        epochs: passes over the training data, a positive integer. Defaults to `60`.
        batch_size: the global batch, a positive integer. Defaults to `32`.
        test_fraction: the part held out for the summary figures, in (0, 1); streamed
            training holds out ``round(test_fraction * shards)`` whole shards.
            Defaults to `0.2`.
        validation_split: the part of the in-memory training data held out (its
            last rows, as Keras's `validation_split`) for `val_*` figures, in [0, 1),
            or `None` for the data's default: the last sixth of a file's own training
            part (MNIST: 50,000 train / 10,000 validation), else 0.1. Streamed
            training holds out no validation data and does not use it. Defaults to
            `None`.
        steps_per_epoch: streamed training only: batches per epoch, a positive
            integer, or `None` for one pass over the training shards. Defaults to
            `None`.
        shuffle_buffer: streamed training only: rows in the shuffle buffer, a positive
            integer (in-memory data is shuffled whole). Defaults to `10_000`.
        probe: ``"logistic"``: with labels, fit a logistic-regression probe on codes
            and on raw inputs (`keras_cae.training.quick_probe_accuracy`);
            ``"none"``: no probe. Defaults to `"logistic"`.

    Raises:
        ValueError: naming the setting, what it should be and the value received.

    Example:

    >>> import dataclasses
    >>> config = TrainConfig(hidden_units=64, epochs=3)
    >>> dataclasses.asdict(config)["hidden_units"], config.epochs
    ((64,), 3)
    """

    hidden_units: tuple[int, ...]
    activation: str = "sigmoid"
    output_activation: str = "sigmoid"
    tied_weights: bool = False
    contractive_weight: float = 0.1
    penalty: str = "auto"
    learning_rate: float = 3e-3
    seed: int = 0
    epochs: int = 60
    batch_size: int = 32
    test_fraction: float = 0.2
    validation_split: float | None = None
    steps_per_epoch: int | None = None
    shuffle_buffer: int = 10_000
    probe: str = "logistic"

    def __post_init__(self) -> None:
        units: Any = self.hidden_units
        if _is_int(units):
            units = (units,)
        elif isinstance(units, Sequence) and not isinstance(units, str):
            units = tuple(units)
        # The values themselves are checked by `dense_autoencoder` when the model is built.
        object.__setattr__(self, "hidden_units", units)
        check_bool("tied_weights", self.tied_weights)
        rate = self.learning_rate
        if (
            not isinstance(rate, (int, float))
            or isinstance(rate, bool)
            or not math.isfinite(rate)
            or rate < 0
        ):
            raise ValueError(
                "`learning_rate` should be a non-negative finite number. "
                f"Received: learning_rate={rate!r}"
            )
        if not _is_int(self.seed):
            raise ValueError(f"`seed` should be an integer. Received: seed={self.seed!r}")
        for name in ("epochs", "batch_size", "shuffle_buffer"):
            _check_positive_int(name, getattr(self, name))
        if self.steps_per_epoch is not None:
            _check_positive_int("steps_per_epoch", self.steps_per_epoch)
        _check_fraction(
            "test_fraction",
            self.test_fraction,
            zero_allowed=False,
            why=": the summary is measured on held-out data",
        )
        if self.validation_split is not None:
            _check_fraction("validation_split", self.validation_split, zero_allowed=True)
        if self.probe not in PROBES:
            raise ValueError(
                f"`probe` should be one of {list(PROBES)}. Received: probe={self.probe!r}"
            )

    def model_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of `keras_cae.dense_autoencoder` for this job.

        Returns:
            `hidden_units` (as a list), the activations, `tied_weights`,
            `contractive_weight`, `penalty`, `learning_rate` and `seed`.

        Example:

        >>> TrainConfig(hidden_units=8).model_kwargs()["hidden_units"] == [8]
        True
        """
        return {
            "hidden_units": list(self.hidden_units),
            "activation": self.activation,
            "output_activation": self.output_activation,
            "tied_weights": self.tied_weights,
            "contractive_weight": self.contractive_weight,
            "penalty": self.penalty,
            "learning_rate": self.learning_rate,
            "seed": self.seed,
        }


#: `keras-cae train`'s λ on the bundled 8×8 digits (64 inputs, 64 sigmoid units): a
#: penalty about 12× the plain auto-encoder's reconstruction error (the ratio rule of
#: docs/results-finetune.md, "Choosing λ for your data").
DIGITS_CONTRACTIVE_WEIGHT = 0.003
#: Its λ on 28×28 images in the Keras MNIST layout, measured on MNIST (784 → 64, 10
#: epochs on 50,000 images, MSE on the 10,000 test images): the plain auto-encoder
#: 0.0051, λ = 0.001 0.0110 (‖J‖²_F 22× smaller), λ = 0.003 0.0206. By the ratio rule
#: at that plain auto-encoder (MSE 0.0053, mean ‖J‖_F 6.68 on validation rows),
#: λ = 0.003 is ratio 25 and 0.001 ratio 8, nearer the digits' 12.
MNIST_CONTRACTIVE_WEIGHT = 0.001


def default_contractive_weight(dataset: Any) -> tuple[float, str]:
    """The λ `keras-cae train` uses when `--contractive-weight` is not given, and why.

    λ multiplies a sum over inputs while the reconstruction error is a mean, so one λ
    does not fit all data (docs/penalties.md). Two defaults were measured: the
    bundled digits and 28×28 images in the Keras MNIST layout (`--data mnist` or a
    file with ``x_train``/``x_test`` of that shape). Other data gets the digits' λ,
    and the reason says to choose λ with the ratio rule.

    Args:
        dataset: a `keras_cae.data.Dataset` (or `None` for streamed data).

    Returns:
        λ and one phrase saying where it comes from.

    Example:

    >>> import numpy as np
    >>> from keras_cae.data import Dataset
    >>> images = np.zeros((6, 28, 28), np.float32)
    >>> default_contractive_weight(Dataset(images, None, "m.npz", "x / 255", x_test=images))[0]
    0.001
    """
    hint = "--contractive-weight sets it"
    name = getattr(dataset, "name", None)
    if name == "sklearn-digits":
        return DIGITS_CONTRACTIVE_WEIGHT, (
            "the default for the bundled digits (a penalty about 12x the plain "
            f"auto-encoder's reconstruction error there, docs/penalties.md); {hint}"
        )
    if (
        dataset is not None
        and getattr(dataset, "has_split", False)
        and tuple(dataset.x.shape[1:]) in ((28, 28), (28, 28, 1), (784,))
    ):
        return MNIST_CONTRACTIVE_WEIGHT, (
            "the default for 28x28 images in the Keras MNIST layout (measured on MNIST, "
            "10 epochs: held-out MSE 2.2x the plain auto-encoder's for a 22x smaller "
            f"||J||^2, where 0.003 gives 4.1x; docs/penalties.md); {hint}"
        )
    return DIGITS_CONTRACTIVE_WEIGHT, (
        "the digits' default; it was not measured on this data, so choose λ with the "
        f"ratio rule (docs/penalties.md, choosing λ); {hint}"
    )
