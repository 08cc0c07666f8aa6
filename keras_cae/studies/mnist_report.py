"""Writes the MNIST study's report: ``report.json``, figures and ``docs/results-mnist.md``.

`keras_cae.studies.mnist.build_report` gathers the finished units; this module turns
that dictionary into tables beside the papers' numbers and three figures (test error
against the number of labels, normalised Jacobian spectra, contraction curves).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from keras_cae._io import atomic_write_text
from keras_cae.studies import _engine
from keras_cae.studies._mnist_design import BUDGETS, MARGINS, PRIMARY

__all__ = ["PAPER", "LABELS", "figures", "markdown"]

LABELS = {
    "random": "random init",
    "ae": "AE",
    "dae": "DAE (Gaussian)",
    "cae": "CAE",
    "cae2": "CAE-2",
    "cae_h": "CAE+H",
    "cae_mse": "CAE, untied + MSE (package default)",
}

# Test error in percent. ICML 2011 Table 1 (all labels, one 1,000-unit layer, fine-tuned
# MLP), checked against the paper's PDF. NIPS 2011 (MNIST with 100 / 600 / 1,000 / 3,000
# labels), its "NN" and "CAE" entries, not checked against that paper's text but equal to
# Kingma et al. 2014's Table 1, which quotes them and calls NN nearest neighbours; whether
# NIPS's "CAE" is one layer or a stack is unverified. Sources: docs/results-mnist/preamble.md.
PAPER: dict[str, dict[str, float]] = {
    "random": {"100": 25.81, "600": 11.44, "1000": 10.7, "3000": 6.04},
    "ae": {"all": 1.78},
    "dae": {"all": 1.18},
    "cae": {"all": 1.14, "100": 13.47, "600": 6.3, "1000": 4.77, "3000": 3.22},
}


def _percent(values: Sequence[float]) -> str:
    if not values:
        return "—"
    stats = _engine.summary(100 * np.asarray(values, np.float64))
    if len(values) == 1:
        return f"{stats['mean']:.2f} (1 seed)"
    return f"{stats['mean']:.2f} ± {stats['std']:.2f}"


def figures(report: dict[str, Any], folder: str) -> list[str]:
    """Draws the three figures into `folder`; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(folder, exist_ok=True)
    paths = []
    results = report["results"]
    budgets = [b for b in BUDGETS if b != "all"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for model, per_budget in results.items():
        present = [b for b in budgets if b in per_budget]
        if not present:
            continue
        xs = [int(b) for b in present]
        means = [100 * float(np.mean(per_budget[b])) for b in present]
        (line,) = ax.plot(xs, means, marker="o", label=LABELS.get(model, model))
        for budget in present:
            seeds = 100 * np.asarray(per_budget[budget])
            ax.scatter([int(budget)] * len(seeds), seeds, s=8, alpha=0.5, color=line.get_color())
    for model, style in (("random", "k:"), ("cae", "k--")):
        paper = [(int(b), PAPER[model][b]) for b in budgets if b in PAPER.get(model, {})]
        if paper:
            ax.plot(*zip(*paper), style, label=f"paper (NIPS 2011): {LABELS[model]}")
    title = "MNIST, 784→1000 sigmoid, fine-tuned"
    ax.set(xscale="log", yscale="log", xlabel="labelled training images",
           ylabel="official test error (%)", title=title)  # fmt: skip
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(os.path.join(folder, "mnist_few_labels.png"))
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    geometry = report["geometry"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name, record in geometry.items():
        label = name.replace("geometry_", "")
        spectrum = np.asarray(record["spectrum_mean"])
        left.plot(np.arange(1, len(spectrum) + 1), spectrum, label=label)
        right.plot(record["radii"], record["contraction"], marker=".", label=label)
    left.axhline(0.1, color="grey", lw=0.5)
    left.set(yscale="log", ylim=(1e-4, 1.1), xlabel="singular value index",
             ylabel="s_k / s_1 (mean over test points)", title="Jacobian spectra")  # fmt: skip
    right.set(xscale="log", xlabel="radius r (input distance)",
              ylabel="mean ||h(x+ru) - h(x)|| / r", title="Contraction curves")  # fmt: skip
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    fig.tight_layout()
    paths.append(os.path.join(folder, "mnist_geometry.png"))
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A Markdown table with every column aligned left, as lines."""
    return _engine.markdown_table(header, rows, align="l" * len(header)).split("\n")


def _results_table(report: dict[str, Any]) -> list[str]:
    rows = []
    for model, per_budget in report["results"].items():
        ours = [_percent(per_budget.get(b, [])) for b in BUDGETS]
        rows.append([f"{LABELS.get(model, model)} (ours)", *ours])
        if model in PAPER:
            paper = [f"{PAPER[model][b]:.2f}" if b in PAPER[model] else "" for b in BUDGETS]
            rows.append([f"{LABELS[model]} (paper)", *paper])
    return _table(["model", *(f"{b} labels" for b in BUDGETS)], rows)


def _selected_table(report: dict[str, Any]) -> list[str]:
    header = ["model", "budget", "hyper-parameters", "fine-tuning lr", "mean val error", "seeds"]
    rows = []
    for model, per_budget in report["selected"].items():
        for budget, choice in per_budget.items():
            rows.append([
                LABELS.get(model, model), budget, choice["hp"] or "—", f"{choice['lr']:g}",
                f"{100 * choice['val_error_mean']:.2f}%", choice["seeds"],
            ])  # fmt: skip
    return _table(header, rows)


def _tests_table(report: dict[str, Any]) -> list[str]:
    header = [
        "a vs b", "budget", "n", "mean diff (points)", "90% CI (points)", "p (t)", "p (Holm)",
        "margin", "verdict",
    ]  # fmt: skip
    rows = []
    for test in report["tests"]:
        ci = test["ci90"]
        ci_text = "—" if ci is None else f"[{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]"
        p = "—" if test["p"] is None else f"{test['p']:.3g}"
        ph = "—" if test["p_holm"] is None else f"{test['p_holm']:.3g}"
        rows.append([
            f"{LABELS.get(test['a'], test['a'])} vs {LABELS.get(test['b'], test['b'])}",
            test["budget"], test["n"], f"{100 * test['mean_difference']:+.2f}", ci_text, p, ph,
            f"±{100 * test['margin']:g}", _verdict_text(test),
        ])  # fmt: skip
    return _table(header, rows)


def _verdict_text(test: dict[str, Any]) -> str:
    a, b = LABELS.get(test["a"], test["a"]), LABELS.get(test["b"], test["b"])
    return {
        "a better": f"{a} lower error",
        "a worse": f"{b} lower error",
        "equivalent": "equivalent (inside the margin)",
    }.get(test["verdict"], "inconclusive")


def _geometry_table(report: dict[str, Any]) -> list[str]:
    header = [
        "encoder", "points", "singular values > 0.1·s₁", "s₁₀/s₁", "s₅₀/s₁", "s₂₀₀/s₁", "SAT",
        "mean ‖J‖_F / s₁", "seconds",
    ]  # fmt: skip
    rows = []
    for name, record in report["geometry"].items():
        spectrum = record["spectrum_mean"]
        rows.append([
            name.replace("geometry_", ""), record["points"], f"{record['count_above_0.1']:.1f}",
            f"{spectrum[9]:.3f}", f"{spectrum[49]:.3f}", f"{spectrum[199]:.4f}",
            f"{100 * record['sat']:.1f}%", f"{record['frobenius_mean']:.2f}",
            f"{record['seconds']:.0f}",
        ])  # fmt: skip
    return _table(header, rows)


def markdown(report: dict[str, Any], preamble: str, command: str) -> str:
    """The results part of ``docs/results-mnist.md`` (after the hand-written `preamble`)."""
    units = report["units"]
    seconds = report["compute_seconds"]
    total = sum(seconds.values())
    lines = [preamble.rstrip(), "", "## Results (generated from report.json)", ""]
    lines.append(
        f"Finished units: {units['finished']} of {units['planned']} planned "
        f"(compute {total / 60:.0f} min of unit time: "
        + ", ".join(f"{k} {v / 60:.1f} min" for k, v in sorted(seconds.items()))
        + "). Reproduce with:"
    )
    lines += ["", "```", command, "```", ""]
    lines += ["### Official-test error (%), mean ± sd over seeds, beside the papers", ""]
    lines += _results_table(report)
    lines += ["", "### What validation chose (per model and budget)", ""]
    lines += _selected_table(report)
    lines += ["", "### Primary comparisons (paired over seeds, Holm over the whole table)", ""]
    lines += [
        f"Margins: ±{100 * MARGINS['all']:g} points with all labels, "
        f"±{100 * MARGINS['few']:g} with few. Differences are a − b in error "
        "(negative: a has the lower error). Comparisons named in advance: "
        + ", ".join(f"{LABELS[a]} vs {LABELS[b]}" for a, b in PRIMARY)
        + ".",
        "",
    ]
    lines += _tests_table(report)
    lines += ["", "### Geometry of the pre-trained encoders (test points)", ""]
    lines += _geometry_table(report)
    lines += ["", "![few labels](figures/mnist_few_labels.png)", ""]
    lines += ["![geometry](figures/mnist_geometry.png)", ""]
    missing = units["missing"]
    lines += [f"### Units not finished ({len(missing)})", ""]
    if missing:
        lines.append(
            "The cache resumes them (same command). First few: "
            + ", ".join(f"`{m}`" for m in missing[:12])
            + (" …" if len(missing) > 12 else "")
        )
    else:
        lines.append("None.")
    return "\n".join(lines) + "\n"


def write(report: dict[str, Any], docs: str, preamble_path: str, command: str) -> list[str]:
    """Writes the figures into ``docs/figures`` and ``docs/results-mnist.md``."""
    paths = figures(report, os.path.join(docs, "figures"))
    with open(preamble_path) as stream:
        preamble = stream.read()
    text = markdown(report, preamble, command)
    epilogue = os.path.join(os.path.dirname(preamble_path), "conclusions.md")
    if os.path.exists(epilogue):
        with open(epilogue) as stream:
            text += "\n" + stream.read()
    target = os.path.join(docs, "results-mnist.md")
    atomic_write_text(target, text)
    return [*paths, target]
