"""The MNIST study's machinery on tiny synthetic data: split, cache/resume, report, statistics."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from keras_cae.studies import mnist


def _write_npz(path: str, n_train: int = 120, n_test: int = 40) -> str:
    rng = np.random.default_rng(0)

    def images(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 10, n)
        x = (rng.random((n, 4, 4)) * 60).astype(np.uint8)
        for i, label in enumerate(y):
            x[i, label % 4, :] = 250
            x[i, :, label // 4] = 200
        return x, y.astype(np.uint8)

    x_train, y_train = images(n_train)
    x_test, y_test = images(n_test)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def _config(**overrides: object) -> mnist.StudyConfig:
    settings = dict(
        train_size=80, val_size=40, hidden=6, pretrain_epochs=1, all_epochs=1, few_steps=4,
        few_eval_every=2, patience=2, few_patience=2, seeds=(0, 1), all_seeds=(0,),
        cae_lambdas=(0.01,), dae_noises=(0.3,), cae_h=((0.01, 0.1),), geometry_points=5,
        budgets=("10", "all"), finetune_lrs=(1e-3,),
    )  # fmt: skip
    settings.update(overrides)
    return mnist.StudyConfig(**settings)


# ------------------------------------------------------------------------- split


def test_split_is_disjoint_and_never_reads_the_test_images(tmp_path):
    path = _write_npz(str(tmp_path / "m.npz"))
    split = mnist.load_split(path, 80, 40)
    assert split.x_train.shape == (80, 16) and split.x_val.shape == (40, 16)
    assert split.x_train.dtype == np.float32 and float(split.x_train.max()) <= 1.0
    with np.load(path) as archive:
        flat = archive["x_train"].reshape(120, -1).astype(np.float32) / 255
    rows = {row.tobytes(): i for i, row in enumerate(flat)}
    train = {rows[r.tobytes()] for r in split.x_train}
    val = {rows[r.tobytes()] for r in split.x_val}
    assert not train & val and len(train | val) == 120
    assert split.test_reads == 0
    x_test, y_test = split.test()
    assert split.test_reads == 1 and x_test.shape == (40, 16) and y_test.shape == (40,)


def test_split_rejects_sizes_beyond_the_training_images(tmp_path):
    path = _write_npz(str(tmp_path / "m.npz"))
    with pytest.raises(ValueError, match="train_size"):
        mnist.load_split(path, 100, 40)


def test_balanced_subset_is_balanced_and_depends_only_on_its_seed():
    y = np.repeat(np.arange(10), 20)
    first = mnist.balanced_subset(y, 30, seed=3)
    assert np.bincount(y[first]).tolist() == [3] * 10
    assert np.array_equal(first, mnist.balanced_subset(y, 30, seed=3))
    assert not np.array_equal(first, mnist.balanced_subset(y, 30, seed=4))
    assert not np.array_equal(first, mnist.balanced_subset(y, 30, seed=3, salt=1))
    assert np.array_equal(mnist.balanced_subset(y, None, seed=0), np.arange(200))


def test_finetune_reads_the_test_once_and_only_after_training(tmp_path, monkeypatch):
    path = _write_npz(str(tmp_path / "m.npz"))
    split = mnist.load_split(path, 80, 40)
    config = _config()
    reads_during_training = []
    original = mnist.balanced_subset

    def spy(*args, **kwargs):
        reads_during_training.append(split.test_reads)
        return original(*args, **kwargs)

    monkeypatch.setattr(mnist, "balanced_subset", spy)
    record = mnist.finetune(mnist.random_weights(config, 16, 0), split, config, 1e-3, "10", 0)
    assert reads_during_training == [0, 0]
    assert split.test_reads == 1
    assert record["num_labels"] == 10 and record["num_val"] == 10
    assert 0 <= record["val_error"] <= 1 and 0 <= record["test_error"] <= 1


# ------------------------------------------------------------------- cache/resume


def test_plan_puts_the_units_the_report_needs_first():
    config = _config(finetune_lrs=(1e-3, 3e-4), cae_lambdas=(0.01, 0.1), all_seeds=(0, 1))
    units = mnist.plan(config)
    first_other_lr = next(i for i, u in enumerate(units) if u.lr == 3e-4)
    needed = [
        u for u in units if u.kind == "finetune" and u.lr == 1e-3
        and u.hp == mnist.default_hp(config, u.model) and (u.budget != "all" or u.seed == 0)
    ]  # fmt: skip
    assert max(units.index(u) for u in needed) < first_other_lr
    assert len(needed) == len(mnist.MODELS) * 3
    # A pre-training comes before its first use; CAE-2 after its first layer (the CAE).
    for i, unit in enumerate(units):
        if unit.kind == "finetune" and unit.model != "random":
            assert units.index(mnist.Unit("pretrain", unit.model, unit.hp)) < i
    assert units.index(mnist.Unit("pretrain", "cae", (0.01,))) < units.index(
        mnist.Unit("pretrain", "cae2", (0.01,))
    )
    assert len(set(units)) == len(units)


def test_unit_keys_change_with_the_settings_they_depend_on():
    unit = mnist.Unit("finetune", "cae", (0.01,), 1e-3, "10", 0)
    base = mnist.unit_key(_config(), unit)
    assert base == mnist.unit_key(_config(), unit)
    assert base != mnist.unit_key(_config(pretrain_epochs=2), unit)
    assert base != mnist.unit_key(_config(few_steps=5), unit)
    assert base == mnist.unit_key(_config(all_epochs=7), unit)
    all_labels = mnist.Unit("finetune", "cae", (0.01,), 1e-3, "all", 0)
    assert mnist.unit_key(_config(), all_labels) != mnist.unit_key(
        _config(all_epochs=7), all_labels
    )
    # Fine-tuning settings do not change a pre-training's key.
    pre = mnist.Unit("pretrain", "cae", (0.01,))
    assert mnist.unit_key(_config(), pre) == mnist.unit_key(_config(few_steps=5), pre)


@pytest.mark.slow
def test_a_finished_unit_is_not_recomputed_and_a_killed_run_resumes(tmp_path, monkeypatch):
    path = _write_npz(str(tmp_path / "m.npz"))
    config = _config()
    split = mnist.load_split(path, 80, 40)
    cache = mnist.Cache(str(tmp_path / "cache"), config)
    units = [u for u in mnist.plan(config, ("random", "cae"))]
    calls = []
    original = mnist.run_unit

    class Killed(Exception):
        pass

    def dies_after_three(split, config, unit, cache):
        if len(calls) == 3:
            raise Killed
        calls.append(unit)
        return original(split, config, unit, cache)

    monkeypatch.setattr(mnist, "run_unit", dies_after_three)
    with pytest.raises(Killed):
        mnist.run_units(split, config, units, cache, say=lambda line: None)
    assert [cache.done(u) for u in units[:3]] == [True] * 3
    assert not any(cache.done(u) for u in units[3:])
    first = {u: cache.load(u) for u in units[:3]}

    resumed = []

    def counting(split, config, unit, cache):
        resumed.append(unit)
        return original(split, config, unit, cache)

    monkeypatch.setattr(mnist, "run_unit", counting)
    lines = []
    assert mnist.run_units(split, config, units, cache, say=lines.append) == len(units) - 3
    assert resumed == units[3:]
    assert {u: cache.load(u) for u in units[:3]} == first
    assert "min left" in lines[-1]
    assert mnist.run_units(split, config, units, cache, say=lines.append) == 0
    # No partial files are left behind by the atomic writes (`keras_cae._io` staging
    # names hold ".tmp-").
    for folder, _, files in os.walk(tmp_path / "cache"):
        assert not [f for f in files if ".tmp-" in f], folder


# --------------------------------------------------------------------------- report


UNITS = os.path.join(os.path.dirname(__file__), *[os.pardir] * 3, "docs", "results-mnist", "units")


def test_the_committed_units_are_found_under_their_unchanged_keys():
    # The study's settings (`StudyConfig()`) give the keys of the units committed in
    # docs/results-mnist/units: a changed key would leave them unreported.
    config, cache = mnist.StudyConfig(), mnist.Cache(UNITS, mnist.StudyConfig())
    unit = mnist.Unit("finetune", "cae", (1e-3,), 1e-3, "100", 0)
    assert mnist.unit_key(config, unit) == "finetune_cae_0.001_lr0.001_b100_s0-72e825486f"
    assert cache.done(unit) and cache.recorded(unit)
    record = cache.load(unit)
    assert record["key"] == mnist.unit_key(config, unit)
    assert record["settings"] == mnist.settings(config, unit)
    assert record["unit"] == {
        "kind": "finetune", "model": "cae", "hp": [1e-3], "lr": 1e-3, "budget": "100", "seed": 0,
    }  # fmt: skip
    assert 0 < record["test_error"] < 1
    # Pre-training weights are not committed: the record is there, the unit is not done.
    pretrain = mnist.Unit("pretrain", "cae", (1e-3,))
    assert cache.recorded(pretrain) and not cache.done(pretrain)
    assert cache.load(pretrain)["key"] == "pretrain_cae_0.001-3c391536a6"
    assert cache.recorded(mnist.Unit("geometry", "random"))


def _fake_finetune(cache, config, model, hp, lr, budget, seed, val, test):
    unit = mnist.Unit("finetune", model, hp, lr, budget, seed)
    cache.save(unit, {"val_error": val, "test_error": test, "seconds": 1.0})


def test_report_selects_on_validation_error_and_lists_the_missing_units(tmp_path):
    config = _config(cae_lambdas=(0.01, 0.1))
    cache = mnist.Cache(str(tmp_path), config)
    for seed in (0, 1):
        # λ = 0.1 has the better validation error and the worse test error: it is chosen.
        _fake_finetune(cache, config, "cae", (0.01,), 1e-3, "10", seed, 0.30, 0.10)
        _fake_finetune(cache, config, "cae", (0.1,), 1e-3, "10", seed, 0.20, [0.40, 0.41][seed])
        _fake_finetune(cache, config, "ae", (), 1e-3, "10", seed, 0.3, [0.5, 0.4][seed])
    _fake_finetune(cache, config, "ae", (), 1e-3, "all", 0, 0.02, 0.019)
    report = mnist.build_report(config, cache)
    assert report["results"]["cae"]["10"] == [0.40, 0.41]
    assert report["selected"]["cae"]["10"]["hp"] == [0.1]
    assert report["results"]["ae"] == {"10": [0.5, 0.4], "all": [0.019]}
    assert "random" not in report["results"]
    assert "finetune_random_lr0.001_b10_s0" in report["units"]["missing"]
    (test,) = [t for t in report["tests"] if t["a"] == "cae" and t["b"] == "ae"]
    assert test["budget"] == "10" and test["mean_difference"] == pytest.approx(-0.045)
    json.dumps(report)  # JSON-serialisable as written


def test_of_equal_validation_errors_the_first_configuration_wins(tmp_path):
    # The committed study's tie at 100 labels: the same 67 errors in 300 validation
    # images, whose float means differ in the last bit (the later one is smaller).
    first, second = [0.19, 0.26, 0.22], [0.19, 0.24, 0.24]
    assert np.mean(second) < np.mean(first)
    assert round(sum(first) * 100) == round(sum(second) * 100) == 67
    config = _config(cae_lambdas=(0.01, 0.1), seeds=(0, 1, 2))
    cache = mnist.Cache(str(tmp_path), config)
    for seed in range(3):
        _fake_finetune(cache, config, "cae", (0.01,), 1e-3, "10", seed, first[seed], 0.3)
        _fake_finetune(cache, config, "cae", (0.1,), 1e-3, "10", seed, second[seed], 0.2)
    chosen = mnist.select(config, cache, "cae", "10")
    assert chosen is not None and chosen["hp"] == [0.01] and chosen["val_errors"] == first
    # One error fewer in 10,000 still wins.
    _fake_finetune(cache, config, "cae", (0.1,), 1e-3, "10", 0, 0.19 - 1e-4, 0.2)
    chosen = mnist.select(config, cache, "cae", "10")
    assert chosen is not None and chosen["hp"] == [0.1]


# ------------------------------------------------------------------------- geometry


def test_singular_values_match_numpy_svd():
    rng = np.random.default_rng(0)
    weights = [rng.normal(size=(7, 5)).astype(np.float32), rng.normal(size=5).astype(np.float32)]
    weights += [rng.normal(size=(5, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32)]
    x = rng.random((3, 7))
    jac = mnist.jacobians(weights, x)
    assert jac.shape == (3, 4, 7)
    # The closed form against finite differences of the encoder.
    eps = 1e-6
    for j in range(7):
        step = np.zeros(7)
        step[j] = eps
        numeric = (mnist._encode(weights, x + step) - mnist._encode(weights, x - step)) / (2 * eps)
        np.testing.assert_allclose(jac[:, :, j], numeric, atol=2e-3)
    np.testing.assert_allclose(
        mnist.singular_values(jac), np.linalg.svd(jac, compute_uv=False), rtol=1e-6, atol=1e-9
    )


def test_the_markdown_report_puts_ours_beside_the_papers_and_lists_missing_units(tmp_path):
    from keras_cae.studies import mnist_report

    config = _config(cae_lambdas=(0.01,), budgets=("100", "all"))
    cache = mnist.Cache(str(tmp_path), config)
    for seed in (0, 1):
        _fake_finetune(cache, config, "cae", (0.01,), 1e-3, "100", seed, 0.2, [0.13, 0.15][seed])
        _fake_finetune(cache, config, "random", (), 1e-3, "100", seed, 0.3, [0.25, 0.28][seed])
    report = mnist.build_report(config, cache)
    text = mnist_report.markdown(report, "# preamble", "the command")
    assert text.startswith("# preamble")
    assert "| CAE (ours) | 14.00 ± 1.41 |" in text
    assert "| CAE (paper) | 13.47 |" in text
    assert "| random init (paper) | 25.81 |" in text
    assert "| CAE vs random init | 100 | 2 | -12.50 |" in text
    assert "`pretrain_ae`" in text and "the command" in text


def test_the_command_line_rejects_bad_input_in_one_line_with_exit_2(tmp_path, capsys):
    assert mnist.main(["run", "--data", str(tmp_path / "missing.npz")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert mnist.main(["plan", "--train-size", "0", "--cache", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: `train_size`") and err.count("\n") == 1
    assert mnist.main(["plan", "--cache", str(tmp_path), "--models", "cae"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "todo pretrain_cae_0.001" and all(" " in line for line in lines)
