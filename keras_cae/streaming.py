"""Data larger than memory: sharded `.npy` files or TFRecords streamed through `tf.data`.

A data set is a directory or a glob of shards, all `.npy` or all `.tfrecord`:

* ``.npy`` shards (one array of shape ``(rows, *features)`` each) are memory-mapped
  and read in blocks of contiguous rows. After a block is copied out, its pages are
  released from the process (``madvise(MADV_DONTNEED)``; the kernel keeps them in
  its page cache), so resident memory does not grow with the size of a shard.
* ``.tfrecord`` shards hold one `tf.train.Example` per row with a float feature
  ``"x"`` (the flattened row); :func:`write_tfrecord` writes them.

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
import glob
import mmap
import os
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

__all__ = [
    "ShardSource",
    "data_errors",
    "is_shard_spec",
    "open_shards",
    "open_shards_from",
    "shard_dataset",
    "write_tfrecord",
]

SHARD_SUFFIXES = {".npy": "npy", ".tfrecord": "tfrecord", ".tfrecords": "tfrecord"}
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class ShardSource:
    """The shards of a streamed data set, checked for a common row shape.

    Attributes:
        paths: the shard files, sorted.
        kind: `"npy"` or `"tfrecord"`.
        row_shape: the shape of one row (without the batch axis).
        num_rows: the total number of rows, or None for TFRecords (counting them
            needs a pass over the data).
        name: the directory or glob the shards came from.
    """

    paths: tuple[str, ...]
    kind: str
    row_shape: tuple[int, ...]
    num_rows: int | None
    name: str


def is_shard_spec(spec: str | os.PathLike[str]) -> bool:
    """Whether `spec` names shards to stream (a directory or a glob), not one file."""
    text = os.fspath(spec)
    return os.path.isdir(text) or any(char in _GLOB_CHARS for char in text)


def _npy_header(path: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """Reads the shape, dtype and data offset of a `.npy` file, without its data."""
    try:
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: cannot read the .npy file ({error})") from None
    if not isinstance(mapped, np.memmap):
        raise ValueError(f"{path}: expected a .npy array file")
    shape, dtype, offset = mapped.shape, mapped.dtype, int(mapped.offset)
    fortran_order = not mapped.flags.c_contiguous
    del mapped  # Unmaps the file: only the header was read.
    if fortran_order and len(shape) > 1:
        raise ValueError(
            f"{path}: the array is stored in Fortran order, which cannot be streamed by rows; "
            "save it with np.save(path, np.ascontiguousarray(x))"
        )
    if not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
        raise ValueError(f"{path}: expected real numbers, found dtype {dtype}")
    if len(shape) < 2:
        raise ValueError(f"{path}: expected an array of shape (rows, features...), found {shape}")
    return tuple(int(d) for d in shape), dtype, offset


def _tfrecord_row_size(path: str) -> int:
    for record in tf.data.TFRecordDataset(path).take(1):
        example = tf.train.Example.FromString(record.numpy())
        feature = example.features.feature.get("x")
        if feature is None or not feature.float_list.value:
            raise ValueError(
                f"{path}: expected tf.train.Example records with a float feature 'x' "
                "(see keras_cae.streaming.write_tfrecord)"
            )
        return len(feature.float_list.value)
    raise ValueError(f"{path}: the TFRecord file has no records")


def open_shards(spec: str | os.PathLike[str]) -> ShardSource:
    """Finds and checks the shards named by a directory or a glob.

    Args:
        spec: a directory (every `.npy`, or every `.tfrecord`, file in it) or a glob
            such as ``"data/part-*.npy"``.

    Returns:
        A `ShardSource`. Only file headers (and the first TFRecord) are read.

    Raises:
        ValueError: if nothing matches, the shards mix suffixes or row shapes, or a
            shard is not a numeric array of rows.
    """
    text = os.fspath(spec)
    if os.path.isdir(text):
        paths = sorted(
            os.path.join(text, name)
            for name in os.listdir(text)
            if os.path.splitext(name)[1].lower() in SHARD_SUFFIXES
        )
    else:
        paths = sorted(path for path in glob.glob(text) if os.path.isfile(path))
    if not paths:
        raise ValueError(
            f"No data shards found for --data {text!r}: expected a directory or a glob of "
            f"{sorted(SHARD_SUFFIXES)} files."
        )
    kinds = {SHARD_SUFFIXES.get(os.path.splitext(path)[1].lower()) for path in paths}
    if None in kinds or len(kinds) > 1:
        suffixes = sorted({os.path.splitext(path)[1] for path in paths})
        raise ValueError(
            f"Data shards for {text!r} should all be .npy or all .tfrecord files. "
            f"Received suffixes: {suffixes}"
        )
    kind = kinds.pop()
    if kind == "tfrecord":
        sizes = {path: _tfrecord_row_size(path) for path in paths}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"TFRecord shards of {text!r} have different row sizes: {sizes}")
        return ShardSource(tuple(paths), kind, (sizes[paths[0]],), None, text)
    headers = {path: _npy_header(path) for path in paths}
    row_shapes = {path: header[0][1:] for path, header in headers.items()}
    if len(set(row_shapes.values())) > 1:
        raise ValueError(f".npy shards of {text!r} have different row shapes: {row_shapes}")
    num_rows = sum(header[0][0] for header in headers.values())
    if num_rows == 0:
        raise ValueError(f"The .npy shards of {text!r} hold no rows")
    return ShardSource(tuple(paths), kind, row_shapes[paths[0]], num_rows, text)


def open_shards_from(source: ShardSource, paths: Sequence[str]) -> ShardSource:
    """Returns the `ShardSource` of a subset of `source`'s shards (e.g. held-out ones)."""
    missing = [path for path in paths if path not in source.paths]
    if missing or not paths:
        raise ValueError(
            f"`paths` should be a non-empty subset of the source's shards. Received: {list(paths)}"
        )
    num_rows = None
    if source.kind == "npy":
        num_rows = sum(_npy_header(path)[0][0] for path in paths)
    return ShardSource(tuple(paths), source.kind, source.row_shape, num_rows, source.name)


def _npy_blocks(path: str, block_rows: int, seed: int | None) -> Iterator[np.ndarray]:
    """Yields float32 blocks of rows of one `.npy` shard, in shuffled block order.

    The file is memory-mapped; every block's pages are dropped from this process
    after the block is copied, so resident memory stays at about one block.
    """
    shape, dtype, offset = _npy_header(path)
    rows = shape[0]
    row_bytes = int(np.prod(shape[1:])) * dtype.itemsize
    rng = None if seed is None else np.random.default_rng(seed)
    starts = np.arange(0, rows, block_rows)
    if rng is not None:
        rng.shuffle(starts)
    if rows == 0:
        return
    page = mmap.PAGESIZE
    with (
        open(path, "rb") as handle,
        mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped,
    ):
        array = np.ndarray(shape, dtype, buffer=mapped, offset=offset)
        try:
            for start in starts:
                stop = min(start + block_rows, rows)
                block = np.array(array[start:stop], dtype=np.float32)  # A copy.
                # Drop the block's pages from this process (whole pages inside it).
                first = offset + int(start) * row_bytes
                last = offset + int(stop) * row_bytes
                aligned = -(-first // page) * page
                if last - aligned >= page:
                    mapped.madvise(mmap.MADV_DONTNEED, aligned, (last - aligned) // page * page)
                finite = np.isfinite(block.reshape(len(block), -1)).all(axis=1)
                if not finite.all():
                    bad = int(start) + int(np.flatnonzero(~finite)[0])
                    raise ValueError(
                        f"{path}: row {bad} contains NaN or infinite values; remove or "
                        "impute them before training"
                    )
                if rng is not None:
                    block = block[rng.permutation(len(block))]
                yield block
        finally:
            del array  # The mapping cannot close while a view of it exists.


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
