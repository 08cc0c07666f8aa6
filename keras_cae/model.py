"""The contractive auto-encoder as a `keras.Model`."""

from __future__ import annotations

import copy
import logging
import math
import warnings
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_cae import penalties
from keras_cae._choices import CORRUPTIONS
from keras_cae._closed_form import closed_form_error
from keras_cae._inputs import (
    built_input_shape,
    check_array,
    check_batch_size,
    check_data,
    data_input_shape,
)
from keras_cae._step_cost import auto_fallback_notice
from keras_cae._xla import xla_slowdown
from keras_cae.distribute import replica_random, replica_share

__all__ = ["ContractiveAutoencoder", "CORRUPTIONS"]

logger = logging.getLogger("keras_cae")

_SEED_STATE_KEY = "seed_generator_state"
_INPUT_RANGE_KEY = "input_range"


def _check_non_negative(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(
            f"`{name}` should be a non-negative finite number. Received: {name}={value!r}"
        )
    if not math.isfinite(float(value)) or value < 0:
        raise ValueError(
            f"`{name}` should be a non-negative finite number. Received: {name}={value!r}"
        )
    return float(value)


def _weighted_mean(values: tf.Tensor, sample_weight: Any) -> tf.Tensor:
    """Keras's `sum_over_batch_size` reduction: ``Σ w_b v_b / batch``."""
    if sample_weight is not None:
        weight = tf.cast(tf.reshape(sample_weight, [-1]), values.dtype)
        values = values * weight
    # divide_no_nan: a replica can get no rows of a short last batch (1 row, 2 replicas).
    return tf.math.divide_no_nan(tf.reduce_sum(values), tf.cast(tf.shape(values)[0], values.dtype))


@keras.saving.register_keras_serializable(package="keras_cae")
class ContractiveAutoencoder(keras.Model):
    """A contractive auto-encoder trained with `model.fit`.

    Minimises ``L(x, g(f(x))) + λ ‖J_f(x)‖²_F`` (Rifai et al., ICML 2011), where
    ``J_f(x)`` is the Jacobian of the code ``h = f(x)`` with respect to the input,
    squared and summed over every non-batch axis. With ``hessian_weight = γ > 0`` it
    adds the CAE+H term ``γ E_ε ‖J_f(x) − J_f(x + ε)‖²_F`` (Rifai et al., ECML PKDD
    2011). With `corruption` it trains on corrupted inputs against clean targets (a
    denoising auto-encoder, Vincent et al., 2008); with every weight 0 and no
    corruption it is a plain auto-encoder, trained exactly as one.

    Like a Functional model, it is built when made if its encoder is built (e.g. it
    starts with a `keras.Input`; the input shape is the encoder's); otherwise `fit`,
    `evaluate`, `predict` or the first train step builds it from the data.

    The reconstruction loss is the one given to `compile(loss=...)`; without one it
    is the mean squared error. Sample weights weight every term. Logs: `loss` (the
    total), `reconstruction_loss`, `contractive_loss` (the batch mean of
    ``‖J_f(x)‖²_F``, before multiplying by λ; in training only when λ > 0, as it is
    not computed otherwise) and, with γ > 0, `hessian_loss`; evaluation always
    reports `contractive_loss`.

    Args:
        encoder: a Keras layer or model mapping inputs to codes. Samples must be
            processed independently (the penalty is per sample).
        decoder: a Keras layer or model mapping codes back to the input shape.
        contractive_weight: λ, the weight of the contractive penalty. Defaults to `0.1`.
        penalty: how the penalty is computed: `"auto"`, `"batch_jacobian"`,
            `"closed_form"` or `"hutchinson"` (see `keras_cae.contractive_penalty`).
            `"auto"` is exact: the closed form for Dense chains and for one
            convolution layer, else `batch_jacobian`, and then it logs once, before
            training, the estimated cost of a step. Defaults to `"auto"`.
        num_projections: probes per sample for `penalty="hutchinson"`. Defaults to `4`.
        probe_distribution: `"rademacher"` or `"gaussian"` probes for
            `penalty="hutchinson"`. Defaults to `"rademacher"`.
        hessian_weight: γ, the weight of the CAE+H term. Defaults to `0.0`.
        hessian_noise_stddev: σ of the corruption ε in the CAE+H term. Defaults to `0.1`.
        hessian_samples: corrupted copies per sample in the CAE+H term. Defaults to `1`.
        corruption: `None`, `"gaussian"` (add N(0, level²) noise) or `"masking"` (zero
            each input with probability level), applied in training only. Defaults
            to `None`.
        corruption_level: the noise σ or the masking probability. Defaults to `0.0`.
        seed: seed for the probes and noise. Defaults to `None`.
        **kwargs: passed to `keras.Model` (e.g. `name`).

    Example:

    >>> import keras, numpy as np
    >>> from keras_cae import ContractiveAutoencoder
    >>> encoder = keras.Sequential([keras.Input((16,)), keras.layers.Dense(4, "sigmoid")])
    >>> decoder = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, "sigmoid")])
    >>> model = ContractiveAutoencoder(encoder, decoder, contractive_weight=0.1)
    >>> model.compile(optimizer="adam")
    >>> x = np.random.default_rng(0).random((32, 16)).astype("float32")
    >>> history = model.fit(x, epochs=1, verbose=0)
    >>> sorted(history.history)
    ['contractive_loss', 'loss', 'reconstruction_loss']
    """

    def __init__(
        self,
        encoder: keras.layers.Layer,
        decoder: keras.layers.Layer,
        contractive_weight: float = 0.1,
        penalty: str = "auto",
        num_projections: int = 4,
        probe_distribution: str = "rademacher",
        hessian_weight: float = 0.0,
        hessian_noise_stddev: float = 0.1,
        hessian_samples: int = 1,
        corruption: str | None = None,
        corruption_level: float = 0.0,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.contractive_weight = _check_non_negative("contractive_weight", contractive_weight)
        self.penalty = penalties.check_method(penalty, "penalty")
        penalties.check_hutchinson_args(num_projections, probe_distribution)
        self.num_projections = num_projections
        self.probe_distribution = probe_distribution
        self.hessian_weight = _check_non_negative("hessian_weight", hessian_weight)
        penalties.check_hessian_args(hessian_noise_stddev, hessian_samples)
        self.hessian_noise_stddev = float(hessian_noise_stddev)
        self.hessian_samples = hessian_samples
        if corruption is not None and corruption not in CORRUPTIONS:
            raise ValueError(
                f"Unrecognized corruption={corruption!r}. Supported corruptions are: "
                f"{[None, *CORRUPTIONS]}."
            )
        self.corruption = corruption
        self.corruption_level = _check_non_negative("corruption_level", corruption_level)
        if corruption == "masking" and self.corruption_level >= 1:
            raise ValueError(
                "`corruption_level` is the masking probability and should be in [0, 1). "
                f"Received: corruption_level={corruption_level!r}"
            )
        self.seed = seed
        self.encoder = encoder
        self.decoder = decoder
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.total_loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_loss_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.contractive_loss_tracker = keras.metrics.Mean(name="contractive_loss")
        self.hessian_loss_tracker = keras.metrics.Mean(name="hessian_loss")
        self._penalty_method: str | None = None
        # The range of every input `fit` has trained on: +inf/-inf until the first step.
        # Exported into the ONNX metadata, where `OnnxEncoder` refuses inputs far outside.
        # TensorFlow variables, not Keras weights: `get_weights()` keeps its layout (the
        # encoder's and decoder's weights); `save_own_variables` saves them by name.
        self._input_min, self._input_max = (
            tf.Variable(
                value,
                dtype=tf.float32,
                trainable=False,
                name=name,
                # Every replica records the global range (`_record_input_range`).
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )
            for name, value in (("input_min", np.inf), ("input_max", -np.inf))
        )
        tie = getattr(decoder, "tie", None)
        if callable(tie):
            tie(encoder)
        input_shape = built_input_shape(encoder)
        if input_shape is not None:
            # Like a Functional model, a model made of built parts is built at once, so
            # it can be saved, exported or reloaded (with its optimizer state) without
            # ever being called.
            self.build(input_shape)

    # ----------------------------------------------------------------------------------
    # Forward pass.

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        """Builds encoder and decoder and checks that the decoder restores the input shape."""
        symbolic = keras.KerasTensor(tuple(input_shape), dtype=self.compute_dtype)
        code = self.encoder(symbolic)
        reconstruction = self.decoder(code)
        if tuple(reconstruction.shape[1:]) != tuple(input_shape[1:]):
            raise ValueError(
                "The decoder output shape should equal the encoder input shape. Received: "
                f"encoder input shape {tuple(input_shape)}, code shape {tuple(code.shape)}, "
                f"decoder output shape {tuple(reconstruction.shape)}."
            )
        self.built = True
        self._check_jit_compile()

    def _build_for(self, input_shape: tuple[int | None, ...] | None) -> None:
        """Builds the model for inputs of this shape, as `fit` builds any Keras model.

        Keras builds a subclassed model when it is first called; the train and test
        steps call the encoder and decoder through the penalty, never the model, so
        they build it here instead (from the data before training when its shape is
        known, else from the first batch when the step is traced).
        """
        if not self.built and input_shape is not None:
            self.build(input_shape)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        return self.decoder(self.encoder(inputs, training=training), training=training)

    def encode(self, x: Any, training: bool = False) -> Any:
        """Returns the code ``f(x)``."""
        return self.encoder(x, training=training)

    def decode(self, h: Any, training: bool = False) -> Any:
        """Returns the reconstruction ``g(h)`` of a code."""
        return self.decoder(h, training=training)

    @property
    def input_range(self) -> tuple[float, float] | None:
        """The smallest and largest input value `fit` has trained on; None before any.

        Recorded by every train step (over all replicas under `tf.distribute`) in two
        non-trainable variables that are not among the Keras weights (`get_weights` is
        the encoder's and decoder's), saved in the `.keras` archive, and written by
        `keras_cae.export.export_encoder` into the exported files, whose runtime
        (`OnnxEncoder`) refuses inputs far outside it (raw 0-255 pixels for a model
        trained on pixels / 255). Archives saved before the range was recorded load
        with None.

        Example:

        >>> import numpy as np
        >>> from keras_cae import dense_autoencoder
        >>> model = dense_autoencoder(4, 2)
        >>> model.input_range is None
        True
        >>> x = np.linspace(0, 1, 32, dtype="float32").reshape(8, 4)
        >>> _ = model.fit(x, epochs=1, verbose=0)
        >>> model.input_range
        (0.0, 1.0)
        """
        low, high = float(self._input_min.numpy()), float(self._input_max.numpy())
        return (low, high) if low <= high else None

    def _record_input_range(self, x: Any) -> None:
        """Widens the recorded range to this global batch's smallest and largest value."""
        x = tf.cast(x, "float32")
        # Of no rows (a replica's share of a short last batch) these are +inf and -inf.
        extremes = tf.stack([tf.reduce_min(x), -tf.reduce_max(x)])
        if tf.distribute.get_strategy().num_replicas_in_sync > 1:
            context = tf.distribute.get_replica_context()
            extremes = tf.reduce_min(context.all_gather(extremes[None], axis=0), axis=0)
        self._input_min.assign(tf.minimum(self._input_min, extremes[0]))
        self._input_max.assign(tf.maximum(self._input_max, -extremes[1]))

    @property
    def penalty_method(self) -> str:
        """The exact method `penalty` resolves to for this encoder (`"auto"` resolved)."""
        if self._penalty_method is None:
            method = penalties.resolve_method(self.encoder, self.penalty, training=True)
            if self.penalty == "auto" and method == "batch_jacobian" and self._computes_penalty():
                # Once per model, before the first step: what the exact fallback costs.
                logger.warning(
                    auto_fallback_notice(
                        self.encoder,
                        self.decoder,
                        built_input_shape(self.encoder),
                        closed_form_error(self.encoder, training=True) or "",
                        self.num_projections,
                    )
                )
            elif self.penalty == "auto":
                logger.info("keras_cae: penalty='auto' uses %r for this encoder.", method)
            self._penalty_method = method
        return self._penalty_method

    # ----------------------------------------------------------------------------------
    # Training and evaluation.

    def compile(self, optimizer: Any = "adam", loss: Any = None, **kwargs: Any) -> None:
        """Configures the model for training, as `keras.Model.compile`.

        Args:
            optimizer: as in `keras.Model.compile`. Defaults to `"adam"`.
            loss: the reconstruction loss. Defaults to `"mean_squared_error"`.
            **kwargs: passed to `keras.Model.compile` (`metrics`, `jit_compile`, ...).
        """
        super().compile(
            optimizer=optimizer,
            loss="mean_squared_error" if loss is None else loss,
            **kwargs,
        )
        if self.built and self.optimizer is not None and not self.optimizer.built:
            # A built model saved before training then holds its optimizer's slots, and
            # reloads (whose optimizer is built at compile) find every variable.
            self.optimizer.build(self.trainable_variables)
        self._check_jit_compile()

    def compile_from_config(self, config: dict[str, Any]) -> None:
        """Restores the compile state saved in a `.keras` file (our `compile` is Keras's)."""
        self.compile(**keras.saving.deserialize_keras_object(config))

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> Any:
        """The compiled reconstruction loss; the targets `y` default to the inputs `x`.

        Keras calls this with ``y=None`` when it builds the loss of a model compiled
        under a `tf.distribute` strategy, so the default must hold here too.
        """
        return super().compute_loss(
            x, x if y is None else y, y_pred, sample_weight, training=training
        )

    def _check_jit_compile(self) -> None:
        """Turns XLA off, with a warning, where it makes the train step slower."""
        if not getattr(self, "compiled", False) or getattr(self, "jit_compile", None) is not True:
            return
        if not self.encoder.built:
            return
        corrupts = self.corruption is not None and self.corruption_level > 0
        method = self.penalty_method if self._computes_penalty() else None
        reason = xla_slowdown(method, corrupts)
        if reason is not None:
            warnings.warn(
                f"jit_compile=True was turned off for this ContractiveAutoencoder: {reason} "
                "To force XLA anyway, set `model.jit_compile = True` after compile().",
                UserWarning,
                stacklevel=3,
            )
            self.jit_compile = False

    def _computes_penalty(self) -> bool:
        return self.contractive_weight > 0 or self.hessian_weight > 0

    def _corrupt(self, x: tf.Tensor) -> tf.Tensor:
        if self.corruption is None or self.corruption_level == 0:
            return x
        # Under tf.distribute, each replica takes its rows of the global batch's noise.
        if self.corruption == "gaussian":
            level, seed = self.corruption_level, self.seed_generator
            noise = replica_random(
                lambda s: keras.random.normal(s, stddev=level, seed=seed), tf.shape(x)
            )
            return x + tf.cast(noise, x.dtype)
        keep = replica_random(
            lambda s: keras.random.uniform(s, seed=self.seed_generator), tf.shape(x)
        )
        return x * tf.cast(keep >= self.corruption_level, x.dtype)

    def _forward_with_penalties(
        self, x: Any, training: bool, compute_penalty: bool
    ) -> tuple[Any, tf.Tensor | None, tf.Tensor | None]:
        """Returns the reconstruction and the per-sample penalties (None if skipped)."""
        if not compute_penalty:
            return self(x, training=training), None, None
        x = tf.convert_to_tensor(x)
        code, contractive = penalties.code_and_penalty(
            self.encoder,
            x,
            self.penalty_method,
            training=training,
            num_projections=self.num_projections,
            probe_distribution=self.probe_distribution,
            seed=self.seed_generator,
        )
        hessian = None
        if self.hessian_weight > 0:
            hessian = penalties.hessian_penalty(
                self.encoder,
                x,
                self.penalty_method,
                noise_stddev=self.hessian_noise_stddev,
                num_samples=self.hessian_samples,
                training=training,
                num_projections=self.num_projections,
                probe_distribution=self.probe_distribution,
                seed=self.seed_generator,
            )
        return self.decoder(code, training=training), contractive, hessian

    def _compute_terms(
        self, x: Any, y: Any, sample_weight: Any, training: bool
    ) -> tuple[tf.Tensor, Any, dict[str, tf.Tensor]]:
        """Returns the replica-scaled total loss, the reconstruction, and unscaled terms."""
        if y is None:
            y = x
        compute_penalty = self._computes_penalty() or not training
        inputs = self._corrupt(x) if training else x
        reconstruction, contractive, hessian = self._forward_with_penalties(
            inputs, training, compute_penalty
        )
        reconstruction_loss = self.compute_loss(
            x=x, y=y, y_pred=reconstruction, sample_weight=sample_weight, training=training
        )
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        share = replica_share(tf.shape(x)[0])
        # Keras divided its per-replica mean by the replica count; undo that, then
        # weight every term by this replica's share of the global batch.
        local_reconstruction = (
            reconstruction_loss * replicas if replicas > 1 else reconstruction_loss
        )
        terms = {"reconstruction_loss": local_reconstruction}
        local_total = local_reconstruction
        if contractive is not None:
            contractive_mean = _weighted_mean(contractive, sample_weight)
            terms["contractive_loss"] = contractive_mean
            if self.contractive_weight > 0:
                local_total = local_total + tf.cast(
                    self.contractive_weight * contractive_mean, local_total.dtype
                )
        if hessian is not None:
            hessian_mean = _weighted_mean(hessian, sample_weight)
            terms["hessian_loss"] = hessian_mean
            local_total = local_total + tf.cast(
                self.hessian_weight * hessian_mean, local_total.dtype
            )
        terms["loss"] = local_total
        total = local_total if share is None else local_total * tf.cast(share, local_total.dtype)
        return total, reconstruction, terms

    def _update_trackers(self, total: tf.Tensor, terms: dict[str, tf.Tensor], batch: Any) -> None:
        trackers = {
            "loss": self.total_loss_tracker,
            "reconstruction_loss": self.reconstruction_loss_tracker,
            "contractive_loss": self.contractive_loss_tracker,
            "hessian_loss": self.hessian_loss_tracker,
        }
        for name, value in terms.items():
            trackers[name].update_state(value, sample_weight=batch)

    def _logs(self, logs: dict[str, Any], training: bool) -> dict[str, Any]:
        if training and not self.contractive_weight > 0:
            logs.pop("contractive_loss", None)
        if not self.hessian_weight > 0:
            logs.pop("hessian_loss", None)
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            # Keras 3 reduces step logs with strategy.reduce("MEAN", v, axis=0), which
            # fails for scalars under MultiWorkerMirroredStrategy ("Invalid reduction
            # dimension 0", tensorflow/tensorflow#72388); shape (1,) reduces to a scalar.
            logs = {name: tf.reshape(value, [1]) for name, value in logs.items()}
        return logs

    def train_step(self, data: Any) -> dict[str, Any]:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        self._build_for((None, *x.shape[1:]))
        self._record_input_range(x)
        with tf.GradientTape() as tape:
            total, reconstruction, terms = self._compute_terms(x, y, sample_weight, training=True)
            scaled = self.optimizer.scale_loss(total)
        gradients = tape.gradient(scaled, self.trainable_weights)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_weights))
        self._update_trackers(total, terms, tf.shape(x)[0])
        logs = self.compute_metrics(x, x if y is None else y, reconstruction, sample_weight)
        return self._logs(logs, training=True)

    def test_step(self, data: Any) -> dict[str, Any]:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        self._build_for((None, *x.shape[1:]))
        total, reconstruction, terms = self._compute_terms(x, y, sample_weight, training=False)
        self._update_trackers(total, terms, tf.shape(x)[0])
        logs = self.compute_metrics(x, x if y is None else y, reconstruction, sample_weight)
        return self._logs(logs, training=False)

    def _own_trackers(self) -> list[keras.metrics.Metric]:
        return [
            self.total_loss_tracker,
            self.reconstruction_loss_tracker,
            self.contractive_loss_tracker,
            self.hessian_loss_tracker,
        ]

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        # Keras's own "loss" tracker, never updated by these steps, is left out: its
        # result would replace ours under the same name in the logs.
        own = self._own_trackers()
        rest = [m for m in super().metrics if m.name != "loss" and all(m is not o for o in own)]
        return own + rest

    def get_metrics_result(self) -> dict[str, Any]:
        """As `keras.Model.get_metrics_result`, without terms not computed since the last reset.

        Keras reports these results (summed over replicas) as the epoch logs only when
        their names match the step logs, which leave out terms that are not computed
        (`_logs`); otherwise it reports the last step's mean of per-replica means,
        which is wrong for an uneven last batch under `tf.distribute`.
        """
        results = super().get_metrics_result()
        if tf.executing_eagerly():  # Between steps; inside a step `_logs` does this.
            for tracker in (self.contractive_loss_tracker, self.hessian_loss_tracker):
                if not float(tracker.count.numpy()) > 0:
                    results.pop(tracker.name, None)
        return results

    def fit(self, x: Any = None, y: Any = None, *args: Any, **kwargs: Any) -> Any:
        """Trains the model, as `keras.Model.fit`; `y` defaults to `x`.

        NumPy inputs take the encoder's input shape by `keras_cae.data.to_model_input`'s
        rule, the one `keras-cae encode` and `OnnxEncoder` apply: ``(n, 28, 28)`` images
        train a Dense encoder built on 784 inputs (so do `evaluate` and `predict`, whose
        reconstructions are then flat). They are checked before training starts: rows
        with NaN or infinite values, or samples that neither match nor flatten to the
        encoder input, raise `ValueError`, and so does a `batch_size` that the replicas
        of a `tf.distribute` strategy cannot share evenly. Other inputs (`tf.data`) must
        already have the encoder's input shape.
        """
        x, y, validation_data = check_data(self.encoder, x, y, kwargs.get("validation_data"))
        if validation_data is not None:
            kwargs["validation_data"] = validation_data
        check_batch_size(self.distribute_strategy, x, args[0] if args else kwargs.get("batch_size"))
        self._build_for(data_input_shape(x))
        if self.built and self._computes_penalty():
            self.penalty_method  # noqa: B018  (resolves "auto", and says so, before training)
        return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x: Any = None, y: Any = None, *args: Any, **kwargs: Any) -> Any:
        """Evaluates the model, as `keras.Model.evaluate`; `y` defaults to `x`."""
        x, y, _ = check_data(self.encoder, x, y)
        self._build_for(data_input_shape(x))
        return super().evaluate(x, y, *args, **kwargs)

    def predict(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        """Returns reconstructions, as `keras.Model.predict`; `x` builds the model.

        Built here rather than on the first call, the model records a dynamic batch
        axis (`(None, ...)`), as after `fit`.
        """
        x = check_array(self.encoder, "x", x, check_values=False)
        self._build_for(data_input_shape(x))
        return super().predict(x, *args, **kwargs)

    # ----------------------------------------------------------------------------------
    # Serialization.

    def save_own_variables(self, store: Any) -> None:
        """Saves the model's own state, including the noise generator's.

        Keras does not save `SeedGenerator` states; without this a run resumed by
        `keras.callbacks.BackupAndRestore` would replay the noise (corruption,
        probes, CAE+H) of its first epochs and differ from an uninterrupted run.
        """
        super().save_own_variables(store)
        store[_SEED_STATE_KEY] = self.seed_generator.state.value.numpy()
        store[_INPUT_RANGE_KEY] = np.array(
            [self._input_min.numpy(), self._input_max.numpy()], dtype=np.float32
        )

    def load_own_variables(self, store: Any) -> None:
        """Loads what `save_own_variables` saved (files without the seed state load too,
        and files without the input range, which then stays unknown)."""
        if _SEED_STATE_KEY in store:
            self.seed_generator.state.assign(store[_SEED_STATE_KEY])
        if _INPUT_RANGE_KEY in store:
            low, high = np.asarray(store[_INPUT_RANGE_KEY], dtype=np.float32)
            self._input_min.assign(low)
            self._input_max.assign(high)
        own = (_SEED_STATE_KEY, _INPUT_RANGE_KEY)
        super().load_own_variables({key: store[key] for key in store.keys() if key not in own})

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "encoder": keras.saving.serialize_keras_object(self.encoder),
                "decoder": keras.saving.serialize_keras_object(self.decoder),
                "contractive_weight": self.contractive_weight,
                "penalty": self.penalty,
                "num_projections": self.num_projections,
                "probe_distribution": self.probe_distribution,
                "hessian_weight": self.hessian_weight,
                "hessian_noise_stddev": self.hessian_noise_stddev,
                "hessian_samples": self.hessian_samples,
                "corruption": self.corruption,
                "corruption_level": self.corruption_level,
                "seed": self.seed,
            }
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ContractiveAutoencoder:
        # A deep copy: deserializing a Functional model empties its config in place.
        config = copy.deepcopy(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        config["decoder"] = keras.saving.deserialize_keras_object(config["decoder"])
        return cls(**config)
