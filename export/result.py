"""What `export_encoder` returns: the artifacts written and their parity figures."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from keras_cae.export.parity import DEFAULT_TOLERANCE

__all__ = ["Artifact", "ExportResult"]


@dataclass(frozen=True)
class Artifact:
    """One exported file or directory and how closely it reproduces Keras.

    Attributes:
        part: `"encoder"`, `"decoder"` or `"autoencoder"`.
        format: a name in `export.FORMATS`, e.g. `"onnx"` or `"saved_model"`.
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
        """A JSON-ready record; `path` relative to `root` when given."""
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
        probe: which rows the parity checks ran on, e.g. ``"64 held-out rows of
            mnist.npz"``.

    Example:

    >>> result = export.export_encoder(model, "exported")                 # doctest: +SKIP
    >>> result.path("onnx"), result.max_abs_diff                          # doctest: +SKIP
    ('/home/me/exported/encoder.onnx', 5.96e-08)
    """

    out_dir: str
    manifest: str
    artifacts: tuple[Artifact, ...]
    metadata: dict[str, str] = field(default_factory=dict)
    tolerance: float = DEFAULT_TOLERANCE
    probe: str = ""

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
                + [f"{a.bound:.1e}", display_path(a.path)]
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows
        ]
        if self.probe:
            lines.append(f"parity checked on {self.probe}")
        return "\n".join(line.rstrip() for line in lines)


def display_path(path: str) -> str:
    """`path` relative to the working directory when it is below it, else absolute."""
    relative = os.path.relpath(path)
    return path if relative.startswith(os.pardir) else relative
