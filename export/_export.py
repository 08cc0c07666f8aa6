"""`export_encoder`: write a trained encoder in every asked format, verified.

Every artifact is loaded back and run on a probe batch at batch size 1 and at a
larger batch (which also proves the batch axis is dynamic); its outputs are
compared with the Keras model's, and the export fails if they differ by more than
the tolerance (`keras_cae.export.parity`). All files are written into a temporary directory
beside the target and renamed into place at the end, so a failure at any step
leaves nothing behind. The formats are writers in a registry (`keras_cae.export.formats`);
the manifest is `keras_cae.export.manifest`'s.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np

from keras_cae import _io
from keras_cae.export import manifest as _manifest
from keras_cae.export.errors import ExportError, ParityError
from keras_cae.export.errors import step as _step
from keras_cae.export.formats import DEFAULT_FORMATS, FORMATS, WRITERS, FormatWriter, PartExport
from keras_cae.export.parity import (
    DEFAULT_PROBE_SIZE,
    DEFAULT_TOLERANCE,
    allowed_difference,
    check_parity,
    check_tolerance,
    default_tolerance,
    keras_outputs,
    probe_batch,
    to_numpy,
)
from keras_cae.export.result import Artifact, ExportResult

__all__ = [
    "DEFAULT_FORMATS",
    "DEFAULT_PROBE_SIZE",
    "DEFAULT_TOLERANCE",
    "FORMATS",
    "PARTS",
    "Artifact",
    "ExportError",
    "ExportResult",
    "ParityError",
    "export_encoder",
]

#: What can be exported from a `ContractiveAutoencoder`.
PARTS = ("encoder", "decoder", "autoencoder")

# Graph input and output names of each part.
_IO_NAMES = {
    "encoder": ("x", "code"),
    "decoder": ("code", "reconstruction"),
    "autoencoder": ("x", "reconstruction"),
}


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


def _model_names(model_name: str | None, parts: Sequence[str]) -> dict[str, str]:
    """Each part's model name in a model repository: the part's name, or `model_name`
    for the encoder and ``<model_name>_<part>`` for the others."""
    if model_name is None:
        return {part: part for part in parts}
    return {part: model_name if part == "encoder" else f"{model_name}_{part}" for part in parts}


def _built_input_shape(layer: Any) -> tuple[int | None, ...] | None:
    """`keras_cae._inputs.built_input_shape`, refusing a model with several inputs."""
    try:
        inputs = layer.inputs  # Functional and Sequential models with an Input.
    except (AttributeError, ValueError):
        inputs = None
    if isinstance(inputs, (list, tuple)) and len(inputs) > 1:
        raise ValueError(
            f"Only single-input models can be exported; {layer.name!r} has {len(inputs)} inputs."
        )
    from keras_cae._inputs import built_input_shape  # TensorFlow: imported by the caller.

    return built_input_shape(layer)


def _check_input_shape(input_shape: Any) -> tuple[int | None, ...]:
    shape = tuple(input_shape)
    if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
        raise ValueError(
            "`input_shape` should be the shape of one sample, positive integers such as "
            f"(64,) or (8, 8, 1), without the batch axis. Received: input_shape={input_shape!r}"
        )
    return (None, *shape)


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


def _write_and_verify(
    format: str,
    writer: FormatWriter,
    job: PartExport,
    path: str,
    x_probe: np.ndarray,
    references: dict[int, np.ndarray],
    bound: float,
    tolerance: float,
) -> dict[int, float]:
    """Writes `job` to `path` with `writer`, loads it back and checks it against Keras;
    returns ``max |keras - exported|`` per batch size."""
    with _step(writer.write_step.format(part=job.part)):
        writer.write(job, path)
    with contextlib.ExitStack() as loaded:
        with _step(writer.load_step.format(part=job.part)):
            run = loaded.enter_context(writer.load(job, path))
        with _step(f"verify the {job.part} {format} against Keras"):
            return check_parity(run, x_probe, references, bound, tolerance, f"{format} {job.part}")


def export_encoder(
    model: Any,
    out_dir: str | os.PathLike[str],
    formats: str | Sequence[str] = DEFAULT_FORMATS,
    opset: int | None = None,
    overwrite: bool = False,
    parts: str | Sequence[str] = ("encoder",),
    metadata: Mapping[str, Any] | None = None,
    probe: Any = None,
    tolerance: float | None = None,
    input_shape: Sequence[int] | None = None,
    model_name: str | None = None,
    probe_source: str | None = None,
) -> ExportResult:
    """Exports a trained encoder (and optionally decoder or whole model), verified.

    Writes into `out_dir`: ``encoder.onnx`` (input ``"x"``, output ``"code"``, dynamic
    batch axis ``"batch"``, `metadata_props` describing the model),
    ``encoder_saved_model/`` (signature ``serving_default``, same names), the same
    for ``decoder`` (``"code"`` → ``"reconstruction"``) and ``autoencoder`` (``"x"`` →
    ``"reconstruction"``) when asked, and ``manifest.json`` listing what was written
    and the parity figures. The ``"triton"`` format writes a Triton model repository,
    ``triton/<name>/config.pbtxt`` and ``triton/<name>/1/model.onnx`` (`keras_cae.export.triton`).

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
        formats: any of `"onnx"`, `"saved_model"` and `"triton"` (which needs
            ``tritonclient``). Defaults to `DEFAULT_FORMATS`, ``("onnx", "saved_model")``.
        opset: the ONNX opset (13 to 18). Defaults to `export.DEFAULT_OPSET` (17).
        overwrite: replace an existing non-empty `out_dir`. Defaults to `False`.
        parts: what to export from a `ContractiveAutoencoder`: any of `"encoder"`,
            `"decoder"`, `"autoencoder"`. Defaults to `("encoder",)`.
        metadata: extra string metadata for the ONNX files and the manifest, e.g.
            ``{"training_data": "sklearn-digits", "input_scaling": "x / 16"}``.
        probe: the inputs the parity check runs on, shape ``(n, *features)`` with
            n ≥ 2; real data is best (held-out rows of the training data). Defaults
            to 32 seeded uniform samples in the model's training input range
            (`ContractiveAutoencoder.input_range`), or in [0, 1) when none is recorded.
        tolerance: see above. Defaults to `DEFAULT_TOLERANCE` (1e-4), or for a model
            that computes in float16 / bfloat16 (mixed precision) to
            `HALF_PRECISION_TOLERANCE` (2**-9 / 2**-6).
        input_shape: one sample's shape, for a subclassed model whose input shape
            cannot be read from the model. Defaults to the shape the model was built
            with.
        model_name: the encoder's model name in the Triton repository (the other
            parts are ``<model_name>_decoder`` and ``<model_name>_autoencoder``); only
            with the `"triton"` format. Defaults to the part names (``"encoder"``).
        probe_source: where the `probe` rows come from, for the manifest's ``"probe"``
            record and the summary, e.g. ``"64 held-out rows of mnist.npz"``.
            Defaults to ``"<n> rows given as probe"`` (or a description of the
            uniform samples when `probe` is None).

    Returns:
        An `ExportResult` with the paths and the parity figures.

    Raises:
        ValueError: invalid arguments, an existing `out_dir` without `overwrite`, or
            a model that was never built or called.
        ExportError: a step failed (the message names it); nothing was written.
        ParityError: an artifact does not reproduce the Keras outputs.

    Example:

    >>> import keras_cae                                                    # doctest: +SKIP
    >>> from keras_cae import export                                        # doctest: +SKIP
    >>> model = keras_cae.dense_autoencoder(64, 32)                         # doctest: +SKIP
    >>> result = export.export_encoder(model, "exported")                   # doctest: +SKIP
    >>> print(result.summary())                                             # doctest: +SKIP
    >>> export.OnnxEncoder(result.path("onnx")).encode(x)                   # doctest: +SKIP
    """
    # ---- Validate everything before writing anything.
    formats = _as_tuple(formats, "formats", tuple(WRITERS))
    parts = _as_tuple(parts, "parts", PARTS)
    if not isinstance(overwrite, bool):
        raise ValueError(f"`overwrite` should be True or False. Received: overwrite={overwrite!r}")
    if tolerance is not None:
        tolerance = check_tolerance(tolerance)
    writers = {format: WRITERS[format] for format in formats}
    if model_name is not None and "triton" not in formats:
        raise ValueError(
            "`model_name` names the model in a Triton repository; add 'triton' to "
            f"`formats`. Received: model_name={model_name!r}, formats={list(formats)}"
        )
    options: dict[str, Any] = {"opset": opset, "model_name": model_name}
    for writer in writers.values():
        options = writer.check_options(options)
    user_metadata = _manifest.user_metadata(
        metadata, [key for writer in WRITERS.values() for key in writer.metadata_keys]
    )
    out_dir = os.path.abspath(os.fspath(out_dir))
    _io.check_output_dir(out_dir, overwrite, "out_dir")

    import keras
    import tensorflow as tf

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
        tolerance = default_tolerance(model)
    full_input_shape: tuple[int | None, ...] | None
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
    input_range = getattr(model, "input_range", None) if is_cae else None
    # Every sample dimension is known here (checked above).
    probe_x = probe_batch(probe, cast("tuple[int, ...]", full_input_shape[1:]), input_range)
    if probe_source is None:
        low, high = (0.0, 1.0) if input_range is None else input_range
        probe_source = (
            f"{len(probe_x)} rows given as probe"
            if probe is not None
            else f"{len(probe_x)} seeded uniform random rows in [{low:.6g}, {high:.6g})"
            + (" (the training input range)" if input_range is not None else "")
        )
    with _step("run the Keras model on the probe batch"):
        codes = to_numpy(encoder(probe_x, training=False))
    layers = {"encoder": encoder}
    inputs = {"encoder": probe_x}
    if is_cae:
        layers.update(decoder=model.decoder, autoencoder=model)
        inputs.update(decoder=codes, autoencoder=probe_x)

    format_metadata: dict[str, str] = {}
    for writer in writers.values():
        format_metadata.update(writer.metadata(options))
    base_metadata = _manifest.model_metadata(model, is_cae, codes, format_metadata, user_metadata)
    model_names = _model_names(model_name, parts)

    artifacts: list[Artifact] = []
    with _io.atomic_directory(out_dir, overwrite, "out_dir") as staging:
        for part in parts:
            x_probe = inputs[part]
            with _step(f"run the Keras {part} on the probe batch"):
                # Keras itself at each batch size, as the artifacts are run.
                references = keras_outputs(layers[part], part, x_probe, (1, len(x_probe)))
            reference = references[len(x_probe)]
            in_name, out_name = _IO_NAMES[part]
            in_shape = (None, *x_probe.shape[1:])
            out_shape = (None, *reference.shape[1:])
            bound = allowed_difference(tolerance, reference)
            job = PartExport(
                part=part,
                layer=layers[part],
                function=_serving_function(layers[part], out_name),
                input_signature=[tf.TensorSpec(in_shape, tf.float32, name=in_name)],
                input_name=in_name,
                output_name=out_name,
                metadata=_manifest.part_metadata(
                    base_metadata, part, (in_name, out_name), (in_shape, out_shape)
                ),
                description=f"keras-cae {part} of {model.name!r}: {in_name} -> {out_name}",
                options=options,
            )
            for format, writer in writers.items():
                name = writer.file_name.format(part=part, name=model_names[part])
                diffs = _write_and_verify(
                    format,
                    writer,
                    job,
                    os.path.join(staging, name),
                    x_probe,
                    references,
                    bound,
                    tolerance,
                )
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
            _manifest.write_manifest(
                staging, out_dir, base_metadata, tolerance, len(probe_x), artifacts, probe_source
            )
    return ExportResult(
        out_dir=out_dir,
        manifest=os.path.join(out_dir, _manifest.MANIFEST),
        artifacts=tuple(artifacts),
        metadata=base_metadata,
        tolerance=tolerance,
        probe=probe_source,
    )
