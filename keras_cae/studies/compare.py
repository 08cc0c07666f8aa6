"""`keras-cae compare`: AE, DAE, CAE and CAE+H trained on equal footing, then measured.

The four models are one class, `keras_cae.ContractiveAutoencoder`, with different
arguments, built by `keras_cae.dense_autoencoder` with the same architecture,
optimizer, data, epochs, batch size and seeds:

- ``AE``: a plain auto-encoder (``contractive_weight=0``);
- ``DAE``: a denoising auto-encoder (Vincent et al., 2008): Gaussian (or masking)
  noise on the encoder input in training only, clean targets;
- ``CAE``: the contractive auto-encoder (Rifai et al., ICML 2011), ``+ λ‖J_f(x)‖²_F``;
- ``CAE+H``: the CAE plus the Hessian term ``γ E‖J_f(x) − J_f(x + ε)‖²_F`` (Rifai et
  al., ECML PKDD 2011).

Protocol (also written into every report):

1. The data is split once (seed 0, stratified when labelled) into a train part and a
   held-out test part. The test part is used only for the final measurements.
2. Validation search: the train part is split again (seed 0, 20 %) into a fit part and
   a validation part. Each candidate of `SEARCH_GRIDS` is trained on the fit part with
   the first seed and scored on the validation part; the best is kept (criterion:
   `selection`). ``CAE+H`` searches γ with λ fixed to the λ the ``CAE`` search chose.
3. Final runs: each model, with its selected hyper-parameters, is trained on the whole
   train part once per seed, then measured on the test part: reconstruction MSE, mean
   ``‖J_f(x)‖_F``, linear-probe accuracy on the codes, its drop under Gaussian input
   noise, the contraction curve and the Jacobian spectrum.
4. Noise protocol: the probe (standardised logistic regression,
   `keras_cae.training.probe_accuracy`) is fit on the codes of the clean train part
   and evaluated on the codes of ``x_test + σ·z``, ``z ~ N(0, I)``, *not clipped* to
   the input range. The same noise draws (per seed) are used for every model and for
   the raw-input baseline.

Example:

This module holds the study's constants, typed results and building blocks; the
study itself is `keras_cae.studies.compare_protocol.compare_models`, its report
`keras_cae.studies.compare_report`.

Example:

>>> from keras_cae import load_digits  # doctest: +SKIP
>>> from keras_cae.studies import compare_protocol, compare_report  # doctest: +SKIP
>>> result = compare_protocol.compare_models(load_digits(), seeds=3)  # doctest: +SKIP
>>> compare_report.write_report(result, "runs/compare")  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "MODELS",
    "SEARCH_GRIDS",
    "NOISE_LEVELS",
    "SELECTIONS",
    "CompareConfig",
    "DataSplit",
    "Candidate",
    "Search",
    "ModelRun",
    "RawRun",
    "ComparisonResult",
    "model_params",
]

MODELS = ("AE", "DAE", "CAE", "CAE+H")

# The validation search (step 2 of the protocol): the DAE's noise level (Gaussian σ or
# masking probability), the CAE's λ and the CAE+H's γ. Ordered from the weakest to the
# strongest regularisation; ties go to the first. λ is small because the
# reconstruction loss is a *mean* over inputs while ‖J‖²_F is a *sum* over code units
# and inputs (measured on the digits: λ = 0.1 collapses the codes, ‖J‖_F ≈ 0.09).
SEARCH_GRIDS: dict[str, tuple[float, ...]] = {
    "DAE/gaussian": (0.1, 0.2, 0.4),
    "DAE/masking": (0.1, 0.25, 0.5),
    "CAE": (3e-4, 1e-3, 3e-3),
    "CAE+H": (0.01, 0.1, 1.0),
}
# The ContractiveAutoencoder argument each searched model's grid sets.
SEARCHED_ARGUMENT = {
    "DAE": "corruption_level",
    "CAE": "contractive_weight",
    "CAE+H": "hessian_weight",
}
NOISE_LEVELS = (0.05, 0.1, 0.2)
SELECTIONS = ("probe", "noisy-probe", "reconstruction")
RADII = tuple(float(r) for r in np.geomspace(0.01, 10.0, 10))
SPLIT_SEED = 0
VALIDATION_FRACTION = 0.2
NUM_DIRECTIONS = 4
TANGENTS = 5


@dataclass(frozen=True)
class CompareConfig:
    """The settings of one study, recorded in the report's ``config``."""

    seeds: tuple[int, ...]
    epochs: int
    batch_size: int
    hidden_units: tuple[int, ...]
    learning_rate: float
    test_fraction: float
    dae_corruption: str
    selection: str
    grids: dict[str, tuple[float, ...]]


@dataclass(frozen=True)
class DataSplit:
    """The data and the sizes of its parts (step 1 and 2 of the protocol)."""

    name: str
    scaling: str
    input_shape: tuple[int, ...]
    labelled: bool
    num_train: int
    num_fit: int
    num_validation: int
    num_test: int
    own_test_split: bool = False


@dataclass
class Candidate:
    """One searched hyper-parameter value, trained on the fit part, scored on validation."""

    params: dict[str, Any]
    validation: dict[str, Any]
    train_seconds: float
    train_cpu_seconds: float


@dataclass
class Search:
    """The validation search of one model; no candidates when it had one value."""

    candidates: list[Candidate]
    selected: dict[str, Any]


@dataclass
class ModelRun:
    """One final run of one model at one seed, measured on the test part.

    The probe fields are None on unlabelled data.
    """

    seed: int
    train_seconds: float
    train_cpu_seconds: float
    reconstruction_mse: float
    jacobian_frobenius: float
    contraction_curve: list[float]
    mean_spectrum: list[float]
    probe_accuracy: float | None = None
    noisy_probe_accuracy: dict[str, float] | None = None
    probe_drop: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The run as written in report.json (without the absent probe fields)."""
        return {key: value for key, value in asdict(self).items() if value is not None}


@dataclass
class RawRun:
    """The probe on raw inputs (no encoder) at one seed: the baseline."""

    seed: int
    probe_accuracy: float
    noisy_probe_accuracy: dict[str, float]


@dataclass
class ComparisonResult:
    """What `keras_cae.studies.compare_protocol.compare_models` measured.

    `keras_cae.studies.compare_report` turns it into report.json, report.md and figures.
    """

    config: CompareConfig
    data: DataSplit
    search: dict[str, Search]
    runs: dict[str, list[ModelRun]]
    raw_runs: list[RawRun]
    total_seconds: float
    spectra: dict[str, np.ndarray] = field(default_factory=dict)
    curves: dict[str, np.ndarray] = field(default_factory=dict)
    examples: np.ndarray | None = None
    reconstructions: dict[str, np.ndarray] = field(default_factory=dict)
    tangents: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    image_shape: tuple[int, ...] | None = None

    def params(self, name: str) -> dict[str, Any]:
        """The `ContractiveAutoencoder` arguments model `name` was trained with."""
        return model_params(name, self.config.dae_corruption, self.search[name].selected)


def model_params(name: str, dae_corruption: str, params: dict[str, Any]) -> dict[str, Any]:
    """The `ContractiveAutoencoder` arguments of a model with search parameters `params`."""
    base: dict[str, Any] = {"contractive_weight": 0.0}
    if name == "DAE":
        base["corruption"] = dae_corruption
    return {**base, **params}
