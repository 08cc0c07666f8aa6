"""What an export records about itself: the metadata and ``manifest.json``.

The same metadata goes into each ONNX file's `metadata_props` (keys prefixed with
``keras_cae.``) and into ``manifest.json``, which also lists every artifact with its
parity figures.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from keras_cae import _io
from keras_cae.export.runtime import METADATA_PREFIX

if TYPE_CHECKING:
    from keras_cae.export.result import Artifact

__all__ = [
    "MANIFEST",
    "MANIFEST_VERSION",
    "model_metadata",
    "part_metadata",
    "user_metadata",
    "write_manifest",
]

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1

# Metadata keys the export fills in itself (with the keys of each format's
# `metadata`); user metadata may not override them.
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
    "tensorflow_version",
    "keras_version",
    "contractive_weight",
    "hessian_weight",
    "penalty",
    "penalty_method",
    "input_range",
)


def _metadata_value(key: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float, np.integer, np.floating)):
        return str(value)
    raise ValueError(
        f"Metadata values should be strings or numbers. Received: metadata[{key!r}]={value!r}"
    )


def user_metadata(
    metadata: Mapping[str, Any] | None, format_keys: Iterable[str] = ()
) -> dict[str, str]:
    """Checks the user's metadata; returns it as strings, without the key prefix.

    Args:
        metadata: string keys to strings or numbers, or None.
        format_keys: the keys the chosen formats fill in, also reserved.

    Raises:
        ValueError: a key is empty, not a string or reserved; a value is not a
            string or a number.
    """
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ValueError(f"`metadata` should be a dict of strings. Received: metadata={metadata!r}")
    reserved = [*_RESERVED, *format_keys]
    result = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"Metadata keys should be non-empty strings. Received: {key!r}")
        name = key[len(METADATA_PREFIX) :] if key.startswith(METADATA_PREFIX) else key
        if name in reserved:
            raise ValueError(
                f"Metadata key {key!r} is filled in by the export itself; reserved keys "
                f"are: {reserved}"
            )
        result[name] = _metadata_value(key, value)
    return result


def model_metadata(
    model: Any,
    is_autoencoder: bool,
    codes: np.ndarray,
    format_metadata: Mapping[str, str],
    extra: Mapping[str, str],
) -> dict[str, str]:
    """The metadata shared by every artifact of one export.

    Args:
        model: the exported Keras model.
        is_autoencoder: whether `model` is a `ContractiveAutoencoder` (whose penalty
            settings are recorded).
        codes: the encoder's outputs on the probe batch (for the code size).
        format_metadata: what the chosen formats add (e.g. the ONNX opset).
        extra: the user's metadata (see `user_metadata`), added last.
    """
    import keras
    import tensorflow as tf

    from keras_cae import __version__

    metadata: dict[str, str] = {
        "format_version": str(MANIFEST_VERSION),
        "package_version": __version__,
        "model_class": type(model).__name__,
        "model_name": model.name,
        "code_size": str(int(np.prod(codes.shape[1:]))),
        "export_time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        **format_metadata,
    }
    if is_autoencoder:
        metadata.update(
            contractive_weight=repr(float(model.contractive_weight)),
            hessian_weight=repr(float(model.hessian_weight)),
            penalty=str(model.penalty),
        )
        with contextlib.suppress(Exception):  # Resolving can fail for exotic encoders.
            metadata["penalty_method"] = str(model.penalty_method)
        input_range = getattr(model, "input_range", None)
        if input_range is not None:
            # What `OnnxEncoder` checks inputs against (`runtime.check_input_range`).
            metadata["input_range"] = json.dumps([float(input_range[0]), float(input_range[1])])
    metadata.update(extra)
    return metadata


def part_metadata(
    metadata: Mapping[str, str],
    part: str,
    names: tuple[str, str],
    shapes: tuple[tuple[int | None, ...], tuple[int | None, ...]],
) -> dict[str, str]:
    """`metadata` plus what describes one part: its name, graph names and shapes.

    The training input range describes the inputs ``x``: the decoder, whose input is a
    code, does not get it.
    """
    return {
        **{k: v for k, v in metadata.items() if part != "decoder" or k != "input_range"},
        "part": part,
        "input_name": names[0],
        "output_name": names[1],
        "input_shape": json.dumps(list(shapes[0])),
        "output_shape": json.dumps(list(shapes[1])),
    }


def write_manifest(
    staging: str,
    out_dir: str,
    metadata: Mapping[str, str],
    tolerance: float,
    probe_rows: int,
    artifacts: Iterable[Artifact],
    probe: str = "",
) -> None:
    """Writes ``manifest.json`` into `staging`, with artifact paths relative to
    `out_dir` (where `staging` will be renamed to); `probe` says which rows the
    parity checks ran on."""
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "metadata": dict(metadata),
        "tolerance": float(tolerance),
        "probe_rows": int(probe_rows),
        "probe": probe,
        "artifacts": [artifact.to_dict(root=out_dir) for artifact in artifacts],
    }
    _io.atomic_write_json(os.path.join(staging, MANIFEST), manifest)
