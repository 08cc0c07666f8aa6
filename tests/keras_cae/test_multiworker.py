"""A real two-process MultiWorkerMirroredStrategy run on loopback, killed and resumed.

Two worker processes (`tests/_workers/multiworker.py`) train a CAE+H with
`keras.callbacks.BackupAndRestore`; both kill themselves (SIGKILL) after the second
of four epochs. Started again with the same arguments, they resume from the backup
and finish. Both workers must end with the same weights, and these must equal an
uninterrupted four-epoch single-device run on the same global batches: the resumed
state includes the noise generator's, and the two workers split each global batch
as one device would process it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from tests import ROOT
from tests._loopback import free_ports

# Two worker processes train, are killed and resumed: about a minute and a half.
pytestmark = pytest.mark.slow

WORKERS = os.path.join(ROOT, "tests", "_workers")
WORKER = os.path.join(WORKERS, "multiworker.py")
EPOCHS = 4
KILL_AFTER_EPOCH = 1  # Zero-based: two epochs are backed up, then the workers die.
TIMEOUT = 170  # Each worker's own watchdog ends it after 150 s.


def _run_cluster(out: str, backup: str, *flags: str) -> list[subprocess.CompletedProcess]:
    """Starts both workers, waits for both (bounded), and always stops them."""
    ports = ",".join(str(port) for port in free_ports(2))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    processes = [
        subprocess.Popen(
            [sys.executable, WORKER, out, str(index), ports, str(EPOCHS), backup, *flags],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(2)
    ]
    results = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=TIMEOUT)
            results.append(
                subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
            )
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return results


def _single_device_reference() -> tuple[list[np.ndarray], list[float], np.ndarray]:
    sys.path.insert(0, WORKERS)
    try:
        import multiworker
    finally:
        sys.path.remove(WORKERS)
    model, x = multiworker.model_and_data()
    history = model.fit(
        x, batch_size=multiworker.BATCH_SIZE, epochs=EPOCHS, shuffle=False, verbose=0
    )
    return model.get_weights(), history.history["loss"], x


def test_two_workers_killed_and_resumed_match_one_device(tmp_path) -> None:
    out, backup = str(tmp_path / "out"), str(tmp_path / "backup")
    os.makedirs(out)

    killed = _run_cluster(out, backup, "--kill-after-epoch", str(KILL_AFTER_EPOCH))
    for result in killed:
        assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    for index in range(2):
        assert os.path.exists(os.path.join(backup, f"worker-{index}", "latest.weights.h5"))
    assert not os.listdir(out)

    resumed = _run_cluster(out, backup)
    for result in resumed:
        assert result.returncode == 0, result.stderr[-3000:]
    runs = [np.load(os.path.join(out, f"worker-{index}.npz")) for index in range(2)]
    weights, losses, x = _single_device_reference()
    for run in runs:
        assert int(run["replicas"]) == 2
        # Resumed at epoch 2: only the last two epochs ran in the second start.
        assert int(run["epochs_run"]) == EPOCHS - KILL_AFTER_EPOCH - 1
        np.testing.assert_allclose(run["loss"], losses[KILL_AFTER_EPOCH + 1 :], rtol=1e-5)
        for index, expected in enumerate(weights):
            np.testing.assert_allclose(run[f"arr_{index}"], expected, rtol=1e-5, atol=1e-6)
        # Each worker records the range of the whole global batch, not of its own rows.
        np.testing.assert_array_equal(run["input_range"], [x.min(), x.max()])
    for index in range(len(weights)):
        np.testing.assert_array_equal(runs[0][f"arr_{index}"], runs[1][f"arr_{index}"])
    # BackupAndRestore deletes its checkpoint once training completes.
    assert not os.path.exists(os.path.join(backup, "worker-0", "latest.weights.h5"))
