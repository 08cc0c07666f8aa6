"""The dataplane: the served model, and every check and encode of every transport.

`DataPlane.infer` is where a request is validated and where it is encoded, whatever
transport brought it: the transports (`kserve_v2` and `tf_serving` over HTTP,
`kserve_v2_grpc` over gRPC) turn what they received into an
`infer_types.InferRequest`, await `infer`, and render its `infer_types.InferResponse`.
One `infer` checks, in this order:

1. the model name and version (`NotFound`);
2. the input: its name, datatype and shape (at most `infer_types.MAX_RANK`
   dimensions, none negative, batch first), against the model's, with the data
   contract of `keras_cae.data.to_model_input`: a flat model of F features takes
   any sample shape that holds F values (``[n, 28, 28]`` for 784), flattened;
3. the row count (``--max-batch``);
4. the data: as many values as the shape counts, JSON numbers only (at numpy speed,
   `codec.json_numbers`), raw bytes of the declared size, or typed contents;
5. finite values that fit the model's input type, and, when the encoder declares the
   input range it was trained on (``input_range``), values within it;
6. the outputs asked for;

then encodes (on the event loop, or on a worker thread when the encoder's measured
cost for that many rows exceeds `INLINE_BUDGET_S`), checks that the codes are finite,
and counts the batch in the metrics. Model metadata, the server metadata and its
extension list come from here too, for every transport.

This module imports no web or RPC framework: errors are `errors.InvalidRequest` and
`errors.NotFound`, which each transport maps to its own status once.

Example:

>>> encoder = OnnxEncoder("encoder.onnx", check_finite=False, check_range=False)  # doctest: +SKIP
>>> plane = DataPlane(encoder, "enc", 64,
...                   2**20, Metrics(64, {}))                           # doctest: +SKIP
>>> request = InferRequest.from_rest(body, headers, "enc", None)       # doctest: +SKIP
>>> response = await plane.infer(request)                             # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from keras_cae.export.runtime import OnnxEncoder, check_input_range
from keras_cae.export.serving.codec import json_numbers, shape_text
from keras_cae.export.serving.errors import InvalidRequest, NotFound, echo, echo_list, shape_echo
from keras_cae.export.serving.infer_types import MAX_RANK, InferInput, InferRequest, InferResponse
from keras_cae.export.serving.metrics import Metrics

__all__ = ["DataPlane", "VERSION", "SERVER_NAME", "EXTENSIONS", "INLINE_BUDGET_S"]

#: The only model version served. TF Serving clients need a numeric version.
VERSION = "1"
#: The server name in the server metadata.
SERVER_NAME = "keras-cae"
#: The protocol extensions this server supports, on every transport: Triton's binary
#: tensor data (HTTP's binary body; gRPC's raw contents are the same bytes).
EXTENSIONS = ("binary_tensor_data",)
#: The longest encode run on the event loop, in seconds (estimated from a calibration
#: at start-up). Longer ones go to a worker thread (onnxruntime releases the GIL), so
#: that one big request does not stall everyone else's; the hop itself costs about
#: 0.1-0.3 ms, more than a short encode.
INLINE_BUDGET_S = 1e-3
_NUMPY_TO_V2 = {"float32": "FP32", "float64": "FP64", "float16": "FP16"}
# Bound once: `ndarray.all()` goes through a Python wrapper that costs ~1 µs a call.
_all = np.logical_and.reduce
_isfinite = np.isfinite
# The last clause of the out-of-range error: a client cannot switch the check off.
_SKIP_RANGE = "send it scaled; this server checks every request against that range"
# Rows encoded to calibrate the per-row cost (at most --max-batch).
_CALIBRATION_ROWS = 64


class DataPlane:
    """One loaded encoder, the limits it is served with, and `infer`.

    Args:
        encoder: the `OnnxEncoder` (with ``check_finite=False, check_range=False``:
            `infer` checks, once).
        name: the model name.
        max_batch: the most rows per request.
        max_body_bytes: the largest request (HTTP body, gRPC message).
        metrics: where batch sizes are recorded.
        server_version: the version in the server metadata. Defaults to ``"0+unknown"``.

    Example:

    >>> encoder = OnnxEncoder("encoder.onnx", check_finite=False,
    ...                       check_range=False)  # doctest: +SKIP
    >>> plane = DataPlane(encoder, "enc", 64, 2**20,
    ...                   Metrics(64, {}))  # doctest: +SKIP
    """

    def __init__(
        self, encoder: OnnxEncoder, name: str, max_batch: int, max_body_bytes: int,
        metrics: Metrics, server_version: str = "0+unknown",
    ) -> None:  # fmt: skip
        self.encoder = encoder
        self.name = name
        self.max_batch = max_batch
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.server_version = server_version
        dtype = np.dtype(encoder.input_dtype).name
        if dtype not in _NUMPY_TO_V2:
            raise ValueError(
                f"Unsupported encoder input dtype {dtype}; expected one of {list(_NUMPY_TO_V2)}."
            )
        self.input_datatype = _NUMPY_TO_V2[dtype]
        # The encoder's own dtype object: `OnnxEncoder.encode` takes its no-copy path
        # only for arrays of exactly it.
        self.input_dtype = np.dtype(encoder.input_dtype)
        #: The dtype of binary tensor data: little-endian, as the protocol says.
        self.wire_dtype = np.dtype("<" + self.input_dtype.str[1:])
        self.sample_shape = tuple(encoder.input_shape[1:])
        self.rank = len(encoder.input_shape)
        self._input_where = f"Input {encoder.input_name!r}"
        # A flat model of F features takes any sample shape of F values (the rule of
        # `keras_cae.data.to_model_input`).
        self._features = self.sample_shape[0] if len(self.sample_shape) == 1 else None
        #: The value range the model was trained on, if the encoder records it (the
        #: ``keras_cae.input_range`` metadata); input far outside it is refused.
        self.input_range: tuple[float, float] | None = getattr(encoder, "input_range", None)
        self.metadata: dict[str, Any] = {
            "name": name,
            "versions": [VERSION],
            "platform": "onnxruntime_onnx",
            "inputs": [_tensor(encoder.input_name, self.input_datatype, encoder.input_shape)],
            "outputs": [_tensor(encoder.output_name, "FP32", encoder.output_shape)],
        }
        self.encode_cost = _calibrate(encoder, self.sample_shape, self.input_dtype, max_batch)

    # -- metadata ---------------------------------------------------------------------

    def server_metadata(self) -> dict[str, Any]:
        """The server metadata: name, version and extensions."""
        return {"name": SERVER_NAME, "version": self.server_version, "extensions": list(EXTENSIONS)}

    def model_metadata(self, name: str, version: str | None) -> dict[str, Any]:
        """The model metadata (KServe v2's), or `NotFound`."""
        self.check_model(name, version)
        return self.metadata

    def check_model(self, name: str, version: str | None) -> None:
        """`NotFound` unless `name` and `version` are the served model's."""
        if name != self.name:
            raise NotFound(
                f"Unknown model {echo(name)}; this server serves the model {self.name!r}."
            )
        if version is not None and version != VERSION:
            raise NotFound(
                f"Unknown version {echo(version)} of model {echo(name)}; the served version "
                f"is {VERSION!r}."
            )

    # -- inference --------------------------------------------------------------------

    async def infer(self, request: InferRequest) -> InferResponse:
        """Checks `request` against the model and encodes it; see the module docstring.

        Raises:
            NotFound: an unknown model or version.
            InvalidRequest: anything else wrong with the request.
        """
        self.check_model(request.model_name, request.model_version)
        x = self.read_input(request)
        if request.output_names:
            self.check_outputs(request.output_names)
        if self.encode_cost(x.shape[0]) > INLINE_BUDGET_S:
            codes = await self.encode(x)
        else:  # On the event loop, without a coroutine of its own.
            codes = self.check_codes(self._encode(x))
        self.metrics.observe_batch(request.protocol, x.shape[0])
        return InferResponse(request, self.name, VERSION, self.encoder.output_name, codes)

    def read_input(self, request: InferRequest) -> np.ndarray:
        """The request's input batch, checked and cast to the model's input dtype."""
        expected = self.encoder.input_name
        if request.inputs and request.inputs[0].name is None:  # TF Serving: by position.
            tensor = request.inputs[0]
        else:
            names = [tensor.name for tensor in request.inputs]
            if names != [expected]:
                raise InvalidRequest(
                    f"Expected exactly one input named {expected!r}; received inputs "
                    f"{echo_list(names)}."
                )
            tensor = request.inputs[0]
        if tensor.datatype is not None and tensor.datatype != self.input_datatype:
            raise InvalidRequest(
                f"{tensor.where} has datatype {tensor.datatype}; the model expects "
                f"{self.input_datatype}."
            )
        if tensor.no_typed_field:
            raise InvalidRequest(
                f"{tensor.where} has datatype {tensor.datatype}, which has no typed contents "
                "field: send it in raw_input_contents."
            )
        if tensor.shape is None:  # The nesting of the JSON data is the shape.
            x = json_numbers(tensor.data or [], MAX_RANK, tensor.where, tensor.may_hold_booleans)
            if x.size == 0 and x.ndim == 1:
                x = x.reshape((0, *(d or 0 for d in self.sample_shape)))  # `[]`: no rows.
            x = x.reshape(self._model_shape(x.shape, tensor.where))
        else:
            x = self._read_declared(tensor, request.unclaimed_binary)
        return self.to_input_dtype(x)

    def _read_declared(self, tensor: InferInput, unclaimed_binary: bool) -> np.ndarray:
        shape = tensor.shape
        assert shape is not None
        # The name was checked: the model's own, so its label is made once.
        where = tensor.label or self._input_where
        if shape and min(shape) < 0:
            raise InvalidRequest(f"{where} has a negative dimension in shape {shape_echo(shape)}.")
        model_shape = self._model_shape(shape, where)
        count = math.prod(shape)
        if tensor.raw is not None:
            declared, itemsize = tensor.raw_declared, self.input_dtype.itemsize
            if (
                isinstance(declared, bool)
                or not isinstance(declared, int)
                or declared != len(tensor.raw)
                or declared != count * itemsize
            ):
                raise InvalidRequest(
                    f"{where}: binary_data_size={echo(declared)}, but shape {shape_echo(shape)} "
                    f"of {self.input_datatype} needs {count * itemsize} bytes and the body holds "
                    f"{len(tensor.raw)} bytes after the JSON header."
                )
            return np.frombuffer(tensor.raw, dtype=self.wire_dtype).reshape(model_shape)
        if unclaimed_binary:
            raise InvalidRequest("The body has binary data but no input declares it.")
        if tensor.array is not None:  # gRPC typed contents.
            values = tensor.array
        elif tensor.data is not None:
            values = json_numbers(
                tensor.data, len(shape), where + " data", tensor.may_hold_booleans
            )
        elif count == 0:
            return np.zeros(model_shape, dtype=self.input_dtype)  # No rows need no data.
        else:
            raise InvalidRequest(f"{where} has no `data`.")
        if values.size != count:
            raise InvalidRequest(
                f"{where} has {values.size} data elements; shape {shape_echo(shape)} needs {count}."
            )
        if values.ndim > 1 and values.shape != shape:
            # Nested: the nesting must be the declared shape, not re-split to fit it.
            raise InvalidRequest(
                f"{where} data is nested as shape {shape_echo(values.shape)}, which contradicts "
                f"its declared shape {shape_echo(shape)}; nest it exactly so, or flatten it."
            )
        return values.reshape(model_shape)

    def _model_shape(self, shape: Sequence[int], where: str) -> tuple[int, ...]:
        """The shape the model gets for a batch of `shape`, or an `InvalidRequest`.

        The rule of `keras_cae.data.to_model_input`: the sample shape is the model's,
        or, for a flat model of F features, any sample shape of F values (flattened).
        """
        sample = tuple(shape[1:])
        expected = self.sample_shape
        if sample == expected and shape:  # The common case, at once.
            self.check_rows(shape[0])
            return tuple(shape)
        if len(shape) >= 1:
            if len(sample) == len(expected) and all(
                e is None or e == s for e, s in zip(expected, sample, strict=True)
            ):
                model_shape = tuple(shape)
            elif self._features is not None and math.prod(sample) == self._features:
                model_shape = (shape[0], self._features)
            else:
                model_shape = ()
            if model_shape:
                self.check_rows(shape[0])
                return model_shape
        flat = (
            f"; or any sample shape of {self._features} values, flattened"
            if self._features is not None
            else ""
        )
        raise InvalidRequest(
            f"{where} has shape {shape_echo(shape)}; the model expects "
            f"{shape_text(self.encoder.input_shape)} (batch first{flat})."
        )

    def check_rows(self, rows: int) -> None:
        """An `InvalidRequest` for more than `max_batch` rows."""
        if rows > self.max_batch:
            raise InvalidRequest(
                f"The batch has {rows} rows; this server accepts at most {self.max_batch} rows "
                "per request (--max-batch). Split the batch."
            )

    def check_outputs(self, names: list[str]) -> None:
        """An `InvalidRequest` unless every requested output is the model's output."""
        output_name = self.encoder.output_name
        unknown = [name for name in names if name != output_name]
        if unknown:
            raise InvalidRequest(
                f"Unknown output(s) {echo_list(unknown)}; the model's output is {output_name!r}."
            )

    def to_input_dtype(self, x: np.ndarray) -> np.ndarray:
        """Casts a batch to the model's input dtype; an `InvalidRequest` for NaN,
        infinities, values that overflow it, or values outside the model's input range."""
        narrow = x
        if x.dtype != self.input_dtype:
            with np.errstate(over="ignore", invalid="ignore"):
                narrow = x.astype(self.input_dtype)
        if narrow.size and not _all(_isfinite(narrow), axis=None):
            self._raise_non_finite(x, narrow)
        if self.input_range is not None and narrow.size:
            self._check_range(narrow)
        return narrow

    def _raise_non_finite(self, wide: np.ndarray, narrow: np.ndarray) -> None:
        rows = _bad_rows(~np.isfinite(wide))
        if rows.size:
            what = "NaN or infinite values"
        else:
            rows = _bad_rows(~np.isfinite(narrow))
            what = (
                f"values that overflow {self.input_datatype} (magnitude above "
                f"{np.finfo(self.input_dtype).max:.8g})"
            )
        raise InvalidRequest(
            f"The input holds {what} in {len(rows)} of {len(wide)} rows (first: row {rows[0]}). "
            "Send finite values within the model's input type."
        )

    def _check_range(self, x: np.ndarray) -> None:
        try:  # The package's one rule, as `OnnxEncoder.encode` and `keras-cae encode`.
            check_input_range(
                x, self.input_range, scaling=getattr(self.encoder, "input_scaling", None),
                how_to_skip=_SKIP_RANGE,
            )  # fmt: skip
        except ValueError as error:
            raise InvalidRequest(str(error)) from None

    async def encode(self, x: np.ndarray) -> np.ndarray:
        """The codes of a checked batch; an `InvalidRequest` if they overflow."""
        if self.encode_cost(x.shape[0]) > INLINE_BUDGET_S:
            loop = asyncio.get_running_loop()
            return self.check_codes(await loop.run_in_executor(None, self._encode, x))
        return self.check_codes(self._encode(x))

    def _encode(self, x: np.ndarray) -> np.ndarray:
        try:
            return self.encoder.encode(x)
        except ValueError as error:  # Shapes are checked earlier; kept as a guard.
            raise InvalidRequest(str(error)) from None

    def check_codes(self, codes: np.ndarray) -> np.ndarray:
        """`codes`, or an `InvalidRequest` if some are not finite (an overflow)."""
        if codes.size and not math.isfinite(codes.sum(dtype=np.float64)):
            bad = int((~np.isfinite(codes.reshape(len(codes), -1)).all(axis=1)).sum())
            raise InvalidRequest(
                f"The encoder produced NaN or infinite codes for {bad} of {len(codes)} rows of "
                "this (finite) input: an overflow. Are the inputs scaled like the training data?"
            )
        return codes


def _tensor(name: str, datatype: str, shape: Sequence[int | None]) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": [-1 if d is None else d for d in shape]}


def _bad_rows(bad: np.ndarray) -> np.ndarray:
    """The rows of a batch's mask that hold a True."""
    return np.flatnonzero(bad.reshape(len(bad), -1).any(axis=1))


class EncodeCost:
    """An encoder's estimated encode time for a number of rows: ``fixed + per_row *
    rows`` seconds, fitted at start-up (`_calibrate`).

    Example:

    >>> EncodeCost(1e-5, 2e-6)(64)
    0.000138
    """

    def __init__(self, fixed: float, per_row: float) -> None:
        self.fixed = fixed
        self.per_row = per_row

    def __call__(self, rows: int) -> float:
        return self.fixed + self.per_row * rows

    def __repr__(self) -> str:
        return f"EncodeCost(fixed={self.fixed:.3g}, per_row={self.per_row:.3g})"


def _calibrate(
    encoder: OnnxEncoder, sample_shape: tuple[int | None, ...], dtype: np.dtype, max_batch: int
) -> EncodeCost:
    """Times the encoder on 1 and on up to 64 rows of zeros (the fastest of a few
    runs each: the least disturbed by other work) and fits `EncodeCost`."""
    sample = tuple(d or 1 for d in sample_shape)
    many = max(2, min(_CALIBRATION_ROWS, max_batch))

    def fastest(rows: int, runs: int) -> float:
        x = np.zeros((rows, *sample), dtype)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            encoder.encode(x)
            times.append(time.perf_counter() - start)
        return min(times)

    fastest(1, 1)  # onnxruntime's first run allocates.
    one, batch = fastest(1, 5), fastest(many, 3)
    return EncodeCost(one, max(batch - one, 0.0) / (many - 1))
