"""`export_encoder`: write a trained encoder as ONNX and SavedModel, verified.

Every artifact is loaded back and run on a probe batch at batch size 1 and at a
larger batch (which also proves the batch axis is dynamic); its outputs are
compared with the Keras model's, and the export fails if they differ by more than
the tolerance. All files are written into a temporary directory beside the target
and renamed into place at the end, so a failure at any step leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from export.runtime import METADATA_PREFIX, OnnxEncoder
from keras_cae import _io

__all__ = [
    "DEFAULT_TOLERANCE",
    "FORMATS",
    "PARTS",
    "Artifact",
    "ExportError",
    "ExportResult",
    "ParityError",
    "export_encoder",
]

#: Export formats: an ONNX file (tf2onnx) and a TensorFlow SavedModel directory.
FORMATS = ("onnx", "saved_model")
#: What can be exported from a `ContractiveAutoencoder`.
PARTS = ("encoder", "decoder", "autoencoder")
#: An export fails when ``max |keras - exported| > tolerance * max(1, max |keras|)``:
#: float32 kernels that reorder sums differ by a few ulps (measured ~1e-7 on
#: sigmoid codes), far below this; a wrong graph differs by orders of magnitude more.
DEFAULT_TOLERANCE = 1e-4
#: The default for models that compute in 16-bit floats (mixed precision): TensorFlow
#: and onnxruntime round each float16 layer output on their own, so they differ by an
#: ulp or two, 2**-11 to 2**-10 near 1 (measured 4.9e-4 on sigmoid codes); 8 bits for
#: bfloat16. Twice the ulp at 1 still tells a wrong graph apart.
HALF_PRECISION_TOLERANCE = {"float16": 2 * 2.0**-10, "bfloat16": 2 * 2.0**-7}
#: Rows in the default probe batch (uniform in [0, 1), like the scaled inputs).
DEFAULT_PROBE_SIZE = 32
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1

# Graph input and output names of each part.
_IO_NAMES = {
    "encoder": ("x", "code"),
    "decoder": ("code", "reconstruction"),
    "autoencoder": ("x", "reconstruction"),
}
_FILE_NAMES = {"onnx": "{part}.onnx", "saved_model": "{part}_saved_model"}
# Metadata keys the export fills in itself; user metadata may not override them.
_RESERVED = (
    "format_version",
    "package_version",
    "part",
    "model_class",
    "model_name",
    "input_name",
    "output_name",
    "input_shape",
    "output_shape",
    "code_size",
    "export_time",
    "opset",
    "tf2onnx_version",
    "tensorflow_version",
    "keras_version",
    "contractive_weight",
    "hessian_weight",
    "penalty",
    "penalty_method",
)


class ExportError(RuntimeError):
    """An export step failed; the message names the step. Nothing was written."""


class ParityError(ExportError):
    """An exported artifact's outputs differ from the Keras model's beyond the tolerance."""


@dataclass(frozen=True)
class Artifact:
    """One exported file or directory and how closely it reproduces Keras.

    Attributes:
        part: `"encoder"`, `"decoder"` or `"autoencoder"`.
        format: `"onnx"` or `"saved_model"`.
        path: where it is, after the export finished.
        input_name: the graph input name.
        output_name: the graph output name.
        input_shape: ``(None, *features)``.
        output_shape: ``(None, *output_features)``.
        max_abs_diff: per probe batch size, ``max |keras - exported|``.
        bound: the largest difference the export allowed.
    """

    part: str
    format: str
    path: str
    input_name: str
    output_name: str
    input_shape: tuple[int | None, ...]
    output_shape: tuple[int | None, ...]
    max_abs_diff: dict[int, float]
    bound: float

    def to_dict(self, root: str | None = None) -> dict[str, Any]:
        record = asdict(self)
        if root is not None:
            record["path"] = os.path.relpath(self.path, root)
        record["input_shape"] = list(self.input_shape)
        record["output_shape"] = list(self.output_shape)
        record["max_abs_diff"] = {str(k): v for k, v in self.max_abs_diff.items()}
        return record


@dataclass(frozen=True)
class ExportResult:
    """What `export_encoder` wrote.

    Attributes:
        out_dir: the export directory.
        manifest: path of `manifest.json`, which lists the artifacts and metadata.
        artifacts: one `Artifact` per part and format.
        metadata: the metadata written into the ONNX files (without the key prefix).
        tolerance: the tolerance the parity checks used.
    """

    out_dir: str
    manifest: str
    artifacts: tuple[Artifact, ...]
    metadata: dict[str, str] = field(default_factory=dict)
    tolerance: float = DEFAULT_TOLERANCE

    def path(self, format: str = "onnx", part: str = "encoder") -> str:
        """Returns the path of one artifact, e.g. ``result.path("onnx")``."""
        for artifact in self.artifacts:
            if artifact.format == format and artifact.part == part:
                return artifact.path
        available = [(a.part, a.format) for a in self.artifacts]
        raise KeyError(f"No {part} exported as {format!r}; exported: {available}")

    @property
    def paths(self) -> dict[str, str]:
        """``{"<part>.<format>": path}`` for every artifact."""
        return {f"{a.part}.{a.format}": a.path for a in self.artifacts}

    @property
    def max_abs_diff(self) -> float:
        """The largest difference from Keras over all artifacts and probe batches."""
        return max(max(a.max_abs_diff.values()) for a in self.artifacts)

    def summary(self) -> str:
        """A table of the artifacts and their parity figures, for people."""
        sizes = sorted({size for a in self.artifacts for size in a.max_abs_diff})
        header = ["part", "format", *[f"max|Δ| @batch {s}" for s in sizes], "allowed", "path"]
        rows = [header]
        for a in self.artifacts:
            rows.append(
                [a.part, a.format]
                + [f"{a.max_abs_diff[s]:.2e}" if s in a.max_abs_diff else "-" for s in sizes]
                + [f"{a.bound:.1e}", _display_path(a.path)]
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows
        ]
        return "\n".join(line.rstrip() for line in lines)


def _display_path(path: str) -> str:
    """`path` relative to the working directory when it is below it, else absolute."""
    relative = os.path.relpath(path)
    return path if relative.startswith(os.pardir) else relative


@contextlib.contextmanager
def _step(name: str) -> Iterator[None]:
    """Re-raises any failure inside the block as an `ExportError` naming the step."""
    try:
        yield
    except ExportError:
        raise
    except Exception as error:
        message = " ".join(str(error).split()).rstrip(".") or type(error).__name__
        if len(message) > 500:
            message = message[:500] + " ..."
        raise ExportError(
            f"Export failed at step {name!r}: {type(error).__name__}: {message}. "
            "Nothing was written."
        ) from error


def _as_tuple(value: str | Sequence[str], name: str, allowed: Sequence[str]) -> tuple[str, ...]:
    values = (value,) if isinstance(value, str) else tuple(value)
    if not values:
        raise ValueError(
            f"`{name}` should name at least one of {list(allowed)}. Received: {name}={value!r}"
        )
    for item in values:
        if item not in allowed:
            singular = name[:-1] if name.endswith("s") else name
            raise ValueError(
                f"Unrecognized {singular}={item!r}. Supported {name} are: {list(allowed)}"
            )
    return tuple(dict.fromkeys(values))


def _built_input_shape(layer: Any) -> tuple[int | None, ...] | None:
    """The input shape a built layer was built or called with, batch axis set to None."""
    try:
        inputs = layer.inputs  # Functional and Sequential models with an Input.
    except (AttributeError, ValueError):
        inputs = None
    if isinstance(inputs, (list, tuple)) and inputs:
        if len(inputs) != 1:
            raise ValueError(
                f"Only single-input models can be exported; {layer.name!r} has "
                f"{len(inputs)} inputs."
            )
        return (None, *tuple(inputs[0].shape)[1:])
    shapes = getattr(layer, "_build_shapes_dict", None)
    if shapes and len(shapes) == 1:
        shape = next(iter(shapes.values()))
        if isinstance(shape, (tuple, list)) and all(d is None or isinstance(d, int) for d in shape):
            return (None, *tuple(shape)[1:])
    return None


def _default_tolerance(model: Any) -> float:
    """`DEFAULT_TOLERANCE`, or the half-precision one if any layer computes in 16 bits."""
    dtypes, pending = set(), [model]
    while pending:
        layer = pending.pop()
        dtypes.add(str(getattr(layer, "compute_dtype", "float32")))
        pending.extend(getattr(layer, "layers", []))
        pending.extend(
            getattr(layer, name) for name in ("encoder", "decoder") if hasattr(layer, name)
        )
    half = [HALF_PRECISION_TOLERANCE[d] for d in dtypes if d in HALF_PRECISION_TOLERANCE]
    return max(half, default=DEFAULT_TOLERANCE)


def _check_input_shape(input_shape: Any) -> tuple[int | None, ...]:
    shape = tuple(input_shape)
    if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
        raise ValueError(
            "`input_shape` should be the shape of one sample, positive integers such as "
            f"(64,) or (8, 8, 1), without the batch axis. Received: input_shape={input_shape!r}"
        )
    return (None, *shape)


def _metadata_value(key: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float, np.integer, np.floating)):
        return str(value)
    raise ValueError(
        f"Metadata values should be strings or numbers. Received: metadata[{key!r}]={value!r}"
    )


def _user_metadata(metadata: Mapping[str, Any] | None) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ValueError(f"`metadata` should be a dict of strings. Received: metadata={metadata!r}")
    result = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"Metadata keys should be non-empty strings. Received: {key!r}")
        name = key[len(METADATA_PREFIX) :] if key.startswith(METADATA_PREFIX) else key
        if name in _RESERVED:
            raise ValueError(
                f"Metadata key {key!r} is filled in by the export itself; reserved keys "
                f"are: {list(_RESERVED)}"
            )
        result[name] = _metadata_value(key, value)
    return result


def _to_numpy(value: Any) -> np.ndarray:
    import keras

    if isinstance(value, (dict, list, tuple)):
        raise ValueError(
            "Only single-output models can be exported; the model returned a "
            f"{type(value).__name__}."
        )
    return np.asarray(keras.ops.convert_to_numpy(value), dtype=np.float32)


def _serving_function(layer: Any, output_name: str) -> Any:
    """``x -> {output_name: layer(x)}``, in inference mode (a closure: tf.function and
    SavedModel signatures must not see extra keyword arguments)."""
    import tensorflow as tf

    def serve(x: Any) -> dict[str, Any]:
        # A named outer scope: TensorFlow refuses some layer names (e.g. "_encoder",
        # from a class `_Encoder`) as root scope names, but accepts them nested.
        with tf.name_scope("keras_cae"):
            return {output_name: layer(x, training=False)}

    return serve


def export_encoder(
    model: Any,
    out_dir: str | os.PathLike[str],
    formats: str | Sequence[str] = FORMATS,
    opset: int | None = None,
    overwrite: bool = False,
    parts: str | Sequence[str] = ("encoder",),
    metadata: Mapping[str, Any] | None = None,
    probe: Any = None,
    tolerance: float | None = None,
    input_shape: Sequence[int] | None = None,
) -> ExportResult:
    """Exports a trained encoder (and optionally decoder or whole model), verified.

    Writes into `out_dir`: ``encoder.onnx`` (input ``"x"``, output ``"code"``, dynamic
    batch axis ``"batch"``, `metadata_props` describing the model),
    ``encoder_saved_model/`` (signature ``serving_default``, same names), the same
    for ``decoder`` (``"code"`` → ``"reconstruction"``) and ``autoencoder`` (``"x"`` →
    ``"reconstruction"``) when asked, and ``manifest.json`` listing what was written
    and the parity figures.

    Every artifact is loaded back (ONNX by onnxruntime through `OnnxEncoder`, the
    SavedModel by `tf.saved_model.load`) and run on the probe batch at batch size 1 and
    at the full probe batch; the export fails with `ParityError` if
    ``max |keras - exported| > tolerance * max(1, max |keras|)``.

    Args:
        model: a built `ContractiveAutoencoder` (its encoder is exported), or any
            built single-input, single-output Keras model (exported as the
            "encoder").
        out_dir: the directory to create. It must not exist or be empty, unless
            `overwrite`.
        formats: `"onnx"`, `"saved_model"` or both. Defaults to both.
        opset: the ONNX opset (13 to 18). Defaults to `export.DEFAULT_OPSET` (17).
        overwrite: replace an existing non-empty `out_dir`. Defaults to `False`.
        parts: what to export from a `ContractiveAutoencoder`: any of `"encoder"`,
            `"decoder"`, `"autoencoder"`. Defaults to `("encoder",)`.
        metadata: extra string metadata for the ONNX files and the manifest, e.g.
            ``{"training_data": "sklearn-digits", "input_scaling": "x / 16"}``.
        probe: the inputs the parity check runs on, shape ``(n, *features)`` with
            n ≥ 2; real data is best. Defaults to 32 seeded uniform samples in [0, 1).
        tolerance: see above. Defaults to `DEFAULT_TOLERANCE` (1e-4), or for a model
            that computes in float16 / bfloat16 (mixed precision) to
            `HALF_PRECISION_TOLERANCE` (2**-9 / 2**-6).
        input_shape: one sample's shape, for a subclassed model whose input shape
            cannot be read from the model. Defaults to the shape the model was built
            with.

    Returns:
        An `ExportResult` with the paths and the parity figures.

    Raises:
        ValueError: invalid arguments, an existing `out_dir` without `overwrite`, or
            a model that was never built or called.
        ExportError: a step failed (the message names it); nothing was written.
        ParityError: an artifact does not reproduce the Keras outputs.

    Example:

    >>> import export, keras_cae                                           # doctest: +SKIP
    >>> model = keras_cae.dense_autoencoder(64, 32)                         # doctest: +SKIP
    >>> result = export.export_encoder(model, "exported")                   # doctest: +SKIP
    >>> print(result.summary())                                             # doctest: +SKIP
    >>> export.OnnxEncoder(result.path("onnx")).encode(x)                   # doctest: +SKIP
    """
    # ---- Validate everything before writing anything.
    formats = _as_tuple(formats, "formats", FORMATS)
    parts = _as_tuple(parts, "parts", PARTS)
    if not isinstance(overwrite, bool):
        raise ValueError(f"`overwrite` should be True or False. Received: overwrite={overwrite!r}")
    if tolerance is not None and (
        isinstance(tolerance, bool)
        or not isinstance(tolerance, (int, float))
        or not (math.isfinite(tolerance) and tolerance > 0)
    ):
        raise ValueError(
            f"`tolerance` should be a positive finite number. Received: tolerance={tolerance!r}"
        )
    from export import onnx as onnx_export

    if "onnx" in formats:
        opset = onnx_export.check_opset(opset)
    user_metadata = _user_metadata(metadata)
    out_dir = os.path.abspath(os.fspath(out_dir))
    _io.check_output_dir(out_dir, overwrite, "out_dir")

    import keras
    import tensorflow as tf

    from keras_cae import __version__

    if not isinstance(model, keras.layers.Layer):
        raise ValueError(
            "`model` should be a ContractiveAutoencoder or a Keras model. Received: "
            f"model of type {type(model).__name__}"
        )
    if not model.built:
        raise ValueError(
            f"The model {model.name!r} was never built or called, so its input shape and "
            "weights are unknown. Train it, call it on a batch, or call "
            "`model.build((None, *input_shape))` before exporting."
        )
    is_cae = all(hasattr(model, name) for name in ("encoder", "decoder", "contractive_weight"))
    if not is_cae and parts != ("encoder",):
        raise ValueError(
            f"`parts`={list(parts)} needs a ContractiveAutoencoder; for a {type(model).__name__} "
            "only the model itself is exported, as parts=('encoder',)."
        )
    encoder = model.encoder if is_cae else model
    if tolerance is None:
        tolerance = _default_tolerance(model)
    if input_shape is not None:
        full_input_shape = _check_input_shape(input_shape)
    else:
        full_input_shape = _built_input_shape(model) or _built_input_shape(encoder)
        if full_input_shape is None or any(d is None for d in full_input_shape[1:]):
            raise ValueError(
                f"Cannot tell the input shape of {model.name!r} (got {full_input_shape}); "
                "pass input_shape=(features, ...) for one sample."
            )

    # ---- Probe batches: inputs for the encoder and the autoencoder, codes for the decoder.
    if probe is None:
        rng = np.random.default_rng(0)
        probe_x = rng.random((DEFAULT_PROBE_SIZE, *full_input_shape[1:]), dtype=np.float32)
    else:
        probe_x = np.asarray(probe, dtype=np.float32)
        if probe_x.shape[1:] != full_input_shape[1:] or probe_x.shape[0] < 2:
            raise ValueError(
                f"`probe` should have shape (n, {', '.join(map(str, full_input_shape[1:]))}) "
                f"with n >= 2. Received: probe of shape {probe_x.shape}"
            )
        if not np.isfinite(probe_x).all():
            raise ValueError("`probe` contains NaN or infinite values.")

    with _step("run the Keras model on the probe batch"):
        codes = _to_numpy(encoder(probe_x, training=False))
    layers = {"encoder": encoder}
    inputs = {"encoder": probe_x}
    if is_cae:
        layers.update(decoder=model.decoder, autoencoder=model)
        inputs.update(decoder=codes, autoencoder=probe_x)

    base_metadata: dict[str, str] = {
        "format_version": str(MANIFEST_VERSION),
        "package_version": __version__,
        "model_class": type(model).__name__,
        "model_name": model.name,
        "code_size": str(int(np.prod(codes.shape[1:]))),
        "export_time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
    }
    if "onnx" in formats:
        import tf2onnx

        base_metadata.update(opset=str(opset), tf2onnx_version=tf2onnx.__version__)
    if is_cae:
        base_metadata.update(
            contractive_weight=repr(float(model.contractive_weight)),
            hessian_weight=repr(float(model.hessian_weight)),
            penalty=str(model.penalty),
        )
        with contextlib.suppress(Exception):  # Resolving can fail for exotic encoders.
            base_metadata["penalty_method"] = str(model.penalty_method)
    base_metadata.update(user_metadata)

    artifacts: list[Artifact] = []
    with _io.atomic_directory(out_dir, overwrite=overwrite) as staging:
        for part in parts:
            layer = layers[part]
            x_probe = inputs[part]
            sizes = (1, len(x_probe))
            with _step(f"run the Keras {part} on the probe batch"):
                # Keras itself at each batch size, as the artifacts are run.
                references = {n: _to_numpy(layer(x_probe[:n], training=False)) for n in sizes}
                reference = references[len(x_probe)]
                if not np.isfinite(reference).all():
                    raise ValueError(
                        f"the Keras {part} returns NaN or infinite values on the probe batch "
                        "(diverged weights?); there is nothing meaningful to export"
                    )
            in_name, out_name = _IO_NAMES[part]
            in_shape = (None, *x_probe.shape[1:])
            out_shape = (None, *reference.shape[1:])
            bound = float(tolerance) * max(1.0, float(np.abs(reference).max(initial=0.0)))
            spec = tf.TensorSpec(in_shape, tf.float32, name=in_name)

            serve = _serving_function(layer, out_name)
            part_metadata = {
                **base_metadata,
                "part": part,
                "input_name": in_name,
                "output_name": out_name,
                "input_shape": json.dumps(list(in_shape)),
                "output_shape": json.dumps(list(out_shape)),
            }
            for format in formats:
                name = _FILE_NAMES[format].format(part=part)
                staged = os.path.join(staging, name)
                if format == "onnx":
                    with _step(f"convert the {part} to ONNX"):
                        onnx_export.to_onnx(
                            tf.function(serve, input_signature=[spec], autograph=False),
                            [spec],
                            staged,
                            opset=opset,
                            metadata={METADATA_PREFIX + k: v for k, v in part_metadata.items()},
                            doc_string=f"keras-cae {part} of {model.name!r}: {in_name} -> "
                            f"{out_name}",
                        )
                    with _step(f"load the {part} ONNX file in onnxruntime"):
                        runtime = OnnxEncoder(staged, check_finite=False)
                        run = runtime.encode
                else:
                    with _step(f"save the {part} as a SavedModel"):
                        from export import saved_model

                        saved_model.to_saved_model(layer, serve, [spec], staged)
                    with _step(f"load the {part} SavedModel"):
                        loaded, signature = saved_model.load_signature(staged)

                        def run(
                            x: np.ndarray,
                            _sig: Any = signature,
                            _in: str = in_name,
                            _out: str = out_name,
                        ) -> np.ndarray:
                            return _sig(**{_in: tf.constant(x)})[_out].numpy()

                with _step(f"verify the {part} {format} against Keras"):
                    diffs = {}
                    for size in sizes:
                        got = np.asarray(run(x_probe[:size]), dtype=np.float32)
                        if got.shape != references[size].shape:
                            raise ParityError(
                                f"The {format} {part} returned shape {got.shape} for a batch "
                                f"of {size}; Keras returns {references[size].shape}."
                            )
                        diffs[size] = float(np.abs(got - references[size]).max(initial=0.0))
                    worst = max(diffs.values())
                    if not worst <= bound:  # Also catches NaN.
                        raise ParityError(
                            f"The {format} {part} differs from Keras by max |Δ| = {worst:.3g} "
                            f"(per batch size: {diffs}), more than the allowed {bound:.3g} "
                            f"(tolerance={tolerance:g} × max(1, max |keras output|)). Nothing "
                            "was written."
                        )
                if format == "saved_model":
                    del loaded, signature, run
                artifacts.append(
                    Artifact(
                        part=part,
                        format=format,
                        path=os.path.join(out_dir, name),
                        input_name=in_name,
                        output_name=out_name,
                        input_shape=in_shape,
                        output_shape=out_shape,
                        max_abs_diff=diffs,
                        bound=bound,
                    )
                )
        with _step("write manifest.json"):
            manifest = {
                "manifest_version": MANIFEST_VERSION,
                "metadata": base_metadata,
                "tolerance": float(tolerance),
                "probe_rows": int(len(probe_x)),
                "artifacts": [a.to_dict(root=out_dir) for a in artifacts],
            }
            _io.atomic_write_json(os.path.join(staging, MANIFEST), manifest)
    return ExportResult(
        out_dir=out_dir,
        manifest=os.path.join(out_dir, MANIFEST),
        artifacts=tuple(artifacts),
        metadata=base_metadata,
        tolerance=float(tolerance),
    )
