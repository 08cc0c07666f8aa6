"""Writes a `keras_cae.studies.compare.ComparisonResult`: report.json, report.md and figures.

Nothing here trains or imports TensorFlow; the figures need matplotlib
(``pip install 'keras-cae[plot]'``).

Example:

>>> from keras_cae import load_digits  # doctest: +SKIP
>>> from keras_cae.studies import compare_protocol, compare_report  # doctest: +SKIP
>>> result = compare_protocol.compare_models(load_digits(), seeds=3)  # doctest: +SKIP
>>> compare_report.write_report(result, "runs/compare")  # doctest: +SKIP
['contraction_curves.png', 'jacobian_spectra.png', ..., 'report.json', 'report.md']
"""

from __future__ import annotations

import datetime
import math
import os
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from keras_cae import _io
from keras_cae.studies import _engine
from keras_cae.studies.compare import (
    MODELS,
    NOISE_LEVELS,
    NUM_DIRECTIONS,
    RADII,
    SEARCHED_ARGUMENT,
    SPLIT_SEED,
    VALIDATION_FRACTION,
    ComparisonResult,
)

__all__ = ["to_dict", "format_markdown", "write_report", "console_summary"]


def to_dict(result: ComparisonResult) -> dict[str, Any]:
    """The JSON report of `result`: settings, search, per-run values and their summaries."""
    import keras_cae

    config = result.config
    models: dict[str, Any] = {}
    for name in MODELS:
        model_runs = [run.to_dict() for run in result.runs[name]]
        summary = {
            key: _summary([r[key] for r in model_runs])
            for key in (
                "reconstruction_mse",
                "jacobian_frobenius",
                "train_seconds",
                "train_cpu_seconds",
            )
        }
        if "probe_accuracy" in model_runs[0]:
            summary["probe_accuracy"] = _summary([r["probe_accuracy"] for r in model_runs])
            for s in map(str, NOISE_LEVELS):
                summary[f"noisy_probe_accuracy@{s}"] = _summary(
                    [r["noisy_probe_accuracy"][s] for r in model_runs]
                )
                summary[f"probe_drop@{s}"] = _summary([r["probe_drop"][s] for r in model_runs])
        models[name] = {
            "params": result.params(name),
            "summary": summary,
            "contraction_curve": {
                "mean": np.mean([r["contraction_curve"] for r in model_runs], axis=0).tolist(),
                "std": np.std([r["contraction_curve"] for r in model_runs], axis=0).tolist(),
            },
            "mean_spectrum": np.mean([r["mean_spectrum"] for r in model_runs], axis=0).tolist(),
            "runs": model_runs,
        }
    raw: dict[str, Any] | None = None
    if result.raw_runs:
        raw_runs = [asdict(run) for run in result.raw_runs]
        raw = {
            "probe_accuracy": _summary([r["probe_accuracy"] for r in raw_runs]),
            "runs": raw_runs,
        }
        for s in map(str, NOISE_LEVELS):
            raw[f"probe_drop@{s}"] = _summary(
                [r["probe_accuracy"] - r["noisy_probe_accuracy"][s] for r in raw_runs]
            )
    data = asdict(result.data)
    data["input_shape"] = list(result.data.input_shape)
    return {
        "keras_cae_version": keras_cae.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "data": data,
        "config": {
            "seeds": list(config.seeds),
            "epochs": config.epochs,
            "batch_size": config.batch_size,
            "hidden_units": list(config.hidden_units),
            "learning_rate": config.learning_rate,
            "test_fraction": config.test_fraction,
            "grids": {name: list(v) for name, v in config.grids.items()},
            "architecture": "Dense, sigmoid encoder and decoder, untied weights, MSE, Adam",
            "dae_corruption": config.dae_corruption,
            "selection": config.selection,
            "noise_levels": list(NOISE_LEVELS),
            "radii": list(RADII),
            "contraction_directions_per_sample": NUM_DIRECTIONS,
            "split_seed": SPLIT_SEED,
            "validation_fraction": VALIDATION_FRACTION,
        },
        "search": {name: asdict(search) for name, search in result.search.items()},
        "models": models,
        "raw_inputs": raw,
        "total_seconds": result.total_seconds,
    }


def _summary(values: Sequence[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value) over seeds."""
    return {**_engine.summary(values), "values": [float(v) for v in values]}


_COLUMNS: list[tuple[str, str, str, bool]] = [
    # (summary key, header, format, lower is better)
    ("reconstruction_mse", "test MSE", "{:.4f}", True),
    ("jacobian_frobenius", "mean ‖J_f(x)‖_F", "{:.2f}", True),
    ("probe_accuracy", "probe acc.", "{:.3f}", False),
    *[(f"probe_drop@{s}", f"drop σ={s}", "{:.3f}", True) for s in NOISE_LEVELS],
    ("train_seconds", "train wall (s)", "{:.1f}", True),
    ("train_cpu_seconds", "train CPU (s)", "{:.1f}", True),
]


def _params_text(params: dict[str, Any]) -> str:
    names = {
        "contractive_weight": "λ",
        "hessian_weight": "γ",
        "corruption_level": "noise",
        "corruption": "",
    }
    parts = []
    for key, value in params.items():
        if key == "contractive_weight" and value == 0:
            continue
        if key == "corruption":
            parts.append(str(value))
        else:
            parts.append(f"{names.get(key, key)}={value:g}")
    return ", ".join(parts) or "—"


def _ranking(models: dict[str, Any], columns: list[tuple[str, str, str, bool]]) -> list[str]:
    """One line per column: the order of the models, and whether the lead is within noise.

    The lead is called "within noise" when the gap between the first two means is at
    most ``sqrt(std₁² + std₂²)`` (one combined standard deviation over seeds).
    """
    lines = []
    for key, header, fmt, lower in columns:
        stats = {name: models[name]["summary"][key] for name in MODELS}
        order = sorted(MODELS, key=lambda n: stats[n]["mean"], reverse=not lower)
        first, second = stats[order[0]], stats[order[1]]
        gap = abs(first["mean"] - second["mean"])
        noise = math.hypot(first["std"], second["std"])
        verdict = "within noise of the runner-up" if gap <= noise else "ahead by more than 1 std"
        ranked = " < ".join(order) if lower else " > ".join(order)
        direction = "lower is better" if lower else "higher is better"
        lines.append(
            f"- {header} ({direction}): {ranked}; {order[0]} is {verdict} "
            f"({fmt.format(first['mean'])} vs {fmt.format(second['mean'])})."
        )
    return lines


_MEAN_PROBE_HEADER = "val mean probe acc. (clean + noisy)"
_GRID_FLAGS = {"DAE": "--dae-levels", "CAE": "--cae-weights", "CAE+H": "--hessian-weights"}


def _edge_notes(report: dict[str, Any]) -> list[str]:
    """Notes for searches whose choice is the smallest or largest value of the grid."""
    notes = []
    for name, flag in _GRID_FLAGS.items():
        grid = report["config"].get("grids", {}).get(name, [])
        if len(grid) < 2:
            continue
        value = report["search"][name]["selected"][SEARCHED_ARGUMENT[name]]
        if value in (min(grid), max(grid)):
            end = "smallest" if value == min(grid) else "largest"
            notes.append(
                f"- {name}: the selected {SEARCHED_ARGUMENT[name]}={value:g} is the {end} value "
                f"searched; a wider grid ({flag}) might choose differently."
            )
    return ["", *notes] if notes else []


def format_markdown(report: dict[str, Any], command: str | None = None) -> str:
    """Renders `report` (from `to_dict`) as the Markdown of `report.md`."""
    data, config, models = report["data"], report["config"], report["models"]
    columns = [c for c in _COLUMNS if c[0] in models[MODELS[0]]["summary"]]
    lines = [
        f"Data: {data['name']} (scaling {data['scaling']}), "
        f"input shape {tuple(data['input_shape'])}; "
        f"{data['num_train']} train ({data['num_fit']} fit + {data['num_validation']} validation "
        f"for the search) / {data['num_test']} held-out test samples"
        f"{_engine.own_split_note(data.get('own_test_split', False))}. Every model: "
        f"{config['architecture']}, code {config['hidden_units']}, {config['epochs']} epochs, "
        f"batch {config['batch_size']}, learning rate {config['learning_rate']:g}; seeds "
        f"{config['seeds']}. Numbers are mean ± std (ddof=1) over seeds, on the test split.",
        "",
    ]
    rows = []
    best = {}
    for key, _, _, lower in columns:
        means = [models[name]["summary"][key]["mean"] for name in MODELS]
        best[key] = min(means) if lower else max(means)
    for name in MODELS:
        summary = models[name]["summary"]
        cells = []
        for key, _, fmt, _ in columns:
            mean, std = summary[key]["mean"], summary[key]["std"]
            cell = f"{fmt.format(mean)} ± {fmt.format(std)}"
            cells.append(f"**{cell}**" if fmt.format(mean) == fmt.format(best[key]) else cell)
        rows.append([name, _params_text(models[name]["params"]), *cells])
    raw = report.get("raw_inputs")
    if raw:
        cells = []
        for key, _, fmt, _ in columns:
            if key in raw:
                cells.append(f"{fmt.format(raw[key]['mean'])} ± {fmt.format(raw[key]['std'])}")
            else:
                cells.append("")
        rows.append(["raw pixels (no encoder)", "—", *cells])
    header = ["model", "selected", *(c[1] for c in columns)]
    lines += [
        _engine.markdown_table(header, rows, align="ll" + "r" * len(columns)),
        "",
        "Bold: best mean in the column (for the four models). "
        "*drop σ*: clean probe accuracy minus probe accuracy on noisy test inputs.",
        "",
        "## Ranking",
        "",
        *_ranking(models, columns),
        "",
        "## What is measured",
        "",
        "- **test MSE**: mean squared reconstruction error over test samples and inputs.",
        "- **mean ‖J_f(x)‖_F**: Frobenius norm of the encoder Jacobian (exact), averaged "
        "over test samples. Lower = more contractive.",
    ]
    if raw:
        lines += [
            "- **probe acc.**: a standardised logistic-regression probe "
            "(`keras_cae.training.probe_accuracy`) fit on the codes of the clean train split, "
            "scored on the codes of the clean test split.",
            "- **drop σ**: the same probe (fit on clean train codes) scored on the codes of "
            "`x_test + σ·z`, `z ~ N(0, I)`, **not clipped** to the input range; one noise draw "
            "per seed, shared by all models and by the raw-pixel baseline.",
        ]
    lines += [
        "- **train wall / CPU**: wall-clock and process CPU time (all threads) of `model.fit` "
        "on the whole train split. On a shared machine wall time is noisy; CPU time is the "
        "steadier measure of cost.",
        f"- Contraction curve: mean of ‖f(x + r·u) − f(x)‖ / r over test samples and "
        f"{config['contraction_directions_per_sample']} random unit directions u per sample "
        "(`keras_cae.studies.analysis.contraction_curve`).",
        "",
        "## Validation search",
        "",
        f"Criterion: `{config['selection']}` "
        + {
            "probe": "(validation probe accuracy on clean inputs; ties go to the weaker "
            "regularisation).",
            "noisy-probe": "(validation probe accuracy averaged over clean and noisy inputs).",
            "reconstruction": "(validation reconstruction MSE; favours weak regularisation).",
        }[config["selection"]]
        + f" Each candidate is trained on the fit split with seed {config['seeds'][0]} and "
        "scored on the validation split (never the test split). CAE+H searches γ with λ "
        "fixed to the CAE's choice.",
        "",
    ]
    rows = []
    for name in MODELS:
        for candidate in report["search"][name]["candidates"]:
            v = candidate["validation"]
            chosen = (
                " (selected)" if candidate["params"] == report["search"][name]["selected"] else ""
            )
            probe = f"{v['probe_accuracy']:.3f}" if "probe_accuracy" in v else ""
            mean_probe = f"{v['mean_probe_accuracy']:.3f}" if "mean_probe_accuracy" in v else ""
            rows.append(
                [f"{name}", f"{_params_text(candidate['params'])}{chosen}",
                 f"{v['reconstruction_mse']:.4f}", probe, mean_probe]
            )  # fmt: skip
    header = ["model", "candidate", "val MSE", "val probe acc.", _MEAN_PROBE_HEADER]
    lines.append(_engine.markdown_table(header, rows, align="llrrr"))
    lines += _edge_notes(report)
    lines += ["", "## Figures", ""]
    for file, caption in report.get("figures", {}).items():
        lines += [f"![{caption}]({file})", ""]
    title = f"AE / DAE / CAE / CAE+H on {data['name']}"
    return _engine.markdown_document(title, lines, command, report["total_seconds"])


def write_report(
    result: ComparisonResult,
    out: str | os.PathLike[str],
    overwrite: bool = False,
    command: str | None = None,
) -> list[str]:
    """Writes `report.json`, `report.md` and the PNGs into the new directory `out`.

    The directory is built beside `out` and renamed into place only when complete
    (`keras_cae._io.atomic_directory`); an existing non-empty `out` is refused unless
    `overwrite`.

    Args:
        result: from `keras_cae.studies.compare_protocol.compare_models`.
        out: the output directory.
        overwrite: replace an existing non-empty `out`. Defaults to `False`.
        command: the command line to record in the report.

    Returns:
        The names of the files written, sorted.

    Raises:
        ValueError: if `out` exists (non-empty) and not `overwrite`, or is a file.
        ImportError: if matplotlib is not installed (`pip install 'keras-cae[plot]'`).
    """
    from keras_cae.studies import plots

    report = to_dict(result)
    if command:
        report["command"] = command
    figures: dict[str, str] = {}
    with _io.atomic_directory(out, overwrite=overwrite) as staging:

        def path(name: str) -> str:
            return os.path.join(staging, name)

        plots.plot_contraction_curves(RADII, result.curves, path("contraction_curves.png"))
        figures["contraction_curves.png"] = (
            "Contraction ratio against distance r in input space (mean ± std over seeds)"
        )
        plots.plot_spectra(result.spectra, path("jacobian_spectra.png"))
        figures["jacobian_spectra.png"] = (
            "Singular values of J_f(x) on test data (mean; band: 10th-90th percentile)"
        )
        examples = result.examples
        if result.image_shape is not None and examples is not None:
            for name, (tangents, spectrum) in result.tangents.items():
                file = f"tangents_{name.lower().replace('+', 'h')}.png"
                rows = min(len(tangents), 6)
                plots.plot_tangents(
                    examples[: len(tangents)][:rows], tangents[:rows], path(file),
                    image_shape=result.image_shape, singular_values=spectrum[:rows],
                    title=f"{name}: leading tangent directions (first seed)",
                )  # fmt: skip
                figures[file] = (
                    f"{name}: test inputs and the top right singular vectors of J_f(x) "
                    "(red +, blue −), labelled with their singular values"
                )
            plots.plot_reconstructions(
                examples, result.reconstructions, path("reconstructions.png"),
                image_shape=result.image_shape,
            )  # fmt: skip
            figures["reconstructions.png"] = "Test inputs and reconstructions (first seed)"
        report["figures"] = figures
        _io.atomic_write_json(path("report.json"), report)
        with open(path("report.md"), "w", encoding="utf-8") as stream:
            stream.write(format_markdown(report, command))
        return sorted(os.listdir(staging))


def console_summary(result: ComparisonResult) -> str:
    """A short table for the terminal: per model, means over seeds."""
    labelled = result.data.labelled
    header = f"{'model':<7} {'test MSE':>9} {'mean|J|_F':>10}"
    if labelled:
        header += f" {'probe':>6} {'drop@0.2':>9}"
    header += f" {'train s':>8}"
    lines = [header]

    def mean(values: Sequence[float]) -> float:
        return _summary(values)["mean"]

    for name in MODELS:
        runs = result.runs[name]
        line = (
            f"{name:<7} {mean([r.reconstruction_mse for r in runs]):>9.4f} "
            f"{mean([r.jacobian_frobenius for r in runs]):>10.3f}"
        )
        if labelled:
            sigma = str(NOISE_LEVELS[-1])
            drop = mean([r.probe_drop[sigma] for r in runs if r.probe_drop is not None])
            probe = mean([r.probe_accuracy for r in runs if r.probe_accuracy is not None])
            line += f" {probe:>6.3f} {drop:>9.3f}"
        line += f" {mean([r.train_seconds for r in runs]):>8.1f}"
        lines.append(line)
    return "\n".join(lines)
