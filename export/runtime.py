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

import json
import math
import os
import re
import zipfile
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import onnxruntime as ort

from keras_cae.data import to_model_input

__all__ = [
    "OnnxEncoder",
    "METADATA_PREFIX",
    "INPUT_RANGE_KEY",
    "INPUT_SCALING_KEY",
    "accepted_range",
    "check_input_range",
    "keras_model_kind",
    "not_onnx_message",
    "read_input_range",
    "to_model_input",
]

#: Every key that `export.export_encoder` writes into the ONNX `metadata_props`.
METADATA_PREFIX = "keras_cae."
#: The metadata key holding ``[low, high]``, the range of the inputs the model was
#: trained on (JSON), as recorded by `ContractiveAutoencoder.input_range`.
INPUT_RANGE_KEY = METADATA_PREFIX + "input_range"
#: The metadata key holding how `keras-cae train` scaled its data, e.g. ``"x / 255"``.
INPUT_SCALING_KEY = METADATA_PREFIX + "input_scaling"

# ONNX tensor element types that an encoder input may have, as numpy dtypes.
_ORT_DTYPES: dict[str, np.dtype] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(double)": np.dtype(np.float64),
    "tensor(float16)": np.dtype(np.float16),
}
# Bound once: `ndarray.all()` goes through a Python wrapper that costs ~1 µs a call.
_all = np.logical_and.reduce
_min = np.minimum.reduce
_max = np.maximum.reduce
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


def read_input_range(
    metadata: dict[str, str], source: str = "the model"
) -> tuple[float, float] | None:
    """The training input range recorded in ONNX metadata (`INPUT_RANGE_KEY`), or None.

    Models exported before the range was recorded have no such key: they are not
    range-checked.

    Args:
        metadata: the model's `metadata_props`, e.g. `OnnxEncoder.metadata`.
        source: names the model in the error. Defaults to `"the model"`.

    Raises:
        ValueError: the key holds anything but a JSON ``[low, high]`` of finite numbers
            with ``low <= high``.

    Example:

    >>> read_input_range({"keras_cae.input_range": "[0.0, 1.0]"})
    (0.0, 1.0)
    >>> read_input_range({}) is None
    True
    """
    text = metadata.get(INPUT_RANGE_KEY)
    if text is None:
        return None
    try:
        low, high = (float(value) for value in json.loads(text))
        valid = math.isfinite(low) and math.isfinite(high) and low <= high
    except (ValueError, TypeError):
        valid = False
    if not valid:
        raise ValueError(
            f"{source}: the metadata {INPUT_RANGE_KEY!r} should be a JSON [low, high] of "
            f"finite numbers, low <= high. Received: {text!r}"
        )
    return low, high


def accepted_range(input_range: tuple[float, float]) -> tuple[float, float]:
    """The inputs `check_input_range` accepts: the training range widened by its width
    on each side, ``[low - w, high + w]`` with ``w = high - low`` (``max(1, |high|)``
    for a range of one value), so held-out data a little outside the training range
    passes and raw 0-255 pixels for a model trained on pixels / 255 do not.

    Example:

    >>> accepted_range((0.0, 1.0))
    (-1.0, 2.0)
    """
    low, high = input_range
    width = high - low
    if not width > 0:
        width = max(1.0, abs(high))
    return low - width, high + width


_DIVISION = re.compile(r"^\s*x\s*/\s*([0-9.eE+-]+)\s*$")


def _scaling_advice(scaling: str | None) -> str:
    """How to bring inputs to the model's scale, from the recorded `input_scaling`."""
    if scaling is None or scaling.strip() in ("", "none"):
        return "bring the inputs to the scale of the training data"
    division = _DIVISION.match(scaling)
    if division:
        return f"divide the inputs by {division.group(1)}, as `keras-cae train` did ({scaling})"
    return f"scale the inputs as `keras-cae train` did ({scaling})"


def check_input_range(
    x: np.ndarray,
    input_range: tuple[float, float] | None,
    *,
    scaling: str | None = None,
    how_to_skip: str = "create the OnnxEncoder with check_range=False",
) -> None:
    """Refuses inputs far outside the range the model was trained on.

    The one rule of `OnnxEncoder.encode`, `keras-cae encode` and `keras-cae serve`:
    inputs with a finite value outside `accepted_range` (the training range widened by
    its width on each side) raise, so that raw 0-255 pixels given to a model trained on
    pixels / 255 are refused rather than encoded into saturated, wrong codes. NaN and
    infinities are not this check's business (see `OnnxEncoder`'s `check_finite`).

    Args:
        x: the numeric inputs, any shape.
        input_range: ``(low, high)`` of the training inputs, e.g.
            `OnnxEncoder.input_range`; None (an export without it) checks nothing.
        scaling: the recorded training scaling (the ``input_scaling`` metadata, e.g.
            ``"x / 255"``), named in the message as the fix. Defaults to `None`.
        how_to_skip: the message's last clause, how to encode anyway.

    Raises:
        ValueError: a finite value lies outside `accepted_range(input_range)`; the
            message names the values received, the training range, the fix and how
            to skip the check.

    Example:

    >>> check_input_range(np.array([[0.2, 1.3]]), (0.0, 1.0))
    >>> check_input_range(np.array([[0, 255]]), (0.0, 1.0), scaling="x / 255")
    ... # doctest: +ELLIPSIS +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    ValueError: The input holds values from 0 to 255, outside the range ... [0, 1] ...: divide
    the inputs by 255, as `keras-cae train` did (x / 255). ...
    """
    if input_range is None or x.size == 0:
        return
    low, high = accepted_range(input_range)
    smallest, largest = _finite_extremes(x)
    if smallest is None or largest is None or (smallest >= low and largest <= high):
        return
    raise ValueError(
        f"The input holds values from {smallest:.6g} to {largest:.6g}, outside the range "
        f"this model was trained on, [{input_range[0]:.6g}, {input_range[1]:.6g}] "
        f"(accepted: {low:.6g} to {high:.6g}): {_scaling_advice(scaling)}. To encode it "
        f"anyway, {how_to_skip}."
    )


def _finite_extremes(x: np.ndarray) -> tuple[float, float] | tuple[None, None]:
    """The smallest and largest finite values of `x`; (None, None) when it has none."""
    if x.dtype.kind != "f":
        return float(x.min()), float(x.max())
    smallest, largest = float(np.min(x)), float(np.max(x))
    if math.isfinite(smallest) and math.isfinite(largest):
        return smallest, largest
    finite = x[np.isfinite(x)]
    if not finite.size:
        return None, None
    return float(finite.min()), float(finite.max())


# The first bytes of an HDF5 file (Keras's legacy `.h5` format).
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def keras_model_kind(path: str | os.PathLike[str]) -> str | None:
    """What `path` is when it is a Keras or TensorFlow model rather than ONNX, else None.

    Looks only at the file's layout (no TensorFlow): a Keras archive (a zip holding
    ``config.json`` or ``metadata.json``), a legacy Keras HDF5 file, a SavedModel
    directory (``saved_model.pb``), or the run directory of `keras-cae train` (with
    ``model.keras``).

    Example:

    >>> keras_model_kind("no/such/file.onnx") is None
    True
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        if any(
            os.path.isfile(os.path.join(path, n)) for n in ("saved_model.pb", "saved_model.pbtxt")
        ):
            return "saved_model"
        if os.path.isfile(os.path.join(path, "model.keras")):
            return "run_directory"
        return None
    if not os.path.isfile(path):
        return None
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
            return "keras" if names & {"config.json", "metadata.json"} else None
        with open(path, "rb") as stream:
            return "hdf5" if stream.read(8) == _HDF5_SIGNATURE else None
    except (OSError, zipfile.BadZipFile):
        return None


def not_onnx_message(path: str | os.PathLike[str], kind: str) -> str:
    """One line for a Keras or TensorFlow model given where an ONNX file is expected:
    what it is and the `keras-cae export` command that writes the ONNX file."""
    path = os.fspath(path)
    export = f"keras-cae export {path} --out exported"
    then = "then give exported/encoder.onnx"
    if kind == "saved_model":
        return (
            f"{path!r} is a TensorFlow SavedModel directory, not an ONNX file; give the "
            "encoder.onnx that `keras-cae export` wrote beside it, or export the .keras "
            "model to ONNX: keras-cae export MODEL.keras --out exported"
        )
    what = {
        "keras": "a Keras archive (.keras)",
        "hdf5": "a Keras HDF5 model file",
        "run_directory": "the run directory of `keras-cae train` (it holds model.keras)",
    }[kind]
    return f"{path!r} is {what}, not an ONNX file; export its encoder first: {export}, {then}"


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
    native_run = getattr(getattr(session, "_sess", None), "run", None)
    if list(providers) == ["CPUExecutionProvider"] and callable(native_run):
        return native_run
    return session.run


class OnnxEncoder:
    """An exported encoder, run by onnxruntime; returns float32 codes.

    Inputs are validated before they reach onnxruntime: a batch takes the model's
    input shape by the package's one shape rule, `keras_cae.data.to_model_input`
    (samples of the model's shape are used as they are; samples of any shape holding
    the right number of values are flattened for a flat model, e.g. ``(n, 28, 28)``
    for ``(None, 784)``); any other shape raises a `ValueError` naming the expected
    and the received shapes; float64 and integer arrays are cast to the model's float
    type; NaN and infinities raise a `ValueError` unless `check_finite=False`;
    non-numeric input raises a `ValueError`; an empty batch returns an empty
    ``(0, *code_shape)`` array. A single sample without its batch axis (e.g. shape
    ``(64,)`` for a ``(None, 64)`` encoder) is accepted and returns a single code
    without its batch axis (e.g. ``(32,)``).

    Inputs far outside the range the model was trained on raise a `ValueError` that
    names the fix (`check_input_range`): raw 0-255 pixels for a model trained on
    pixels / 255 are refused rather than encoded into wrong codes. The range is the
    one `keras-cae export` records in the ONNX metadata (`INPUT_RANGE_KEY`); models
    exported before it was recorded, or by other tools, are not range-checked
    (`input_range` is None). `check_range=False` skips the check deliberately.

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
        check_range: reject inputs with values outside `accepted_range(input_range)`
            (see `check_input_range`). Defaults to `True`.

    Attributes:
        path: the model path.
        input_name: the graph input name (`"x"` for our exports).
        output_name: the graph output name (`"code"` for our exports).
        input_shape: ``(None, *features)``; `None` marks the dynamic batch axis.
        output_shape: ``(None, *code_shape)``.
        input_dtype: the numpy dtype the graph input takes (float32 for our
            exports); inputs are cast to it.
        metadata: the ONNX `metadata_props` (our keys start with ``"keras_cae."``).
        input_range: ``(low, high)`` of the inputs the model was trained on, from the
            metadata; None when the export did not record it (then nothing is
            range-checked).
        input_scaling: how the training data was scaled (e.g. ``"x / 255"``), from
            the metadata; None when not recorded.
        providers: the execution providers the session actually uses.
        skip_range_hint: the last clause of the out-of-range error, how to encode
            anyway; a command line sets its own flag here. Defaults to ``"create the
            OnnxEncoder with check_range=False"``.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: the file is not a valid ONNX model (a Keras archive or SavedModel
            is named as such, with the `keras-cae export` command that converts it),
            the model does not have one float input and at least one output, its
            recorded input range is malformed, or an argument is invalid.

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
        check_range: bool = True,
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
        if not isinstance(check_range, bool):
            raise ValueError(
                f"`check_range` should be True or False. Received: check_range={check_range!r}"
            )
        self.batch_size = int(batch_size)
        self.check_finite = check_finite
        self.check_range = check_range
        self.skip_range_hint = "create the OnnxEncoder with check_range=False"

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
        not_onnx = keras_model_kind(self.path)
        if not_onnx is not None:
            raise ValueError(not_onnx_message(self.path, not_onnx))
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
        self.input_range: tuple[float, float] | None = read_input_range(
            self.metadata, repr(self.path)
        )
        self.input_scaling: str | None = self.metadata.get(INPUT_SCALING_KEY)
        # The bounds `encode` checks, or None for no range check.
        self._bounds = (
            accepted_range(self.input_range)
            if check_range and self.input_range is not None
            else None
        )
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
        flat = (
            f", or a batch of samples of any shape holding {self._sample_shape[0]} values "
            "(flattened)"
            if len(self._sample_shape) == 1 and self._sample_static
            else ""
        )
        return ValueError(
            f"Expected an input of shape {_format_shape(self.input_shape)} (a batch) or "
            f"{_format_shape(self._sample_shape)} (one sample){flat}; received an input "
            f"of shape {_format_shape(received)}."
        )

    def encode(self, x: Any) -> np.ndarray:
        """Encodes a batch of inputs (or one sample) and returns float32 codes.

        Args:
            x: array-like of shape ``(batch, *features)`` (or, for a flat model, a batch
                of samples of any shape holding ``features`` values), or ``features``
                for a single sample. Float64 and integer values are cast to the model's
                float type.

        Returns:
            A float32 array of shape ``(batch, *code_shape)``, or ``code_shape`` when
            `x` was a single sample.

        Raises:
            ValueError: `x` is not numeric, has the wrong rank or feature shape, holds
                NaN or infinities (with `check_finite=True`), or values far outside the
                training range (with `check_range=True`; see `check_input_range`).
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
        bounds = self._bounds
        step = self.batch_size
        if batch == 0 and self._code_static:
            # Every code dimension is an int here (`_code_static`).
            codes = np.zeros((0, *cast("tuple[int, ...]", self._code_shape)), dtype=np.float32)
        elif batch <= step:
            if bounds is not None and batch:
                # Two reductions, no more than the finite test: NaN fails both
                # comparisons and ±inf one, so within the bounds means finite too.
                if not (_min(x, axis=None) >= bounds[0] and _max(x, axis=None) <= bounds[1]):
                    self._raise_out_of_range(x, check)
            # One elementwise test: exact, raises no floating-point warnings (reductions
            # such as x·x or sum(x) can overflow or meet inf - inf), and costs ~2 µs at
            # batch 1 (the overhead budget; see benchmarks/inference.py).
            elif check and batch and not _all(_isfinite(x), axis=None):
                self._raise_non_finite(x)
            codes = self._run(self._outputs, {self.input_name: x}, None)[0]
        else:
            # Chunk by chunk, so that the check's mask and onnxruntime's buffers stay
            # bounded by `batch_size` rows however large `x` is. Every chunk is checked
            # before any is run: a refused input costs no encoding.
            chunks = [x[start : start + step] for start in range(0, batch, step)]
            for chunk in chunks:
                if bounds is not None:
                    if not (
                        _min(chunk, axis=None) >= bounds[0] and _max(chunk, axis=None) <= bounds[1]
                    ):
                        self._raise_out_of_range(x, check)
                elif check and not _all(_isfinite(chunk), axis=None):
                    self._raise_non_finite(x)
            parts = [
                self._run(self._outputs, {self.input_name: chunk}, None)[0] for chunk in chunks
            ]
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
        if x.ndim == len(sample_shape) and all(
            e is None or e == r for e, r in zip(sample_shape, x.shape, strict=True)
        ):
            single = True
            x = x[np.newaxis]
        elif x.ndim < 2:
            raise self._shape_error(x.shape)
        else:
            # The package's one shape rule (as `keras-cae train`, `fit` and `encode`).
            try:
                x = to_model_input(x, self.input_shape)
            except ValueError:
                raise self._shape_error(x.shape) from None
        # Integers cannot hold NaN or infinities (but float16 can overflow when cast
        # from float32/float64, so only integers skip the check).
        may_be_non_finite = x.dtype.kind == "f" or self.input_dtype.itemsize < 4
        if x.dtype != self.input_dtype or not x.flags.c_contiguous:
            x = np.ascontiguousarray(x, dtype=self.input_dtype)
        return x, single, may_be_non_finite

    def _raise_out_of_range(self, x: np.ndarray, check_finite: bool) -> None:
        """Raises for NaN/inf (when checked) first, else for values out of range."""
        if check_finite and not _all(_isfinite(x), axis=None):
            self._raise_non_finite(x)
        check_input_range(
            x, self.input_range, scaling=self.input_scaling, how_to_skip=self.skip_range_hint
        )

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
