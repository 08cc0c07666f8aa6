"""The pre-train → fine-tune protocol (`keras-cae compare --protocol finetune`) and its parts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from keras_cae import cli
from keras_cae.data import load_digits
from keras_cae.studies import finetune, finetune_protocol, finetune_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TIMING_KEYS = {"train_cpu_seconds", "total_seconds", "command"}


def test_shift_images_matches_a_loop_over_pixels():
    rng = np.random.default_rng(0)
    images = rng.random((3, 4, 5)).astype(np.float32)
    for dy, dx in [*finetune.SHIFTS.values(), (2, -3)]:
        expected = np.zeros_like(images)
        for row in range(4):
            for column in range(5):
                source = (row - dy, column - dx)
                if 0 <= source[0] < 4 and 0 <= source[1] < 5:
                    expected[:, row, column] = images[:, source[0], source[1]]
        shifted = finetune.shift_images(images.reshape(3, 20), (4, 5), dy, dx)
        assert shifted.shape == (3, 20) and shifted.dtype == np.float32
        np.testing.assert_array_equal(shifted.reshape(3, 4, 5), expected)


def test_labelled_subset_draws_k_per_class_and_depends_only_on_seed_and_k():
    y = np.repeat([0, 1, 2], [10, 3, 7])
    index = finetune.labelled_subset(y, 5, seed=4)
    assert np.bincount(y[index]).tolist() == [5, 3, 5]  # The small class gives all it has.
    assert np.all(np.diff(index) > 0)
    np.testing.assert_array_equal(index, finetune.labelled_subset(y, 5, seed=4))
    assert not np.array_equal(index, finetune.labelled_subset(y, 5, seed=5))
    np.testing.assert_array_equal(finetune.labelled_subset(y, None, 0), np.arange(20))


def test_finetune_config_is_checked():
    digits = load_digits()
    with pytest.raises(ValueError, match="label_budgets"):
        finetune_protocol.finetune_study(digits, finetune.FinetuneConfig(label_budgets=(0,)))
    with pytest.raises(ValueError, match="finetune_steps"):
        finetune_protocol.finetune_study(digits, finetune.FinetuneConfig(finetune_steps=0))
    unlabelled = type(digits)(digits.x, None, "z", "none")
    with pytest.raises(ValueError, match="needs labels"):
        finetune_protocol.finetune_study(unlabelled)


def _tiny_run(path, out) -> int:
    return cli.main(
        ["compare", "--protocol", "finetune", "--data", str(path), "--seeds", "2",
         "--epochs", "1", "--label-budgets", "3,all", "--finetune-steps", "4",
         "--dae-levels", "0.2", "--cae-weights", "0.001", "--hessian-weights", "0.1",
         "--lambda-grid", "0,0.01", "--out", str(out), "--quiet"]
    )  # fmt: skip


def _without_timing(value):
    if isinstance(value, dict):
        return {k: _without_timing(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [_without_timing(v) for v in value]
    return value


@pytest.mark.slow  # 136 s on a loaded 2-core machine (--durations).
def test_smoke_a_tiny_study_through_the_python_api(tmp_path):
    digits = load_digits()
    dataset = type(digits)(digits.x[:100], digits.y[:100], "tiny", digits.scaling)
    config = finetune.FinetuneConfig(
        seeds=(0, 1), label_budgets=(2,), epochs=1, finetune_steps=3, eval_every=1,
        models=("random", "CAE"), grids={"CAE": (1e-3,)}, lambda_grid=(0.0, 0.01),
        lambda_seeds=1,
    )  # fmt: skip
    study = finetune_protocol.finetune_study(dataset, config)
    assert [(r.model, r.seed) for r in study.finetune] == [
        ("random", 0), ("CAE", 0), ("random", 1), ("CAE", 1),
    ]  # fmt: skip
    assert all(r.num_labels == 20 and 1 <= r.best_step <= 3 for r in study.finetune)
    assert [r.model for r in study.pretrain] == ["CAE", "CAE"]
    assert [(t.a, t.b, t.metric) for t in study.tests] == [
        ("CAE", "random", "test_accuracy"), ("CAE", "random", "shift"),
    ]  # fmt: skip
    clean = [r.test_accuracy for r in study.finetune]
    assert study.tests[0].mean_difference == pytest.approx(
        np.mean([clean[1] - clean[0], clean[3] - clean[2]]), abs=1e-12
    )
    ae, cae = study.lambda_sweep
    assert (ae.penalty_ratio, cae.contractive_weight) == (0.0, 0.01)
    expected = 0.01 * ae.jacobian_frobenius**2 / ae.reconstruction_mse
    assert cae.penalty_ratio == pytest.approx(expected, rel=1e-12)
    assert cae.top_singular_values == sorted(cae.top_singular_values, reverse=True)
    files = finetune_report.write_report(study, tmp_path / "out")
    assert files == ["finetune_accuracy.png", "lambda_guide.png", "report.json", "report.md"]
    assert "| CAE − random |" in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.slow
def test_finetune_protocol_end_to_end_and_reproducible(tiny_images, tmp_path, capsys):
    assert _tiny_run(tiny_images, tmp_path / "a") == 0, capsys.readouterr().err
    out = tmp_path / "a"
    assert sorted(p.name for p in out.iterdir()) == [
        "finetune_accuracy.png", "lambda_guide.png", "report.json", "report.md",
    ]  # fmt: skip
    assert all((out / n).read_bytes()[:8] == PNG_MAGIC for n in ("lambda_guide.png",))
    report = json.loads((out / "report.json").read_text())
    runs = report["finetune"]
    assert {(r["model"], r["seed"], r["budget"]) for r in runs} == {
        (m, s, b) for m in finetune.FINETUNED for s in (0, 1) for b in ("3", "all")
    }
    for run in runs:
        assert 0 <= run["test_accuracy"] <= 1 and sorted(run["shift_accuracy"]) == sorted(
            finetune.SHIFTS
        )
        assert run["num_labels"] == (30 if run["budget"] == "3" else 96)
    assert [p["model"] for p in report["pretrain"]] == [*finetune.PRETRAINED] * 2
    tests = report["tests"]
    assert len(tests) == 2 * 2 * len(finetune.COMPARISONS)
    for test in tests:
        first = [r for r in runs if r["model"] == test["a"] and r["budget"] == test["budget"]]
        second = [r for r in runs if r["model"] == test["b"] and r["budget"] == test["budget"]]
        if test["metric"] == "test_accuracy":
            diffs = [x["test_accuracy"] - y["test_accuracy"] for x, y in zip(first, second)]
            assert test["mean_difference"] == pytest.approx(np.mean(diffs), abs=1e-12)
    ratios = {p["contractive_weight"]: p["penalty_ratio"] for p in report["lambda_sweep"]}
    ae = next(p for p in report["lambda_sweep"] if p["contractive_weight"] == 0 and p["seed"] == 0)
    assert ratios[0.0] == 0.0
    assert report["lambda_sweep"][1]["penalty_ratio"] == pytest.approx(
        0.01 * ae["jacobian_frobenius"] ** 2 / ae["reconstruction_mse"], rel=1e-12
    )
    markdown = (out / "report.md").read_text()
    assert "--protocol finetune" in report["command"] and report["command"] in markdown
    assert "| CAE − DAE |" in markdown and "| random init |" in markdown

    # The same command again gives the same numbers, to the last bit.
    capsys.readouterr()
    assert _tiny_run(tiny_images, tmp_path / "b") == 0
    again = json.loads((tmp_path / "b" / "report.json").read_text())
    assert _without_timing(again) == _without_timing(report)


def test_finetune_protocol_refuses_unlabelled_data(tmp_path, capsys):
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).random((40, 16)).astype("float32"))
    argv = ["compare", "--protocol", "finetune", "--data", str(path), "--out", str(tmp_path / "o")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs labels" in err


@pytest.mark.parametrize("budgets", ["0", "ten", "10,"])
def test_label_budgets_option_is_checked(budgets, tmp_path, capsys):
    argv = ["compare", "--protocol", "finetune", "--label-budgets", budgets, "--out", "o"]
    assert cli.main(argv) == 2
    assert "positive integers or 'all'" in capsys.readouterr().err
