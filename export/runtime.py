"""`OnnxEncoder`: run an exported encoder with onnxruntime, without TensorFlow.

This module imports only numpy, onnxruntime and the standard library, so that a
service that encodes with it starts in well under a second. It never imports
TensorFlow or Keras (a test checks `sys.modules` in a fresh process).

Example:

>>> from keras_cae.export import OnnxEncoder                         # doctest: +SKIP
>>> encoder = OnnxEncoder("exported/encoder.onnx")         # doctest: +SKIP
>>> encoder.input_shape, encoder.output_shape              # doctest: +SKIP
((None, 64), (None, 32))
>>> codes = encoder.encode(x)                              # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

__all__ = ["OnnxEncoder", "METADATA_PREFIX"]

#: Every key that `export.export_encoder` writes into the ONNX `metadata_props`.
METADATA_PREFIX = "keras_cae."

# ONNX tensor element types that an encoder input may have, as numpy dtypes.
_ORT_DTYPES = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(double)": np.dtype(np.float64),
    "tensor(float16)": np.dtype(np.float16),
}
# Bound once: `ndarray.all()` goes through a Python wrapper that costs ~1 µs a call.
_all = np.logical_and.reduce
_isfinite = np.isfinite
_FLOAT32 = np.dtype(np.float32)
# numpy dtype kinds accepted as numeric input: float, signed and unsigned integers.
_NUMERIC_KINDS = frozenset("fiu")


def _static_shape(shape: Sequence[Any]) -> tuple[int | None, ...]:
    """onnxruntime reports dynamic dimensions as strings (`"unk__3"`) or None."""
    return tuple(dim if isinstance(dim, int) and dim >= 0 else None for dim in shape)


def _format_shape(shape: Sequence[int | None]) -> str:
    return (
        "("
        + ", ".join("None" if dim is None else str(dim) for dim in shape)
        + (",)" if len(shape) == 1 else ")")
    )


def _session_runner(session: Any, providers: Sequence[str]) -> Any:
    """Returns ``run(output_names, feed, run_options)`` for `session`.

    The public `InferenceSession.run` re-checks the feed's input names and OrtValue
    ownership and implements execution-provider fallback in Python before calling the
    C++ session, ~1-3 µs a call, as much as `encode`'s own validation. With one numpy
    input whose name and shape `encode` has already checked, on the CPU provider (no
    fallback to do), none of that applies; so call the C++ session's `run` directly.
    onnxruntime has no public name for it: this is the only place that reads the
    private `InferenceSession._sess` (every release from 1.0 to 1.32), and it falls
    back to the public method where it is missing. Measured with onnxruntime 1.32
    (`benchmarks/inference.py`, batch 1, median of per-round ratios to a bare
    `InferenceSession.run`): `encode` ×1.10 this way, ×1.18 through the public `run`,
    ×4.0 through `run_with_ort_values`. `tests/export/test_runtime.py::
    test_private_onnxruntime_api_for_the_fast_path` fails, naming the onnxruntime
    version, if a release changes it.
    """
    native = getattr(session, "_sess", None)
    if list(providers) == ["CPUExecutionProvider"] and callable(getattr(native, "run", None)):
        return native.run
    return session.run


class OnnxEncoder:
    """An exported encoder, run by onnxruntime; returns float32 codes.

    Inputs are validated before they reach onnxruntime: a wrong rank or feature count
    raises a `ValueError` naming the expected and the received shapes; float64 and
    integer arrays are cast to the model's float type; NaN and infinities raise a
    `ValueError` unless `check_finite=False`; non-numeric input raises a `ValueError`;
    an empty batch returns an empty ``(0, *code_shape)`` array. A single sample
    without its batch axis (e.g. shape ``(64,)`` for a ``(None, 64)`` encoder) is
    accepted and returns a single code without its batch axis (e.g. ``(32,)``).

    Large inputs are run in chunks of `batch_size` rows, which bounds the memory
    onnxruntime allocates per call. `encode` keeps no per-call state on the instance
    and `InferenceSession.run` is thread-safe, so one instance may serve many threads.

    Args:
        path: the `.onnx` file, e.g. one written by `export.export_encoder`.
        providers: onnxruntime execution providers in order of preference. Defaults to
            `["CPUExecutionProvider"]`, the provider the export was verified on.
        intra_op_num_threads: threads onnxruntime may use inside one operator.
            Defaults to `None` (onnxruntime's choice: one per physical core).
        batch_size: the most rows passed to onnxruntime at once. Defaults to `1024`.
        check_finite: reject inputs holding NaN or infinities. Defaults to `True`.

    Attributes:
        path: the model path.
        input_name: the graph input name (`"x"` for our exports).
        output_name: the graph output name (`"code"` for our exports).
        input_shape: ``(None, *features)``; `None` marks the dynamic batch axis.
        output_shape: ``(None, *code_shape)``.
        input_dtype: the numpy dtype the graph input takes (float32 for our
            exports); inputs are cast to it.
        metadata: the ONNX `metadata_props` (our keys start with ``"keras_cae."``).
        providers: the execution providers the session actually uses.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: the file is not a valid ONNX model, the model does not have one
            float input and at least one output, or an argument is invalid.

    Example:

    >>> encoder = OnnxEncoder("exported/encoder.onnx", intra_op_num_threads=1)  # doctest: +SKIP
    >>> encoder.encode(np.zeros((3, 64))).shape                                 # doctest: +SKIP
    (3, 32)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        providers: Sequence[str] | None = None,
        intra_op_num_threads: int | None = None,
        batch_size: int = 1024,
        check_finite: bool = True,
    ) -> None:
        self.path = os.fspath(path)
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, (int, np.integer))
            or (batch_size < 1)
        ):
            raise ValueError(
                f"`batch_size` should be a positive integer. Received: batch_size={batch_size!r}"
            )
        if intra_op_num_threads is not None and (
            isinstance(intra_op_num_threads, bool)
            or not isinstance(intra_op_num_threads, (int, np.integer))
            or intra_op_num_threads < 0
        ):
            raise ValueError(
                "`intra_op_num_threads` should be None or a non-negative integer (0 lets "
                f"onnxruntime choose). Received: intra_op_num_threads={intra_op_num_threads!r}"
            )
        if not isinstance(check_finite, bool):
            raise ValueError(
                f"`check_finite` should be True or False. Received: check_finite={check_finite!r}"
            )
        self.batch_size = int(batch_size)
        self.check_finite = check_finite

        if providers is None:
            providers = ["CPUExecutionProvider"]
        elif isinstance(providers, str):
            providers = [providers]
        available = ort.get_available_providers()
        unknown = [p for p in providers if p not in available]
        if unknown or not providers:
            raise ValueError(
                f"Unrecognized providers={list(providers)!r}. Available providers on this "
                f"machine are: {available}"
            )
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"ONNX model not found: {self.path!r}")

        options = ort.SessionOptions()
        if intra_op_num_threads is not None:
            options.intra_op_num_threads = int(intra_op_num_threads)
        try:
            self._session = ort.InferenceSession(
                self.path, sess_options=options, providers=list(providers)
            )
        except Exception as error:  # onnxruntime raises its own exception types.
            message = " ".join(str(error).split())
            raise ValueError(
                f"onnxruntime cannot load {self.path!r} as an ONNX model: {message}"
            ) from error

        inputs = self._session.get_inputs()
        outputs = self._session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise ValueError(
                f"{self.path!r}: an encoder should have exactly one input and at least one "
                f"output; this model has inputs {[i.name for i in inputs]} and outputs "
                f"{[o.name for o in outputs]}"
            )
        if inputs[0].type not in _ORT_DTYPES:
            raise ValueError(
                f"{self.path!r}: the input {inputs[0].name!r} has type {inputs[0].type}; "
                f"supported input types are: {sorted(_ORT_DTYPES)}"
            )
        self.input_name: str = inputs[0].name
        self.output_name: str = outputs[0].name
        self.input_dtype: np.dtype = _ORT_DTYPES[inputs[0].type]
        self.input_shape: tuple[int | None, ...] = _static_shape(inputs[0].shape)
        self.output_shape: tuple[int | None, ...] = _static_shape(outputs[0].shape)
        if not self.input_shape:
            raise ValueError(f"{self.path!r}: the input {self.input_name!r} is a scalar")
        self.metadata: dict[str, str] = dict(self._session.get_modelmeta().custom_metadata_map)
        self.providers: list[str] = self._session.get_providers()
        # Precomputed for `encode`, whose batch-1 overhead over a bare
        # `InferenceSession.run` should stay small (see benchmarks/inference.py).
        self._sample_shape = self.input_shape[1:]
        self._sample_static = all(dim is not None for dim in self._sample_shape)
        self._batch_rank = len(self.input_shape)
        self._code_shape = self.output_shape[1:]
        self._code_static = bool(self.output_shape) and all(
            dim is not None for dim in self._code_shape
        )
        self._outputs = [self.output_name]
        self._run = _session_runner(self._session, self.providers)

    def __repr__(self) -> str:
        return (
            f"OnnxEncoder(path={self.path!r}, input_shape={self.input_shape}, "
            f"output_shape={self.output_shape}, providers={self.providers})"
        )

    @property
    def session(self) -> ort.InferenceSession:
        """The underlying `onnxruntime.InferenceSession`."""
        return self._session

    def _shape_error(self, received: tuple[int, ...]) -> ValueError:
        return ValueError(
            f"Expected an input of shape {_format_shape(self.input_shape)} (a batch) or "
            f"{_format_shape(self._sample_shape)} (one sample); received an input of "
            f"shape {_format_shape(received)}."
        )

    def encode(self, x: Any) -> np.ndarray:
        """Encodes a batch of inputs (or one sample) and returns float32 codes.

        Args:
            x: array-like of shape ``(batch, *features)``, or ``features`` for a single
                sample. Float64 and integer values are cast to the model's float type.

        Returns:
            A float32 array of shape ``(batch, *code_shape)``, or ``code_shape`` when
            `x` was a single sample.

        Raises:
            ValueError: `x` is not numeric, has the wrong rank or feature shape, or
                holds NaN or infinities (with `check_finite=True`).
        """
        single = False
        may_be_non_finite = True
        # Fast path: a C-contiguous batch of the model's dtype and shape needs no copy;
        # everything else goes through `_prepare` (conversion, casts, checks, errors).
        if (
            type(x) is not np.ndarray
            or x.dtype is not self.input_dtype
            or x.ndim != self._batch_rank
            or not x.flags.c_contiguous
            or (x.shape[1:] != self._sample_shape if self._sample_static else True)
        ):
            x, single, may_be_non_finite = self._prepare(x)
        batch = x.shape[0]
        check = self.check_finite and may_be_non_finite
        step = self.batch_size
        if batch == 0 and self._code_static:
            codes = np.zeros((0, *self._code_shape), dtype=np.float32)
        elif batch <= step:
            # One elementwise test: exact, raises no floating-point warnings (reductions
            # such as x·x or sum(x) can overflow or meet inf - inf), and costs ~2 µs at
            # batch 1 (the overhead budget; see benchmarks/inference.py).
            if check and batch and not _all(_isfinite(x), axis=None):
                self._raise_non_finite(x)
            codes = self._run(self._outputs, {self.input_name: x}, None)[0]
        else:
            # Chunk by chunk, so that the check's mask and onnxruntime's buffers stay
            # bounded by `batch_size` rows however large `x` is.
            parts = []
            for start in range(0, batch, step):
                chunk = x[start : start + step]
                if check and not _all(_isfinite(chunk), axis=None):
                    self._raise_non_finite(x)
                parts.append(self._run(self._outputs, {self.input_name: chunk}, None)[0])
            codes = np.concatenate(parts, axis=0)
        if codes.dtype is not _FLOAT32:
            codes = codes.astype(np.float32)
        return codes[0] if single else codes

    def _prepare(self, x: Any) -> tuple[np.ndarray, bool, bool]:
        """Converts and checks an input; returns (batch, was a single sample, may hold
        NaN/inf)."""
        if type(x) is not np.ndarray:
            try:
                x = np.asarray(x)
            except (ValueError, TypeError) as error:
                raise ValueError(
                    f"Expected a numeric array-like input; could not convert it to an "
                    f"array: {error}"
                ) from None
        if x.dtype.kind not in _NUMERIC_KINDS:
            raise ValueError(
                f"Expected a numeric (float or integer) input; received an array of dtype "
                f"{x.dtype} and shape {_format_shape(x.shape)}."
            )
        sample_shape = self._sample_shape
        single = False
        if x.ndim == len(sample_shape) + 1:
            if any(
                e is not None and e != r for e, r in zip(sample_shape, x.shape[1:], strict=True)
            ):
                raise self._shape_error(x.shape)
        elif x.ndim == len(sample_shape) and all(
            e is None or e == r for e, r in zip(sample_shape, x.shape, strict=True)
        ):
            single = True
            x = x[np.newaxis]
        else:
            raise self._shape_error(x.shape)
        # Integers cannot hold NaN or infinities (but float16 can overflow when cast
        # from float32/float64, so only integers skip the check).
        may_be_non_finite = x.dtype.kind == "f" or self.input_dtype.itemsize < 4
        if x.dtype != self.input_dtype or not x.flags.c_contiguous:
            x = np.ascontiguousarray(x, dtype=self.input_dtype)
        return x, single, may_be_non_finite

    def _raise_non_finite(self, x: np.ndarray) -> None:
        """Counts the rows holding NaN or ±inf (in chunks, to bound memory) and raises."""
        batch, bad, first = x.shape[0], 0, -1
        for start in range(0, batch, self.batch_size):
            chunk = x[start : start + self.batch_size]
            rows = np.flatnonzero(~_isfinite(chunk.reshape(chunk.shape[0], -1)).all(axis=1))
            if rows.size and first < 0:
                first = start + int(rows[0])
            bad += rows.size
        raise ValueError(
            f"The input contains NaN or infinite values in {bad} of {batch} rows "
            f"(first bad row: {first}). Clean the input, or create the OnnxEncoder with "
            "check_finite=False to pass them through."
        )

    __call__ = encode
