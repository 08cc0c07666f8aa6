"""The studies' shared engine (`keras_cae.studies._engine`): search, progress, statistics,
Markdown. No training: the search is driven by a scoring function written here."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
from scipy import stats

from keras_cae._checks import check_bool, positive_int
from keras_cae.studies import _engine
from keras_cae.studies.compare import SEARCHED_ARGUMENT

VALUES = {"DAE": (0.1, 0.2), "CAE": (1e-3, 3e-3, 1e-2), "CAE+H": (0.5,)}


def test_search_keeps_the_order_and_gives_the_cae_plus_h_the_cae_choice():
    calls = []
    scores = {0.1: 0.5, 0.2: 0.7, 1e-3: 0.2, 3e-3: 0.9, 1e-2: 0.9}

    def evaluate(name, params):
        calls.append((name, dict(params)))
        return scores[params[SEARCHED_ARGUMENT[name]]]

    announced = []
    found = _engine.search(
        ["AE", "DAE", "CAE", "CAE+H"], VALUES, evaluate, lambda s: s,
        selected=lambda name, params: announced.append((name, params)),
    )  # fmt: skip
    assert [c[0] for c in calls] == ["DAE", "DAE", "CAE", "CAE", "CAE"]
    assert found["AE"] == ([], {})
    assert found["DAE"] == ([0.5, 0.7], {"corruption_level": 0.2})
    # Equal scores: the first, the weaker regularisation.
    assert found["CAE"][1] == {"contractive_weight": 3e-3}
    # One value: not searched, but it carries the CAE's λ.
    assert found["CAE+H"] == ([], {"contractive_weight": 3e-3, "hessian_weight": 0.5})
    assert announced == [("DAE", {"corruption_level": 0.2}), ("CAE", {"contractive_weight": 3e-3})]


def test_search_grids_of_an_unsearched_model_is_one_empty_candidate():
    assert _engine.search_grid("AE", VALUES) == [{}]
    assert _engine.search_grid("CAE", VALUES) == [{"contractive_weight": v} for v in VALUES["CAE"]]


def test_progress_numbers_steps_and_times_lines():
    lines = []
    progress = _engine.Progress(lines.append, total=3)
    progress.step("one")
    progress.log("plain")
    progress.step("two")
    assert re.fullmatch(r"\[1/3\] one \(\d+ s elapsed\)", lines[0])
    assert re.fullmatch(r"plain \(\d+ s elapsed\)", lines[1])
    assert lines[2].startswith("[2/3] two (")
    unnumbered = []
    _engine.Progress(unnumbered.append).step("x")
    assert unnumbered[0].startswith("x (")
    with_left = []
    _engine.Progress(with_left.append, total=2).step("fit", left_seconds=150)
    assert re.fullmatch(r"\[1/2\] fit \(\d+ s elapsed, about 2 min left\)", with_left[0])


def test_time_left_uses_the_mean_of_a_kind_or_its_guess():
    left = _engine.TimeLeft({"fit": 10.0, "test": 1.0})
    assert left.seconds(["fit", "test", "test"]) == 12.0
    left.record("fit", 4.0)
    left.record("fit", 8.0)
    assert left.last("fit") == 8.0
    assert left.seconds(["fit", "fit", "test"]) == 13.0
    assert left.seconds([]) == 0


def test_record_store_round_trips_records_and_weights_atomically(tmp_path):
    store = _engine.RecordStore(str(tmp_path / "store"))
    assert not store.has("runs", "a")
    weights = [np.arange(6.0).reshape(2, 3), np.ones(3, np.float32)]
    store.save("runs", "a", {"error": 0.25, "name": "a"}, weights)
    store.save("runs", "b", {"error": 0.5})
    assert store.has("runs", "a", weights=True) and store.has("runs", "b")
    assert not store.has("runs", "b", weights=True)
    assert store.load("runs", "a") == {"error": 0.25, "name": "a"}
    for saved, loaded in zip(weights, store.weights("runs", "a"), strict=True):
        np.testing.assert_array_equal(saved, loaded)
    # The committed MNIST units' format: indented by 1, keys sorted, no trailing newline.
    with open(store.path("runs", "a")) as stream:
        assert stream.read() == '{\n "error": 0.25,\n "name": "a"\n}'
    assert sorted(os.listdir(tmp_path / "store" / "runs")) == ["a.json", "a.npz", "b.json"]


def test_summary_is_the_mean_and_the_sample_std():
    values = [0.2, 0.5, 0.9]
    stats = _engine.summary(values)
    assert stats["mean"] == pytest.approx(np.mean(values))
    assert stats["std"] == pytest.approx(np.std(values, ddof=1))
    assert _engine.summary([0.3]) == {"mean": 0.3, "std": 0.0}
    assert np.isnan(_engine.summary([])["mean"])


def test_noisy_inputs_draw_once_per_level_in_order():
    x = np.zeros((4, 3), np.float32)
    noisy = _engine.noisy_inputs(x, (0.1, 0.2), np.random.default_rng(5))
    rng = np.random.default_rng(5)
    first, second = rng.standard_normal(x.shape), rng.standard_normal(x.shape)
    np.testing.assert_array_equal(noisy[0.1], (0.1 * first).astype(np.float32))
    np.testing.assert_array_equal(noisy[0.2], (0.2 * second).astype(np.float32))


def test_batched_equals_one_call():
    x = np.arange(10.0).reshape(5, 2)
    np.testing.assert_array_equal(_engine.batched(lambda b: b * 2, x, 2), x * 2)


def test_markdown_document_and_table():
    table = _engine.markdown_table(["a", "b"], [[1, ""]], align="lr")
    assert table == "| a | b |\n|---|---:|\n| 1 |  |"
    with pytest.raises(ValueError, match="align"):
        _engine.markdown_table(["a"], [], align="lr")
    text = _engine.markdown_document("T", ["body", "", ""], "cmd --x", 12.4)
    assert text == "# T\n\nGenerated by:\n\n```\ncmd --x\n```\n\nbody\n\nTotal wall time: 12 s.\n"
    assert _engine.markdown_document("T", ["b"], None, 1).startswith("# T\n\nb\n")


# ------------------------------------------------------------- statistics


def test_paired_test_against_the_formulas():
    a = np.array([0.91, 0.93, 0.90, 0.95, 0.92])
    b = np.array([0.89, 0.90, 0.90, 0.91, 0.93])
    t_p, w_p = _engine.paired_test(a, b)
    d = a - b
    t = d.mean() / (d.std(ddof=1) / np.sqrt(len(d)))
    assert t_p == pytest.approx(2 * stats.t.sf(abs(t), len(d) - 1), rel=1e-12)
    # Wilcoxon drops the zero difference: 4 pairs, ranks of |d| = 1, 2, 3, 4 with
    # one negative (rank 1); P(W- <= 1) = 2/16 under H0, two-sided: 2 * 2/16.
    assert w_p == pytest.approx(0.25, rel=1e-12)
    # Five positive differences: the smallest exact two-sided p-value, 2/32.
    assert _engine.paired_test([1, 2, 3, 4, 5.5], [0, 0, 0, 0, 0])[1] == pytest.approx(0.0625)
    assert _engine.paired_test(a, a) == (None, None)


def test_holm_matches_a_hand_computed_example():
    # Sorted p: 0.01 (×4 = 0.04), 0.02 (×3 = 0.06), 0.03 (×2 = 0.06), 0.5 (×1 = 0.5).
    assert _engine.holm([0.03, 0.5, 0.01, None, 0.02]) == pytest.approx(
        [0.06, 0.5, 0.04, None, 0.06]
    )
    # Monotone: a later adjusted value is never below an earlier one; capped at 1.
    assert _engine.holm([0.4, 0.3]) == pytest.approx([0.6, 0.6])
    assert _engine.holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])


def test_paired_comparison_and_equivalence_logic():
    a, b = [0.10, 0.12, 0.11], [0.13, 0.16, 0.13]
    test = _engine.paired_comparison(a, b, margin=0.01)
    assert test["p"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    diff = np.subtract(a, b)
    half = stats.t.ppf(0.95, 2) * diff.std(ddof=1) / np.sqrt(3)
    assert test["ci90"] == pytest.approx([diff.mean() - half, diff.mean() + half])
    assert test["equivalent"] is False
    close = _engine.paired_comparison([0.100, 0.101, 0.102], [0.101, 0.101, 0.101], 0.01)
    assert close["equivalent"] is True
    assert _engine.verdict({**close, "p_holm": 0.9}) == "equivalent"
    assert _engine.verdict({**test, "p_holm": 0.01}) == "a better"
    assert _engine.verdict({**test, "p_holm": 0.2}) == "inconclusive"
    one = _engine.paired_comparison([0.1], [0.2], 0.003)
    assert one["p"] is None and one["equivalent"] is None
    assert _engine.verdict({**one, "p_holm": None}) == "inconclusive"


@pytest.mark.parametrize("value", [0, -1, 2.0, True, "3", None])
def test_positive_int_refuses(value):
    with pytest.raises(ValueError, match=r"`n` should be a positive integer\. Received: n="):
        positive_int("n", value)


def test_positive_int_accepts_numpy_and_a_minimum():
    assert positive_int("n", np.int64(4)) == 4 and type(positive_int("n", np.int64(4))) is int
    assert positive_int("n", 0, minimum=0) == 0
    with pytest.raises(ValueError, match="an integer >= 0"):
        positive_int("n", -1, minimum=0)


@pytest.mark.parametrize("value", [0, 1, "True", None])
def test_check_bool_refuses_non_booleans(value):
    with pytest.raises(ValueError, match="`flag` should be True or False"):
        check_bool("flag", value)
    assert check_bool("flag", False) is False
