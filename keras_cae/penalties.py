"""How the contractive penalty ‖J_f(x)‖²_F is computed.

The contractive auto-encoder (Rifai et al., "Contractive Auto-Encoders: Explicit
Invariance During Feature Extraction", ICML 2011) penalises the squared Frobenius
norm of the encoder Jacobian ``J_f(x)[k, j] = ∂h_k / ∂x_j``. There are four ways
of computing it:

* ``"batch_jacobian"`` — the general exact reference: ``tf.GradientTape.batch_jacobian``
  of the code w.r.t. the input, squared and summed over every non-batch axis.
  Works for any encoder, costs one backward pass per code unit.
* ``"closed_form"`` — exact and cheap for encoders that are a chain of ``Dense``
  layers with element-wise activations: ``J = D_L W_Lᵀ ⋯ D_1 W_1ᵀ`` with
  ``D_l = diag(σ_l′(a_l))``. One layer reduces to ``Σ_k σ′(a_k)² ‖W_{:,k}‖²``. Also
  for one ``Conv1D``/``Conv2D``/``Conv3D`` layer with element-wise activations
  (Flatten/Reshape around it allowed): ``Σ σ′(a)² ⊙ S`` with ``S`` the squared kernel
  convolved with an all-ones input, one extra convolution independent of the batch.
* ``"hutchinson"`` — the unbiased stochastic estimate ``E_v ‖J v‖²`` with
  Rademacher or Gaussian probes ``v`` (``E[v vᵀ] = I``), computed in forward mode
  for all probes as one stacked batch. Works for any encoder, including conv.
* ``"auto"`` — ``"closed_form"`` where it applies, else ``"batch_jacobian"``.
  Always exact; it never picks the stochastic method on its own. A
  `ContractiveAutoencoder` that falls back says once, before training, what a step
  will cost and that ``"hutchinson"`` exists (`keras_cae._step_cost`).

The second-order term of CAE+H (Rifai et al., "Higher Order Contractive
Auto-Encoder", ECML PKDD 2011), ``E_ε ‖J(x) − J(x + ε)‖²_F``, is computed with the
same machinery by :func:`hessian_penalty`.

This module holds the public API and the dispatch; the closed form's machinery lives
in `keras_cae._closed_form`, the forward-mode JVPs of ``"hutchinson"`` in
`keras_cae._hutchinson`.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import keras
import tensorflow as tf

from keras_cae._choices import PENALTY_METHODS
from keras_cae._closed_form import (
    _broadcast_batch,
    _closed_form_factor,
    _functional_chain,  # noqa: F401  (tests import it from here)
    closed_form_error,
)
from keras_cae._hutchinson import _layerwise_jvp, _stacked_jvp  # noqa: F401
from keras_cae.distribute import replica_random

__all__ = [
    "PENALTY_METHODS",
    "contractive_penalty",
    "hessian_penalty",
    "resolve_method",
]

logger = logging.getLogger("keras_cae")

PROBE_DISTRIBUTIONS = ("rademacher", "gaussian")


def check_method(method: str, argument: str = "method") -> str:
    """Returns `method` if it names a penalty method, else raises `ValueError`."""
    if method not in PENALTY_METHODS:
        raise ValueError(
            f"Unrecognized {argument}={method!r}. Supported methods are: {list(PENALTY_METHODS)}."
        )
    return method


# --------------------------------------------------------------------------------------
# General methods.


def _flat_jacobian_norm(jacobian: tf.Tensor) -> tf.Tensor:
    batch = tf.shape(jacobian)[0]
    return tf.reduce_sum(tf.square(tf.reshape(jacobian, [batch, -1])), axis=1)


def _batch_jacobian(encoder: Any, x: tf.Tensor, training: bool) -> tuple[tf.Tensor, tf.Tensor]:
    """Returns the code and the Jacobian, shape ``(batch, *code_shape, *input_shape)``."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        code = encoder(x, training=training)
        code32 = tf.cast(code, tf.float32)
    return code, tape.batch_jacobian(code32, x)


def _probes(
    shape: tf.Tensor, num_projections: int, distribution: str, seed: Any, dtype: tf.DType
) -> tf.Tensor:
    full_shape = tf.concat([[num_projections], shape], axis=0)
    # Under tf.distribute, each replica takes its rows of the global batch's probes.
    if distribution == "gaussian":
        return tf.cast(
            replica_random(lambda s: keras.random.normal(s, seed=seed), full_shape, 1), dtype
        )
    signs = replica_random(lambda s: keras.random.randint(s, 0, 2, seed=seed), full_shape, 1)
    return tf.cast(2 * signs - 1, dtype)


# --------------------------------------------------------------------------------------
# Public API.


def resolve_method(encoder: Any, method: str, training: bool = False) -> str:
    """Resolves `"auto"` to the exact method used for `encoder`.

    Args:
        encoder: the encoder (a Keras layer or model).
        method: one of :data:`PENALTY_METHODS`.
        training: whether the penalty is computed in training mode (Dropout active).

    Returns:
        `"closed_form"` if `method="auto"` and the encoder is a Dense chain or one
        convolution (see `keras_cae._closed_form`), `"batch_jacobian"` if
        `method="auto"` otherwise, else `method` itself.
    """
    check_method(method)
    if method != "auto":
        return method
    return "closed_form" if closed_form_error(encoder, training) is None else "batch_jacobian"


def code_and_penalty(
    encoder: Any,
    x: Any,
    method: str = "batch_jacobian",
    *,
    training: bool = False,
    num_projections: int = 4,
    probe_distribution: str = "rademacher",
    seed: Any = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Returns the code ``f(x)`` and the per-sample penalty ``‖J_f(x)‖²_F``.

    The model's train step uses this to compute the encoder forward pass once; see
    :func:`contractive_penalty` for the arguments.
    """
    method = resolve_method(encoder, method, training)
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        x = tf.cast(x, keras.backend.floatx())
    if method == "closed_form":
        code, factor, norm = _closed_form_factor(encoder, x, training)
        return code, _broadcast_batch(norm(factor), x)
    if method == "batch_jacobian":
        code, jacobian = _batch_jacobian(encoder, x, training)
        return code, _flat_jacobian_norm(jacobian)
    check_hutchinson_args(num_projections, probe_distribution)
    probes = _probes(tf.shape(x), num_projections, probe_distribution, seed, x.dtype)
    code, jvp = _stacked_jvp(encoder, x, probes, training)
    return code, tf.reduce_mean(tf.reduce_sum(tf.square(jvp), axis=2), axis=0)


def check_hutchinson_args(num_projections: int, probe_distribution: str) -> None:
    """Raises `ValueError` unless the Hutchinson estimator's arguments are valid."""
    if (
        not isinstance(num_projections, int)
        or isinstance(num_projections, bool)
        or num_projections < 1
    ):
        raise ValueError(
            f"`num_projections` should be a positive integer. Received: "
            f"num_projections={num_projections!r}"
        )
    if probe_distribution not in PROBE_DISTRIBUTIONS:
        raise ValueError(
            f"Unrecognized probe_distribution={probe_distribution!r}. Supported "
            f"distributions are: {list(PROBE_DISTRIBUTIONS)}."
        )


def contractive_penalty(
    encoder: Any,
    x: Any,
    method: str = "batch_jacobian",
    *,
    training: bool = False,
    num_projections: int = 4,
    probe_distribution: str = "rademacher",
    seed: Any = None,
) -> tf.Tensor:
    """Computes the per-sample squared Frobenius norm of the encoder Jacobian.

    ``‖J_f(x)‖²_F = Σ_k Σ_j (∂h_k/∂x_j)²``, summed over every non-batch axis of the
    code and of the input, so image-shaped inputs and conv encoders work (Rifai et
    al., ICML 2011, eq. 1). The result is float32 whatever the compute dtype.

    Args:
        encoder: a Keras layer or model mapping ``x`` to the code ``h``. Samples must
            be independent (no batch statistics across samples).
        x: a batch of inputs, shape ``(batch, *input_shape)``.
        method: `"batch_jacobian"` (exact, any encoder), `"closed_form"` (exact, chains
            of `Dense` layers with element-wise activations, or one `Conv1D`/`Conv2D`/
            `Conv3D` layer with element-wise activations), `"hutchinson"`
            (unbiased stochastic estimate, any encoder) or `"auto"` (`"closed_form"`
            where it applies, else `"batch_jacobian"`). Defaults to `"batch_jacobian"`.
        training: call the encoder in training mode. Defaults to `False`.
        num_projections: number of probe vectors per sample for `"hutchinson"`. The
            estimate's variance falls as ``1/num_projections``; with Rademacher probes
            it is ``2 (‖JᵀJ‖²_F − Σ_j (JᵀJ)_jj²) / num_projections`` per sample. Defaults
            to `4`.
        probe_distribution: `"rademacher"` (lower variance) or `"gaussian"` probes for
            `"hutchinson"`. Defaults to `"rademacher"`.
        seed: seed for the probes: an int, a `keras.random.SeedGenerator` or None.
            Defaults to `None`.

    Returns:
        A float32 tensor of shape ``(batch,)``.

    Raises:
        ValueError: for an unknown `method`, or `"closed_form"` on an encoder that is
            neither a Dense chain nor one convolution (the message says why and which
            method to use).

    Example:

    >>> import keras, numpy as np
    >>> from keras_cae import contractive_penalty
    >>> encoder = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, "sigmoid")])
    >>> x = np.random.default_rng(0).random((3, 8)).astype("float32")
    >>> exact = contractive_penalty(encoder, x, method="batch_jacobian")
    >>> fast = contractive_penalty(encoder, x, method="closed_form")
    >>> bool(np.allclose(exact, fast, rtol=1e-5))
    True
    """
    return code_and_penalty(
        encoder,
        x,
        method,
        training=training,
        num_projections=num_projections,
        probe_distribution=probe_distribution,
        seed=seed,
    )[1]


def check_hessian_args(noise_stddev: float, num_samples: int) -> None:
    """Raises `ValueError` unless the CAE+H term's noise and sample count are valid."""
    if (
        not isinstance(noise_stddev, (int, float))
        or not math.isfinite(noise_stddev)
        or noise_stddev <= 0
    ):
        raise ValueError(
            f"`hessian_noise_stddev` should be a positive finite number. Received: "
            f"hessian_noise_stddev={noise_stddev!r}"
        )
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
        raise ValueError(
            f"`hessian_samples` should be a positive integer. Received: "
            f"hessian_samples={num_samples!r}"
        )


def hessian_penalty(
    encoder: Any,
    x: Any,
    method: str = "batch_jacobian",
    *,
    noise_stddev: float = 0.1,
    num_samples: int = 1,
    training: bool = False,
    num_projections: int = 4,
    probe_distribution: str = "rademacher",
    seed: Any = None,
) -> tf.Tensor:
    """Computes the CAE+H term ``E_ε ‖J(x) − J(x + ε)‖²_F`` per sample.

    Rifai et al., "Higher Order Contractive Auto-Encoder" (ECML PKDD 2011), eq. 6:
    penalising how much the Jacobian changes in a small neighbourhood of ``x``
    approximately penalises the Hessian, without computing it. ``ε ~ N(0, σ² I)``.

    Args:
        encoder: the encoder, as for :func:`contractive_penalty`.
        x: a batch of inputs, shape ``(batch, *input_shape)``.
        method: as for :func:`contractive_penalty`. With `"hutchinson"` the same
            probes are applied to ``J(x)`` and ``J(x + ε)``, so the estimate of the
            difference stays unbiased. Defaults to `"batch_jacobian"`.
        noise_stddev: σ of the Gaussian corruption ε. Defaults to `0.1`.
        num_samples: corrupted copies of each sample averaged over. Defaults to `1`.
        training: call the encoder in training mode. Defaults to `False`.
        num_projections: probes for `"hutchinson"`. Defaults to `4`.
        probe_distribution: probe distribution for `"hutchinson"`. Defaults to
            `"rademacher"`.
        seed: an int, a `keras.random.SeedGenerator` or None. Defaults to `None`.

    Returns:
        A float32 tensor of shape ``(batch,)``, the Monte-Carlo mean over
        `num_samples` draws of ε.

    Example:

    >>> import keras, numpy as np
    >>> from keras_cae import hessian_penalty
    >>> encoder = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, "tanh")])
    >>> x = np.zeros((2, 8), "float32")
    >>> hessian_penalty(encoder, x, noise_stddev=0.1, seed=1).shape
    TensorShape([2])
    """
    check_hessian_args(noise_stddev, num_samples)
    method = resolve_method(encoder, method, training)
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        x = tf.cast(x, keras.backend.floatx())
    batch = tf.shape(x)[0]
    noise_shape = tf.concat([[num_samples], tf.shape(x)], axis=0)
    noise = replica_random(
        lambda s: keras.random.normal(s, stddev=noise_stddev, seed=seed), noise_shape, 1
    )
    noise = tf.cast(noise, x.dtype)
    corrupted = tf.reshape(x[tf.newaxis] + noise, tf.concat([[-1], tf.shape(x)[1:]], 0))
    # Row s * batch + b of `stacked` is x_b for s = 0 and x_b + ε_{s,b} after.
    stacked = tf.concat([x, corrupted], axis=0)
    if method == "closed_form":
        _, factor, norm = _closed_form_factor(encoder, stacked, training)
        if factor is None:  # J does not depend on x.
            return tf.zeros([batch], tf.float32)
        rest = tf.shape(factor)[1:]
        grouped = tf.reshape(factor, tf.concat([[num_samples + 1, batch], rest], 0))
        difference = grouped[:1] - grouped[1:]
        flat = tf.reshape(difference, tf.concat([[-1], rest], 0))
        norms = norm(flat)
    elif method == "batch_jacobian":
        _, jacobian = _batch_jacobian(encoder, stacked, training)
        rest = tf.shape(jacobian)[1:]
        grouped = tf.reshape(jacobian, tf.concat([[num_samples + 1, batch], rest], 0))
        norms = _flat_jacobian_norm(
            tf.reshape(grouped[:1] - grouped[1:], tf.concat([[-1], rest], 0))
        )
    else:
        check_hutchinson_args(num_projections, probe_distribution)
        probes = _probes(tf.shape(x), num_projections, probe_distribution, seed, x.dtype)
        shared = tf.tile(
            probes, tf.concat([[1, num_samples + 1], tf.ones_like(tf.shape(x)[1:])], 0)
        )
        _, jvp = _stacked_jvp(encoder, stacked, shared, training)
        grouped = tf.reshape(jvp, [num_projections, num_samples + 1, batch, -1])
        difference = grouped[:, :1] - grouped[:, 1:]
        norms = tf.reduce_mean(tf.reduce_sum(tf.square(difference), axis=-1), axis=0)
    return tf.reduce_mean(tf.reshape(norms, [num_samples, batch]), axis=0)
