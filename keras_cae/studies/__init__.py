"""The studies: seeded experiments that train, measure and report on the models.

The model, penalty, data and training modules stay in `keras_cae`; this package holds
what is built on them to test the papers' claims, each study laid out the same way
(typed results, a runner, a report writer):

- `compare`, `compare_protocol`, `compare_report`: AE / DAE / CAE / CAE+H trained on
  equal footing (`keras-cae compare`, ``--protocol models``);
- `finetune`, `finetune_protocol`, `finetune_report`, with `stacked` (the greedy
  two-layer CAE): pre-train, then fine-tune (``--protocol finetune``);
- `mnist`, `mnist_report`: the paper's MNIST protocol (784→1000, pre-train, fine-tune
  with few and all labels), resumable from its cache (``python -m keras_cae.studies.mnist``);
- `analysis` (Jacobian spectrum, contraction curve, tangents) and `plots` (figures),
  the measurements the studies share; `jacobian_spectrum`, `contraction_curve`,
  `tangent_directions`, `jacobian_norm` and `stacked_encoder` are also importable from
  `keras_cae` itself.

Submodules load on first use, so importing this package imports no TensorFlow.

Example:

>>> from keras_cae import studies
>>> studies.compare.MODELS
('AE', 'DAE', 'CAE', 'CAE+H')
"""

from __future__ import annotations

import importlib
from typing import Any

# The public submodules; `__getattr__` imports each on first use.
_SUBMODULES = (
    "analysis",
    "compare",
    "compare_protocol",
    "compare_report",
    "finetune",
    "finetune_protocol",
    "finetune_report",
    "mnist",
    "mnist_report",
    "plots",
    "stacked",
)

__all__ = list(_SUBMODULES)


def __getattr__(name: str) -> Any:
    if name not in _SUBMODULES:
        raise AttributeError(f"module 'keras_cae.studies' has no attribute {name!r}")
    return importlib.import_module(f"{__name__}.{name}")


def __dir__() -> list[str]:
    return sorted(__all__)
