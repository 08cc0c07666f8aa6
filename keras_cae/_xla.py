"""When XLA (`jit_compile=True`) makes a `ContractiveAutoencoder`'s train step slower.

`ContractiveAutoencoder.compile` asks `xla_slowdown` and turns XLA off, with a warning
that quotes the reason, where it returns one.

Example:

>>> from keras_cae._xla import xla_slowdown
>>> xla_slowdown("batch_jacobian", corrupts=False).startswith("XLA compiles")
True
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["xla_slowdown"]


def xla_slowdown(penalty_method: str | None, corrupts: bool) -> str | None:
    """Why XLA would slow a `ContractiveAutoencoder`'s train step down, or None.

    Measured by `benchmarks/xla.py` (784 → 256 → 64, batch 128, medians of
    interleaved runs). Only `batch_jacobian` is refused on every device; the
    other slowdowns were measured on CPU only, so accelerators keep XLA.

    Args:
        penalty_method: the resolved penalty method (`"auto"` resolved), or None if
            the model computes no penalty.
        corrupts: whether the model corrupts its inputs in training (a DAE).
    """
    if penalty_method == "batch_jacobian":
        return (
            "XLA compiles the per-code-unit loop of penalty='batch_jacobian' very badly "
            "(measured on CPU: 136 s per step against 0.28 s without XLA; 31 s against "
            "27 ms for a 784 -> 64 encoder). Train without jit_compile."
        )
    if any(d.device_type != "CPU" for d in tf.config.list_logical_devices()):
        return None
    if penalty_method == "hutchinson":
        return (
            "penalty='hutchinson' runs 12.6 times slower under XLA on CPU (101 against "
            "8.1 ms per step; 7.0 times for a conv encoder)."
        )
    if penalty_method is not None:
        return (
            f"penalty={penalty_method!r} runs 1.21 times slower under XLA on CPU "
            "(22.9 against 18.9 ms per step; 1.14 times with the CAE+H term)."
        )
    if corrupts:
        return (
            "the denoising corruption runs 5.6 times slower under XLA on CPU (30.3 "
            "against 5.4 ms per step)."
        )
    return None
