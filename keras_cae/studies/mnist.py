"""The CAE paper's study on real MNIST: 784→1000, pre-trained, then fine-tuned.

Rifai et al. (ICML 2011, Table 1) pre-train one layer of 1,000 sigmoid units (tied
weights, cross-entropy reconstruction) and fine-tune an MLP on all labels; Rifai et al.
(NIPS 2011, the Manifold Tangent Classifier) report the same kind of network with
100 / 600 / 1,000 / 3,000 labels. This module runs that protocol at a size two shared
CPU cores can finish, one cached *unit* at a time:

* a **pre-training unit** trains one auto-encoder (``ae``, ``dae``, ``cae``, ``cae_h``,
  or the second layer of ``cae2``) on the training images without labels, and stores
  its encoder weights (``.npz``, never committed) and a small JSON record;
* a **fine-tuning unit** puts a softmax layer on one encoder (or on a randomly
  initialised one, ``random``), trains the whole network on one labelled subset
  (``budget`` labels, balanced over the classes, drawn by ``seed``) and keeps the
  weights of the best validation error; it records the validation error and, once
  trained, the official-test error;
* a **geometry unit** measures one pre-trained encoder on test points (normalised
  Jacobian spectra, SAT, contraction curve).

Every unit is stored under a key made of its model, its hyper-parameters, its seed and a
hash of every setting that changes its result, so an interrupted run resumes where it
stopped and a finished unit is never recomputed. Selection (λ, noise, fine-tuning
learning rate) reads validation errors only; the official test images are read by
`MnistSplit.test` alone, which a run touches only after a unit's training is over.

Run it with ``python -m keras_cae.studies.mnist run --data ../shared/data/mnist.npz
--cache runs/mnist`` (options: ``--train-size``, ``--val-size``, ``--finetune-lr``,
``--pretrain-epochs``, ``--all-epochs``, ``--few-steps``, ``--models``), list the units
with ``... plan``, and write the report with ``... report --cache runs/mnist --out
docs/results-mnist --docs docs`` (``report.json``, the figures, ``results-mnist.md``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from keras_cae import _io
from keras_cae._checks import positive_int
from keras_cae.studies import _engine
from keras_cae.studies._mnist_design import BUDGETS, MARGINS, PRIMARY

__all__ = [
    "MODELS",
    "BUDGETS",
    "StudyConfig",
    "MnistSplit",
    "load_split",
    "balanced_subset",
    "Unit",
    "plan",
    "Cache",
    "run_units",
    "finetune",
    "pretrain",
    "geometry",
    "build_report",
    "main",
]

MODELS = ("random", "ae", "dae", "cae", "cae2", "cae_h", "cae_mse")
NUM_CLASSES = 10


@dataclass(frozen=True)
class StudyConfig:
    """Every setting of the study; each unit's key hashes the ones it depends on.

    Attributes:
        train_size: training images (unlabelled for pre-training, the labelled pool).
        val_size: validation images (drawn from the official training images).
        hidden: hidden units per layer (the paper: 1,000).
        pretrain_epochs: epochs of every pre-training (Adam, batch `batch_size`).
        pretrain_lr: Adam's learning rate in pre-training.
        batch_size: minibatch size (pre-training and fine-tuning).
        finetune_lrs: the fine-tuning learning rates searched (Adam, cosine decay to 0);
            the first is the default one, run first.
        all_epochs: most fine-tuning epochs with all labels.
        few_steps: most fine-tuning steps with few labels.
        few_eval_every: steps between validation measurements with few labels.
        patience: epochs without a better validation error before stopping (all labels).
        few_patience: measurements without a better validation error before stopping
            (few labels).
        seeds: label seeds (labelled subset, validation subset, head initialisation).
        all_seeds: label seeds with all labels.
        pretrain_seed: the one seed of every pre-training.
        cae_lambdas: λ of the CAE (first: default, also CAE-2's λ for both layers).
        dae_noises: Gaussian noise σ of the DAE (first: default).
        cae_h: ``(λ, γ)`` pairs of CAE+H (first: default).
        cae_mse_lambdas: λ of ``cae_mse``, the package's default auto-encoder
            (untied decoder, mean squared error) beside the paper's.
        geometry_points: test points for the spectra and SAT.
        split_seed: seed of the train/validation split of the official training images.
    """

    train_size: int = 50000
    val_size: int = 10000
    hidden: int = 1000
    pretrain_epochs: int = 10
    pretrain_lr: float = 1e-3
    batch_size: int = 100
    finetune_lrs: tuple[float, ...] = (1e-3, 3e-4)
    all_epochs: int = 40
    few_steps: int = 2000
    few_eval_every: int = 25
    patience: int = 8
    few_patience: int = 20
    seeds: tuple[int, ...] = (0, 1, 2)
    all_seeds: tuple[int, ...] = (0, 1, 2)
    pretrain_seed: int = 0
    cae_lambdas: tuple[float, ...] = (1e-3, 3e-4, 3e-3)
    dae_noises: tuple[float, ...] = (0.3, 0.5)
    cae_h: tuple[tuple[float, float], ...] = ((1e-3, 1e-3), (1e-3, 0.1))
    cae_mse_lambdas: tuple[float, ...] = (1e-4,)
    geometry_points: int = 500
    split_seed: int = 0
    budgets: tuple[str, ...] = BUDGETS

    def __post_init__(self) -> None:
        for name in (
            "train_size", "val_size", "hidden", "pretrain_epochs", "batch_size", "all_epochs",
            "few_steps", "few_eval_every", "patience", "few_patience", "geometry_points",
        ):  # fmt: skip
            object.__setattr__(self, name, positive_int(name, getattr(self, name)))
        if not self.finetune_lrs or not all(0 < v < math.inf for v in self.finetune_lrs):
            raise ValueError(
                f"`finetune_lrs` should be positive numbers. Received: {self.finetune_lrs!r}"
            )
        if self.train_size + self.val_size > 60000:
            raise ValueError(
                "`train_size` + `val_size` should be at most the 60,000 official training "
                f"images. Received: {self.train_size} + {self.val_size}"
            )


# --------------------------------------------------------------------------- data


class MnistSplit:
    """Train / validation from the official training images; the test images apart.

    `test` is the only way to the official test images; `test_reads` counts its calls,
    so that tests can check that no training or selection step reads them.
    """

    def __init__(
        self,
        x_train: np.ndarray,
        y_train: np.ndarray,
        x_val: np.ndarray,
        y_val: np.ndarray,
        test: Callable[[], tuple[np.ndarray, np.ndarray]],
    ):
        self.x_train, self.y_train, self.x_val, self.y_val = x_train, y_train, x_val, y_val
        self._test = test
        self.test_reads = 0

    def test(self) -> tuple[np.ndarray, np.ndarray]:
        """The official test images (flattened, in [0, 1]) and labels."""
        self.test_reads += 1
        return self._test()


def load_split(
    path: str, train_size: int = 50000, val_size: int = 10000, seed: int = 0
) -> MnistSplit:
    """Reads a Keras-layout ``mnist.npz`` and splits its training images.

    The official training images are shuffled with `seed`; the first `train_size`
    are the training set, the last `val_size` the validation set (disjoint). The test
    images are read from the file only when `MnistSplit.test` is called.

    Args:
        path: the ``.npz`` file (arrays ``x_train``, ``y_train``, ``x_test``, ``y_test``).
        train_size: training images. Defaults to `50000`.
        val_size: validation images. Defaults to `10000`.
        seed: seed of the shuffle. Defaults to `0`.

    Returns:
        A `MnistSplit` with inputs flattened to float32 in [0, 1].

    Raises:
        ValueError: if the file lacks an array or the sizes exceed the training images.

    Example:

    >>> import numpy as np, os, tempfile
    >>> from keras_cae.studies.mnist import load_split
    >>> path = os.path.join(tempfile.mkdtemp(), "m.npz")
    >>> x = np.zeros((10, 2, 2), np.uint8)
    >>> np.savez(path, x_train=x, y_train=np.arange(10) % 2, x_test=x[:3], y_test=np.arange(3))
    >>> split = load_split(path, 6, 4)
    >>> split.x_train.shape, split.x_val.shape, split.test_reads
    ((6, 4), (4, 4), 0)
    """
    with np.load(path, allow_pickle=False) as archive:
        missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in archive]
        if missing:
            raise ValueError(
                f"{path}: the mnist.npz layout needs x/y_train, x/y_test; missing {missing}"
            )
        x, y = archive["x_train"], archive["y_train"]
    if train_size + val_size > len(x):
        raise ValueError(
            f"`train_size` + `val_size` should be at most the {len(x)} training images. "
            f"Received: {train_size} + {val_size}"
        )
    order = np.random.default_rng([seed, 60000]).permutation(len(x))
    flat = x.reshape(len(x), -1).astype(np.float32) / 255.0
    train, val = order[:train_size], order[len(x) - val_size :]

    def test() -> tuple[np.ndarray, np.ndarray]:
        with np.load(path, allow_pickle=False) as archive:
            xt, yt = archive["x_test"], archive["y_test"]
        return xt.reshape(len(xt), -1).astype(np.float32) / 255.0, yt.astype(np.int64)

    return MnistSplit(
        flat[train], y[train].astype(np.int64), flat[val], y[val].astype(np.int64), test
    )


def balanced_subset(y: np.ndarray, total: int | None, seed: int, salt: int = 0) -> np.ndarray:
    """Sorted indices of ``total // classes`` examples of every class (all if None).

    The draw depends on `seed`, `total` and `salt` only, so every model gets the same
    labelled images for one seed and budget.

    Example:

    >>> import numpy as np
    >>> from keras_cae.studies.mnist import balanced_subset
    >>> y = np.array([0, 1] * 5)
    >>> np.bincount(y[balanced_subset(y, 4, seed=0)]).tolist()
    [2, 2]
    """
    if total is None:
        return np.arange(len(y))
    classes = np.unique(y)
    per_class = total // len(classes)
    if per_class < 1:
        raise ValueError(f"`total` should be at least the number of classes. Received: {total}")
    rng = np.random.default_rng([seed, total, salt])
    picks = [
        rng.choice(np.flatnonzero(y == c), min(per_class, int(np.sum(y == c))), replace=False)
        for c in classes
    ]
    return np.sort(np.concatenate(picks))


# -------------------------------------------------------------------------- units


@dataclass(frozen=True)
class Unit:
    """One cached computation: ``kind`` is "pretrain", "finetune" or "geometry"."""

    kind: str
    model: str
    hp: tuple[float, ...] = ()
    lr: float | None = None
    budget: str | None = None
    seed: int | None = None

    def name(self) -> str:
        parts = [self.kind, self.model, *(f"{v:g}" for v in self.hp)]
        if self.lr is not None:
            parts.append(f"lr{self.lr:g}")
        if self.budget is not None:
            parts.append(f"b{self.budget}")
        if self.seed is not None:
            parts.append(f"s{self.seed}")
        return "_".join(parts)


def _pretrain_settings(config: StudyConfig, unit: Unit) -> dict[str, Any]:
    return {
        "model": unit.model, "hp": list(unit.hp), "hidden": config.hidden,
        "epochs": config.pretrain_epochs, "lr": config.pretrain_lr,
        "batch_size": config.batch_size, "train_size": config.train_size,
        "val_size": config.val_size, "split_seed": config.split_seed,
        "seed": config.pretrain_seed, "version": 1,
    }  # fmt: skip


def settings(config: StudyConfig, unit: Unit) -> dict[str, Any]:
    """Every setting that changes the result of `unit` (hashed into its cache key)."""
    if unit.kind == "pretrain" or unit.model == "random":
        base = _pretrain_settings(config, unit)
    else:
        base = _pretrain_settings(config, Unit("pretrain", unit.model, unit.hp))
    if unit.kind == "geometry":
        return {**base, "points": config.geometry_points, "geometry_version": 1}
    if unit.kind == "finetune":
        if unit.budget == "all":
            length = {"all_epochs": config.all_epochs, "patience": config.patience}
        else:
            length = {
                "few_steps": config.few_steps, "few_eval_every": config.few_eval_every,
                "few_patience": config.few_patience,
            }  # fmt: skip
        return {
            **base, "lr": unit.lr, "budget": unit.budget, "seed": unit.seed, **length,
            "pretrain_lr": config.pretrain_lr, "finetune_version": 1,
        }  # fmt: skip
    return base


def unit_key(config: StudyConfig, unit: Unit) -> str:
    """``<readable name>-<hash of its settings>``, the unit's file name in the cache."""
    blob = json.dumps(settings(config, unit), sort_keys=True).encode()
    return f"{unit.name()}-{hashlib.sha256(blob).hexdigest()[:10]}"


def default_hp(config: StudyConfig, model: str) -> tuple[float, ...]:
    """The hyper-parameters a model is run with first."""
    return _grid(config, model)[0]


def _grid(config: StudyConfig, model: str) -> list[tuple[float, ...]]:
    if model == "cae":
        return [(float(v),) for v in config.cae_lambdas]
    if model == "cae2":
        return [(float(config.cae_lambdas[0]),)]
    if model == "dae":
        return [(float(v),) for v in config.dae_noises]
    if model == "cae_h":
        return [tuple(float(v) for v in pair) for pair in config.cae_h]
    if model == "cae_mse":
        return [(float(v),) for v in config.cae_mse_lambdas]
    return [()]


def _budgets_seeds(config: StudyConfig) -> list[tuple[str, int]]:
    few = [(b, s) for b in config.budgets if b != "all" for s in config.seeds]
    return ([("all", config.all_seeds[0])] if "all" in config.budgets else []) + few


def plan(config: StudyConfig, models: Sequence[str] = MODELS) -> list[Unit]:
    """Every unit in the order they run: what report.json needs first, searches after.

    1. every model with its default hyper-parameters and the first fine-tuning
       learning rate, at every budget (the first all-label seed, then the few-label
       seeds), then the geometry of every default encoder, then the other all-label
       seeds of these defaults;
    2. the other hyper-parameter values (λ, σ, γ) with the first learning rate;
    3. the other fine-tuning learning rates, for every hyper-parameter value;
    4. the remaining all-label seeds for every configuration.

    A pre-training unit comes right before the first unit that needs it; CAE-2 with
    λ needs the CAE with λ (its first layer).
    """
    units: list[Unit] = []

    def add(unit: Unit) -> None:
        needs = []
        if unit.kind in ("finetune", "geometry") and unit.model != "random":
            needs.append(Unit("pretrain", unit.model, unit.hp))
        for need in needs:
            if need.model == "cae2":
                add(Unit("pretrain", "cae", need.hp))
            if need not in units:
                units.append(need)
        if unit not in units:
            units.append(unit)

    configs_first = [(m, default_hp(config, m)) for m in models]
    lr0, other_lrs = config.finetune_lrs[0], config.finetune_lrs[1:]
    for model, hp in configs_first:
        for budget, seed in _budgets_seeds(config):
            add(Unit("finetune", model, hp, lr0, budget, seed))
    for model, hp in configs_first:
        add(Unit("geometry", model, hp))
    if "all" in config.budgets:
        for model, hp in configs_first:
            for seed in config.all_seeds[1:]:
                add(Unit("finetune", model, hp, lr0, "all", seed))
    for model in models:
        for hp in _grid(config, model)[1:]:
            for budget, seed in _budgets_seeds(config):
                add(Unit("finetune", model, hp, lr0, budget, seed))
            add(Unit("geometry", model, hp))
    for lr in other_lrs:
        for model in models:
            for hp in _grid(config, model):
                for budget, seed in _budgets_seeds(config):
                    add(Unit("finetune", model, hp, lr, budget, seed))
    for model in models:
        for hp in _grid(config, model):
            for lr in config.finetune_lrs if "all" in config.budgets else ():
                for seed in config.all_seeds[1:]:
                    add(Unit("finetune", model, hp, lr, "all", seed))
    return units


# -------------------------------------------------------------------------- cache


class Cache:
    """Units on disk: ``<root>/<kind>/<key>.json`` (+ ``.npz`` weights for pre-training).

    A `keras_cae.studies._engine.RecordStore` keyed by `unit_key`: the folder is the
    unit's kind, the file name its key.
    """

    def __init__(self, root: str, config: StudyConfig):
        self.root, self.config = root, config
        self.store = _engine.RecordStore(root)

    def path(self, unit: Unit, suffix: str = ".json") -> str:
        return self.store.path(unit.kind, unit_key(self.config, unit), suffix)

    def done(self, unit: Unit) -> bool:
        """Whether `unit` is finished: its record, and a pre-training's weights."""
        return self.store.has(unit.kind, unit_key(self.config, unit), unit.kind == "pretrain")

    def recorded(self, unit: Unit) -> bool:
        """Whether the record of `unit` is stored (all a report reads; the weights of
        pre-training units are not committed with their records)."""
        return self.store.has(unit.kind, unit_key(self.config, unit))

    def load(self, unit: Unit) -> dict[str, Any]:
        return self.store.load(unit.kind, unit_key(self.config, unit))

    def weights(self, unit: Unit) -> list[np.ndarray]:
        return self.store.weights(unit.kind, unit_key(self.config, unit))

    def save(
        self, unit: Unit, record: dict[str, Any], weights: list[np.ndarray] | None = None
    ) -> None:
        full = {"unit": asdict(unit), "key": unit_key(self.config, unit), **record}
        full["settings"] = settings(self.config, unit)
        self.store.save(unit.kind, unit_key(self.config, unit), full, weights)


# ---------------------------------------------------------------- pre-training


def _sigmoid(a: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-a))


def _train_autoencoder(
    x: np.ndarray,
    x_val: np.ndarray,
    hidden: int,
    hp: dict[str, Any],
    config: StudyConfig,
    seed: int,
) -> tuple[list[np.ndarray], dict[str, float]]:
    """The paper's auto-encoder (tied weights, sigmoid, cross-entropy, unless `hp` says
    otherwise); returns the encoder weights and the last training logs."""
    import keras

    from keras_cae.builders import dense_autoencoder

    keras.utils.set_random_seed(seed)
    arguments = {"tied_weights": True, "loss": "binary_crossentropy", **hp}
    model = dense_autoencoder(
        x.shape[1], hidden, learning_rate=config.pretrain_lr, seed=seed, penalty="auto",
        **arguments,
    )  # fmt: skip
    history = model.fit(x, epochs=config.pretrain_epochs, batch_size=config.batch_size, verbose=0)
    last = {k: float(v[-1]) for k, v in history.history.items()}
    part = x_val[:2000]
    out = np.clip(np.asarray(model(part, training=False), np.float64), 1e-7, 1 - 1e-7)
    last["val_bce"] = float(-np.mean(part * np.log(out) + (1 - part) * np.log(1 - out)))
    last["val_mse"] = float(np.mean((out - part) ** 2))
    weights = [np.asarray(w) for w in model.encoder.get_weights()]
    keras.backend.clear_session()
    return weights, last


def pretrain(split: MnistSplit, config: StudyConfig, unit: Unit, cache: Cache) -> tuple[dict, list]:
    """Trains the auto-encoder of a pre-training unit; returns its record and weights."""
    model, hp = unit.model, unit.hp
    seed = config.pretrain_seed
    if model == "ae":
        params: dict[str, Any] = {"contractive_weight": 0.0}
    elif model == "dae":
        params = {"contractive_weight": 0.0, "corruption": "gaussian", "corruption_level": hp[0]}
    elif model == "cae":
        params = {"contractive_weight": hp[0]}
    elif model == "cae_h":
        params = {"contractive_weight": hp[0], "hessian_weight": hp[1]}
    elif model == "cae_mse":
        # The package's default auto-encoder: untied decoder, mean squared error.
        params = {"contractive_weight": hp[0], "tied_weights": False, "loss": "mean_squared_error"}
    elif model == "cae2":
        first = cache.weights(Unit("pretrain", "cae", hp))
        codes = _encode(first, split.x_train)
        second, logs = _train_autoencoder(
            codes,
            _encode(first, split.x_val),
            config.hidden,
            {"contractive_weight": hp[0]},
            config,
            seed + 1000,
        )
        weights = first + second
        return {"train_logs": logs, **_code_stats(weights, split.x_val)}, weights
    else:
        raise ValueError(f"No pre-training for model {model!r}")
    weights, logs = _train_autoencoder(
        split.x_train, split.x_val, config.hidden, params, config, seed
    )
    return {"train_logs": logs, **_code_stats(weights, split.x_val)}, weights


def _encode(weights: Sequence[np.ndarray], x: np.ndarray) -> np.ndarray:
    h = x
    for kernel, bias in zip(weights[::2], weights[1::2]):
        h = _sigmoid(h @ kernel + bias)
    return h


def _code_stats(weights: Sequence[np.ndarray], x: np.ndarray) -> dict[str, float]:
    h = _encode(weights, x[:2000])
    return {"val_code_mean": float(h.mean()), "val_code_std": float(h.std())}


def random_weights(config: StudyConfig, input_dim: int, seed: int) -> list[np.ndarray]:
    """Glorot-uniform kernels and zero biases of the hidden layer (``random``)."""
    limit = math.sqrt(6.0 / (input_dim + config.hidden))
    rng = np.random.default_rng([seed, 1])
    kernel = rng.uniform(-limit, limit, (input_dim, config.hidden)).astype(np.float32)
    return [kernel, np.zeros(config.hidden, np.float32)]


# ------------------------------------------------------------------- fine-tuning


def finetune(
    hidden_weights: Sequence[np.ndarray],
    split: MnistSplit,
    config: StudyConfig,
    lr: float,
    budget: str,
    seed: int,
) -> dict[str, Any]:
    """Trains sigmoid hidden layers + softmax on one labelled subset, then tests it.

    Adam with a cosine decay of `lr` to 0 over the most steps; the validation error is
    measured every epoch (all labels) or every ``few_eval_every`` steps (few labels),
    and the weights of the best measurement are kept; training stops after `patience`
    measurements without improvement. With few labels the validation set has as many
    images as the labelled set (balanced, drawn from the validation images by `seed`).
    Only after training is the official test read, once.

    Returns:
        ``val_error``, ``test_error`` (fractions), ``best_step``, ``steps``,
        ``num_labels``, ``num_val`` and ``seconds``.
    """
    import tensorflow as tf

    started = time.perf_counter()
    total = None if budget == "all" else int(budget)
    train = balanced_subset(split.y_train, total, seed)
    val = balanced_subset(split.y_val, total, seed, salt=1)
    x, y = split.x_train[train], split.y_train[train]
    xv, yv = split.x_val[val], split.y_val[val]
    batch = min(config.batch_size, len(x))
    if total is None:
        per_epoch = len(x) // batch
        steps, every = config.all_epochs * per_epoch, per_epoch
    else:
        steps, every = config.few_steps, config.few_eval_every
    patience = config.patience if total is None else config.few_patience
    tf.random.set_seed(seed)
    rng = np.random.default_rng([seed, 2])
    limit = math.sqrt(6.0 / (config.hidden + NUM_CLASSES))
    head = [
        rng.uniform(-limit, limit, (hidden_weights[-1].shape[-1], NUM_CLASSES)).astype(np.float32),
        np.zeros(NUM_CLASSES, np.float32),
    ]
    variables = [tf.Variable(np.asarray(w, np.float32)) for w in [*hidden_weights, *head]]
    schedule = tf.keras.optimizers.schedules.CosineDecay(lr, steps)
    optimizer = tf.keras.optimizers.Adam(schedule)

    def logits(inputs: Any) -> Any:
        h = inputs
        for kernel, bias in zip(variables[:-2:2], variables[1:-2:2]):
            h = tf.sigmoid(tf.matmul(h, kernel) + bias)
        return tf.matmul(h, variables[-2]) + variables[-1]

    x_tf, y_tf = tf.constant(x), tf.constant(y)

    @tf.function
    def step(index: Any) -> Any:
        xb, yb = tf.gather(x_tf, index), tf.gather(y_tf, index)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=yb, logits=logits(xb))
            )
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    @tf.function
    def predict(inputs: Any) -> Any:
        return tf.argmax(logits(inputs), axis=1)

    def error(inputs: np.ndarray, labels: np.ndarray) -> float:
        wrong = 0
        for i in range(0, len(inputs), 5000):
            wrong += int(
                np.sum(predict(tf.constant(inputs[i : i + 5000])).numpy() != labels[i : i + 5000])
            )
        return wrong / len(inputs)

    order: list[int] | np.ndarray = []
    best_error, best_step, best_weights, waited, position = math.inf, 0, None, 0, 0
    done = 0
    while done < steps:
        if position + batch > len(order):
            order, position = rng.permutation(len(x)), 0
        step(tf.constant(order[position : position + batch]))
        position += batch
        done += 1
        if done % every == 0 or done == steps:
            current = error(xv, yv)
            if current < best_error:
                best_error, best_step, waited = current, done, 0
                best_weights = [v.numpy() for v in variables]
            else:
                waited += 1
                if waited >= patience:
                    break
    for variable, value in zip(variables, best_weights or []):
        variable.assign(value)
    x_test, y_test = split.test()
    return {
        "val_error": best_error, "test_error": error(x_test, y_test), "best_step": best_step,
        "steps": done, "max_steps": steps, "num_labels": len(x), "num_val": len(xv),
        "seconds": time.perf_counter() - started,
    }  # fmt: skip


# --------------------------------------------------------------------- geometry


def jacobians(weights: Sequence[np.ndarray], x: np.ndarray) -> np.ndarray:
    """Closed-form Jacobians ``∂h/∂x`` of a stack of sigmoid layers, ``(n, code, input)``.

    Example:

    >>> import numpy as np
    >>> from keras_cae.studies.mnist import jacobians
    >>> jacobians([np.eye(2, dtype=np.float32), np.zeros(2, np.float32)], np.zeros((1, 2))).tolist()
    [[[0.25, 0.0], [0.0, 0.25]]]
    """
    h = np.asarray(x, np.float64)
    jac = None
    for kernel, bias in zip(weights[::2], weights[1::2]):
        h = _sigmoid(h @ kernel + bias)
        local = (h * (1 - h))[:, :, None] * np.asarray(kernel, np.float64).T[None]
        jac = local if jac is None else np.matmul(local, jac)
    if jac is None:
        raise ValueError(
            f"`weights` should hold at least one (kernel, bias) pair. Received: {len(weights)} "
            "arrays"
        )
    return jac


def singular_values(jac: np.ndarray) -> np.ndarray:
    """All singular values of each ``J`` (largest first), from the eigenvalues of ``JᵀJ``.

    The Gram matrix of the smaller side is formed and diagonalised with
    `numpy.linalg.eigvalsh` (several times faster than an SVD of a 1000×784 matrix),
    in the precision of `jac`: in float32, values below about ``3e-4·s₁`` are
    round-off (the study reads ratios of 0.1 and above).

    Example:

    >>> import numpy as np
    >>> from keras_cae.studies.mnist import singular_values
    >>> singular_values(np.array([[[3.0, 0.0], [0.0, 4.0], [0.0, 0.0]]])).round(6).tolist()
    [[4.0, 3.0]]
    """
    jac = np.asarray(jac)
    if jac.shape[1] < jac.shape[2]:
        gram = np.stack([j @ j.T for j in jac])
    else:
        gram = np.stack([j.T @ j for j in jac])
    values = np.linalg.eigvalsh(gram)[:, ::-1]
    return np.sqrt(np.clip(values, 0.0, None))


def geometry(
    weights: Sequence[np.ndarray], x: np.ndarray, seed: int = 0, batch: int = 50
) -> dict[str, Any]:
    """The paper's geometry of an encoder on the points `x` (test images).

    * the full spectrum of ``J(x)`` (all singular values), each normalised by its
      largest, averaged over points; the mean count of singular values above 0.1·s₁;
    * SAT: the fraction of hidden activations below 0.05 or above 0.95 (ICML 2011,
      Table 1 and its footnote 6), averaged over units and points;
    * the contraction curve: mean ``‖h(x + r·u) − h(x)‖ / r`` over points and 8 random
      unit directions ``u`` (`keras_cae.analysis.contraction_curve`'s definition).

    Jacobians are computed `batch` points at a time (float64, then float32 for the
    Gram matrices), so the memory of the spectra is bounded by a few times
    ``batch · code · input · 8`` bytes whatever the number of points.
    """
    spectra, counts = [], []
    for start in range(0, len(x), batch):
        jac = jacobians(weights, x[start : start + batch]).astype(np.float32)
        values = singular_values(jac).astype(np.float64)
        values = values / values[:, :1]
        spectra.append(values)
        counts.append(np.sum(values > 0.1, axis=1))
    spectrum = np.concatenate(spectra)
    codes = _encode(weights, x).astype(np.float64)
    sat = float(np.mean((codes < 0.05) | (codes > 0.95)))
    radii = np.geomspace(0.01, 20.0, 12)
    rng = np.random.default_rng([seed, 3])
    directions = rng.standard_normal((8, *x.shape))
    directions /= np.linalg.norm(directions, axis=2, keepdims=True)
    ratios = []
    for radius in radii:
        moved = _encode(
            weights, (x[None] + radius * directions).reshape(-1, x.shape[1]).astype(np.float32)
        )
        moved = moved.reshape(8, len(x), -1).astype(np.float64)
        ratios.append(float(np.mean(np.linalg.norm(moved - codes[None], axis=2)) / radius))
    return {
        "points": len(x),
        "spectrum_mean": spectrum.mean(axis=0).tolist(),
        "count_above_0.1": float(np.mean(np.concatenate(counts))),
        "sat": sat,
        "frobenius_mean": float(np.mean(np.sqrt(np.sum(np.square(spectrum), axis=1)))),
        "radii": radii.tolist(),
        "contraction": ratios,
        "peak_jacobian_bytes": int(batch * weights[-1].shape[-1] * x.shape[1] * 8),
    }


# ------------------------------------------------------------------------ running


def _encoder_weights(split: MnistSplit, config: StudyConfig, unit: Unit, cache: Cache) -> list:
    if unit.model == "random":
        return random_weights(config, split.x_train.shape[1], unit.seed or 0)
    return cache.weights(Unit("pretrain", unit.model, unit.hp))


def run_unit(split: MnistSplit, config: StudyConfig, unit: Unit, cache: Cache) -> dict[str, Any]:
    """Computes one unit and stores it; returns its record."""
    started = time.perf_counter()
    if unit.kind == "pretrain":
        record, weights = pretrain(split, config, unit, cache)
        record["seconds"] = time.perf_counter() - started
        cache.save(unit, record, weights)
        return record
    if unit.kind == "finetune":
        if unit.lr is None or unit.budget is None or unit.seed is None:
            raise ValueError(f"A finetune unit needs `lr`, `budget` and `seed`. Received: {unit}")
        record = finetune(
            _encoder_weights(split, config, unit, cache),
            split,
            config,
            unit.lr,
            unit.budget,
            unit.seed,
        )
        cache.save(unit, record)
        return record
    if unit.kind == "geometry":
        weights = (
            random_weights(config, split.x_train.shape[1], 0)
            if unit.model == "random"
            else cache.weights(Unit("pretrain", unit.model, unit.hp))
        )
        x_test, _ = split.test()
        points = x_test[
            np.random.default_rng([config.split_seed, 4]).permutation(len(x_test))[
                : config.geometry_points
            ]
        ]
        record = geometry(weights, points)
        record["seconds"] = time.perf_counter() - started
        record["process_peak_rss_mb"] = _peak_rss_mb()
        cache.save(unit, record)
        return record
    raise ValueError(f"Unknown unit kind {unit.kind!r}")


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_GUESS = {"pretrain": 300.0, "finetune_few": 15.0, "finetune_all": 150.0, "geometry": 60.0}


def _kind(unit: Unit) -> str:
    if unit.kind == "finetune":
        return "finetune_all" if unit.budget == "all" else "finetune_few"
    return unit.kind


def run_units(
    split: MnistSplit,
    config: StudyConfig,
    units: Iterable[Unit],
    cache: Cache,
    say: Callable[[str], None] = print,
    on_done: Callable[[Unit], None] | None = None,
) -> int:
    """Runs every unit not in the cache, in order, with a progress line per unit.

    The estimate of the time left uses the mean measured seconds of each kind of unit
    so far (a guess before the first of a kind). Returns the number of units computed.
    """
    units = list(units)
    todo = [u for u in units if not cache.done(u)]
    say(f"{len(units)} units, {len(units) - len(todo)} cached, {len(todo)} to run")
    progress = _engine.Progress(say, total=len(todo))
    time_left = _engine.TimeLeft(_GUESS)
    for number, unit in enumerate(todo, 1):
        begin = time.perf_counter()
        record = run_unit(split, config, unit, cache)
        time_left.record(_kind(unit), time.perf_counter() - begin)
        left = time_left.seconds(_kind(u) for u in todo[number:])
        detail = ""
        if unit.kind == "finetune":
            detail = f" val {record['val_error']:.4f} test {record['test_error']:.4f}"
        progress.step(
            f"{unit.name()}{detail} in {time_left.last(_kind(unit)):.0f} s", left_seconds=left
        )
        if on_done is not None:
            on_done(unit)
    return len(todo)


# ------------------------------------------------------------------------- report


TIE_TOLERANCE = 1e-9  # Far below one error in the validation set (1 / 10,000).


def select(config: StudyConfig, cache: Cache, model: str, budget: str) -> dict[str, Any] | None:
    """The configuration (hp, lr) of `model` at `budget` with the lowest mean validation error.

    Configurations are tried in grid order (hp, then fine-tuning lr); of equal errors the
    first wins, whatever the rounding of their means.

    Only configurations with every seed of the budget finished compete; with all labels,
    those with the first seed, compared on its validation error (the other seeds'
    test errors join the result when finished).
    """
    seeds = list(config.seeds) if budget != "all" else list(config.all_seeds)
    best: dict[str, Any] | None = None
    for hp in _grid(config, model):
        for lr in config.finetune_lrs:
            units = [Unit("finetune", model, hp, lr, budget, s) for s in seeds]
            done = [u for u in units if cache.recorded(u)]
            if budget != "all" and len(done) < len(units):
                continue
            if not done or (budget == "all" and done[0].seed != seeds[0]):
                continue
            records = [cache.load(u) for u in done]
            # With all labels, configurations are compared on the first seed (all have it).
            val = float(records[0]["val_error"] if budget == "all" else np.mean(
                [r["val_error"] for r in records]
            ))  # fmt: skip
            candidate = {
                "hp": list(hp), "lr": lr, "val_error_mean": val,
                "seeds": [u.seed for u in done],
                "test_errors": [r["test_error"] for r in records],
                "val_errors": [r["val_error"] for r in records],
            }  # fmt: skip
            # Of equal errors the first (the weakest regularisation, as `_engine.search`):
            # means of the same error counts may differ in the last bit, so "lower" is
            # lower by more than `TIE_TOLERANCE`.
            if best is None or val < best["val_error_mean"] - TIE_TOLERANCE:
                best = candidate
    return best


def build_report(
    config: StudyConfig, cache: Cache, models: Sequence[str] = MODELS
) -> dict[str, Any]:
    """report.json: selected per-seed test errors, candidates, tests, geometry, missing units."""
    results: dict[str, dict[str, list[float]]] = {}
    selected: dict[str, dict[str, Any]] = {}
    for model in models:
        for budget in config.budgets:
            choice = select(config, cache, model, budget)
            if choice is not None:
                results.setdefault(model, {})[budget] = choice["test_errors"]
                selected.setdefault(model, {})[budget] = choice
    tests = []
    for budget in config.budgets:
        margin = MARGINS["all" if budget == "all" else "few"]
        for a, b in PRIMARY:
            ca, cb = selected.get(a, {}).get(budget), selected.get(b, {}).get(budget)
            if ca is None or cb is None:
                continue
            seeds = sorted(set(ca["seeds"]) & set(cb["seeds"]))
            ea = [ca["test_errors"][ca["seeds"].index(s)] for s in seeds]
            eb = [cb["test_errors"][cb["seeds"].index(s)] for s in seeds]
            test = _engine.paired_comparison(ea, eb, margin)
            tests.append({"a": a, "b": b, "budget": budget, **test})
    for test, p in zip(tests, _engine.holm([t["p"] for t in tests])):
        test["p_holm"] = p
        test["verdict"] = _engine.verdict(test)
    units = plan(config, models)
    missing = [u.name() for u in units if not cache.recorded(u)]
    geometry_records = {}
    for model in models:
        for hp in _grid(config, model):
            unit = Unit("geometry", model, hp)
            if cache.recorded(unit):
                record = cache.load(unit)
                geometry_records[unit.name()] = {
                    k: record[k]
                    for k in ("points", "count_above_0.1", "sat", "frobenius_mean", "radii",
                              "contraction", "spectrum_mean", "seconds", "peak_jacobian_bytes",
                              "process_peak_rss_mb")
                }  # fmt: skip
    seconds: dict[str, float] = {}
    for unit in units:
        if cache.recorded(unit):
            kind = _kind(unit)
            seconds[kind] = seconds.get(kind, 0.0) + float(cache.load(unit).get("seconds", 0.0))
    return {
        "results": results,
        "selected": selected,
        "tests": tests,
        "geometry": geometry_records,
        "config": asdict(config),
        "units": {"planned": len(units), "finished": len(units) - len(missing), "missing": missing},
        "compute_seconds": seconds,
    }


def write_report(report: dict[str, Any], folder: str) -> str:
    """Writes ``report.json`` into `folder` (atomically); returns its path."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "report.json")
    _io.atomic_write_text(path, json.dumps(report, indent=1, sort_keys=True))
    return path


# ---------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m keras_cae.studies.mnist", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "report", "plan"):
        p = sub.add_parser(name)
        p.add_argument("--cache", default="runs/mnist", help="folder of the cached units")
        p.add_argument("--train-size", type=int, default=StudyConfig.train_size)
        p.add_argument("--val-size", type=int, default=StudyConfig.val_size)
        p.add_argument("--pretrain-epochs", type=int, default=StudyConfig.pretrain_epochs)
        p.add_argument("--all-epochs", type=int, default=StudyConfig.all_epochs)
        p.add_argument("--few-steps", type=int, default=StudyConfig.few_steps)
        p.add_argument(
            "--finetune-lr", type=float, nargs="+", default=list(StudyConfig.finetune_lrs)
        )
        p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
        p.add_argument(
            "--data", default="../shared/data/mnist.npz", help="a Keras-layout mnist.npz"
        )
        p.add_argument("--out", default="docs/results-mnist", help="report folder (report)")
        p.add_argument("--docs", default=None, help="(report) also write DOCS/results-mnist.md")
        p.add_argument(
            "--commit-json", default=None, help="(run) copy each finished unit's JSON here"
        )
    return parser


def config_from_args(args: argparse.Namespace) -> StudyConfig:
    return StudyConfig(
        train_size=args.train_size, val_size=args.val_size, pretrain_epochs=args.pretrain_epochs,
        all_epochs=args.all_epochs, few_steps=args.few_steps,
        finetune_lrs=tuple(args.finetune_lr),
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; see the module docstring."""
    args = _parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    cache = Cache(args.cache, config)
    if args.command == "plan":
        for unit in plan(config, args.models):
            print(("done " if cache.done(unit) else "todo ") + unit.name())
        return 0
    if args.command == "report":
        report = build_report(config, cache, args.models)
        print(write_report(report, args.out))
        if args.docs:
            from keras_cae.studies import mnist_report

            command = (
                "python -m keras_cae.studies.mnist run --data ../shared/data/mnist.npz "
                "--cache runs/mnist"
            )
            preamble = os.path.join(args.out, "preamble.md")
            for path in mnist_report.write(report, args.docs, preamble, command):
                print(path)
        return 0
    if not os.path.exists(args.data):
        print(f"error: --data {args.data!r} does not exist", file=sys.stderr)
        return 2
    split = load_split(args.data, config.train_size, config.val_size, config.split_seed)

    def copy_json(unit: Unit) -> None:
        if args.commit_json:
            with open(cache.path(unit)) as stream:
                text = stream.read()
            folder = os.path.join(args.commit_json, unit.kind)
            os.makedirs(folder, exist_ok=True)
            _io.atomic_write_text(os.path.join(folder, os.path.basename(cache.path(unit))), text)

    def say(line: str) -> None:
        print(time.strftime("%H:%M:%S ", time.gmtime()) + line, flush=True)

    run_units(split, config, plan(config, args.models), cache, say, copy_json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
