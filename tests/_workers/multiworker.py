"""One worker of a two-process MultiWorkerMirroredStrategy run on loopback.

Usage: python multiworker.py OUT_DIR INDEX PORT0,PORT1 EPOCHS BACKUP_DIR [--kill-after-epoch K]

Trains a small CAE+H (noise included, so replica-consistent noise is exercised across
processes) with `keras.callbacks.BackupAndRestore`, then writes
``OUT_DIR/worker-INDEX.npz`` with the final weights and the epochs run. With
``--kill-after-epoch K`` the process kills itself (SIGKILL) right after epoch K is
backed up, as a preempted worker would die. A watchdog (SIGALRM) ends the process if
the cluster hangs, so the worker always stops by itself.
"""

from __future__ import annotations

import json
import os
import signal
import sys

WATCHDOG_SECONDS = 150


def model_and_data():
    """The model (built and compiled in the current scope) and the data; shared with tests."""
    import keras
    import numpy as np

    from keras_cae import dense_autoencoder

    x = np.random.default_rng(0).random((40, 12)).astype("float32")
    model = dense_autoencoder(
        12, [6], seed=5, penalty="closed_form", hessian_weight=0.5, hessian_noise_stddev=0.3
    )
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    return model, x


# Global batch 8 over 2 workers: 4 rows each, 5 steps per epoch.
BATCH_SIZE = 8


def main() -> None:
    out_dir, index, ports, epochs, backup_dir = sys.argv[1:6]
    index, epochs = int(index), int(epochs)
    kill_after = None
    if "--kill-after-epoch" in sys.argv:
        kill_after = int(sys.argv[sys.argv.index("--kill-after-epoch") + 1])
    signal.alarm(WATCHDOG_SECONDS)  # Default action: terminate.
    workers = [f"localhost:{port}" for port in ports.split(",")]
    os.environ["TF_CONFIG"] = json.dumps(
        {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
    )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import keras
    import numpy as np

    from keras_cae.distribute import get_strategy

    strategy = get_strategy("multi-worker")
    with strategy.scope():
        model, x = model_and_data()

    class Kill(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if kill_after is not None and epoch == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)

    backup = keras.callbacks.BackupAndRestore(
        os.path.join(backup_dir, f"worker-{index}"), double_checkpoint=True
    )
    history = model.fit(
        x,
        batch_size=BATCH_SIZE,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=[backup, Kill()],  # Kill runs after the backup of the epoch.
    )
    np.savez(
        os.path.join(out_dir, f"worker-{index}.npz"),
        *model.get_weights(),
        epochs_run=len(history.history["loss"]),
        replicas=strategy.num_replicas_in_sync,
        loss=np.array(history.history["loss"]),
        input_range=np.array(model.input_range),
    )


if __name__ == "__main__":
    main()
