"""Pre-train, then fine-tune with few or many labels: the protocol of Rifai et al. (2011).

This module holds the protocol's typed results and its building blocks; the study
itself is `keras_cae.studies.finetune_protocol.finetune_study`, its report
`keras_cae.studies.finetune_report`. `keras-cae compare --protocol finetune` tests what
the CAE paper claims: an encoder pre-trained without labels is a better starting point for a
classifier than random weights, most of all when labels are few. For each seed:

1. Pre-training sees every training image, without labels. AE, DAE, CAE and CAE+H are
   the one-layer models of `keras_cae.studies.compare` (hyper-parameters from the same
   validation search: trained on the fit part with the first seed, scored by the
   validation probe accuracy); CAE-2 is a two-layer stack pre-trained greedily
   (`keras_cae.studies.stacked.stacked_encoder`) with the CAE's λ for both layers.
2. Fine-tuning: the encoder gets a softmax layer, and the whole network is trained on
   ``k`` labelled images per class drawn from the fit part (the same images for every
   model, per seed and budget), or on all of them. ``random`` and ``random-2`` are the
   same one- and two-layer networks from their initial (not pre-trained) weights,
   trained with the same data, epochs and optimizer. The epoch kept is the one with
   the best validation accuracy (early stopping on the validation part, never the
   test part).
3. Measured on the held-out test part: accuracy on clean inputs, under one-pixel
   shifts (up, down, left, right; zeros enter at the border) and under Gaussian noise;
   the same for a linear probe on each pre-trained code and on raw pixels.
4. Paired tests across seeds (same seeds, same labelled images): the paired t-test
   (`scipy.stats.ttest_rel`) and the Wilcoxon signed-rank test (`scipy.stats.wilcoxon`,
   exact, two-sided; with 5 seeds its smallest possible p-value is 0.0625).
5. A λ sweep for the CAE: held-out reconstruction error, mean ‖J_f‖_F, probe and
   fine-tuned accuracy, top Jacobian singular values, and the penalty-to-reconstruction
   ratio ``λ·(mean ‖J_AE‖_F)² / MSE_AE`` measured at the plain AE (λ = 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from keras_cae.studies._engine import paired_test, summary

__all__ = [
    "PRETRAINED",
    "FINETUNED",
    "SHIFTS",
    "COMPARISONS",
    "LAMBDA_GRID",
    "FinetuneConfig",
    "PretrainRun",
    "FinetuneRun",
    "PairedTest",
    "LambdaPoint",
    "FinetuneStudy",
    "shift_images",
    "labelled_subset",
    "paired_test",
    "finetune_classifier",
    "summary",
]

PRETRAINED = ("AE", "DAE", "CAE", "CAE+H", "CAE-2")
FINETUNED = ("random", "AE", "DAE", "CAE", "CAE+H", "random-2", "CAE-2")
SHIFTS = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}
COMPARISONS = (
    ("CAE", "DAE"),
    ("CAE", "random"),
    ("CAE", "AE"),
    ("CAE-2", "CAE"),
    ("CAE-2", "random-2"),
)
LAMBDA_GRID = (0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
TOP_SINGULAR_VALUES = 8


@dataclass(frozen=True)
class FinetuneConfig:
    """The settings of one study, recorded as-is in the report.

    `test_fraction` is not used for a dataset with its own test split
    (`keras_cae.data.Dataset.x_test`, the Keras layout): its test images are the test set.
    """

    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    label_budgets: tuple[int | None, ...] = (10, 30, 100, None)
    epochs: int = 60
    finetune_steps: int = 2000
    eval_every: int = 50
    patience: int = 8
    batch_size: int = 32
    hidden_units: int = 32
    learning_rate: float = 3e-3
    finetune_learning_rate: float = 3e-3
    test_fraction: float = 0.2
    dae_corruption: str = "gaussian"
    grids: dict[str, tuple[float, ...]] = field(default_factory=dict)
    lambda_grid: tuple[float, ...] = LAMBDA_GRID
    lambda_seeds: int = 2
    noise_levels: tuple[float, ...] = (0.1, 0.2)
    models: tuple[str, ...] = FINETUNED

    def budget_name(self, budget: int | None) -> str:
        return "all" if budget is None else str(budget)


@dataclass
class PretrainRun:
    """One pre-trained encoder, measured by a linear probe on its codes."""

    model: str
    seed: int
    params: dict[str, Any]
    reconstruction_mse: float | None
    jacobian_frobenius: float
    probe_accuracy: float
    probe_shift_accuracy: dict[str, float]
    probe_noise_accuracy: dict[str, float]
    train_cpu_seconds: float


@dataclass
class FinetuneRun:
    """One fine-tuned classifier at one label budget."""

    model: str
    seed: int
    budget: str
    num_labels: int
    best_step: int
    test_accuracy: float
    shift_accuracy: dict[str, float]
    noise_accuracy: dict[str, float]
    train_cpu_seconds: float


@dataclass
class PairedTest:
    """``a`` against ``b`` at one budget over the same seeds (differences a − b)."""

    a: str
    b: str
    budget: str
    metric: str
    mean_difference: float
    t_pvalue: float | None
    wilcoxon_pvalue: float | None
    num_seeds: int


@dataclass
class LambdaPoint:
    """The CAE at one λ and one seed (the λ guide)."""

    contractive_weight: float
    seed: int
    reconstruction_mse: float
    jacobian_frobenius: float
    probe_accuracy: float
    finetune_accuracy: float
    top_singular_values: list[float]
    penalty_ratio: float | None = None


@dataclass
class FinetuneStudy:
    """Everything `finetune_study` measured; `to_dict` is the JSON report."""

    config: FinetuneConfig
    data: dict[str, Any]
    search: dict[str, Any]
    pretrain: list[PretrainRun]
    finetune: list[FinetuneRun]
    raw_probe: list[dict[str, Any]]
    tests: list[PairedTest]
    lambda_sweep: list[LambdaPoint]
    total_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def accuracies(self, model: str, budget: str, key: str = "test_accuracy") -> list[float]:
        """Per-seed values of `key` ("test_accuracy", "shift", "noise@σ") in seed order."""
        runs = [r for r in self.finetune if r.model == model and r.budget == budget]
        runs.sort(key=lambda r: r.seed)
        return [_metric(r, key) for r in runs]


def _metric(run: FinetuneRun | PretrainRun, key: str) -> float:
    prefix = "probe_" if isinstance(run, PretrainRun) else ""
    if key == "shift":
        return float(np.mean(list(getattr(run, f"{prefix}shift_accuracy").values())))
    if key.startswith("noise@"):
        return getattr(run, f"{prefix}noise_accuracy")[key[6:]]
    return getattr(run, "probe_accuracy" if prefix else key)


def shift_images(x: np.ndarray, image_shape: Sequence[int], dy: int, dx: int) -> np.ndarray:
    """Shifts every image by ``(dy, dx)`` pixels, filling the uncovered border with 0.

    Args:
        x: inputs of shape ``(samples, *anything)`` holding ``prod(image_shape)`` values.
        image_shape: ``(height, width)`` or ``(height, width, channels)``.
        dy: rows to move down (negative: up).
        dx: columns to move right (negative: left).

    Returns:
        An array of the shape and dtype of `x`.

    Example:

    >>> import numpy as np
    >>> from keras_cae.studies.finetune import shift_images
    >>> shift_images(np.arange(4.0).reshape(1, 4), (2, 2), 0, 1).tolist()
    [[0.0, 0.0, 0.0, 2.0]]
    """
    images = np.asarray(x).reshape(len(x), *image_shape)
    out = np.zeros_like(images)
    height, width = image_shape[0], image_shape[1]
    rows_to = slice(max(dy, 0), height + min(dy, 0))
    rows_from = slice(max(-dy, 0), height + min(-dy, 0))
    cols_to = slice(max(dx, 0), width + min(dx, 0))
    cols_from = slice(max(-dx, 0), width + min(-dx, 0))
    out[:, rows_to, cols_to] = images[:, rows_from, cols_from]
    return out.reshape(np.shape(x))


def labelled_subset(y: np.ndarray, per_class: int | None, seed: int) -> np.ndarray:
    """Sorted indices of `per_class` samples of each class (all of a smaller class).

    The draw depends only on `seed` and `per_class`, so every model gets the same
    labelled images. `None` returns every index.
    """
    if per_class is None:
        return np.arange(len(y))
    rng = np.random.default_rng([seed, per_class])
    picks = [
        rng.choice(np.flatnonzero(y == label), min(per_class, int(np.sum(y == label))), False)
        for label in np.unique(y)
    ]
    return np.sort(np.concatenate(picks))


def finetune_classifier(
    encoder: Any,
    x: np.ndarray,
    y: np.ndarray,
    validation: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    steps: int = 2000,
    eval_every: int = 50,
    patience: int = 8,
    batch_size: int = 32,
    learning_rate: float = 3e-3,
    seed: int = 0,
) -> tuple[Any, int]:
    """Puts a softmax layer on a copy of `encoder` and trains the whole network.

    Adam on the cross-entropy, for at most `steps` minibatch steps whatever the number
    of labelled samples (so a pre-trained and a random network get the same budget);
    the validation accuracy is measured every `eval_every` steps and the weights kept
    are those of the best measurement (`keras.callbacks.EarlyStopping`, `patience`
    measurements without improvement, best weights restored). `encoder` itself is not
    changed.

    Args:
        encoder: a built Keras encoder (pre-trained or freshly initialised).
        x: labelled training inputs.
        y: their integer labels.
        validation: ``(x_val, y_val)`` for choosing when to stop.
        num_classes: size of the softmax layer.
        steps: the most training steps. Defaults to `2000`.
        eval_every: steps between validation measurements. Defaults to `50`.
        patience: measurements without improvement before stopping. Defaults to `8`.
        batch_size: Defaults to `32` (or all samples, if fewer).
        learning_rate: Adam's learning rate. Defaults to `3e-3`.
        seed: seeds the softmax initialiser and the shuffling. Defaults to `0`.

    Returns:
        ``(classifier, best_step)``: the step count at the kept weights.
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    copy = keras.models.clone_model(encoder)
    copy.set_weights(encoder.get_weights())
    classifier = keras.Sequential(
        [
            keras.Input(encoder.input_shape[1:]),
            copy,
            keras.layers.Dense(
                num_classes, "softmax", kernel_initializer=keras.initializers.GlorotUniform(seed)
            ),
        ]
    )
    classifier.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    stop = keras.callbacks.EarlyStopping(
        monitor="val_accuracy", mode="max", patience=patience, restore_best_weights=True
    )
    batches = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        .repeat()
        .batch(min(batch_size, len(x)))
    )
    period = min(eval_every, steps)
    classifier.fit(
        batches, validation_data=validation, epochs=max(1, steps // period),
        steps_per_epoch=period, shuffle=False, verbose=0, callbacks=[stop],
    )  # fmt: skip
    return classifier, (int(stop.best_epoch) + 1) * period
