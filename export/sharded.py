"""Encode sharded data larger than memory: one codes shard per input shard, resumable.

`encode_shards` reads the shards of a directory or glob (`keras_cae.shards`: `.npy`
memory-mapped and read in blocks, or `.tfrecord`), encodes them block by block with
an `OnnxEncoder` and writes, for each input shard ``part-0001.npy`` (or
``part-0001.tfrecord``), the codes as ``OUT/part-0001.npy``. Each codes shard is
written atomically (a temporary sibling, then a rename), then recorded in
``OUT/manifest.json`` (also rewritten atomically)::

    {"format": "keras-cae-codes/1", "complete": true, "input": "data/*.npy",
     "encoder": {"path": "/abs/encoder.onnx", "sha256": "..."},
     "code_shape": [32], "num_rows": 1000,
     "shards": [{"input": "/abs/data/part-0001.npy", "output": "part-0001.npy",
                 "rows": 500, "sha256": "...", "input_bytes": 1568128,
                 "input_mtime_ns": ..., "input_sample_sha256": "..."}, ...]}

Running it again on the same `out` resumes: a shard recorded in the manifest is
kept when its codes file has the recorded SHA-256, float32 dtype and shape
``(rows, *code_shape)`` (and, for `.npy` input, the input's row count), its input
file has the recorded size, modification time and sample hash (`input_sample_sha256`:
the first and last MiB and 64 pages spread evenly), under an encoder of the same
SHA-256; the rest are encoded. An interrupted run therefore leaves whole codes shards
and a manifest with ``"complete": false``, never a half-written file, and a codes
shard damaged since is encoded again. `overwrite=True` deletes `out` and starts over.

One run at a time: `out` is locked (`keras_cae._lock.output_lock`, an OS file lock
beside it, released when the process ends however it ends); a second run into the
same `out` is refused at once. With the lock held, staging left in `out` by a killed
run is removed before the manifest is read.

Memory: up to three blocks of input rows (`block_rows`; mapped pages of the file, one
read while another is encoded) and the codes of one shard, whatever the number of
shards. The reader checks every row for NaN and infinities, so the encoder may be
built with ``check_finite=False`` (as `keras-cae encode` does) to check them once.
Imports no TensorFlow for `.npy` shards.

Example:

>>> from keras_cae.export.runtime import OnnxEncoder                           # doctest: +SKIP
>>> result = encode_shards(OnnxEncoder("encoder.onnx"), "data/", "codes/")  # doctest: +SKIP
>>> result.num_rows, result.num_skipped                              # doctest: +SKIP
(1000, 0)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from keras_cae import _io, _lock, shards
from keras_cae.export.batch import row_reshape
from keras_cae.export.runtime import OnnxEncoder

__all__ = [
    "MANIFEST",
    "MANIFEST_FORMAT",
    "ShardedEncoding",
    "encode_shards",
    "file_sha256",
    "sample_sha256",
]

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "keras-cae-codes/1"


@dataclass(frozen=True)
class ShardedEncoding:
    """What `encode_shards` did.

    Attributes:
        out: the output directory.
        manifest: the manifest's path.
        num_shards: codes shards in `out` (one per input shard).
        num_encoded: shards encoded by this call.
        num_skipped: shards found done by an earlier run and kept.
        num_rows: rows encoded in all shards.
        code_shape: the shape of one code.
    """

    out: str
    manifest: str
    num_shards: int
    num_encoded: int
    num_skipped: int
    num_rows: int
    code_shape: tuple[int, ...]


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, as hex, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# What `sample_sha256` reads: both ends and evenly spread pages between them.
_SAMPLE_END_BYTES = 1 << 20
_SAMPLE_PAGES = 64
_SAMPLE_PAGE_BYTES = 4096


def sample_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a sample of a file: its first and last MiB and 64 spread pages.

    The whole file for files up to 2.25 MiB. A cheap check that an input shard was not
    rewritten since it was encoded, without reading it all again: any change of size,
    of the first or last MiB (the `.npy` header, the first and last rows) or of one of
    64 pages of 4 KiB at fixed fractions of the file changes the hash. A change
    confined to the bytes between those pages, with size and modification time put
    back, is not seen.

    Example:

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile() as f:
    ...     _ = f.write(b"abc"); f.flush()
    ...     sample_sha256(f.name) == hashlib.sha256(b"abc").hexdigest()
    True
    """
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        size = os.fstat(stream.fileno()).st_size
        if size <= 2 * _SAMPLE_END_BYTES + _SAMPLE_PAGES * _SAMPLE_PAGE_BYTES:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
            return digest.hexdigest()
        spread = [size * index // (_SAMPLE_PAGES + 1) for index in range(1, _SAMPLE_PAGES + 1)]
        regions = [(0, _SAMPLE_END_BYTES)]
        regions += [(offset, _SAMPLE_PAGE_BYTES) for offset in spread]
        regions += [(size - _SAMPLE_END_BYTES, _SAMPLE_END_BYTES)]
        for offset, length in regions:
            stream.seek(offset)
            digest.update(stream.read(length))
    return digest.hexdigest()


def _output_names(source: shards.ShardSource, out: str) -> list[str]:
    """``<stem>.npy`` for each input shard; refuses clashes and outputs over inputs."""
    names = [os.path.splitext(os.path.basename(path))[0] + ".npy" for path in source.paths]
    clashes = sorted({name for name in names if names.count(name) > 1})
    if clashes:
        raise ValueError(
            f"INPUT {source.name!r} has several shards named {clashes[0]!r} (in different "
            "directories); their codes would share one file in --out. Encode them separately."
        )
    out_real = os.path.realpath(out)
    inside = [path for path in source.paths if os.path.dirname(os.path.realpath(path)) == out_real]
    if inside:
        raise ValueError(
            f"--out {out!r} holds the input shard {inside[0]!r}; write the codes to another "
            "directory"
        )
    return names


def _codes_intact(
    path: str, entry: dict, code_shape: tuple[int | None, ...]
) -> tuple[int, ...] | None:
    """The shape of a recorded codes shard if it is the file the manifest describes:
    float32, ``(rows, *code_shape)`` (`None` dimensions match any size), and the
    recorded SHA-256; otherwise (missing, unreadable, damaged, or recorded without a
    checksum by an older version) `None`."""
    rows, expected_sha256 = entry.get("rows"), entry.get("sha256")
    if not isinstance(rows, int) or not isinstance(expected_sha256, str):
        return None
    try:
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
        shape, dtype = tuple(int(dim) for dim in mapped.shape), mapped.dtype
        del mapped
    except (OSError, ValueError, TypeError):
        return None
    if (
        dtype != np.dtype(np.float32)
        or len(shape) != 1 + len(code_shape)
        or shape[0] != rows
        or any(want is not None and want != got for want, got in zip(code_shape, shape[1:]))
    ):
        return None
    return shape if file_sha256(path) == expected_sha256 else None


def _read_manifest(out: str, encoder_sha256: str, inputs: set[str]) -> dict[str, dict]:
    """The shards an earlier run recorded in `out`, by input path (checked to be ours)."""
    path = os.path.join(out, MANIFEST)
    if not os.path.isdir(out) or not os.listdir(out):
        return {}
    if not os.path.isfile(path):
        raise ValueError(
            f"--out {out!r} exists, is not empty and holds no {MANIFEST} from an earlier "
            "`keras-cae encode`; choose another directory or pass --overwrite"
        )
    try:
        with open(path) as stream:
            manifest = json.load(stream)
        recorded = {entry["input"]: entry for entry in manifest["shards"]}
        previous = manifest["encoder"]["sha256"]
        if manifest["format"] != MANIFEST_FORMAT:
            raise KeyError("format")
        if not isinstance(previous, str) or not all(isinstance(key, str) for key in recorded):
            raise TypeError("an encoder checksum or a shard input that is not a string")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"{path}: not a manifest of `keras-cae encode` ({error}); pass --overwrite to start "
            "over"
        ) from None
    if previous != encoder_sha256:
        raise ValueError(
            f"--out {out!r} holds codes of another encoder (sha256 {previous[:12]}…, this one "
            f"{encoder_sha256[:12]}…); choose another directory or pass --overwrite"
        )
    others = sorted(set(recorded) - inputs)
    if others:
        raise ValueError(
            f"--out {out!r} holds codes of input shards not in INPUT (e.g. {others[0]!r}); "
            "choose another directory or pass --overwrite"
        )
    # An entry without a whole row count or output name is not trusted: its shard is
    # encoded again.
    return {
        key: entry
        for key, entry in recorded.items()
        if isinstance(entry.get("output"), str)
        and isinstance(entry.get("rows"), int)
        and not isinstance(entry.get("rows"), bool)
        and entry["rows"] >= 0
    }


def _blocks(source: shards.ShardSource, path: str, block_rows: int) -> Iterator[np.ndarray]:
    """The shard's blocks, each read in a thread while the previous one is encoded.

    Reading (page faults, copy, finiteness check) and onnxruntime both release the
    GIL, so the read of block ``i + 1`` overlaps the encoding of block ``i``; at most
    two blocks are held at once.
    """
    if source.kind == "npy":
        # Views of the mapping, not copies: each is encoded before the next but one
        # is read, as `npy_blocks(copy=False)` asks.
        blocks = shards.npy_blocks(path, block_rows, copy=False)
    else:
        blocks = shards.tfrecord_blocks(path, source.row_shape, block_rows)
    with ThreadPoolExecutor(1, thread_name_prefix="keras-cae-read") as reader:
        pending = reader.submit(next, blocks, None)
        while (block := pending.result()) is not None:
            pending = reader.submit(next, blocks, None)
            yield block


def _no_codes(
    encoder: OnnxEncoder, source: shards.ShardSource, path: str, flat: tuple[int, ...] | None
) -> np.ndarray:
    """The codes of an empty shard: float32 ``(0, *code dims)``. Where a code dimension
    is dynamic, the encoder says its size by encoding no rows."""
    code_dims = encoder.output_shape[1:]
    static = [dim for dim in code_dims if dim is not None]
    if len(static) == len(code_dims):
        return np.zeros((0, *static), np.float32)
    row_shape = source.row_shape if flat is None else flat
    try:
        return encoder.encode(np.zeros((0, *row_shape), np.float32))
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def encode_shards(
    encoder: OnnxEncoder,
    source: shards.ShardSource | str | os.PathLike[str],
    out: str | os.PathLike[str],
    overwrite: bool = False,
    block_rows: int = 8192,
    on_shard: Callable[[str, str, int, bool], None] | None = None,
) -> ShardedEncoding:
    """Encodes every shard of `source` into a codes shard in `out`, with a manifest.

    Args:
        encoder: the `OnnxEncoder` to run.
        source: a `keras_cae.shards.ShardSource`, or a directory or glob of `.npy` or
            `.tfrecord` shards.
        out: the output directory; created if missing. An existing one must hold an
            earlier run's manifest (the run is resumed) unless `overwrite`. Locked
            for the call (``.<out>.lock`` beside it, removed at the end).
        overwrite: delete `out` and start over. Defaults to `False`.
        block_rows: input rows read and encoded at a time. Defaults to `8192`.
        on_shard: called after each shard as ``on_shard(input, output, rows,
            skipped)``, e.g. to report progress. Defaults to `None`.

    Returns:
        A `ShardedEncoding`.

    Raises:
        ValueError: `out` is a file or holds something else; shards are missing,
            unreadable or of different row shapes; rows do not fit the encoder; a
            row holds NaN or infinities (naming the shard and the row); another
            run holds `out`'s lock. Shards finished before the error stay in `out`,
            recorded in the manifest.
        OSError: writing failed (e.g. the disk is full); the same: whole shards and
            the manifest stay, nothing half-written, and a rerun resumes.
    """
    if isinstance(block_rows, bool) or not isinstance(block_rows, int) or block_rows < 1:
        raise ValueError(
            f"`block_rows` should be a positive integer. Received: block_rows={block_rows!r}"
        )
    out = os.fspath(out)
    if not isinstance(source, shards.ShardSource):
        source = shards.open_shards(source, argument="INPUT")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out!r} is an existing file; give a directory for sharded input")
    _io.check_writable(out, "--out")
    flat = row_reshape(source.row_shape, encoder.input_shape, f"the shards of {source.name!r}")
    names = _output_names(source, out)
    with _lock.output_lock(out, "--out"):
        return _encode_locked(encoder, source, out, overwrite, block_rows, on_shard, flat, names)


def _encode_locked(
    encoder: OnnxEncoder,
    source: shards.ShardSource,
    out: str,
    overwrite: bool,
    block_rows: int,
    on_shard: Callable[[str, str, int, bool], None] | None,
    flat: tuple[int, ...] | None,
    names: list[str],
) -> ShardedEncoding:
    """`encode_shards` once its arguments are checked and `out` is locked."""
    if os.path.exists(out) and not os.path.isdir(out):  # Checked again, under the lock.
        raise ValueError(f"--out {out!r} is an existing file; give a directory for sharded input")
    encoder_sha256 = file_sha256(encoder.path)
    inputs = [os.path.abspath(path) for path in source.paths]
    if overwrite and os.path.isdir(out):
        shutil.rmtree(out)
    # Before the manifest is read: a run killed while writing its first manifest
    # leaves only a staging file, which must not make `out` look like a stranger's.
    _io.remove_stale_staging(out)
    recorded = _read_manifest(out, encoder_sha256, set(inputs))
    os.makedirs(out, exist_ok=True)
    code_dims = tuple(encoder.output_shape[1:])

    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "complete": False,
        "input": source.name,
        "encoder": {"path": os.path.abspath(encoder.path), "sha256": encoder_sha256},
        "code_shape": None,
        "num_rows": 0,
        "shards": [],
    }
    manifest_path = os.path.join(out, MANIFEST)
    # By input: the entries of an earlier run (checked again below, and meanwhile kept
    # for a run that is itself interrupted), replaced by this run's as it goes.
    entries = dict(recorded)

    def save(complete: bool) -> None:
        manifest["shards"] = [entries[path] for path in inputs if path in entries]
        manifest["num_rows"] = sum(entry["rows"] for entry in manifest["shards"])
        manifest["complete"] = complete
        _io.atomic_write_json(manifest_path, manifest)

    # Written before any codes shard, so that a run killed at any point leaves a
    # manifest: the next run recognises `out` as its own and resumes.
    save(complete=False)
    code_shape: tuple[int, ...] | None = None
    encoded = skipped = 0
    for path, absolute, name in zip(source.paths, inputs, names, strict=True):
        target = os.path.join(out, name)
        entry = recorded.get(absolute)
        expected = shards.npy_rows(path) if source.kind == "npy" else None
        # Taken before reading: a shard changed since it was encoded is encoded again.
        stat = os.stat(path)
        version = {
            "input_bytes": stat.st_size,
            "input_mtime_ns": stat.st_mtime_ns,
            "input_sample_sha256": sample_sha256(path),
        }
        kept = None
        if (
            entry is not None
            and entry.get("output") == name
            and all(entry.get(key) == value for key, value in version.items())
            and expected in (None, entry.get("rows"))
        ):
            kept = _codes_intact(target, entry, code_shape or code_dims)
        if kept is not None:
            rows, done = kept[0], True
            skipped += 1
            code_shape = code_shape or kept[1:]
        else:
            if os.path.isdir(target) and not os.path.islink(target):
                raise ValueError(
                    f"--out {out!r} holds a directory {name!r} where the codes of {path!r} go; "
                    "remove it or pass --overwrite"
                )
            parts = []
            for block in _blocks(source, path, block_rows):
                x = block if flat is None else block.reshape(len(block), *flat)
                try:
                    parts.append(encoder.encode(x))
                except ValueError as error:
                    raise ValueError(f"{path}: {error}") from None
            codes = np.concatenate(parts) if parts else _no_codes(encoder, source, path, flat)
            _io.atomic_save_npy(target, codes)
            rows, done = len(codes), False
            code_shape = code_shape or tuple(codes.shape[1:])
            encoded += 1
            entries[absolute] = {
                "input": absolute,
                "output": name,
                "rows": rows,
                # Of the file as written; checked before the shard is kept by a rerun.
                "sha256": file_sha256(target),
                **version,
            }
            manifest["code_shape"] = list(code_shape or ())
            save(complete=False)
        if on_shard is not None:
            on_shard(path, target, rows, done)
    manifest["code_shape"] = list(code_shape or ())
    save(complete=True)
    return ShardedEncoding(
        out=out,
        manifest=manifest_path,
        num_shards=len(names),
        num_encoded=encoded,
        num_skipped=skipped,
        num_rows=int(manifest["num_rows"]),
        code_shape=tuple(code_shape or ()),
    )
