"""`keras_cae.export.batch.BatchEncoder` on column batches, and the Ray Data recipe of
docs/batch-encoding.md on a local Ray instance (codes equal `keras-cae encode`'s)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from keras_cae.export.batch import BatchEncoder, row_reshape
from keras_cae.export.runtime import OnnxEncoder
from tests._onnx import reference

FEATURES, CODE = 6, 3


def test_batch_encoder_maps_a_column_to_codes(model_path, weights) -> None:
    x = np.random.default_rng(0).normal(size=(7, FEATURES)).astype(np.float32)
    ids = np.arange(7)
    result = BatchEncoder(model_path)({"data": x, "id": ids})
    assert sorted(result) == ["code", "id"]
    np.testing.assert_array_equal(result["id"], ids)
    np.testing.assert_array_equal(result["code"], OnnxEncoder(model_path).encode(x))
    np.testing.assert_allclose(result["code"], reference(x, weights), rtol=1e-5, atol=1e-6)

    only = BatchEncoder(model_path, column="x", code_column="z", keep_columns=False)
    images = x.reshape(7, 2, 3)  # Flattened for the flat encoder.
    np.testing.assert_array_equal(only({"x": images, "id": ids})["z"], result["code"])
    assert list(only({"x": images})) == ["z"]
    # A column of per-row arrays, as pandas holds it (Spark's mapInPandas).
    rows = np.empty(7, dtype=object)
    rows[:] = list(x)
    np.testing.assert_array_equal(only({"x": rows})["z"], result["code"])
    assert only({"x": np.empty(0, dtype=object)})["z"].shape == (0, CODE)


def test_batch_encoder_refusals(model_path) -> None:
    with pytest.raises(ValueError, match="no column 'data'; its columns are"):
        BatchEncoder(model_path)({"x": np.zeros((2, FEATURES))})
    with pytest.raises(ValueError, match="`code_column` should differ"):
        BatchEncoder(model_path, column="x", code_column="x")
    with pytest.raises(ValueError, match=r"rows of shape \(7,\) do not fit"):
        BatchEncoder(model_path)({"data": np.zeros((2, 7))})
    with pytest.raises(ValueError, match=r"rows of shape \(2, 3\) do not fit.*\(None, 3, 2\)"):
        row_reshape((2, 3), (None, 3, 2))
    assert row_reshape((3, 2), (None, 3, None)) is None


@pytest.mark.slow
def test_ray_recipe_matches_keras_cae_encode(tmp_path, model_path) -> None:
    """The recipe of docs/batch-encoding.md: `ray.data.read_numpy` of the shards,
    `map_batches(BatchEncoder, ...)` on 2 actors (half a CPU each), `write_parquet`; on a local Ray
    instance with 2 CPUs. Its codes, per shard, equal those `keras-cae encode` writes."""
    import pyarrow.parquet as pq
    import ray  # pip install "keras-cae[ray]" (in the test extra).

    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(2)
    for index, rows in enumerate([300, 41, 1000]):
        np.save(data / f"part-{index}.npy", rng.normal(size=(rows, 2, 3)).astype(np.float32))
    cli = subprocess.run(
        [sys.executable, "-m", "keras_cae.cli", "encode", model_path, str(data), "--out",
         str(tmp_path / "codes")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        ray.data.DataContext.get_current().execution_options.preserve_order = True
        ds = ray.data.read_numpy(str(data), include_paths=True)
        codes = ds.map_batches(
            BatchEncoder,
            fn_constructor_kwargs={"path": model_path, "intra_op_num_threads": 1},
            batch_format="numpy",
            batch_size=128,
            concurrency=2,
            num_cpus=0.5,  # Two actors on one CPU, leaving one for the read and write tasks.
        )
        codes.write_parquet(str(tmp_path / "parquet"))
    finally:
        ray.shutdown()
    table = pq.read_table(str(tmp_path / "parquet"))
    assert table.num_rows == 1341 and sorted(table.column_names) == ["code", "path"]
    paths = np.array(table.column("path").to_pylist())
    code = np.stack(table.column("code").to_pylist()).astype(np.float32)
    for index in range(3):
        expected = np.load(tmp_path / "codes" / f"part-{index}.npy")
        got = code[paths == str(data / f"part-{index}.npy")]
        assert got.dtype == expected.dtype == np.float32
        np.testing.assert_array_equal(got, expected)
    assert os.path.isdir(tmp_path / "parquet")
