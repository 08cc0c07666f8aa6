"""The MNIST study's fixed design, shared by the study (`mnist`) and its report
(`mnist_report`): the label budgets, the primary comparisons named before the run, and
the equivalence margins (fractions of error rate)."""

from __future__ import annotations

#: Label budgets: labelled images per run ("all": the whole training part).
BUDGETS = ("100", "600", "1000", "3000", "all")
#: The primary comparisons (a, b): a's error against b's, Holm-corrected together.
PRIMARY = (("cae", "ae"), ("cae", "dae"), ("cae", "random"), ("cae2", "cae"))
#: Equivalence margins: ±0.3 points with all labels, ±1 point with few.
MARGINS = {"all": 0.003, "few": 0.01}
