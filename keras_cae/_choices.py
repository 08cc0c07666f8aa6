"""The string settings the library accepts, importable without TensorFlow.

The modules that act on them (`penalties`, `distribute`, `model`) import TensorFlow;
the command line offers the same values as argparse `choices` and must not.

Example:

>>> "closed_form" in PENALTY_METHODS
True
"""

from __future__ import annotations

__all__ = ["CORRUPTIONS", "PENALTY_METHODS", "STRATEGIES"]

# How ‖J‖²_F is computed (`keras_cae.penalties.contractive_penalty`).
PENALTY_METHODS = ("auto", "batch_jacobian", "closed_form", "hutchinson")
# The input noise of a denoising auto-encoder (`ContractiveAutoencoder(corruption=...)`).
CORRUPTIONS = ("gaussian", "masking")
# `keras_cae.distribute.get_strategy`: one device, all local devices, TF_CONFIG's workers.
STRATEGIES = ("default", "mirrored", "multi-worker")
