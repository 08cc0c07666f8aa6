"""`keras_cae.shards.npy_blocks`: views equal copies; memory stays bounded whether the
blocks are copies (training) or views (encoding).

(Discovery is tested through `keras_cae.streaming` in tests/keras_cae/test_streaming.py.)
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from keras_cae import shards


def _rss_bytes() -> int:
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_views_equal_copies(tmp_path) -> None:
    x = np.random.default_rng(0).normal(size=(37, 3, 2)).astype(np.float32)
    np.save(tmp_path / "f32.npy", x)
    views = list(shards.npy_blocks(str(tmp_path / "f32.npy"), 8, copy=False))
    copies = list(shards.npy_blocks(str(tmp_path / "f32.npy"), 8))
    assert [len(v) for v in views] == [8, 8, 8, 8, 5]
    assert all(not v.flags.writeable and v.dtype == np.float32 for v in views)
    assert all(c.flags.writeable for c in copies)
    np.testing.assert_array_equal(np.concatenate(views), x)
    np.testing.assert_array_equal(np.concatenate(copies), x)
    # Other dtypes (here float64, big-endian float32) are converted: copies.
    for name, values in (("f64.npy", x.astype(np.float64)), ("be.npy", x.astype(">f4"))):
        np.save(tmp_path / name, values)
        blocks = list(shards.npy_blocks(str(tmp_path / name), 8, copy=False))
        assert all(b.flags.writeable and b.dtype == np.float32 for b in blocks)
        np.testing.assert_array_equal(np.concatenate(blocks), x)


@pytest.mark.parametrize(
    "copy, seed",
    [(True, 0), (False, None)],
    ids=["copies, shuffled (train)", "views, in order (encode)"],
)
def test_reading_a_shard_keeps_resident_memory_bounded(tmp_path, copy, seed) -> None:
    """A 128 MiB shard read in blocks of 4 MiB: resident memory grows by a few blocks
    (measured about 21 MiB with copies: block copies and allocator slack; about 12 MiB
    with views, whose pages are dropped three blocks later), not by the shard. Without
    releasing read pages it grows by about 124 MiB."""
    path = tmp_path / "big.npy"
    rows = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(32768, 1024))
    rows[:] = 1.0
    rows.flush()
    del rows
    baseline = peak = _rss_bytes()
    count = 0
    for block in shards.npy_blocks(str(path), 1024, seed=seed, copy=copy):
        count += int(block.sum() > 0) * len(block)  # Touches every page of the block.
        peak = max(peak, _rss_bytes())
    assert count == 32768
    assert peak - baseline < 48 * 2**20, f"RSS grew by {(peak - baseline) / 2**20:.1f} MiB"
