"""Training under `tf.distribute`: strategies by name, and replica-consistent noise.

Keras trains a model under any `tf.distribute.Strategy` when it is built and compiled
inside ``strategy.scope()``. `ContractiveAutoencoder` needs two things on top of that:

* its own loss terms scaled like Keras's compiled loss (done in `keras_cae.model`);
* random numbers (denoising corruption, Hutchinson probes, CAE+H noise) that do not
  depend on how the global batch is split. Under `MirroredStrategy` every replica
  holds the same `keras.random.SeedGenerator` state, so a plain draw gives *every
  replica the same noise*: sample ``b`` of replica 0 and sample ``b`` of replica 1
  would share one corruption pattern. :func:`replica_random` instead draws the noise
  of the whole global batch on every replica and keeps this replica's rows, so the
  noise of each sample is the one a single-device run draws for it, and distributed
  training is the same computation as single-device training.

Example:

>>> from keras_cae.distribute import get_strategy
>>> get_strategy("default").num_replicas_in_sync
1
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

from keras_cae._choices import STRATEGIES

__all__ = [
    "STRATEGIES",
    "get_strategy",
    "split_cpu",
    "replica_random",
    "replica_share",
    "tf_config",
    "is_chief",
]


def split_cpu(num_devices: int) -> list[str]:
    """Splits the host CPU into `num_devices` logical devices, for `MirroredStrategy`.

    This lets one machine run (and test) data-parallel training with several
    replicas. It must run before TensorFlow initialises its devices (before the first
    op or tensor is created).

    Args:
        num_devices: the number of logical CPU devices, at least 1.

    Returns:
        The device names, e.g. ``["/cpu:0", "/cpu:1"]``.

    Raises:
        ValueError: for a `num_devices` that is not a positive integer.
        RuntimeError: if TensorFlow has already initialised its devices with another
            configuration.
    """
    if isinstance(num_devices, bool) or not isinstance(num_devices, int) or num_devices < 1:
        raise ValueError(
            f"`num_devices` should be a positive integer. Received: num_devices={num_devices!r}"
        )
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is None or len(current) != num_devices:
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices
            )
        except RuntimeError as error:
            raise RuntimeError(
                f"Cannot split the CPU into {num_devices} logical devices: TensorFlow has "
                f"already initialised its devices ({error}). Call split_cpu() before "
                "anything else runs TensorFlow ops."
            ) from None
    return [f"/cpu:{index}" for index in range(num_devices)]


def tf_config() -> dict[str, Any]:
    """Returns the parsed ``TF_CONFIG`` environment variable, checked for multi-worker use.

    Returns:
        The dict with keys ``cluster`` (``{"worker": ["host:port", ...], ...}``) and
        ``task`` (``{"type": "worker", "index": i}``).

    Raises:
        ValueError: if ``TF_CONFIG`` is unset, not JSON, or lacks a worker cluster or a
            task that names one of its members.
    """
    text = os.environ.get("TF_CONFIG")
    allowed = (
        'TF_CONFIG=\'{"cluster": {"worker": ["host1:port", "host2:port"]}, '
        '"task": {"type": "worker", "index": 0}}\''
    )
    if not text:
        raise ValueError(
            f"strategy='multi-worker' needs the TF_CONFIG environment variable, e.g. {allowed}"
        )
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"TF_CONFIG is not valid JSON ({error}). Received: TF_CONFIG={text!r}"
        ) from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    workers = cluster.get("worker") if isinstance(cluster, dict) else None
    if not isinstance(cluster, dict) or not isinstance(workers, list) or not workers:
        raise ValueError(
            f"TF_CONFIG has no cluster.worker list. Received: TF_CONFIG={text!r}; "
            f"expected {allowed}"
        )
    if (
        not isinstance(task, dict)
        or task.get("type") not in cluster
        or not isinstance(task.get("index"), int)
        or not 0 <= task["index"] < len(cluster[task["type"]])
    ):
        raise ValueError(
            f"TF_CONFIG task should name a member of the cluster. Received: TF_CONFIG={text!r}; "
            f"expected {allowed}"
        )
    return config


def is_chief() -> bool:
    """Whether this process writes outputs: worker 0 (or the chief) of ``TF_CONFIG``.

    Without ``TF_CONFIG`` (single-process training) this is always True.
    """
    if not os.environ.get("TF_CONFIG"):
        return True
    task = tf_config()["task"]
    return task["type"] == "chief" or (
        task["type"] == "worker" and task["index"] == 0 and "chief" not in tf_config()["cluster"]
    )


def get_strategy(
    name: str = "default", devices: Sequence[str] | None = None
) -> tf.distribute.Strategy:
    """Returns the `tf.distribute.Strategy` called `name`.

    Args:
        name: `"default"` (the current strategy: one device unless a scope is
            open), `"mirrored"` (`MirroredStrategy`: data-parallel over the local GPUs,
            or over `devices`) or `"multi-worker"` (`MultiWorkerMirroredStrategy`:
            data-parallel over the processes listed in ``TF_CONFIG``).
        devices: the devices of `"mirrored"`, e.g. ``split_cpu(2)``. Defaults to
            every local GPU, or the CPU if there is none.

    Returns:
        The strategy. Build and compile the model in its ``scope()``.

    Raises:
        ValueError: for an unknown `name`, `devices` with another strategy, or a
            missing or malformed ``TF_CONFIG`` with `"multi-worker"`.

    Example:

    >>> import keras_cae
    >>> from keras_cae.distribute import get_strategy
    >>> strategy = get_strategy("mirrored")
    >>> with strategy.scope():
    ...     model = keras_cae.dense_autoencoder(64, 16)
    """
    if name not in STRATEGIES:
        raise ValueError(
            f"Unrecognized strategy={name!r}. Supported strategies are: {list(STRATEGIES)}."
        )
    if devices is not None and name != "mirrored":
        raise ValueError(
            f"`devices` only applies to strategy='mirrored'. Received: strategy={name!r}, "
            f"devices={list(devices)!r}"
        )
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(None if devices is None else list(devices))
    tf_config()  # Fail with a clear message before TensorFlow tries to connect.
    return tf.distribute.MultiWorkerMirroredStrategy()


def replica_share(batch_size: tf.Tensor) -> tf.Tensor | None:
    """Returns this replica's share ``n_r / N`` of the global batch, or None on one replica.

    Keras sums gradients over replicas, and divides its compiled loss (a per-replica
    mean) by ``num_replicas_in_sync``; that is the global mean only when the global
    batch splits evenly. Weighting each replica's mean by ``n_r / N`` instead gives
    the global mean for every split, including an uneven last batch (27 rows in
    batches of 8 end with 3 rows split 2 + 1), so distributed training computes the
    same gradients as one device.

    Example:

    >>> import tensorflow as tf
    >>> from keras_cae.distribute import replica_share
    >>> replica_share(tf.constant(8)) is None  # One device: nothing to weight.
    True
    """
    if (
        tf.distribute.get_strategy().num_replicas_in_sync == 1
        or tf.distribute.in_cross_replica_context()
    ):
        return None
    local = tf.cast(batch_size, tf.float32)
    return local / tf.distribute.get_replica_context().all_reduce("sum", local)


def replica_random(
    draw: Callable[[tf.Tensor], tf.Tensor], shape: Any, batch_axis: int = 0
) -> tf.Tensor:
    """Draws random numbers for this replica's rows of the global batch.

    Outside a replica context with several replicas this is just ``draw(shape)``.
    Inside one (a `train_step` under `MirroredStrategy` or
    `MultiWorkerMirroredStrategy`), every replica draws the numbers of the whole
    global batch with the same seed (replicas share the `SeedGenerator` state) and
    keeps the rows of its own samples, found by gathering the per-replica batch
    sizes (uneven final batches included). The result is, sample for sample, what a
    single-device run draws for the same global batch, so noise is independent
    across samples (not repeated on every replica) and runs are comparable.

    Args:
        draw: a function of a shape returning random numbers of that shape, e.g.
            ``lambda s: keras.random.normal(s, seed=seed_generator)``. Every replica
            calls it with the same global shape and (shared generator state) the
            same seed, so they all draw the same tensor.
        shape: the local shape, a 1-D int tensor or a list.
        batch_axis: the axis of `shape` that is the batch. Defaults to `0`.

    Returns:
        A tensor of shape `shape`.
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas == 1 or tf.distribute.in_cross_replica_context():
        return draw(shape)
    context = tf.distribute.get_replica_context()
    shape = tf.convert_to_tensor(shape, tf.int32)
    local = shape[batch_axis : batch_axis + 1]
    sizes = context.all_gather(local, axis=0)
    replica = tf.cast(context.replica_id_in_sync_group, tf.int32)
    offset = tf.reduce_sum(sizes[:replica])
    global_shape = tf.tensor_scatter_nd_update(shape, [[batch_axis]], [tf.reduce_sum(sizes)])
    values = draw(global_shape)
    begin = tf.tensor_scatter_nd_update(tf.zeros_like(shape), [[batch_axis]], [offset])
    return tf.slice(values, begin, shape)
