"""`BatchEncoder`: `OnnxEncoder` as a callable on batches of a table, for Ray Data or Spark.

Distributed engines hand a function one batch of rows at a time as columns
(`ray.data.Dataset.map_batches` with ``batch_format="numpy"`` passes a dict of numpy
arrays; Spark's `mapInPandas` passes pandas DataFrames). `BatchEncoder` holds one
`OnnxEncoder` (one onnxruntime session, created once per worker) and maps the input
column of each batch to a column of codes. It imports neither Ray nor Spark: the
package does not depend on them (``pip install "keras-cae[ray]"`` installs Ray Data).

Rows must have the encoder's input shape, or, for an encoder with flat inputs, any
shape with as many values (an image row for a Dense encoder is flattened); the same
rule as `keras-cae encode` on shards (`row_reshape`).

Example:

>>> import ray                                                          # doctest: +SKIP
>>> from keras_cae.export.batch import BatchEncoder                               # doctest: +SKIP
>>> codes = ray.data.read_numpy("shards/").map_batches(                 # doctest: +SKIP
...     BatchEncoder,
...     fn_constructor_kwargs={"path": "exported/encoder.onnx"},
...     batch_format="numpy",
...     concurrency=2,
... )
>>> codes.write_parquet("codes/")                                       # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from keras_cae.export.runtime import OnnxEncoder

__all__ = ["BatchEncoder", "row_reshape"]


def row_reshape(
    row_shape: Sequence[int], input_shape: Sequence[int | None], source: str = "the input"
) -> tuple[int, ...] | None:
    """How rows of `row_shape` are fed to an encoder whose input is `input_shape`.

    Args:
        row_shape: the shape of one row of the data (without the batch axis).
        input_shape: the encoder's input shape, with the batch axis first.
        source: what holds the rows, for the message. Defaults to `"the input"`.

    Returns:
        `None` when rows already have the encoder's sample shape; the flat shape
        ``(features,)`` when the encoder takes flat rows of as many values.

    Raises:
        ValueError: the rows fit neither way.

    Example:

    >>> row_reshape((8, 8), (None, 64)), row_reshape((64,), (None, 64))
    ((64,), None)
    """
    sample = tuple(input_shape[1:])
    rows = tuple(int(dim) for dim in row_shape)
    if len(rows) == len(sample) and all(e is None or e == r for e, r in zip(sample, rows)):
        return None
    if len(sample) == 1 and sample[0] is not None and math.prod(rows) == sample[0]:
        return (sample[0],)
    expected = ", ".join("None" if dim is None else str(dim) for dim in sample)
    raise ValueError(
        f"{source}: rows of shape {rows} do not fit the encoder's input shape (None, {expected}); "
        "rows should have that shape, or as many values for an encoder with flat inputs"
    )


class BatchEncoder:
    """Encodes one column of a batch of rows with an `OnnxEncoder`; a callable class.

    Built once per worker by the engine (so one onnxruntime session serves every
    batch of that worker), then called with each batch.

    Args:
        path: the `.onnx` encoder, e.g. written by `keras-cae export`.
        column: the input column; each row an array of the encoder's input shape (or,
            for a flat encoder, of as many values). Defaults to `"data"`, the column
            `ray.data.read_numpy` creates.
        code_column: the column the codes are written to. Defaults to `"code"`.
        keep_columns: keep the batch's other columns (e.g. a file path or row id) in
            the result. Defaults to `True`.
        **encoder_kwargs: passed to `OnnxEncoder` (`intra_op_num_threads`,
            `batch_size`, `providers`, `check_finite`).

    Raises:
        ValueError: `column` and `code_column` are not distinct strings, or
            `OnnxEncoder` refuses the model or an argument.

    Example:

    >>> encode = BatchEncoder("exported/encoder.onnx")          # doctest: +SKIP
    >>> encode({"data": np.zeros((3, 64), "float32")})["code"].shape  # doctest: +SKIP
    (3, 32)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        column: str = "data",
        code_column: str = "code",
        keep_columns: bool = True,
        **encoder_kwargs: Any,
    ) -> None:
        for name, value in (("column", column), ("code_column", code_column)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"`{name}` should be a column name. Received: {name}={value!r}")
        if column == code_column:
            raise ValueError(
                f"`code_column` should differ from `column`. Received: column={column!r}, "
                f"code_column={code_column!r}"
            )
        self.encoder = OnnxEncoder(path, **encoder_kwargs)
        self.column = column
        self.code_column = code_column
        self.keep_columns = bool(keep_columns)

    def __repr__(self) -> str:
        return (
            f"BatchEncoder(path={self.encoder.path!r}, column={self.column!r}, "
            f"code_column={self.code_column!r})"
        )

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Returns the batch's columns (if kept) and the codes of its rows.

        Args:
            batch: a mapping from column names to arrays of equal length, e.g. Ray
                Data's numpy batch format. A column of per-row arrays (dtype object,
                as pandas holds them) is stacked first.

        Returns:
            A dict of columns: ``code_column`` holds float32 codes of shape
            ``(rows, *code_shape)``.

        Raises:
            ValueError: the column is missing, or its rows do not fit the encoder
                (see `row_reshape` and `OnnxEncoder.encode`).
        """
        if self.column not in batch:
            raise ValueError(
                f"The batch has no column {self.column!r}; its columns are {list(batch)}. "
                "Pass BatchEncoder(..., column=NAME)."
            )
        x = np.asarray(batch[self.column])
        if x.dtype == object:
            if len(x):
                x = np.stack([np.asarray(row) for row in x])
            else:  # No rows to stack: an empty batch of the encoder's sample shape.
                sample = [dim or 0 for dim in self.encoder.input_shape[1:]]
                x = np.zeros((0, *sample), dtype=np.float32)
        if x.ndim >= 2:
            flat = row_reshape(x.shape[1:], self.encoder.input_shape, f"column {self.column!r}")
            if flat is not None:
                x = x.reshape(len(x), *flat)
        result = (
            {name: values for name, values in batch.items() if name != self.column}
            if self.keep_columns
            else {}
        )
        result[self.code_column] = self.encoder.encode(x)
        return result
