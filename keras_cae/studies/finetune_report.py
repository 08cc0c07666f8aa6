"""Writes a `keras_cae.studies.finetune.FinetuneStudy`: report.json, report.md and two figures.

Nothing here trains or imports TensorFlow; the figures need matplotlib
(``pip install 'keras-cae[plot]'``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from keras_cae import _io
from keras_cae.studies import _engine
from keras_cae.studies.finetune import FINETUNED, FinetuneStudy, summary

__all__ = ["write_report", "format_markdown", "console_summary", "lambda_table"]

_NAMES = {"random": "random init", "random-2": "random init, 2 layers"}


def _cell(values: Sequence[float], digits: int = 3) -> str:
    s = summary(values)
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def _p(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"


def _models(study: FinetuneStudy) -> list[str]:
    return [m for m in FINETUNED if m in study.config.models]


def _budgets(study: FinetuneStudy) -> list[str]:
    return [study.config.budget_name(b) for b in study.config.label_budgets]


def _pretrain_values(study: FinetuneStudy, model: str, key: str) -> list[float]:
    runs = sorted((r for r in study.pretrain if r.model == model), key=lambda r: r.seed)
    if key == "shift":
        return [float(np.mean(list(r.probe_shift_accuracy.values()))) for r in runs]
    if key.startswith("noise@"):
        return [r.probe_noise_accuracy[key[6:]] for r in runs]
    return [getattr(r, key) for r in runs]


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str) -> list[str]:
    """`_engine.markdown_table` as lines."""
    return _engine.markdown_table(header, rows, align).split("\n")


def _finetune_tables(study: FinetuneStudy) -> list[str]:
    budgets = _budgets(study)
    header = ["model", *(f"{b}/class" for b in budgets)]
    levels = [str(s) for s in study.config.noise_levels]
    lines = []
    for title, key in (
        ("Test accuracy after fine-tuning (clean test inputs)", "test_accuracy"),
        ("Test accuracy under one-pixel shifts (mean of up, down, left, right)", "shift"),
        *[(f"Test accuracy under Gaussian noise σ = {s}", f"noise@{s}") for s in levels[-1:]],
    ):
        rows = [
            [_NAMES.get(model, model), *(_cell(study.accuracies(model, b, key)) for b in budgets)]
            for model in _models(study)
        ]
        lines += [f"### {title}", "", *_table(header, rows, "l" + "r" * len(budgets)), ""]
    return lines


def _tests_table(study: FinetuneStudy) -> list[str]:
    header = ["budget", "metric", "comparison", "mean difference", "paired t-test p", "Wilcoxon p"]
    rows = [
        [
            f"{test.budget}/class",
            "clean" if test.metric == "test_accuracy" else "shifted",
            f"{test.a} − {test.b}",
            f"{test.mean_difference:+.4f}",
            _p(test.t_pvalue),
            _p(test.wilcoxon_pvalue),
        ]
        for test in study.tests
    ]
    return _table(header, rows, "lllrrr")


def _pretrain_table(study: FinetuneStudy) -> list[str]:
    levels = [str(s) for s in study.config.noise_levels]
    header = [
        "encoder", "selected", "test MSE", "mean ‖J_f‖_F", "probe acc.", "probe, shifted",
        *(f"probe, σ={s}" for s in levels), "pre-train CPU (s)",
    ]  # fmt: skip
    rows = []
    for model in dict.fromkeys(r.model for r in study.pretrain):
        first = next(r for r in study.pretrain if r.model == model)
        mse = _pretrain_values(study, model, "reconstruction_mse")
        cells = [
            "—" if mse[0] is None else _cell(mse, 4),
            _cell(_pretrain_values(study, model, "jacobian_frobenius"), 2),
            _cell(_pretrain_values(study, model, "probe_accuracy")),
            _cell(_pretrain_values(study, model, "shift")),
            *[_cell(_pretrain_values(study, model, f"noise@{s}")) for s in levels],
            _cell(_pretrain_values(study, model, "train_cpu_seconds"), 1),
        ]
        params = ", ".join(f"{k}={v}" for k, v in first.params.items() if v not in (0.0, None))
        rows.append([model, params or "—", *cells])
    raw = study.raw_probe
    cells = [
        "—",
        "—",
        _cell([r["accuracy"] for r in raw]),
        _cell([float(np.mean(list(r["shift"].values()))) if r["shift"] else np.nan for r in raw]),
        *[_cell([r["noise"][s] for r in raw]) for s in levels],
        "—",
    ]
    rows.append(["raw pixels", "—", *cells])
    return _table(header, rows, "ll" + "r" * (len(header) - 2))


def lambda_table(study: FinetuneStudy) -> list[dict[str, Any]]:
    """The λ sweep averaged over its seeds, one row per λ (for the table and the figure)."""
    rows = []
    for weight in dict.fromkeys(p.contractive_weight for p in study.lambda_sweep):
        points = [p for p in study.lambda_sweep if p.contractive_weight == weight]
        ratios = [p.penalty_ratio for p in points if p.penalty_ratio is not None]
        rows.append(
            {
                "contractive_weight": weight,
                "penalty_ratio": float(np.mean(ratios)) if ratios else None,
                "reconstruction_mse": float(np.mean([p.reconstruction_mse for p in points])),
                "jacobian_frobenius": float(np.mean([p.jacobian_frobenius for p in points])),
                "probe_accuracy": float(np.mean([p.probe_accuracy for p in points])),
                "finetune_accuracy": float(np.mean([p.finetune_accuracy for p in points])),
                "top_singular_values": np.mean(
                    [p.top_singular_values for p in points], axis=0
                ).tolist(),
                "num_seeds": len(points),
            }
        )
    return rows


def _lambda_lines(study: FinetuneStudy) -> list[str]:
    rows = lambda_table(study)
    if not rows:
        return []
    budget = min((b for b in study.config.label_budgets if b is not None), default=None)
    lines = [
        f"Mean over seeds {list(study.config.seeds[: study.config.lambda_seeds])}, on the test "
        f"split; fine-tuned with {study.config.budget_name(budget)} labels per class. "
        "*ratio*: λ·(mean ‖J_AE‖_F)² / MSE_AE, the penalty-to-reconstruction ratio at the "
        "plain AE (λ = 0).",
        "",
    ]
    header = [
        "λ", "ratio", "test MSE", "mean ‖J_f‖_F", "probe acc.", "fine-tuned acc.", "s₁", "s₂",
        "s₄", "s₈", "s₈/s₁",
    ]  # fmt: skip
    cells = []
    for row in rows:
        s = row["top_singular_values"]
        ratio = "—" if row["penalty_ratio"] is None else f"{row['penalty_ratio']:.2g}"
        cells.append([
            f"{row['contractive_weight']:g}", ratio, f"{row['reconstruction_mse']:.4f}",
            f"{row['jacobian_frobenius']:.2f}", f"{row['probe_accuracy']:.3f}",
            f"{row['finetune_accuracy']:.3f}", f"{s[0]:.3f}", f"{s[1]:.3f}", f"{s[3]:.3f}",
            f"{s[-1]:.3f}", f"{s[-1] / s[0]:.2f}",
        ])  # fmt: skip
    return lines + _table(header, cells, "r" * len(header))


def format_markdown(study: FinetuneStudy, command: str | None = None) -> str:
    """The Markdown report of a study."""
    config, data = study.config, study.data
    lines = [
        f"Data: {data['name']} (scaling {data['scaling']}); {data['num_train']} training "
        f"images for pre-training (no labels), labelled subsets drawn from "
        f"{data['num_labelled_pool']} of them, {data['num_validation']} validation images "
        f"(search and early stopping), {data['num_test']} held-out test images"
        f"{_engine.own_split_note(data.get('own_test_split', False))}. One-layer "
        f"encoders: {data['input_shape']} → {config.hidden_units} sigmoid; CAE-2 and random "
        f"init 2 layers: → {config.hidden_units} → {config.hidden_units}. Pre-training: "
        f"{config.epochs} epochs, batch {config.batch_size}, Adam {config.learning_rate:g}. "
        f"Fine-tuning: softmax on the encoder, whole network trained with Adam "
        f"{config.finetune_learning_rate:g}, batch {config.batch_size}, at most "
        f"{config.finetune_steps} steps, validation accuracy every {config.eval_every} steps, "
        f"best weights kept (patience {config.patience}). Seeds {list(config.seeds)}; "
        "mean ± std (ddof=1) over seeds.",
        "",
        "## Fine-tuning",
        "",
        *_finetune_tables(study),
        "![Fine-tuned test accuracy against labels per class](finetune_accuracy.png)",
        "",
        "## Paired tests across seeds",
        "",
        "Same seeds, same labelled images, same test inputs for both models of a pair. "
        "Paired t-test: `scipy.stats.ttest_rel`; Wilcoxon signed-rank: `scipy.stats.wilcoxon`, "
        f"exact, two-sided (with {len(config.seeds)} seeds its smallest possible p-value is "
        f"{2 / 2 ** len(config.seeds):.4g}). — : undefined (all differences equal or zero).",
        "",
        *_tests_table(study),
        "",
        "## Pre-trained encoders, linear probes",
        "",
        "Probe: standardised logistic regression on the codes of all training images with "
        "their labels (`keras_cae.training.fit_probe`), scored on test codes.",
        "",
        *_pretrain_table(study),
        "",
        "## Validation search",
        "",
    ]
    search_rows = [
        [
            name,
            f"{candidate['params']}"
            + (" (selected)" if candidate["params"] == entry["selected"] else ""),
            f"{candidate['validation_probe_accuracy']:.3f}",
        ]
        for name, entry in study.search.items()
        for candidate in entry["candidates"]
    ]
    lines += _table(["model", "candidate", "validation probe acc."], search_rows, "llr")
    lambda_lines = _lambda_lines(study)
    if lambda_lines:
        lines += ["", "## λ sweep (CAE)", "", *lambda_lines, "", "![λ guide](lambda_guide.png)"]
    title = f"Pre-train, then fine-tune: {data['name']}"
    return _engine.markdown_document(title, lines, command, study.total_seconds)


def _plot_accuracy(study: FinetuneStudy, path: str) -> None:
    from keras_cae.studies.plots import _new_figure, _save

    figure = _new_figure(7.5, 4.5)
    axes = figure.add_subplot(1, 1, 1)
    budgets = _budgets(study)
    positions = np.arange(len(budgets))
    for offset, model in enumerate(_models(study)):
        means = [summary(study.accuracies(model, b))["mean"] for b in budgets]
        stds = [summary(study.accuracies(model, b))["std"] for b in budgets]
        shift = (offset - len(_models(study)) / 2) * 0.03
        style = "--" if model.startswith("random") else "-"
        axes.errorbar(positions + shift, means, yerr=stds, fmt=style + "o", capsize=3,
                      markersize=4, label=_NAMES.get(model, model))  # fmt: skip
    axes.set_xticks(positions, [f"{b}/class" for b in budgets])
    axes.set_ylabel("test accuracy (mean ± std over seeds)")
    axes.set_xlabel("labelled images")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    _save(figure, path)


def _plot_lambda(study: FinetuneStudy, path: str) -> None:
    from keras_cae.studies.plots import _new_figure, _save

    rows = lambda_table(study)
    figure = _new_figure(10, 7)
    grid = figure.subplots(2, 2)
    weights = [r["contractive_weight"] for r in rows]
    x = [w if w > 0 else min(w for w in weights if w > 0) / 3 for w in weights]
    panels = (
        (grid[0, 0], "reconstruction_mse", "held-out reconstruction MSE"),
        (grid[0, 1], "jacobian_frobenius", "mean ‖J_f(x)‖_F"),
    )
    for axes, key, label in panels:
        axes.plot(x, [r[key] for r in rows], "o-")
        axes.set_ylabel(label)
    axes = grid[1, 0]
    axes.plot(x, [r["probe_accuracy"] for r in rows], "o-", label="linear probe (all labels)")
    axes.plot(x, [r["finetune_accuracy"] for r in rows], "s-", label="fine-tuned (fewest labels)")
    axes.set_ylabel("test accuracy")
    axes.legend(fontsize=8)
    for axes in (grid[0, 0], grid[0, 1], grid[1, 0]):
        axes.set_xscale("log")
        axes.set_xlabel("λ (leftmost point: λ = 0)")
        axes.grid(alpha=0.3)
    axes = grid[1, 1]
    for row in rows:
        values = row["top_singular_values"]
        axes.semilogy(np.arange(1, len(values) + 1), values, "o-",
                      label=f"λ={row['contractive_weight']:g}")  # fmt: skip
    axes.set_xlabel("singular value index")
    axes.set_ylabel("mean singular value of J_f(x)")
    axes.legend(fontsize=7)
    axes.grid(alpha=0.3)
    _save(figure, path)


def write_report(
    study: FinetuneStudy,
    out: str | os.PathLike[str],
    overwrite: bool = False,
    command: str | None = None,
) -> list[str]:
    """Writes report.json, report.md and the figures into the new directory `out`.

    Built beside `out` and renamed into place when complete (`keras_cae._io`).

    Args:
        study: from `keras_cae.studies.finetune_protocol.finetune_study`.
        out: the output directory.
        overwrite: replace an existing non-empty `out`. Defaults to `False`.
        command: the command line to record.

    Returns:
        The names of the files written, sorted.

    Raises:
        ValueError: if `out` exists (non-empty) and not `overwrite`.
    """
    report = study.to_dict()
    report["lambda_table"] = lambda_table(study)
    if command:
        report["command"] = command
    with _io.atomic_directory(out, overwrite=overwrite) as staging:
        _plot_accuracy(study, os.path.join(staging, "finetune_accuracy.png"))
        if study.lambda_sweep:
            _plot_lambda(study, os.path.join(staging, "lambda_guide.png"))
        _io.atomic_write_json(os.path.join(staging, "report.json"), report)
        with open(os.path.join(staging, "report.md"), "w", encoding="utf-8") as stream:
            stream.write(format_markdown(study, command))
        return sorted(os.listdir(staging))


def console_summary(study: FinetuneStudy) -> str:
    """Fine-tuned test accuracy, model × budget, for the terminal."""
    budgets = _budgets(study)
    lines = [f"{'model':<9}" + "".join(f"{b + '/class':>17}" for b in budgets)]
    for model in _models(study):
        cells = "".join(f"{_cell(study.accuracies(model, b)):>17}" for b in budgets)
        lines.append(f"{model:<9}{cells}")
    return "\n".join(lines)
