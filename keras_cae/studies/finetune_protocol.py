"""The pre-train → fine-tune study (`keras-cae compare --protocol finetune`).

The protocol is described in `keras_cae.studies.finetune`, which also holds its typed results;
`keras_cae.studies.finetune_report` writes them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from keras_cae._checks import positive_int
from keras_cae.data import Dataset
from keras_cae.studies import _engine
from keras_cae.studies.compare import model_params
from keras_cae.studies.finetune import (
    COMPARISONS,
    FINETUNED,
    PRETRAINED,
    SHIFTS,
    TOP_SINGULAR_VALUES,
    FinetuneConfig,
    FinetuneRun,
    FinetuneStudy,
    LambdaPoint,
    PairedTest,
    PretrainRun,
    finetune_classifier,
    labelled_subset,
    shift_images,
)

__all__ = ["finetune_study", "seed_runs", "lambda_sweep", "tests", "lambda_budget"]


def check_config(config: FinetuneConfig) -> None:
    """Raises `ValueError` naming the first invalid setting of `config`."""
    positive = ("epochs", "finetune_steps", "eval_every", "patience", "batch_size", "hidden_units")
    for name in positive:
        positive_int(name, getattr(config, name))
    positive_int("lambda_seeds", config.lambda_seeds, minimum=0)
    if not config.seeds or len(set(config.seeds)) != len(config.seeds):
        raise ValueError(f"`seeds` should be distinct integers. Received: {config.seeds!r}")
    budgets = config.label_budgets
    if not budgets or not all(b is None or (isinstance(b, int) and b > 0) for b in budgets):
        raise ValueError(
            "`label_budgets` should hold positive integers (labels per class) or None (all). "
            f"Received: {budgets!r}"
        )
    for name in ("learning_rate", "finetune_learning_rate"):
        if not 0 < getattr(config, name) < np.inf:
            raise ValueError(f"`{name}` should be positive. Received: {getattr(config, name)!r}")
    if not 0 < config.test_fraction < 1:
        raise ValueError(f"`test_fraction` should be in (0, 1). Received: {config.test_fraction}")
    if any(not (v >= 0 and np.isfinite(v)) for v in config.lambda_grid):
        raise ValueError(f"`lambda_grid` should be non-negative. Received: {config.lambda_grid}")
    _engine.check_grids(config.grids, config.dae_corruption)
    if not config.models or not set(config.models) <= set(FINETUNED):
        raise ValueError(
            f"`models` should be a non-empty subset of {list(FINETUNED)}. "
            f"Received: {config.models!r}"
        )


class _Measure:
    """Test inputs (clean, shifted, noisy) shared by every model of one seed."""

    def __init__(self, x_test: np.ndarray, image_shape: Any, levels: Sequence[float], seed: int):
        rng = np.random.default_rng([seed, 0])
        self.clean = x_test
        self.shifted = (
            {}
            if image_shape is None
            else {k: shift_images(x_test, image_shape, *d) for k, d in SHIFTS.items()}
        )
        self.noisy = {str(s): x for s, x in _engine.noisy_inputs(x_test, levels, rng).items()}

    def scores(self, score: Callable[[np.ndarray], float]) -> tuple[float, dict, dict]:
        return (
            score(self.clean),
            {k: score(v) for k, v in self.shifted.items()},
            {k: score(v) for k, v in self.noisy.items()},
        )


def _predict(model: Any, x: np.ndarray) -> np.ndarray:
    return _engine.batched(lambda batch: model(batch, training=False), x, 1024)


@dataclass
class _Data:
    x_train: np.ndarray
    x_fit: np.ndarray
    y_fit: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    y_train: np.ndarray
    num_classes: int
    image_shape: tuple[int, ...] | None
    own_test_split: bool = False


def _split(dataset: Dataset, config: FinetuneConfig) -> _Data:
    labels, p = dataset.y, _engine.split(dataset, config.test_fraction)
    if (
        labels is None
        or p.y_train is None
        or p.y_fit is None
        or p.y_val is None
        or p.y_test is None
    ):
        raise ValueError(
            f"The fine-tuning protocol needs labels, and dataset {dataset.name!r} has none."
        )
    return _Data(
        p.x_train, p.x_fit, p.y_fit, p.x_val, p.y_val, p.x_test, p.y_test, p.y_train,
        int(labels.max()) + 1, _engine.image_shape(tuple(dataset.x.shape[1:])),
        p.own_test_split,
    )  # fmt: skip


class _Runner:
    """Pre-training and fine-tuning with the study's settings, and its progress lines."""

    def __init__(self, data: _Data, config: FinetuneConfig, say: Callable[[str], None]):
        self.data, self.config, self.say = data, config, say
        self.progress = _engine.Progress(say)
        self.input_dim = data.x_train.shape[1]

    def log(self, text: str) -> None:
        self.progress.log(text)

    def pretrain(self, name: str, params: dict[str, Any], x: np.ndarray, seed: int) -> tuple:
        """Returns ``(encoder, model or None, CPU seconds)``; CAE-2 through the stack API."""
        import keras

        from keras_cae.builders import dense_autoencoder
        from keras_cae.studies.stacked import stacked_encoder

        config = self.config
        begin = time.process_time()
        if name == "CAE-2":
            encoder = stacked_encoder(
                x, [config.hidden_units] * 2, params["contractive_weight"], epochs=config.epochs,
                batch_size=config.batch_size, learning_rate=config.learning_rate, seed=seed,
            )  # fmt: skip
            return encoder, None, time.process_time() - begin
        keras.utils.set_random_seed(seed)
        model = dense_autoencoder(
            self.input_dim, config.hidden_units, learning_rate=config.learning_rate, seed=seed,
            **params,
        )  # fmt: skip
        model.fit(x, epochs=config.epochs, batch_size=config.batch_size, shuffle=True, verbose=0)
        return model.encoder, model, time.process_time() - begin

    def initial_encoder(self, name: str, seed: int) -> Any:
        """The untrained network a pre-trained one starts from (``random``, ``random-2``)."""
        import keras

        from keras_cae.studies.stacked import layer_seed

        units = self.config.hidden_units
        layers = [
            keras.layers.Dense(
                units, "sigmoid", name=f"encoder_{i}",
                kernel_initializer=keras.initializers.GlorotUniform(
                    layer_seed(seed, i) if name == "random-2" else seed + i
                ),
            )
            for i in range(2 if name == "random-2" else 1)
        ]  # fmt: skip
        return keras.Sequential([keras.Input((self.input_dim,)), *layers], name="encoder")

    def finetune(self, encoder: Any, budget: int | None, seed: int) -> tuple[Any, int, int, float]:
        data, config = self.data, self.config
        index = labelled_subset(data.y_fit, budget, seed)
        begin = time.process_time()
        classifier, best = finetune_classifier(
            encoder, data.x_fit[index], data.y_fit[index], (data.x_val, data.y_val),
            data.num_classes, steps=config.finetune_steps, eval_every=config.eval_every,
            patience=config.patience,
            batch_size=config.batch_size, learning_rate=config.finetune_learning_rate, seed=seed,
        )  # fmt: skip
        return classifier, best, len(index), time.process_time() - begin


def _probe(codes_train: np.ndarray, y_train: np.ndarray) -> Any:
    """The linear probe (`keras_cae.training.fit_probe`): a scikit-learn pipeline."""
    from keras_cae.training import fit_probe

    return fit_probe(codes_train, y_train)


def _search(runner: _Runner) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The validation search of `studies.compare` (probe criterion) for DAE, CAE, CAE+H."""
    import keras

    config, data = runner.config, runner.data
    values = _engine.check_grids(config.grids, config.dae_corruption)
    needs_cae = {"CAE", "CAE+H", "CAE-2"} & set(config.models)
    models = [
        n for n in ("DAE", "CAE", "CAE+H") if n in config.models or (n == "CAE" and needs_cae)
    ]

    def evaluate(name: str, search_params: dict[str, float]) -> dict[str, Any]:
        params = model_params(name, config.dae_corruption, search_params)
        encoder, _, _ = runner.pretrain(name, params, data.x_fit, config.seeds[0])
        probe = _probe(np.asarray(encoder(data.x_fit)), data.y_fit)
        accuracy = float(probe.score(np.asarray(encoder(data.x_val)), data.y_val))
        runner.log(f"search {name} {params}: val probe {accuracy:.3f}")
        keras.backend.clear_session()
        return {"params": params, "validation_probe_accuracy": accuracy}

    found = _engine.search(models, values, evaluate, lambda c: c["validation_probe_accuracy"])
    selected: dict[str, dict[str, Any]] = {"AE": {"contractive_weight": 0.0}}
    search: dict[str, Any] = {}
    for name, (candidates, chosen) in found.items():
        selected[name] = model_params(name, config.dae_corruption, chosen)
        search[name] = {"candidates": candidates, "selected": selected[name]}
    if needs_cae:
        selected["CAE-2"] = {"contractive_weight": selected["CAE"]["contractive_weight"]}
    return selected, search


def _measure_pretrained(
    runner: _Runner, name: str, params: dict, seed: int, measure: _Measure
) -> tuple[Any, PretrainRun]:
    from keras_cae.studies import analysis

    data = runner.data
    encoder, model, cpu = runner.pretrain(name, params, data.x_train, seed)
    probe = _probe(np.asarray(encoder(data.x_train)), data.y_train)
    clean, shifted, noisy = measure.scores(
        lambda x: float(probe.score(np.asarray(encoder(x)), data.y_test))
    )
    mse = None
    if model is not None:
        mse = float(np.mean((_predict(model, data.x_test) - data.x_test) ** 2))
    frobenius = float(analysis.jacobian_norm(encoder, data.x_test).mean())
    run = PretrainRun(name, seed, params, mse, frobenius, clean, shifted, noisy, cpu)
    runner.log(f"seed {seed} pre-train {name}: probe {clean:.3f}, CPU {cpu:.1f} s")
    return encoder, run


def _finetune_runs(
    runner: _Runner, name: str, encoder: Any, seed: int, measure: _Measure
) -> list[FinetuneRun]:
    data, runs = runner.data, []
    for budget in runner.config.label_budgets:
        classifier, best, count, cpu = runner.finetune(encoder, budget, seed)

        def accuracy(x: np.ndarray, c: Any = classifier) -> float:
            return float(np.mean(_predict(c, x).argmax(axis=1) == data.y_test))

        clean, shifted, noisy = measure.scores(accuracy)
        label = runner.config.budget_name(budget)
        runs.append(FinetuneRun(name, seed, label, count, best, clean, shifted, noisy, cpu))
        runner.log(f"seed {seed} fine-tune {name} @{label}/class: test {clean:.3f}")
    return runs


def tests(study: FinetuneStudy) -> list[PairedTest]:
    tests = []
    for budget in map(study.config.budget_name, study.config.label_budgets):
        for metric in ("test_accuracy", "shift"):
            for a, b in COMPARISONS:
                if a not in study.config.models or b not in study.config.models:
                    continue
                first, second = (
                    study.accuracies(a, budget, metric),
                    study.accuracies(b, budget, metric),
                )
                t_p, w_p = _engine.paired_test(first, second)
                difference = float(np.mean(np.subtract(first, second)))
                tests.append(PairedTest(a, b, budget, metric, difference, t_p, w_p, len(first)))
    return tests


def lambda_sweep(runner: _Runner, measure_budget: int | None) -> list[LambdaPoint]:
    """The CAE at every λ of the grid (seeds: the first `lambda_seeds`), on the test part."""
    import keras

    from keras_cae.studies import analysis

    config, data, points = runner.config, runner.data, []
    for seed in config.seeds[: config.lambda_seeds]:
        for weight in config.lambda_grid:
            params = {"contractive_weight": float(weight)}
            encoder, model, _ = runner.pretrain("CAE", params, data.x_train, seed)
            probe = _probe(np.asarray(encoder(data.x_train)), data.y_train)
            classifier, _, _, _ = runner.finetune(encoder, measure_budget, seed)
            spectrum = analysis.jacobian_spectrum(encoder, data.x_test).mean(axis=0)
            point = LambdaPoint(
                float(weight), seed,
                float(np.mean((_predict(model, data.x_test) - data.x_test) ** 2)),
                float(analysis.jacobian_norm(encoder, data.x_test).mean()),
                float(probe.score(np.asarray(encoder(data.x_test)), data.y_test)),
                float(np.mean(_predict(classifier, data.x_test).argmax(axis=1) == data.y_test)),
                [float(v) for v in spectrum[:TOP_SINGULAR_VALUES]],
            )  # fmt: skip
            points.append(point)
            runner.log(f"lambda {weight:g} seed {seed}: ||J||_F {point.jacobian_frobenius:.3f}")
            keras.backend.clear_session()
    _add_penalty_ratios(points, runner)
    return points


def _add_penalty_ratios(points: list[LambdaPoint], runner: _Runner) -> None:
    """``λ · (mean ‖J_AE(x)‖_F)² / MSE_AE`` at each seed's λ = 0 point (the AE), if swept."""
    for seed in {p.seed for p in points}:
        base = [p for p in points if p.seed == seed and p.contractive_weight == 0.0]
        if not base:
            continue
        ae = base[0]
        squared = ae.jacobian_frobenius**2
        for point in points:
            if point.seed == seed:
                point.penalty_ratio = point.contractive_weight * squared / ae.reconstruction_mse


def seed_runs(
    runner: _Runner, selected: dict[str, dict[str, Any]], seed: int
) -> tuple[dict[str, Any], list[PretrainRun], list[FinetuneRun]]:
    """Everything measured with one seed: the raw-pixel probe, pre-training, fine-tuning.

    Depends only on the data, the settings, `selected` and `seed` (every fit sets the
    global seeds first), so seeds can run in any order or in separate processes.
    """
    import keras

    from keras_cae.training import fit_probe

    data, config = runner.data, runner.config
    measure = _Measure(data.x_test, data.image_shape, config.noise_levels, seed)
    probe = fit_probe(data.x_train, data.y_train)
    clean, shifted, noisy = measure.scores(lambda x: float(probe.score(x, data.y_test)))
    raw = {"seed": seed, "accuracy": clean, "shift": shifted, "noise": noisy}
    pretrain_runs, finetune_runs = [], []
    for name in [n for n in FINETUNED if n in config.models]:
        if name.startswith("random"):
            encoder = runner.initial_encoder(name, seed)
        else:
            encoder, pre = _measure_pretrained(runner, name, selected[name], seed, measure)
            pretrain_runs.append(pre)
        finetune_runs += _finetune_runs(runner, name, encoder, seed, measure)
        keras.backend.clear_session()
    return raw, pretrain_runs, finetune_runs


def lambda_budget(config: FinetuneConfig) -> int | None:
    """The label budget of the λ sweep's fine-tuning: the smallest one."""
    numbered = [b for b in config.label_budgets if b is not None]
    return min(numbered) if numbered else None


def finetune_study(
    dataset: Dataset,
    config: FinetuneConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> FinetuneStudy:
    """Runs the pre-train → fine-tune protocol of the module docstring on `dataset`.

    Args:
        dataset: labelled data (`keras_cae.load_digits()`, `keras_cae.data.load_mnist_npz`).
        config: the settings. Defaults to `FinetuneConfig()`.
        progress: called with one line of text per step. Defaults to silence.

    Returns:
        A `FinetuneStudy`; write it with `keras_cae.studies.finetune_report.write_report`.

    Raises:
        ValueError: for unlabelled data or an invalid setting.

    Example:

    >>> from keras_cae import load_digits  # doctest: +SKIP
    >>> from keras_cae.studies import finetune_protocol  # doctest: +SKIP
    >>> study = finetune_protocol.finetune_study(load_digits())  # doctest: +SKIP
    """
    config = config or FinetuneConfig()
    if dataset.y is None:
        raise ValueError(
            f"The fine-tuning protocol needs labels, and dataset {dataset.name!r} has none."
        )
    check_config(config)
    return run(dataset, config, progress or (lambda line: None), time.perf_counter())


def run(
    dataset: Dataset, config: FinetuneConfig, say: Callable[[str], None], started: float
) -> FinetuneStudy:
    """Runs the whole protocol (after `finetune_study` checked its arguments)."""
    data = _split(dataset, config)
    runner = _Runner(data, config, say)
    say(
        f"finetune: {dataset.name}, {len(data.x_train)} train ({len(data.x_fit)} labelled pool "
        f"+ {len(data.x_val)} validation) / {len(data.x_test)} test, seeds {list(config.seeds)}"
    )
    selected, search = _search(runner)
    study = FinetuneStudy(config, _data_summary(dataset, data), search, [], [], [], [], [])
    for seed in config.seeds:
        raw, pretrain_runs, finetune_runs = seed_runs(runner, selected, seed)
        study.raw_probe.append(raw)
        study.pretrain += pretrain_runs
        study.finetune += finetune_runs
    study.tests = tests(study)
    if config.lambda_grid and config.lambda_seeds:
        study.lambda_sweep = lambda_sweep(runner, lambda_budget(config))
    study.total_seconds = time.perf_counter() - started
    return study


def _data_summary(dataset: Dataset, data: _Data) -> dict[str, Any]:
    return {
        "name": dataset.name,
        "scaling": dataset.scaling,
        "input_shape": list(dataset.x.shape[1:]),
        "image_shape": None if data.image_shape is None else list(data.image_shape),
        "num_train": len(data.x_train),
        "num_labelled_pool": len(data.x_fit),
        "num_validation": len(data.x_val),
        "num_test": len(data.x_test),
        "own_test_split": data.own_test_split,
        "num_classes": data.num_classes,
        "pretrained_models": list(PRETRAINED),
        "metric_of": {"shift": "mean accuracy over the 4 one-pixel shifts"},
    }
