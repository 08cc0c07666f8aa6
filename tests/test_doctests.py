"""The ``>>>`` examples of every module's docstrings run, and print what they show.

Modules are imported by their installed names (`export/` as `keras_cae.export`), which
pytest's ``--doctest-modules`` cannot do for a folder mapped to another name. An example
that cannot run here (it needs a server, a file or a long run) says so with
``# doctest: +SKIP``.
"""

from __future__ import annotations

import doctest
import importlib

import pytest

from tests._sources import source_modules

# Examples that train for more than a few seconds (measured with --durations on a shared
# 2-core machine: keras_cae 30-41 s with TensorFlow's import, model 28 s (two fits),
# training 8-11 s, stacked 6 s; every other module under 3 s, serving's 9 s once).
SLOW = {"keras_cae", "keras_cae.model", "keras_cae.training", "keras_cae.studies.stacked"}


def _modules() -> list[str]:
    """The modules whose examples run: not the generated protocol messages (`_proto`), not
    `__main__` (it runs the CLI)."""
    names = source_modules()
    return sorted(
        n for n in names if "_proto" not in n.split(".") and n.split(".")[-1] != "__main__"
    )


def _examples(module_name: str) -> list[doctest.DocTest]:
    module = importlib.import_module(module_name)
    tests = doctest.DocTestFinder(exclude_empty=True).find(module, module_name)
    return [test for test in tests if test.examples]


@pytest.mark.parametrize(
    "module_name",
    [pytest.param(m, marks=pytest.mark.slow) if m in SLOW else m for m in _modules()],
)
def test_docstring_examples_run(module_name):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    for test in _examples(module_name):
        runner.run(test, out=report.append)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, "".join(report)


def test_the_modules_are_found():
    names = _modules()
    assert "keras_cae.export.runtime" in names and "keras_cae.studies._engine" in names
    assert not any("_pb2" in name for name in names)
    assert set(SLOW) <= set(names)
