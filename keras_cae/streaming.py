"""Data larger than memory: sharded `.npy` files or TFRecords streamed through `tf.data`.

A data set is a directory or a glob of shards, all `.npy` (memory-mapped, read in
blocks whose pages are then released) or all `.tfrecord` (one `tf.train.Example` per
row with a float feature ``"x"``; :func:`write_tfrecord` writes them). Finding and
reading the shards is `keras_cae.shards` (no TensorFlow, shared with batch encoding);
this module turns them into a shuffled `tf.data` pipeline for `model.fit`.

Shuffling is two-level, as for any stream: the shard order and the block order in
each shard are reshuffled every epoch, and a shuffle buffer of `shuffle_buffer` rows
mixes rows from `cycle_length` shards read in parallel. Resident memory is bounded
by ``(shuffle_buffer + cycle_length * block_rows + prefetched batches) * row size``,
whatever the size of the data set.

Example:

>>> import numpy as np, os, tempfile
>>> from keras_cae import streaming
>>> folder = tempfile.mkdtemp()
>>> for index in range(3):
...     np.save(os.path.join(folder, f"part-{index}.npy"), np.ones((10, 4), "float32"))
>>> source = streaming.open_shards(folder)
>>> source.num_rows, source.row_shape
(30, (4,))
>>> batches = streaming.shard_dataset(source, batch_size=8, seed=0)
>>> [int(batch.shape[0]) for batch in batches]
[8, 8, 8, 6]
"""

from __future__ import annotations

import contextlib
import os
import re
import zlib
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow as tf

from keras_cae.shards import ShardSource, is_shard_spec, open_shards, open_shards_from
from keras_cae.shards import npy_blocks as _npy_blocks

__all__ = [
    "ShardSource",
    "data_errors",
    "is_shard_spec",
    "open_shards",
    "open_shards_from",
    "shard_dataset",
    "write_tfrecord",
]


def shard_dataset(
    source: ShardSource | str | os.PathLike[str],
    batch_size: int,
    shuffle: bool = True,
    seed: int | None = None,
    shuffle_buffer: int = 10_000,
    block_rows: int = 1024,
    cycle_length: int = 4,
    flatten: bool = False,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """Streams the rows of sharded data as float32 batches, for `model.fit`.

    Args:
        source: a `ShardSource`, or a directory or glob for :func:`open_shards`.
        batch_size: rows per batch (the global batch under `tf.distribute`).
        shuffle: reshuffle shards, blocks and rows every epoch. Defaults to `True`.
        seed: seed for the shuffles (the sequence of epochs is reproducible). Under
            multi-worker training every worker must pass the same seed. Defaults to
            `None`.
        shuffle_buffer: rows in the shuffle buffer. Defaults to `10000`.
        block_rows: rows read from a `.npy` shard at a time. Defaults to `1024`.
        cycle_length: shards read in parallel. Defaults to `4`.
        flatten: reshape rows to 1-D (for Dense encoders). Defaults to `False`.
        drop_remainder: drop the last partial batch. Defaults to `False`.

    Returns:
        A `tf.data.Dataset` of batches of shape ``(batch, *row_shape)``, prefetched.
        Each epoch visits every row once. Inputs only: `fit` uses them as targets.

    Raises:
        ValueError: for bad arguments or shards (see :func:`open_shards`). Non-finite
            rows are reported when the stream reaches them, as an error naming the
            shard and the row.
    """
    for name, value in (
        ("batch_size", batch_size),
        ("shuffle_buffer", shuffle_buffer),
        ("block_rows", block_rows),
        ("cycle_length", cycle_length),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` should be a positive integer. Received: {name}={value!r}")
    if not isinstance(source, ShardSource):
        source = open_shards(source)
    row_shape = source.row_shape
    # Without shuffling, rows come in file order: one shard at a time.
    cycle = min(cycle_length, len(source.paths)) if shuffle else 1
    files = tf.data.Dataset.from_tensor_slices(list(source.paths))
    if shuffle:
        files = files.shuffle(len(source.paths), seed=seed, reshuffle_each_iteration=True)

    if source.kind == "npy":
        # One Python generator per shard and epoch; a counter gives every pass its own
        # block order, reproducibly from `seed`.
        passes: dict[str, int] = {}

        def blocks(path: bytes) -> Iterator[np.ndarray]:
            text = path.decode()
            count = passes.get(text, 0)
            passes[text] = count + 1
            if not shuffle:
                block_seed = None
            elif seed is None:
                block_seed = int.from_bytes(os.urandom(4), "little")
            else:
                block_seed = zlib.crc32(f"{seed}:{os.path.basename(text)}:{count}".encode())
            yield from _npy_blocks(text, block_rows, block_seed)

        signature = tf.TensorSpec((None, *row_shape), tf.float32)
        rows = files.interleave(
            lambda path: tf.data.Dataset.from_generator(
                blocks, output_signature=signature, args=(path,)
            ).unbatch(),
            cycle_length=cycle,
            block_length=1,
        )
    else:
        rows = files.interleave(
            lambda path: tf.data.TFRecordDataset(path, buffer_size=1 << 20),
            cycle_length=cycle,
            block_length=1,
        )
    if shuffle:
        rows = rows.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    batches = rows.batch(batch_size, drop_remainder=drop_remainder)
    if source.num_rows is not None:
        # Known for .npy shards: lets Keras show progress and size its epochs.
        count = source.num_rows // batch_size
        if not drop_remainder and source.num_rows % batch_size:
            count += 1
        batches = batches.apply(tf.data.experimental.assert_cardinality(count))
    if source.kind == "tfrecord":
        features = {"x": tf.io.FixedLenFeature(row_shape, tf.float32)}
        batches = batches.map(
            lambda records: tf.io.parse_example(records, features)["x"],
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    if flatten and len(row_shape) > 1:
        size = int(np.prod(row_shape))
        batches = batches.map(lambda x: tf.reshape(x, [-1, size]))
    options = tf.data.Options()
    # Under multi-worker training every worker reads the same (seeded) stream and keeps
    # its part of each batch: every worker gets the same number of batches, which
    # sharding by file cannot promise (a worker with fewer batches would hang the rest).
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return batches.with_options(options).prefetch(tf.data.AUTOTUNE)


@contextlib.contextmanager
def data_errors() -> Iterator[None]:
    """Re-raises data errors met inside a `tf.data` pipeline as `ValueError`.

    A `ValueError` raised by a shard reader (e.g. a row with NaN) reaches the caller
    as a `tf.errors.InvalidArgumentError` wrapping its message; this turns it back
    into the `ValueError` it was.

    Example:

    >>> with data_errors():
    ...     model.fit(shard_dataset(source, 32))  # doctest: +SKIP
    """
    try:
        yield
    except tf.errors.InvalidArgumentError as error:
        match = re.search(r"ValueError: (.*)", error.message)
        if match is None:
            raise
        raise ValueError(match.group(1).strip()) from None


def write_tfrecord(path: str | os.PathLike[str], x: np.ndarray | Sequence[Sequence[float]]) -> None:
    """Writes rows as a TFRecord shard that :func:`shard_dataset` can stream.

    Each row becomes a `tf.train.Example` with the float feature ``"x"`` (the row,
    flattened). The file is written beside `path` and renamed into place.

    Args:
        path: the `.tfrecord` file to write.
        x: an array of shape ``(rows, *features)``.
    """
    path = os.fspath(path)
    values = np.asarray(x, dtype=np.float32)
    if values.ndim < 2:
        raise ValueError(
            f"`x` should have shape (rows, features...). Received: x.shape={values.shape}"
        )
    staging = f"{path}.tmp-{os.getpid()}"
    try:
        with tf.io.TFRecordWriter(staging) as writer:
            for row in values.reshape(len(values), -1):
                feature = tf.train.Feature(float_list=tf.train.FloatList(value=row))
                example = tf.train.Example(features=tf.train.Features(feature={"x": feature}))
                writer.write(example.SerializeToString())
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            os.unlink(staging)
