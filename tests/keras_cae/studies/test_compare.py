"""`keras-cae compare` end to end on a tiny budget, and its pieces.

The raw-pixel baseline of the report is recomputed here from the documented protocol
(split seed 0, noise ``np.random.default_rng([seed, 0])``, not clipped, probe fit on
clean train inputs with `keras_cae.training.probe_accuracy`): it checks the split, the
noise protocol and the one-fit probe against an independent path.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from keras_cae import cli
from keras_cae.data import Dataset
from keras_cae.studies import _engine, compare, compare_protocol
from keras_cae.training import probe_accuracy, split

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_cli(*argv: str) -> int:
    return cli.main(["compare", *map(str, argv)])


@pytest.mark.slow  # About 10 s on 2 idle cores (--durations).
def test_compare_end_to_end_on_a_tiny_budget(tiny_images, tmp_path, capsys):
    out = tmp_path / "report"
    code = run_cli(
        "--data", tiny_images, "--seeds", 2, "--epochs", 1,
        "--dae-levels", "0.2", "--cae-weights", "0.001,0.01", "--hessian-weights", "0.1",
        "--out", out,
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    # Progress: one line per training run (2 searched CAE candidates + 4 models × 2 seeds).
    assert "[1/10] search CAE" in captured.err and "[10/10] seed 1 CAE+H" in captured.err
    files = sorted(p.name for p in out.iterdir())
    assert files == [
        "contraction_curves.png", "jacobian_spectra.png", "reconstructions.png",
        "report.json", "report.md", "tangents_ae.png", "tangents_cae.png",
    ]  # fmt: skip
    for name in files:
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == PNG_MAGIC
    assert not list(tmp_path.glob(".report.tmp-*"))

    report = json.loads((out / "report.json").read_text())
    models = report["models"]
    assert sorted(models) == ["AE", "CAE", "CAE+H", "DAE"]
    assert report["data"]["input_shape"] == [8, 8]
    assert report["data"]["num_test"] == 30 and report["data"]["num_train"] == 120

    # The search: the CAE's λ is the first best validation probe accuracy; CAE+H reuses it.
    candidates = report["search"]["CAE"]["candidates"]
    assert [c["params"]["contractive_weight"] for c in candidates] == [0.001, 0.01]
    accuracies = [c["validation"]["probe_accuracy"] for c in candidates]
    assert (
        models["CAE"]["params"]["contractive_weight"]
        == [0.001, 0.01][accuracies.index(max(accuracies))]
    )
    assert models["CAE+H"]["params"] == {
        "contractive_weight": models["CAE"]["params"]["contractive_weight"], "hessian_weight": 0.1,
    }  # fmt: skip
    assert models["DAE"]["params"] == {
        "contractive_weight": 0.0, "corruption": "gaussian", "corruption_level": 0.2,
    }  # fmt: skip
    assert models["AE"]["params"] == {"contractive_weight": 0.0}
    assert report["search"]["DAE"]["candidates"] == []  # One value: not searched.

    for name, model in models.items():
        runs = model["runs"]
        assert [r["seed"] for r in runs] == [0, 1]
        for key, stats in model["summary"].items():
            values = stats["values"]
            assert len(values) == 2, (name, key)
            assert stats["mean"] == pytest.approx(np.mean(values), rel=1e-12)
            assert stats["std"] == pytest.approx(np.std(values, ddof=1), rel=1e-12, abs=1e-15)
        for run in runs:
            assert 0 <= run["probe_accuracy"] <= 1 and run["jacobian_frobenius"] > 0
            for sigma in ("0.05", "0.1", "0.2"):
                drop = run["probe_accuracy"] - run["noisy_probe_accuracy"][sigma]
                assert run["probe_drop"][sigma] == pytest.approx(drop, abs=1e-12)
            assert len(run["contraction_curve"]) == len(compare.RADII)
            spectrum = np.asarray(run["mean_spectrum"])
            assert spectrum.shape == (32,) and np.all(np.diff(spectrum) <= 1e-12)
            # s₁ ≤ ‖J‖_F = sqrt(Σ s_k²) at every sample, so their means keep that order.
            assert spectrum[0] <= run["jacobian_frobenius"] + 1e-9

    # The raw-pixel baseline, recomputed independently.
    digits = np.load(tiny_images)
    dataset = Dataset(digits["x"].reshape(150, 64), digits["y"], "tiny", "none")
    x_train, x_test, y_train, y_test = split(dataset, 0.2, 0)
    raw = report["raw_inputs"]["runs"]
    for seed in (0, 1):
        rng = np.random.default_rng([seed, 0])
        assert raw[seed]["probe_accuracy"] == probe_accuracy(x_train, y_train, x_test, y_test)
        for sigma in (0.05, 0.1, 0.2):
            noisy = (x_test + sigma * rng.standard_normal(x_test.shape)).astype(np.float32)
            expected = probe_accuracy(x_train, y_train, noisy, y_test)
            assert raw[seed]["noisy_probe_accuracy"][str(sigma)] == expected

    markdown = (out / "report.md").read_text()
    assert report["command"] in markdown and "--cae-weights 0.001,0.01" in report["command"]
    for row in (
        "| AE |",
        "| DAE | gaussian, noise=0.2 |",
        "| CAE | λ=",
        "| CAE+H | λ=",
        "| raw pixels",
    ):
        assert row in markdown
    assert "![" in markdown and "(contraction_curves.png)" in markdown
    assert "CAE+H" in captured.out and f"into {out}" in captured.out


def test_compare_refuses_a_non_empty_out_before_training(tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert run_cli("--epochs", 1, "--out", out) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--out" in err and "not empty" in err
    assert (out / "keep.txt").read_text() == "mine" and len(list(out.iterdir())) == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seeds", "0"], "--seeds"),
        (["--cae-weights", "0.1,-1"], "non-negative"),
        (["--dae-levels", "a"], "comma-separated numbers"),
        (["--dae-corruption", "masking", "--dae-levels", "0.5,1.0"], "probabilities in [0, 1)"),
        (["--test-fraction", "0"], "--test-fraction must be > 0"),
    ],
)
def test_compare_bad_arguments_exit_2_with_one_line(argv, message, tmp_path, capsys):
    assert run_cli(*argv, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_probe_selection_needs_labels(tmp_path, capsys):
    path = tmp_path / "unlabelled.npy"
    np.save(path, np.random.default_rng(0).random((40, 16)).astype("float32"))
    assert run_cli("--data", path, "--selection", "probe", "--out", tmp_path / "out") == 2
    assert "needs labels" in capsys.readouterr().err


def test_one_fit_probe_scores_equal_separate_probe_accuracy_calls():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(80, 6)), rng.integers(0, 3, 80)
    tests = [rng.normal(size=(30, 6)) for _ in range(3)]
    y_test = rng.integers(0, 3, 30)
    expected = [probe_accuracy(x, y, t, y_test) for t in tests]
    assert compare_protocol._probe_scores(x, y, tests, y_test) == expected


def test_grids_are_checked():
    assert _engine.check_grids(None, "masking")["DAE"] == compare.SEARCH_GRIDS["DAE/masking"]
    assert _engine.check_grids({"CAE": [0.5]}, "gaussian")["CAE"] == (0.5,)
    with pytest.raises(ValueError, match=r"only \['DAE', 'CAE', 'CAE\+H'\]"):
        _engine.check_grids({"AE": [1.0]}, "gaussian")
    with pytest.raises(ValueError, match=r"grids\['CAE'\].*Received: \[\]"):
        _engine.check_grids({"CAE": []}, "gaussian")
    with pytest.raises(ValueError, match="selection="):
        compare_protocol.compare_models(
            Dataset(np.zeros((10, 4)), None, "z", "none"), selection="best"
        )


@pytest.mark.slow
def test_compare_without_labels_selects_on_reconstruction(tmp_path, capsys):
    path = tmp_path / "unlabelled.npy"
    z = np.random.default_rng(0).normal(size=(80, 2))
    np.save(path, (1 / (1 + np.exp(-z @ np.ones((2, 10))))).astype("float32"))
    out = tmp_path / "out"
    code = run_cli(
        "--data", path, "--seeds", 1, "--epochs", 1, "--dae-levels", "0.1",
        "--cae-weights", "0.001,0.01", "--hessian-weights", "0.1", "--out", out, "--quiet",
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err.strip() == ""  # --quiet: no progress.
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["selection"] == "reconstruction" and report["raw_inputs"] is None
    assert "probe_accuracy" not in report["models"]["CAE"]["summary"]
    candidates = report["search"]["CAE"]["candidates"]
    errors = [c["validation"]["reconstruction_mse"] for c in candidates]
    assert report["search"]["CAE"]["selected"] == candidates[int(np.argmin(errors))]["params"]
    # 10 features are not an image: no tangent or reconstruction figures.
    assert sorted(p.name for p in out.iterdir()) == [
        "contraction_curves.png", "jacobian_spectra.png", "report.json", "report.md",
    ]  # fmt: skip


# ------------------------------------------------- a file with its own split (Keras layout)


def _keras_layout(path, n_train=60, n_test=20):
    """A tiny Keras-layout .npz: uint8 4×4 images, 3 classes, x_test apart from x_train."""
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 4, 4), dtype=np.uint8),
        "y_train": np.arange(n_train) % 3,
        "x_test": rng.integers(0, 256, (n_test, 4, 4), dtype=np.uint8),
        "y_test": np.arange(n_test) % 3,
    }
    np.savez(path, **arrays)
    return arrays


def test_a_files_own_test_split_is_the_test_set_of_both_protocols(tmp_path):
    from keras_cae.data import load_array
    from keras_cae.studies import finetune, finetune_protocol

    arrays = _keras_layout(tmp_path / "mnist.npz")
    dataset = load_array(tmp_path / "mnist.npz")
    parts = _engine.split(dataset, 0.5)  # The fraction is not used: x_test is the test set.
    assert parts.own_test_split
    np.testing.assert_array_equal(
        parts.x_test, arrays["x_test"].reshape(20, 16).astype(np.float32) / 255
    )
    np.testing.assert_array_equal(parts.y_test, arrays["y_test"])
    np.testing.assert_array_equal(
        parts.x_train, arrays["x_train"].reshape(60, 16).astype(np.float32) / 255
    )
    assert len(parts.x_fit) + len(parts.x_val) == 60
    data = finetune_protocol._split(dataset, finetune.FinetuneConfig())
    assert data.own_test_split and len(data.x_test) == 20 and len(data.x_train) == 60
    # Data without its own split is split at random, as before.
    plain = _engine.split(Dataset(dataset.x, dataset.y, "plain", "x / 255"), 0.25)
    assert not plain.own_test_split and (len(plain.x_train), len(plain.x_test)) == (45, 15)


def test_compare_refuses_a_test_fraction_for_a_file_with_its_own_split(tmp_path, capsys):
    _keras_layout(tmp_path / "mnist.npz")
    code = run_cli(
        "--data", tmp_path / "mnist.npz", "--test-fraction", "0.3", "--out", tmp_path / "o"
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "--test-fraction does not apply to --data" in err and "x_test" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow  # A tiny compare, like the end-to-end test above.
def test_compare_measures_on_the_files_own_test_split(tmp_path, capsys):
    _keras_layout(tmp_path / "mnist.npz")
    out = tmp_path / "report"
    code = run_cli(
        "--data", tmp_path / "mnist.npz", "--seeds", 1, "--epochs", 1, "--dae-levels", "0.2",
        "--cae-weights", "0.001", "--hessian-weights", "0.1", "--out", out,
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    assert "60 train (48 fit + 12 validation) / 20 test (the file's own x_test" in err
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["num_test"] == 20 and report["data"]["num_train"] == 60
    assert report["data"]["own_test_split"] is True
    text = (out / "report.md").read_text()
    assert "20 held-out test samples (the file's own x_test" in text
    assert "--test-fraction" not in text  # The command line in the report has none.
