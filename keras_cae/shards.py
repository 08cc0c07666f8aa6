"""Sharded data on disk: find `.npy` or `.tfrecord` shards and read their rows in blocks.

A data set is a directory or a glob of shards, all `.npy` or all `.tfrecord`:

* ``.npy`` shards (one array of shape ``(rows, *features)`` each) are memory-mapped
  and read in blocks of contiguous rows. After a block is copied out, its pages are
  released from the process (``madvise(MADV_DONTNEED)``; the kernel keeps them in
  its page cache), so resident memory does not grow with the size of a shard.
* ``.tfrecord`` shards hold one `tf.train.Example` per row with a float feature
  ``"x"`` (the flattened row); `keras_cae.streaming.write_tfrecord` writes them.

This module is shared by training (`keras_cae.streaming`, which feeds `tf.data`) and
batch encoding (`keras_cae.export.sharded`). It imports numpy and the standard library only;
TensorFlow is imported when a `.tfrecord` shard is read, never for `.npy` shards.

Example:

>>> import numpy as np, os, tempfile
>>> from keras_cae import shards
>>> folder = tempfile.mkdtemp()
>>> for index in range(3):
...     np.save(os.path.join(folder, f"part-{index}.npy"), np.ones((10, 4), "float32"))
>>> source = shards.open_shards(folder)
>>> source.num_rows, source.row_shape
(30, (4,))
>>> [len(block) for block in shards.npy_blocks(source.paths[0], block_rows=4)]
[4, 4, 2]
"""

from __future__ import annotations

import glob
import mmap
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "SHARD_SUFFIXES",
    "ShardSource",
    "is_shard_spec",
    "npy_blocks",
    "npy_rows",
    "open_shards",
    "open_shards_from",
    "tfrecord_blocks",
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
    import tensorflow as tf

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


def open_shards(spec: str | os.PathLike[str], argument: str = "--data") -> ShardSource:
    """Finds and checks the shards named by a directory or a glob.

    Args:
        spec: a directory (every `.npy`, or every `.tfrecord`, file in it) or a glob
            such as ``"data/part-*.npy"``.
        argument: how the caller names `spec` in messages. Defaults to `"--data"`.

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
            f"No data shards found for {argument} {text!r}: expected a directory or a glob of "
            f"{sorted(SHARD_SUFFIXES)} files."
        )
    kinds = {SHARD_SUFFIXES.get(os.path.splitext(path)[1].lower()) for path in paths}
    kind = kinds.pop() if len(kinds) == 1 else None
    if kind is None:
        suffixes = sorted({os.path.splitext(path)[1] for path in paths})
        raise ValueError(
            f"Data shards for {text!r} should all be .npy or all .tfrecord files. "
            f"Received suffixes: {suffixes}"
        )
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


def _check_finite(block: np.ndarray, path: str, start: int) -> None:
    """Raises `ValueError` naming the shard and the first row holding NaN or ±inf."""
    # One pass over the block; the rows are looked for only when one is bad.
    if np.logical_and.reduce(np.isfinite(block), axis=None):
        return
    finite = np.isfinite(block.reshape(len(block), -1)).all(axis=1)
    bad = start + int(np.flatnonzero(~finite)[0])
    raise ValueError(f"{path}: row {bad} contains NaN or infinite values; remove or impute them")


def npy_blocks(
    path: str, block_rows: int, seed: int | None = None, copy: bool = True
) -> Iterator[np.ndarray]:
    """Yields float32 blocks of rows of one `.npy` shard.

    The file is memory-mapped, and every block's pages are dropped from this process
    once they are no longer needed, so resident memory stays at a few blocks.

    Args:
        path: the `.npy` shard.
        block_rows: rows per block (the last block may be shorter).
        seed: shuffle the block order and the rows inside each block with this seed;
            `None` keeps file order. Defaults to `None`.
        copy: yield copies, which the caller may keep. With `False`, a float32 shard
            read in file order yields read-only views of the mapping, saving a copy:
            a view stays valid, but its pages are dropped from the process (and read
            again from the page cache if touched) once the block after the next one is
            requested, so use each block before asking for the one after the next.
            Defaults to `True`.

    Yields:
        float32 arrays of shape ``(rows, *features)``.

    Raises:
        ValueError: the file is not a readable `.npy` array of rows, or a row holds
            NaN or infinities (naming the shard and the row).
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
    views = not copy and rng is None and dtype == np.float32
    page = mmap.PAGESIZE
    with open(path, "rb") as handle:
        # The mapping keeps its own file descriptor. Views of it keep it alive: it is
        # unmapped when the last block is freed.
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)

    def release(start: int, stop: int) -> None:
        """Drops the pages of rows [start, stop) from this process (whole pages only)."""
        first = offset + start * row_bytes
        last = offset + stop * row_bytes
        aligned = -(-first // page) * page
        if last - aligned >= page:
            mapped.madvise(mmap.MADV_DONTNEED, aligned, (last - aligned) // page * page)

    array = np.ndarray(shape, dtype, buffer=mapped, offset=offset)
    used: list[tuple[int, int]] = []
    try:
        for start in starts:
            stop = min(int(start) + block_rows, rows)
            if views:
                block = array[start:stop]
                used.append((int(start), stop))
                if len(used) > 2:  # The caller has finished with the block before last.
                    release(*used.pop(0))
            else:
                block = np.array(array[start:stop], dtype=np.float32)  # A copy.
                release(int(start), stop)
            _check_finite(block, path, int(start))
            if rng is not None:
                block = block[rng.permutation(len(block))]
            yield block
    finally:
        del array
        if not views:
            mapped.close()


def npy_rows(path: str) -> int:
    """The number of rows of a `.npy` shard, read from its header."""
    return _npy_header(path)[0][0]


def tfrecord_blocks(path: str, row_shape: Sequence[int], block_rows: int) -> Iterator[np.ndarray]:
    """Yields float32 blocks of rows of one `.tfrecord` shard, in file order.

    Imports TensorFlow (to parse the records).

    Args:
        path: the `.tfrecord` shard (see `keras_cae.streaming.write_tfrecord`).
        row_shape: the shape of one row; the feature ``"x"`` must hold its product.
        block_rows: rows per block (the last block may be shorter).

    Yields:
        float32 arrays of shape ``(rows, *row_shape)``.

    Raises:
        ValueError: a record does not hold the row, or a row holds NaN or infinities
            (naming the shard and the row).
    """
    import tensorflow as tf

    features = {"x": tf.io.FixedLenFeature(list(row_shape), tf.float32)}
    records = tf.data.TFRecordDataset(path, buffer_size=1 << 20).batch(block_rows)
    start = 0
    try:
        for batch in records:
            block = tf.io.parse_example(batch, features)["x"].numpy()
            _check_finite(block, path, start)
            start += len(block)
            yield block
    except tf.errors.OpError as error:
        raise ValueError(f"{path}: cannot read the TFRecord file ({error.message})") from None
