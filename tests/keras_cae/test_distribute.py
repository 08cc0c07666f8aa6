"""MirroredStrategy training equals single-device training, for every penalty method.

The CPU must be split into two logical devices before TensorFlow initialises, so the
training runs in a fresh process (`tests/_workers/mirrored_equality.py`); the
comparisons are made here. The reference is the same model trained on one device
from the same initial weights, on the same batches (shuffle=False, SGD). The data
has 27 rows in batches of 8, so the last batch splits unevenly (2 + 1 rows).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_cae import distribute
from tests import ROOT

WORKER = os.path.join(ROOT, "tests", "_workers", "mirrored_equality.py")
# The core cases run in one fresh process (about 20 s of CPU, a minute on a loaded
# machine); the rest, the other penalty paths and a one-row last batch, in another.
# Both are `slow`: the fast suite keeps the strategy helpers' tests below.
CORE = ["batch_jacobian", "closed_form", "auto", "cae_h", "dae_masking"]
EXTENDED = [
    "cae_h_batch_jacobian",
    "hutchinson",
    "dae_gaussian",
    "one_row_last_batch",
]
# float32 round-off: the replicas sum partial gradients in a different order.
RTOL, ATOL = 1e-5, 1e-6


def _run_worker(tmp_path_factory: pytest.TempPathFactory, *flags: str) -> dict:
    out = tmp_path_factory.mktemp("mirrored") / "result.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    completed = subprocess.run(
        [sys.executable, WORKER, str(out), *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    with open(out) as handle:
        return json.load(handle)


@pytest.fixture(scope="module")
def core_results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _run_worker(tmp_path_factory, "--cases=" + ",".join(CORE))


@pytest.fixture(scope="module")
def extended_results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _run_worker(tmp_path_factory, "--cases=" + ",".join(EXTENDED))


def _assert_same_run(case: dict) -> None:
    assert case["replicas"] == 2
    for single, mirrored in zip(case["single_weights"], case["mirrored_weights"], strict=True):
        np.testing.assert_allclose(mirrored, single, rtol=RTOL, atol=ATOL)
    single, mirrored = case["single"], case["mirrored"]
    assert sorted(mirrored["history"]) == sorted(single["history"])
    for name, values in single["history"].items():
        np.testing.assert_allclose(mirrored["history"][name], values, rtol=RTOL, err_msg=name)
    assert sorted(mirrored["evaluate"]) == sorted(single["evaluate"])
    for name, value in single["evaluate"].items():
        np.testing.assert_allclose(mirrored["evaluate"][name], value, rtol=RTOL, err_msg=name)


def _check_case(case: dict) -> None:
    _assert_same_run(case)
    # Every replica records the range of the whole global batch, not of its own rows.
    ranges = case["input_range"]
    assert ranges["single"] == ranges["mirrored"] == ranges["data"]
    # The runs really trained (the comparison is not between two untouched models).
    assert case["single"]["history"]["loss"][0] != case["single"]["history"]["loss"][1]


# `core_results` trains every core case in a worker process: about a minute.
@pytest.mark.slow
@pytest.mark.parametrize("name", CORE)
def test_mirrored_training_equals_single_device(core_results: dict, name: str) -> None:
    _check_case(core_results[name])


@pytest.mark.slow
def test_a_batch_the_replicas_cannot_share_is_refused(core_results: dict) -> None:
    # Keras itself would fail later with an AddN shape error (first batch split 5 + 4).
    message = core_results["odd_batch_error"]
    assert message is not None and "multiple of the 2 replicas" in message
    assert "batch_size=9" in message


@pytest.mark.slow
@pytest.mark.parametrize("name", EXTENDED)
def test_mirrored_training_equals_single_device_more(extended_results: dict, name: str) -> None:
    _check_case(extended_results[name])


@pytest.mark.slow
def test_equality_fails_with_per_replica_noise(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Control: with a plain draw on each replica (every replica repeats the first
    half of the noise), the same comparison fails, so the test above can fail."""
    results = _run_worker(tmp_path_factory, "--naive-noise", "--cases=dae_gaussian,hutchinson")
    for name in ("dae_gaussian", "hutchinson"):
        with pytest.raises(AssertionError):
            _assert_same_run(results[name])


def test_get_strategy_names() -> None:
    assert distribute.get_strategy("default").num_replicas_in_sync == 1
    with pytest.raises(ValueError, match=r"strategy='tpu'.*'mirrored'"):
        distribute.get_strategy("tpu")
    with pytest.raises(ValueError, match="devices"):
        distribute.get_strategy("default", devices=["/cpu:0"])


@pytest.mark.parametrize(
    "value, match",
    [
        (None, "needs the TF_CONFIG"),
        ("{not json", "not valid JSON"),
        ('{"cluster": {}, "task": {"type": "worker", "index": 0}}', "no cluster.worker"),
        ('{"cluster": {"worker": ["h:1"]}, "task": {"type": "worker", "index": 1}}', "task"),
    ],
)
def test_multi_worker_needs_a_valid_tf_config(
    monkeypatch: pytest.MonkeyPatch, value: str | None, match: str
) -> None:
    if value is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", value)
    with pytest.raises(ValueError, match=match):
        distribute.get_strategy("multi-worker")


def test_is_chief(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.is_chief()
    cluster = {"worker": ["localhost:1", "localhost:2"]}
    for index, chief in ((0, True), (1, False)):
        task = {"type": "worker", "index": index}
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
        assert distribute.is_chief() is chief


def test_replica_random_is_a_plain_draw_on_one_device() -> None:
    import keras

    first = distribute.replica_random(lambda s: keras.random.normal(s, seed=4), [3, 2])
    np.testing.assert_array_equal(first, keras.random.normal([3, 2], seed=4))
