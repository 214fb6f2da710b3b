"""The variational autoencoder model."""

import copy
import hashlib
import inspect
import json
import sys

import keras
import numpy as np
from keras import ops

from keras_vae import (
    _compilation_cache,
    _data_checks,
    _fit_callbacks,
    _fused_training,
    _inference,
    _keras_internals,
    _validation,
    distribute,
    likelihoods,
    priors,
)

# exp(log_var) stays a normal float32 number inside this range, whatever the
# encoder outputs, so no input can produce inf or NaN in the KL term.
LOG_VAR_BOUNDS = (-20.0, 10.0)
_SUPPORTED_BACKENDS = ("tensorflow", "jax")
# Training defaults of `compile(steps_per_execution="auto",
# jit_compile="auto")`, chosen from `make bench` (benchmarks/results.md):
# 32 steps per execution remove most of the per-step Python work of `fit`;
# XLA fuses the loss and the optimizer update but costs seconds of
# compilation, so it is used for fits long enough to earn that back, and
# for any fit whose program the persistent XLA cache already holds
# (`_compilation_cache.compiled_before`): loading it costs less than
# tracing the plain step. Measured on the MLP VAE (784-512-256-16, batch
# 128, 2 cores; `benchmarks/train_speed.py --whole-fit`): a first-ever
# 320-step fit takes as long with XLA (compiling) as without, and every
# later one is about 30% shorter with it; 32 steps cost about a second
# more with a cold compilation and a second less with a warm one.
DEFAULT_STEPS_PER_EXECUTION = 32
XLA_MIN_STEPS = 300
_OWN_METRICS = ("loss", "reconstruction_loss", "kl_loss", "elbo")
# Layers that only move values around: the activation before them is the
# decoder's last one.
_SHAPE_LAYERS = (
    keras.layers.Reshape, keras.layers.Flatten, keras.layers.Permute,
    keras.layers.Cropping1D, keras.layers.Cropping2D, keras.layers.Cropping3D,
    keras.layers.Identity,
)


def _planned_steps(x, batch_size, epochs, initial_epoch, steps_per_epoch,
                   validation_split):
    """Training steps a `fit` call will run, or None when unknown."""
    if isinstance(x, dict) and x:
        x = next(iter(x.values()))
    elif isinstance(x, (list, tuple)) and x and hasattr(x[0], "shape"):
        x = x[0]  # several inputs (e.g. images and labels): count examples
    if steps_per_epoch is None:
        if isinstance(x, np.ndarray):
            examples = int(len(x) * (1.0 - (validation_split or 0.0)))
            steps_per_epoch = -(-examples // (batch_size or 32))
        elif hasattr(x, "cardinality"):  # tf.data.Dataset
            cardinality = int(x.cardinality())
            steps_per_epoch = cardinality if cardinality >= 0 else None
        elif hasattr(x, "__len__"):
            steps_per_epoch = len(x)
    if steps_per_epoch is None:
        return None
    return steps_per_epoch * max(int(epochs) - int(initial_epoch), 0)


def _explicit_options(options):
    """`fit` options that differ from Keras' defaults (arrays compare as set)."""
    defaults = inspect.signature(keras.Model.fit).parameters
    explicit = {}
    for key, value in options.items():
        default = defaults[key].default
        if value is None and default is None:
            continue
        if isinstance(value, (bool, int, float, str)) and type(value) is type(
            default
        ) and value == default:
            continue
        explicit[key] = value
    return explicit


def _final_activation(model):
    """Name of the last activation of a functional model's first output."""
    operation = _keras_internals.producing_operation(model.outputs[0])
    for _ in range(100):  # bounded walk back through nested models
        if isinstance(operation, keras.Model) and operation.outputs:
            operation = _keras_internals.producing_operation(
                operation.outputs[0])
        elif isinstance(operation, _SHAPE_LAYERS):
            try:
                operation = _keras_internals.producing_operation(
                    operation.input)
            except (AttributeError, ValueError):  # a layer used twice
                return None
        else:
            break
    activation = getattr(operation, "activation", None)
    return getattr(activation, "__name__", None)


def _posterior_layout(encoder):
    """Latent size of an encoder with 2, 3 or 1 outputs (see `VAE`)."""
    outputs = encoder.outputs or []
    if len(outputs) in (2, 3):
        sizes = {tensor.shape[-1] for tensor in outputs}
        if len(sizes) == 1:
            return int(outputs[0].shape[-1])
    elif len(outputs) == 1 and outputs[0].shape[-1] and (
        outputs[0].shape[-1] % 2 == 0
    ) and len(outputs[0].shape) == 2:
        return int(outputs[0].shape[-1]) // 2
    raise ValueError(
        "Expected `encoder` to have two outputs, `[z_mean, z_log_var]`, "
        "three, `[z_mean, z_log_var, z]` (the sample is ignored), or one "
        "output of size 2 * latent_dim (split in half: z_mean, then "
        f"z_log_var). Received: encoder with outputs={encoder.outputs}"
    )


def _resolve_metric(identifier):
    """A `keras.metrics.Metric` from a name, a config, a function or one."""
    metric = keras.metrics.get(identifier)
    if isinstance(metric, keras.metrics.Metric):
        if isinstance(identifier, str):
            metric.name = identifier  # logged as given, as Keras does
        return metric
    if callable(metric):
        name = identifier if isinstance(identifier, str) else getattr(
            metric, "__name__", "metric")
        return keras.metrics.MeanMetricWrapper(metric, name=name)
    raise ValueError(
        "Expected each metric to be a name (e.g. 'mae'), a function "
        f"`f(x, x_reconstructed)` or a `keras.metrics.Metric`. Received: "
        f"metrics entry {identifier!r}"
    )


def _reconstruction_metrics(metrics, weighted_metrics):
    """`[(metric, weighted)]` for `compile(metrics=..., weighted_metrics=...)`."""
    found = []
    for argument, weighted in (("metrics", False), ("weighted_metrics", True)):
        entries = metrics if argument == "metrics" else weighted_metrics
        if entries is None:
            continue
        if not isinstance(entries, (list, tuple)):
            entries = [entries]
        for entry in entries:
            if isinstance(entry, (list, tuple)) or (
                isinstance(entry, dict) and "class_name" not in entry
            ):
                raise ValueError(
                    f"A VAE has one output, the reconstruction: pass "
                    f"`{argument}` as one flat list, e.g. "
                    f"`{argument}=['mae']`. Received: {argument}={entries!r}"
                )
            found.append((_resolve_metric(entry), weighted))
    names = [metric.name for metric, _ in found]
    for name in names:
        if name in _OWN_METRICS or names.count(name) > 1:
            raise ValueError(
                f"Metric names must be unique and differ from the VAE's own "
                f"{list(_OWN_METRICS)}. Received: metric name {name!r}"
            )
    return found


class _RunState:
    """Per-`compile`/`fit` settings that must not be saved with the model."""

    def __init__(self):
        # [(metric, weighted)] from `compile(metrics=, weighted_metrics=)`.
        self.extra_metrics = []
        # Streaming input checked inside the compiled steps: argument name
        # per function ("train", "test") or None; bool for "predict".
        self.checks = {"train": None, "test": None, "predict": False}
        self.data_check = None


@keras.saving.register_keras_serializable(package="keras_vae")
class VAE(keras.Model):
    """Variational autoencoder trained with `fit` on the negative ELBO.

    Wraps a functional `encoder` (x -> posterior parameters) and a
    functional `decoder` (z -> parameters of p(x | z), e.g. Bernoulli
    logits). `train_step` minimises `mean(reconstruction + beta * kl)` with a
    single reparameterised sample per example; `test_step` reports the same
    terms. Tracked metrics are `loss`, `reconstruction_loss`, `kl_loss` and
    `elbo`, the evidence lower bound with beta = 1 in nats per example
    (higher is better; `-elbo` is the negative ELBO usually quoted for
    MNIST), so runs with different beta compare honestly. `elbo` is declared
    better-higher, so `ModelCheckpoint(monitor="val_elbo")` and
    `EarlyStopping` need no `mode=`; `compile(metrics=["mae", ...])` adds
    metrics of the reconstruction through the posterior mean against x.

    The encoder may return `[z_mean, z_log_var]`, the keras.io example's
    `[z_mean, z_log_var, z]` (the sample `z` is ignored: the model draws its
    own) or, as in the TensorFlow CVAE tutorial, one tensor of size
    `2 * latent_dim` that is split in half (`z_mean` first). A decoder that
    ends in a sigmoid emits probabilities: with `likelihood="bernoulli"`
    the model then uses `Bernoulli(from_logits=False)`; linear outputs
    (logits) remain the recommended form.

    `fit` and `evaluate` honour `sample_weight` (a weighted mean of the
    per-example terms; a weight of 0 removes an example) and, for a
    conditional model, `class_weight`. Arrays (numpy, lists, TensorFlow and
    JAX tensors, pandas objects) are validated before anything runs;
    streaming input (`tf.data`, generators) is checked batch by batch inside
    the compiled step, and the first bad batch raises a `ValueError`.

    `call(x)` returns the reconstruction through the posterior mean, so
    `predict` and `export` work on the model as a whole.

    Args:
        encoder: `keras.Model`. Maps x to `[z_mean, z_log_var]` (or the
            forms above).
        decoder: `keras.Model`. Maps z to the likelihood parameters.
        likelihood: str or `keras_vae.likelihoods.Likelihood`.
            `"bernoulli"` (default), `"gaussian"`, `"gaussian_global"`,
            `"gaussian_per_pixel"` or an instance.
        beta: float >= 0. Weight of the KL term in the training loss. Kept
            in the non-trainable variable `model.beta_variable` so callbacks
            (KL warm-up) can change it during `fit`.
        free_bits: float >= 0. Free bits in nats per latent dimension: the
            training KL of each dimension, averaged over the batch, is not
            pushed below this value. Changes the training loss only.
        prior: str or `keras_vae.priors.Prior`. Defaults to the standard
            normal.
        seed: int or None. Seed of the sampling noise.
        train_step_hooks: list of train-step hooks or None. Layers that
            change variables inside `train_step` (pruning masks, ...); see
            `add_train_step_hook`. Saved with the model.

    Example:

    >>> import keras, numpy as np, keras_vae
    >>> model = keras_vae.models.mlp_vae((8, 8, 1), latent_dim=2,
    ...                                  hidden_units=(16,))
    >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
    >>> x = np.random.default_rng(0).uniform(size=(32, 8, 8, 1))
    >>> history = model.fit(x.astype("float32"), epochs=1, verbose=0)
    >>> sorted(history.history)
    ['elbo', 'kl_loss', 'loss', 'reconstruction_loss']
    """

    def __init__(
        self,
        encoder,
        decoder,
        likelihood="bernoulli",
        beta=1.0,
        free_bits=0.0,
        prior="standard_normal",
        seed=None,
        train_step_hooks=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if keras.backend.backend() not in _SUPPORTED_BACKENDS:
            raise ValueError(
                "keras_vae trains on the TensorFlow and JAX backends. Set "
                "KERAS_BACKEND=tensorflow or KERAS_BACKEND=jax before "
                f"importing keras. Received: backend={keras.backend.backend()!r}"
            )
        for name, value in (("encoder", encoder), ("decoder", decoder)):
            if not isinstance(value, keras.Model):
                raise ValueError(
                    f"Expected `{name}` to be a `keras.Model`. Build one with "
                    "the functional API or use `keras_vae.models.mlp_vae`. "
                    f"Received: {name}={value!r}"
                )
        latent_dim = _posterior_layout(encoder)
        decoder_latent = (decoder.inputs or [None])[0]
        if decoder_latent is None or decoder_latent.shape[-1] != latent_dim:
            raise ValueError(
                f"The encoder gives codes of size {latent_dim} but the decoder "
                "takes z of another size. An encoder has two outputs, "
                "`[z_mean, z_log_var]`, three `[z_mean, z_log_var, z]`, or "
                "one of size 2 * latent_dim. Received: decoder with inputs="
                f"{[tuple(t.shape) for t in decoder.inputs or []]}"
            )
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihoods.get(likelihood).matched_to_decoder(
            _final_activation(decoder), adapt=isinstance(likelihood, str)
        )
        self.prior = priors.get(prior)
        self._initial_beta = _validation.check_non_negative(beta, "beta")
        self.free_bits = _validation.check_non_negative(free_bits, "free_bits")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.beta_variable = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(self._initial_beta),
            trainable=False,
            name="beta",
        )
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_loss_tracker = keras.metrics.Mean(
            name="reconstruction_loss"
        )
        self.kl_loss_tracker = keras.metrics.Mean(name="kl_loss")
        self.elbo_tracker = keras.metrics.Mean(name="elbo")
        for tracker in self.metrics:
            _keras_internals.set_metric_direction(
                tracker, "up" if tracker is self.elbo_tracker else "down")
        self._run = _RunState()
        self.train_step_hooks = []
        # The build shapes are the serving signature of `export`: all the
        # encoder's inputs (a conditional model also takes a label).
        shapes = [tensor.shape for tensor in self.encoder.inputs]
        self.build(shapes[0] if len(shapes) == 1 else shapes)
        for hook in train_step_hooks or ():
            self.add_train_step_hook(hook)

    # ------------------------------------------------------------------ shape
    @property
    def input_spec_shape(self):
        """Per-example input shape `(h, w, c)`, `(features,)`, ..."""
        return tuple(self.encoder.inputs[0].shape[1:])

    @property
    def latent_dim(self):
        """int. Size of the latent code."""
        return _posterior_layout(self.encoder)

    @property
    def beta(self):
        """float. Current KL weight (read from `beta_variable`)."""
        return float(ops.convert_to_numpy(self.beta_variable))

    @beta.setter
    def beta(self, value):
        value = _validation.check_non_negative(value, "beta")
        _keras_internals.sync_jax_state(self)
        self.beta_variable.assign(value)

    def build(self, input_shape=None):
        if self.built:
            return
        params_shape = self.decoder.outputs[0].shape
        if not self.likelihood.built:
            self.likelihood.build(params_shape)
        if not self.prior.built:
            self.prior.build((None, self.latent_dim))
        self.built = True

    # ------------------------------------------------------- conditioning
    #: int or None. Number of classes of a conditional model; None here.
    num_classes = None

    @property
    def is_conditional(self):
        """bool. True when the encoder and decoder also take a class label."""
        return self.num_classes is not None

    def prepare_labels(self, labels, num_examples, name="labels"):
        """Validated labels for `num_examples` examples, as the model wants them.

        An unconditional model takes no labels: `None` is returned as is and
        anything else raises `ValueError`. A conditional model
        (`keras_vae.CVAE`) returns float32 one-hot labels.

        Args:
            labels: None, or class labels: an int (one class for all),
                integer ids `(n,)` or `(n, 1)`, or one-hot
                `(n, num_classes)`, in any array form.
            num_examples: int. Number of examples the labels go with.
            name: str. Argument name used in error messages.
        """
        if self.is_conditional:
            return _validation.one_hot_labels(
                labels, num_examples, self.num_classes, name)
        if labels is not None:
            raise ValueError(
                f"`{name}` is only used by a conditional model "
                "(keras_vae.CVAE); drop it for this model. Received: "
                f"{name} for {type(self).__name__} {self.name!r}"
            )
        return None

    def _label_tensor(self, labels):
        """Labels as the sub-models take them: float one-hot, or None."""
        if not self.is_conditional or labels is None:
            return self.prepare_labels(labels, 0)
        labels = ops.convert_to_tensor(labels)
        if len(labels.shape) == 2 and labels.shape[-1] == self.num_classes and (
            self.num_classes > 1
        ):
            return ops.cast(labels, "float32")
        if len(labels.shape) == 2:
            labels = ops.squeeze(labels, axis=-1)
        return ops.one_hot(ops.cast(labels, "int32"), self.num_classes)

    def _encoder_inputs(self, x, labels):
        """What the encoder takes: `x`, or `[x, labels]` with labels."""
        return x if labels is None else [ops.convert_to_tensor(x), labels]

    def _decoder_inputs(self, z, labels):
        """What the decoder takes: `z`, or `[z, labels]` with labels."""
        return z if labels is None else [ops.convert_to_tensor(z), labels]

    def _split_inputs(self, inputs):
        """`(x, labels)` from what `call` gets; a VAE takes x alone."""
        return inputs, None

    def _unpack_data(self, data):
        """`(x, labels, sample_weight)` of a batch from `fit`'s data.

        An unconditional model ignores targets, so the same `(x, y)`
        dataset serves a VAE and a CVAE.
        """
        x, _, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        return x, None, sample_weight

    # ----------------------------------------------------------- the model
    def posterior(self, x, labels=None, training=False):
        """Parameters `(z_mean, z_log_var)` of q(z | x) as tensors.

        The unvalidated building block under `encode`, for code that works
        on tensors (metrics, export, compression): `z_log_var` is clipped to
        `LOG_VAR_BOUNDS`. A conditional model also needs `labels` (one-hot,
        as returned by `prepare_labels`, or integer ids).

        Args:
            x: tensor `(batch, *input_shape)`.
            labels: None, or labels for a conditional model.
            training: bool. Training mode of the encoder's layers.
        """
        labels = self._label_tensor(labels)
        outputs = self.encoder(self._encoder_inputs(x, labels),
                               training=training)
        if isinstance(outputs, (list, tuple)):
            z_mean, z_log_var = outputs[0], outputs[1]  # a sample z: unused
        else:
            z_mean, z_log_var = ops.split(outputs, 2, axis=-1)
        return z_mean, ops.clip(z_log_var, *LOG_VAR_BOUNDS)

    def decoder_params(self, z, labels=None, training=False):
        """Parameters of p(x | z) (e.g. Bernoulli logits) as a tensor.

        Args:
            z: tensor `(batch, latent_dim)`.
            labels: None, or labels for a conditional model.
            training: bool. Training mode of the decoder's layers.
        """
        labels = self._label_tensor(labels)
        return self.decoder(self._decoder_inputs(z, labels), training=training)

    def _reconstruction(self, x, labels=None, training=False):
        """Mean of p(x | z) at the posterior mean of z."""
        z_mean, _ = self.posterior(x, labels, training=training)
        return self.likelihood.mean(
            self.decoder_params(z_mean, labels, training=training))

    # ------------------------------------------- validated, compiled calls
    def _inference(self, name, function, *args):
        functions = self.__dict__.get("_inference_functions")
        if functions is None:
            functions = _inference.InferenceFunctions(self)
            self.__dict__["_inference_functions"] = functions
        return functions(name, function, *args)

    def __setattr__(self, name, value):
        if name == "predict_function":
            # Whatever makes Keras trace `predict` again (compile, switching
            # fake quantization, a train-step hook) also retraces `encode`,
            # `decode`, `reconstruct` and `sample`.
            self.__dict__["_inference_functions"] = None
        super().__setattr__(name, value)

    def _checked_x(self, x, name="x"):
        """Validated float32 numpy data for the model, from any array form."""
        if not _validation.is_array_like(x) and x is not None:
            raise ValueError(
                f"`{name}` must be an array (numpy, list, tensor, DataFrame); "
                "for a dataset or generator use `predict`. Received: "
                f"{name} of type {type(x).__name__}"
            )
        return _validation.as_float_array(
            x, name, self.input_spec_shape, self.likelihood)

    def encode(self, x, labels=None):
        """Posterior parameters `(z_mean, z_log_var)` of q(z | x).

        Validates `x` (and, for a `CVAE`, `labels`), then runs a compiled
        function (traced once per input signature).

        Args:
            x: array `(batch, *input_shape)`: numpy, list, TensorFlow or JAX
                tensor, DataFrame.
            labels: class labels, required for a `CVAE` only.
        """
        if _validation.is_symbolic(x):
            return self.posterior(x, labels)
        x = self._checked_x(x)
        labels = self.prepare_labels(labels, len(x))
        return self._inference("encode", self.posterior, x, labels)

    def decode(self, z, labels=None):
        """Mean of p(x | z), e.g. pixel probabilities for Bernoulli.

        Args:
            z: array `(batch, latent_dim)`.
            labels: class labels, required for a `CVAE` only (an int for
                all codes, ids or one-hot).
        """
        if _validation.is_symbolic(z):
            return self.likelihood.mean(self.decoder_params(z, labels))
        if not _validation.is_array_like(z):
            raise ValueError(
                f"`z` must be an array `(batch, {self.latent_dim})`. "
                f"Received: z of type {type(z).__name__}"
            )
        z = _validation.as_float_array(z, "z", (self.latent_dim,))
        labels = self.prepare_labels(labels, len(z))
        return self._decode_codes(z, labels)

    def _decode_codes(self, z, labels):
        return self._inference("decode", self._decoded_mean, z, labels)

    def _decoded_mean(self, z, labels):
        return self.likelihood.mean(self.decoder_params(z, labels))

    def reconstruct(self, x, labels=None):
        """Reconstruction of `x` through the posterior mean.

        Args:
            x: array `(batch, *input_shape)`, in any array form.
            labels: class labels, required for a `CVAE` only.
        """
        if _validation.is_symbolic(x):
            return self._reconstruction(x, labels)
        x = self._checked_x(x)
        labels = self.prepare_labels(labels, len(x))
        return self._inference("reconstruct", self._reconstruction, x, labels)

    def sample(self, num_samples, seed=None, labels=None):
        """Draw `num_samples` decoded samples from the prior.

        Args:
            num_samples: int > 0.
            seed: int or None. The same int gives the same samples; None
                draws from the model's own `SeedGenerator`.
            labels: class labels, required for a `CVAE` only.
        """
        num_samples = _validation.check_positive_int(num_samples, "num_samples")
        labels = self.prepare_labels(labels, num_samples)
        noise_seed = self.seed_generator if seed is None else seed
        z = self.prior.sample(num_samples, self.latent_dim, seed=noise_seed)
        return self._decode_codes(z, labels)

    def call(self, inputs, training=False):
        x, labels = self._split_inputs(inputs)
        return self._reconstruction(x, labels, training=training)

    def compute_output_spec(self, inputs, training=False):
        # The mean of p(x | z) has the data's shape (the decoder's
        # parameters may have more per value).
        x, _ = self._split_inputs(inputs)
        return keras.KerasTensor(
            (x.shape[0], *self.input_spec_shape), dtype=self.compute_dtype)

    # ------------------------------------------------------------ the ELBO
    def compute_terms(self, x, training=False, seed=None):
        """Per-example ELBO terms with one reparameterised sample.

        Args:
            x: tensor `(batch, *input_shape)`; for a `CVAE` the pair
                `(x, labels)`.
            training: bool. Training mode of the layers.
            seed: None, int or `keras.random.SeedGenerator`. Noise seed.

        Returns a dict of tensors: `reconstruction` (batch,) the negative
        log-likelihood summed over data dimensions, `kl` (batch,) the KL to
        the prior, `kl_per_dim` (batch, latent or 1), `z_mean`,
        `z_log_var` and `z`.
        """
        x, labels = self._split_inputs(x)
        return self._terms(x, self._label_tensor(labels), training, seed)

    def _terms(self, x, labels, training, seed=None):
        z_mean, z_log_var = self.posterior(x, labels, training=training)
        return self._elbo_terms(
            x, z_mean, z_log_var,
            lambda z: self.decoder_params(z, labels, training=training), seed,
        )

    def _elbo_terms(self, x, z_mean, z_log_var, decode, seed=None):
        """The terms of `compute_terms` from the posterior and a decoder."""
        # An example's noise does not depend on how a tf.distribute
        # strategy splits the batch across replicas.
        noise = distribute.normal_for_global_batch(
            ops.shape(z_mean),
            dtype=z_mean.dtype,  # bfloat16/float16 under mixed precision
            seed=self.seed_generator if seed is None else seed,
        )
        z = z_mean + ops.exp(0.5 * z_log_var) * noise
        params = decode(z)
        reconstruction = self.likelihood.negative_log_prob(x, params)
        kl_per_dim = ops.cast(self.prior.kl(z_mean, z_log_var, z), "float32")
        return {
            "reconstruction": reconstruction,
            "kl": ops.sum(kl_per_dim, axis=-1),
            "kl_per_dim": kl_per_dim,
            "z_mean": z_mean,
            "z_log_var": z_log_var,
            "z": z,
        }

    @staticmethod
    def _mean(values, weights):
        """Mean over the batch axis, weighted by `weights` `(batch,)` if any."""
        if weights is None:
            return ops.mean(values, axis=0)
        weights = ops.reshape(weights, (-1,) + (1,) * (len(values.shape) - 1))
        return ops.divide_no_nan(
            ops.sum(weights * values, axis=0), ops.sum(weights))

    def _training_loss(self, terms, weights=None, training=True):
        reconstruction = self._mean(terms["reconstruction"], weights)
        if self.free_bits > 0.0:
            kl_per_dim = self._mean(terms["kl_per_dim"], weights)
            # A prior whose KL does not factorise reports one column, the
            # total: its floor is the budget of all latent dimensions.
            dims_per_column = self.latent_dim // kl_per_dim.shape[-1]
            kl = ops.sum(
                ops.maximum(kl_per_dim, self.free_bits * dims_per_column)
            )
        else:
            kl = self._mean(terms["kl"], weights)
        loss = reconstruction + ops.cast(self.beta_variable, "float32") * kl
        if training and self.losses:
            loss = loss + ops.cast(ops.sum(self.losses), "float32")
        return loss

    def _step(self, data, training, check_name=None):
        """Loss and metric updates of one batch (both backends).

        Returns `(loss, updates)`: `updates` maps a metric name to the
        arguments of its `update_state`.
        """
        x, labels, weights = self._unpack_data(data)
        if weights is not None:
            weights = ops.reshape(ops.cast(weights, "float32"), (-1,))
        updates = {}
        bad = None
        if check_name:
            codes = _data_checks.example_codes(
                x, labels, self.likelihood.data_bounds, self.num_classes)
            summary = _data_checks.batch_summary(x, codes)
            updates[_data_checks.LOG_KEY] = summary
            bad = summary[0] > 0
            x = _data_checks.sanitized(x, bad)
        labels = self._label_tensor(labels)
        terms = self._terms(x, labels, training)
        loss = self._training_loss(terms, weights, training)
        if bad is not None:
            loss = ops.where(bad, ops.zeros_like(loss), loss)
        # With weights, a batch counts by its total weight, so the epoch's
        # metrics are the weighted mean over all examples.
        batch_weight = None if weights is None else ops.sum(weights)
        reconstruction = self._mean(terms["reconstruction"], weights)
        kl = self._mean(terms["kl"], weights)
        updates.update({
            "loss": (loss, batch_weight),
            "reconstruction_loss": (reconstruction, batch_weight),
            "kl_loss": (kl, batch_weight),
            "elbo": (-(reconstruction + kl), batch_weight),
        })
        if self._run.extra_metrics:
            mean = ops.stop_gradient(
                self._reconstruction(x, labels, training=training))
            size = ops.shape(x)[0]
            flat_x = ops.reshape(ops.cast(x, "float32"), (size, -1))
            flat_mean = ops.reshape(ops.cast(mean, "float32"), (size, -1))
            for metric, weighted in self._run.extra_metrics:
                updates[metric.name] = (
                    flat_x, flat_mean, weights if weighted else None)
        return loss, updates

    @property
    def metrics(self):
        found = [
            self.loss_tracker,
            self.reconstruction_loss_tracker,
            self.kl_loss_tracker,
            self.elbo_tracker,
        ]
        run = self.__dict__.get("_run")
        if run is not None:
            found.extend(metric for metric, _ in run.extra_metrics)
            if run.data_check is not None:
                found.append(run.data_check)
        return found

    def _metric_directions(self):
        directions = {}
        for metric in self.metrics:
            direction = _keras_internals.metric_direction(metric)
            if direction is not None:
                directions[metric.name] = direction
        return directions

    # ------------------------------------------------------ train-step hooks
    def add_train_step_hook(self, hook):
        """Attach a layer whose variables change inside every train step.

        A hook is a `keras.layers.Layer` with three methods: `attach(model)`
        creates its variables (called once, here), `before_train_step()`
        runs before the forward pass and `after_apply()` right after the
        optimizer update. Both read and `assign` variables with `keras.ops`
        only, so they run compiled on TensorFlow and statelessly on JAX
        (inside a `keras.StatelessScope` over the step's new values). The
        hook is tracked by the model, so its variables are saved in
        `.keras` files and checkpoints, and it is part of `get_config`.
        Pruning (`keras_vae.compression.PruningCallback`) is built on it.

        Args:
            hook: `keras.layers.Layer` with `attach`, `before_train_step`
                and `after_apply` methods.
        """
        for method in ("attach", "before_train_step", "after_apply"):
            if not callable(getattr(hook, method, None)):
                raise ValueError(
                    f"Expected a train-step hook with an `{method}` method. "
                    f"Received: hook={hook!r}"
                )
        # A callback attaches its hook inside `fit`, maybe outside the
        # strategy's scope: its variables must still be mirrored.
        with distribute.model_scope(self):
            hook.attach(self)
        with _keras_internals.tracking_unlocked(self):
            self.train_step_hooks.append(hook)
        # Compiled steps were traced without the hook; trace them again.
        self.train_function = None
        self.predict_function = None

    def _run_train_step_hooks(self, method):
        for hook in self.train_step_hooks:
            getattr(hook, method)()

    def _stateless_train_step_hooks(self, method, trainable, non_trainable):
        if not self.train_step_hooks:
            return trainable, non_trainable
        mapping = list(zip(self.trainable_variables, trainable)) + list(
            zip(self.non_trainable_variables, non_trainable)
        )
        with keras.StatelessScope(state_mapping=mapping) as scope:
            self._run_train_step_hooks(method)
        trainable = [
            scope.get_current_value(v) for v in self.trainable_variables
        ]
        non_trainable = [
            scope.get_current_value(v) for v in self.non_trainable_variables
        ]
        return trainable, non_trainable

    # ----------------------------------------------- train/test per backend
    def train_step(self, *args):
        if keras.backend.backend() == "jax":
            return self._jax_train_step(*args)
        return self._tf_train_step(*args)

    def test_step(self, *args):
        if keras.backend.backend() == "jax":
            return self._jax_test_step(*args)
        return self._tf_test_step(*args)

    def predict_step(self, *args):
        if keras.backend.backend() == "jax":
            state, data = args
            trainable, non_trainable = state
            mapping = list(zip(self.trainable_variables, trainable)) + list(
                zip(self.non_trainable_variables, non_trainable))
            with keras.StatelessScope(state_mapping=mapping) as scope:
                outputs = self._predict_outputs(data)
            return outputs, [
                scope.get_current_value(v) for v in self.non_trainable_variables
            ]
        return self._predict_outputs(*args)

    def _predict_outputs(self, data):
        x, labels, _ = self._unpack_data(data)
        reconstruction = self._reconstruction(x, labels, training=False)
        if not self._run.checks["predict"]:
            return reconstruction
        codes = _data_checks.example_codes(
            x, labels, self.likelihood.data_bounds, self.num_classes)
        return {"reconstruction": reconstruction, _data_checks.LOG_KEY: codes}

    def _logs(self, updates):
        """The step's logs: every metric but an inactive data check."""
        return [
            metric for metric in self.metrics
            if metric.name != _data_checks.LOG_KEY
            or _data_checks.LOG_KEY in updates
        ]

    def _update_metrics(self, updates):
        for metric in self.metrics:
            if metric.name in updates:
                metric.update_state(*updates[metric.name])
        return {metric.name: metric.result() for metric in self._logs(updates)}

    def _tf_train_step(self, data):
        import tensorflow as tf

        self._run_train_step_hooks("before_train_step")
        with tf.GradientTape() as tape:
            loss, updates = self._step(
                data, training=True, check_name=self._run.checks["train"])
            # Under a tf.distribute strategy the optimizer sums the
            # replicas' gradients: each replica's share of the mean.
            scaled_loss = self.optimizer.scale_loss(
                distribute.loss_for_replicas(loss))
        gradients = tape.gradient(scaled_loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        self._run_train_step_hooks("after_apply")
        return self._update_metrics(updates)

    def _tf_test_step(self, data):
        _, updates = self._step(
            data, training=False, check_name=self._run.checks["test"])
        return self._update_metrics(updates)

    def _stateless_step(self, trainable, non_trainable, data, training):
        mapping = list(zip(self.trainable_variables, trainable)) + list(
            zip(self.non_trainable_variables, non_trainable)
        )
        check_name = self._run.checks["train" if training else "test"]
        with keras.StatelessScope(state_mapping=mapping) as scope:
            loss, updates = self._step(data, training, check_name)
        non_trainable = [
            scope.get_current_value(v) for v in self.non_trainable_variables
        ]
        return loss, (updates, non_trainable)

    def _stateless_update_metrics(self, metrics_variables, updates):
        new_variables = []
        logs = {}
        start = 0
        shown = self._logs(updates)
        for metric in self.metrics:
            count = len(metric.variables)
            variables = metrics_variables[start : start + count]
            start += count
            if metric.name in updates:
                variables = metric.stateless_update_state(
                    variables, *updates[metric.name])
            if metric in shown:
                logs[metric.name] = metric.stateless_result(variables)
            new_variables.extend(variables)
        return logs, new_variables

    def _jax_train_step(self, state, data):
        import jax

        (
            trainable,
            non_trainable,
            optimizer_variables,
            metrics_variables,
        ) = state
        trainable, non_trainable = self._stateless_train_step_hooks(
            "before_train_step", trainable, non_trainable
        )
        def scaled_step(trainable, non_trainable, data):
            # The loss scale of a `LossScaleOptimizer` (mixed_float16), as
            # Keras' JAX step applies it: `stateless_apply` unscales.
            loss, aux = self._stateless_step(trainable, non_trainable, data,
                                             True)
            mapping = list(zip(self.optimizer.variables, optimizer_variables))
            with keras.StatelessScope(state_mapping=mapping):
                return self.optimizer.scale_loss(loss), aux

        gradient_fn = jax.value_and_grad(scaled_step, has_aux=True)
        (_, (updates, non_trainable)), gradients = gradient_fn(
            trainable, non_trainable, data
        )
        trainable, optimizer_variables = self.optimizer.stateless_apply(
            optimizer_variables, gradients, trainable
        )
        trainable, non_trainable = self._stateless_train_step_hooks(
            "after_apply", trainable, non_trainable
        )
        logs, metrics_variables = self._stateless_update_metrics(
            metrics_variables, updates
        )
        return logs, (
            trainable,
            non_trainable,
            optimizer_variables,
            metrics_variables,
        )

    def _jax_test_step(self, state, data):
        trainable, non_trainable, metrics_variables = state
        _, (updates, non_trainable) = self._stateless_step(
            trainable, non_trainable, data, False
        )
        logs, metrics_variables = self._stateless_update_metrics(
            metrics_variables, updates
        )
        return logs, (trainable, non_trainable, metrics_variables)

    # ------------------------------------------------------ data for the loops
    def _split_pair(self, x, y):
        """A conditional model also takes `(x, labels)` as one argument."""
        if (self.is_conditional and y is None
                and isinstance(x, (tuple, list)) and len(x) == 2
                and all(_validation.is_array_like(part) for part in x)):
            return x[0], x[1]
        return x, y

    def _arrays(self, x, y, sample_weight, class_weight, name):
        """Validated `(x, one-hot labels or None, weights or None)`."""
        x, y = self._split_pair(x, y)
        x = _validation.as_float_array(
            x, name, self.input_spec_shape, self.likelihood)
        labels_name = "y" if name == "x" else f"{name}[1]"
        labels = self.prepare_labels(
            y if self.is_conditional else None, len(x), labels_name)
        weights = None
        if sample_weight is not None:
            weights = _validation.sample_weights(
                sample_weight, len(x),
                "sample_weight" if name == "x" else f"{name}[2]")
        if class_weight is not None:
            self._check_class_weight_possible(sample_weight)
            weights = _validation.class_sample_weights(class_weight, labels)
        return x, labels, weights

    def _check_class_weight_possible(self, sample_weight):
        if not self.is_conditional:
            raise ValueError(
                "`class_weight` weighs examples by their class label, which "
                "an unconditional VAE does not take. Weigh the examples with "
                "`sample_weight` instead. Received: class_weight for "
                f"{type(self).__name__} {self.name!r}"
            )
        if sample_weight is not None:
            raise ValueError(
                "Pass either `sample_weight` or `class_weight`, not both. "
                "Received: both"
            )

    @staticmethod
    def _keras_arrays(arrays):
        """`(x, y, sample_weight)` for Keras' array adapter."""
        x, labels, weights = arrays
        if weights is not None and labels is None:
            # Keras drops the weights of data without targets; an empty
            # target keeps them (an unconditional model ignores it).
            labels = np.zeros((len(x), 0), "float32")
        return x, labels, weights

    def _check_stream(self, data, name):
        """Check a streaming input before the loop; return it, re-iterable.

        The spec of a `tf.data.Dataset` and the first batch of any stream
        are checked here; every batch is checked in the compiled step.
        """
        if inspect.isgenerator(data):
            try:
                first = next(data)
            except StopIteration:
                raise ValueError(
                    f"`{name}` is an empty generator: it yielded no batch. "
                    f"Received: {name}={data!r}"
                ) from None
            self._check_first_batch(first, name)

            def restored(first=first, rest=data):
                yield first
                yield from rest

            return restored()
        if isinstance(data, keras.utils.PyDataset):
            if len(data):
                self._check_first_batch(data[0], name)
            return data
        try:
            import tensorflow as tf
        except ImportError:  # pragma: no cover - tensorflow is a dependency
            return data
        if isinstance(data, tf.data.Dataset):
            spec = data.element_spec
            if self.is_conditional and (
                not isinstance(spec, (tuple, list)) or len(spec) < 2
            ):
                raise ValueError(
                    "A conditional model needs class labels: the dataset "
                    "must yield `(x, y)` pairs, e.g. `keras_vae.datasets."
                    f"to_dataset(x, y=labels)`. Received: {name} with "
                    f"element_spec={spec}"
                )
            for batch in data.take(1):
                self._check_first_batch(
                    tf.nest.map_structure(lambda t: t.numpy(), batch), name)
        return data

    def _check_first_batch(self, batch, name):
        x, labels, _ = self._unpack_data(batch)
        x = _validation.as_float_array(
            x, f"{name} (first batch)", self.input_spec_shape, self.likelihood)
        if self.is_conditional:
            self.prepare_labels(labels, len(x), f"{name} labels (first batch)")

    def _prepare(self, x, y, sample_weight, class_weight, name):
        """Arrays as validated numpy `(x, labels, weights)`, or a stream.

        Returns `(arrays, stream)`: exactly one is not None.
        """
        pair_x, _ = self._split_pair(x, y)
        if x is None or _validation.is_array_like(pair_x) or isinstance(
                x, (str, bytes, dict)):
            return self._arrays(x, y, sample_weight, class_weight, name), None
        if class_weight is not None and not self.is_conditional:
            self._check_class_weight_possible(sample_weight)
        return None, self._check_stream(x, name)

    def _prepare_validation(self, validation_data):
        """`validation_data` checked, in the form Keras takes, and a flag.

        Returns `(validation_data, streaming)`.
        """
        if validation_data is None:
            return None, False
        name = "validation_data"
        if isinstance(validation_data, (tuple, list)) and (
            1 <= len(validation_data) <= 3
        ) and not (
            # A list `[x, labels]` of a conditional model is one input.
            isinstance(validation_data, list) and self.is_conditional
        ):
            parts = list(validation_data) + [None] * (3 - len(validation_data))
            arrays, stream = self._prepare(parts[0], parts[1], parts[2],
                                           None, name)
            if stream is not None:
                raise ValueError(
                    "`validation_data` as a tuple holds arrays `(x,)`, "
                    "`(x, y)` or `(x, y, sample_weight)`; pass a dataset on "
                    "its own. Received: validation_data with "
                    f"{type(parts[0]).__name__} inside"
                )
            return self._keras_arrays(arrays), False
        arrays, stream = self._prepare(validation_data, None, None, None, name)
        if stream is not None:
            return stream, True
        return self._keras_arrays(arrays), False

    def _set_checks(self, **checks):
        """Switch in-step checks of streaming input on or off; retrace.

        Args:
            **checks: `train`/`test`: name of the checked argument or None;
                `predict`: bool.
        """
        run = self._run
        for function, value in checks.items():
            if run.checks[function] != value:
                setattr(self, f"{function}_function", None)
                run.checks[function] = value
        active = bool(run.checks["train"] or run.checks["test"])
        if active != (run.data_check is not None):
            # The metrics change: every compiled step must be traced again.
            run.data_check = _data_checks.DataCheck() if active else None
            self.train_function = None
            self.test_function = None

    def _check_batch_size(self, value, name="batch_size"):
        # Keras treats 0 as "default" and crashes on floats and strings.
        _validation.check_optional_positive_int(value, name)

    # ------------------------------------------------------------- compile
    def compile(self, optimizer="rmsprop", loss=None, loss_weights=None,
                metrics=None, weighted_metrics=None, run_eagerly=False,
                steps_per_execution="auto", jit_compile="auto", **kwargs):
        """Configure training; the defaults are tuned for speed.

        Takes the arguments of `keras.Model.compile`. A VAE trains on its
        own loss, the negative ELBO, so `loss` and `loss_weights` are
        refused. `metrics` and `weighted_metrics` (names such as `"mae"`
        and `"mse"`, functions `f(x, x_reconstructed)` or
        `keras.metrics.Metric` objects) compare x with its reconstruction
        through the posterior mean and are logged beside `elbo`; weighted
        ones use `fit`'s `sample_weight`. Two defaults differ from Keras,
        both measured by `make bench` (benchmarks/results.md):

        Args:
            optimizer: str or `keras.optimizers.Optimizer`.
            metrics: list or None. Extra metrics of the reconstruction.
            weighted_metrics: list or None. The same, weighted by
                `sample_weight`.
            run_eagerly: bool. Run the steps eagerly (for debugging).
            steps_per_execution: int or `"auto"`. `"auto"` runs
                `DEFAULT_STEPS_PER_EXECUTION` (32) training steps per call
                into the compiled function, and 1 when a callback passed to
                `fit` needs every batch (a per-batch hook, on its class or
                set on the instance like `LambdaCallback`'s, and not known
                to act once per epoch), so such callbacks see every step
                with its own index.
            jit_compile: bool or `"auto"`. `"auto"` compiles the train step
                with XLA on the TensorFlow backend when the `fit` call runs
                at least `XLA_MIN_STEPS` (300) steps, or when the persistent
                XLA cache (`KERAS_VAE_COMPILATION_CACHE`) already holds the
                compiled program of this model, optimizer, data shape and
                batch size, and not otherwise: for a short first fit the
                seconds of XLA compilation would cost more than they save.
                On JAX every step is XLA-compiled.
            **kwargs: other arguments of `keras.Model.compile`.

        Example:

        >>> import keras, keras_vae
        >>> model = keras_vae.models.mlp_vae((8, 8, 1), latent_dim=2,
        ...                                  hidden_units=(16,))
        >>> model.compile(optimizer=keras.optimizers.Adam(1e-3),
        ...               metrics=["mae"])
        >>> model.steps_per_execution  # until `fit` chooses
        1
        """
        if loss is not None or loss_weights is not None:
            raise ValueError(
                "A VAE trains on its own loss, the negative ELBO; the "
                "likelihood (`likelihood=`) and `beta` shape it. Drop `loss` "
                "and `loss_weights`. Received: "
                f"loss={loss!r}, loss_weights={loss_weights!r}"
            )
        extra_metrics = _reconstruction_metrics(metrics, weighted_metrics)
        self._auto_steps_per_execution = steps_per_execution == "auto"
        self._auto_jit_compile = (
            jit_compile == "auto"
            and keras.backend.backend() == "tensorflow"
            and not run_eagerly
        )
        super().compile(
            optimizer=optimizer,
            run_eagerly=run_eagerly,
            steps_per_execution=(
                1 if self._auto_steps_per_execution else steps_per_execution
            ),
            jit_compile=False if self._auto_jit_compile else jit_compile,
            **kwargs,
        )
        self._run.extra_metrics = extra_metrics
        self.train_function = None
        self.test_function = None
        self.predict_function = None
        # Saved compile configs keep the metrics and "auto", so a loaded
        # model is compiled the same way and chooses again.
        _keras_internals.set_compile_config(
            self, metrics=metrics, weighted_metrics=weighted_metrics)
        if self._auto_steps_per_execution:
            _keras_internals.set_compile_config(
                self, steps_per_execution="auto"
            )
        if self._auto_jit_compile:
            _keras_internals.set_compile_config(self, jit_compile="auto")

    def compile_from_config(self, config):
        # Keras skips models whose `compile` is overridden; this one takes
        # the same arguments, so a loaded model is compiled as it was saved.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if getattr(self, "optimizer", None) is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def _choose_execution(self, x, args, kwargs, arrays=None):
        """Resolve the "auto" `compile` settings for this `fit` call.

        `arrays` are the numpy arrays a fused `fit` trains on, or None.
        Returns the key of the fused training program (`_program_key`), or
        None.
        """
        bound = inspect.signature(keras.Model.fit).bind(
            self, x, None, *args, **kwargs
        )
        options = dict(bound.arguments)
        changed = False
        if getattr(self, "_auto_steps_per_execution", False):
            callbacks = options.get("callbacks") or []
            steps = 1 if any(
                _fit_callbacks.needs_every_batch(c) for c in callbacks
            ) else DEFAULT_STEPS_PER_EXECUTION
            changed |= steps != self.steps_per_execution
            self.steps_per_execution = steps
        program = None
        if arrays is not None and getattr(self, "_auto_jit_compile", False):
            program = self._program_key(arrays, options.get("batch_size"))
        if getattr(self, "_auto_jit_compile", False):
            planned = _planned_steps(
                x, options.get("batch_size"), options.get("epochs", 1),
                options.get("initial_epoch", 0),
                options.get("steps_per_epoch"),
                options.get("validation_split", 0.0),
            )
            jit = (planned is None or planned >= XLA_MIN_STEPS
                   or (program is not None
                       and _compilation_cache.compiled_before(program)))
            changed |= jit != self.jit_compile
            self.jit_compile = jit
        # Numpy input under the "auto" settings (on JAX, where every step
        # is XLA-compiled, `steps_per_execution` alone): each execution's
        # steps run as one XLA computation (see `_fused_training`).
        fused_batch_size = None
        if (getattr(self, "_auto_steps_per_execution", False)
                and (getattr(self, "_auto_jit_compile", False)
                     or keras.backend.backend() == "jax")
                and isinstance(x, np.ndarray)):
            fused_batch_size = int(options.get("batch_size") or 32)
        changed |= fused_batch_size != getattr(self, "_fused_batch_size", None)
        self._fused_batch_size = fused_batch_size
        if changed:
            self.train_function = None
            self.test_function = None
            self.predict_function = None
        return program

    def make_train_function(self, force=False):
        if self.train_function is not None and not force:
            return self.train_function
        distribute.check_jit_compile(
            self, getattr(self, "_auto_jit_compile", False))
        super().make_train_function(force=True)
        if _fused_training.fused_training_supported(self):
            self.train_function = _fused_training.make_fused_train_function(
                self, self._fused_batch_size, fallback=self.train_function
            )
        if distribute.model_strategy(self) is not None:
            # Keras' loops fail under multi-replica tf.distribute strategies
            # (see keras_vae/distribute.py).
            self.train_function = distribute.make_replica_function(
                self, self.train_step, fallback=self.train_function)
        if self._run.checks["train"]:
            self.train_function = _data_checks.checked_function(
                self, self.train_function, self._run.checks["train"])
        return self.train_function

    def make_test_function(self, force=False):
        if self.test_function is not None and not force:
            return self.test_function
        distribute.check_jit_compile(
            self, getattr(self, "_auto_jit_compile", False))
        super().make_test_function(force=True)
        if distribute.model_strategy(self) is not None:
            self.test_function = distribute.make_replica_function(
                self, self.test_step, fallback=self.test_function)
        if self._run.checks["test"]:
            self.test_function = _data_checks.checked_function(
                self, self.test_function, self._run.checks["test"])
        return self.test_function

    # --------------------------------------------------------- the loops
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto",
            callbacks=None, validation_split=0.0, validation_data=None,
            shuffle=True, class_weight=None, sample_weight=None,
            initial_epoch=0, steps_per_epoch=None, validation_steps=None,
            validation_batch_size=None, validation_freq=1):
        """Train on the negative ELBO; `keras.Model.fit` with checked input.

        Arrays are validated before the first step and train on the fused
        path (see `compile`); `sample_weight` and (for a `CVAE`)
        `class_weight` weigh the examples. Streaming input is checked batch
        by batch. `validation_data` is checked before training, and its
        errors name it.
        """
        self._check_batch_size(batch_size)
        self._check_batch_size(validation_batch_size, "validation_batch_size")
        arrays, stream = self._prepare(x, y, sample_weight, class_weight, "x")
        validation_data, validation_streams = self._prepare_validation(
            validation_data)
        self._set_checks(
            train="x" if stream is not None else None,
            test="validation_data" if validation_streams else None,
        )
        _fit_callbacks.resolve_monitor_modes(
            callbacks, self._metric_directions())
        options = {
            "batch_size": batch_size, "epochs": epochs, "verbose": verbose,
            "callbacks": callbacks, "validation_split": validation_split,
            "validation_data": validation_data, "shuffle": shuffle,
            "initial_epoch": initial_epoch, "steps_per_epoch": steps_per_epoch,
            "validation_steps": validation_steps,
            "validation_batch_size": validation_batch_size,
            "validation_freq": validation_freq,
        }
        options = _explicit_options(options)
        if stream is not None:
            self._choose_execution(stream, (), options)
            return super().fit(stream, y, class_weight=class_weight,
                               sample_weight=sample_weight, **options)
        x, y, weights = self._keras_arrays(arrays)
        data = tuple(part for part in (x, y, weights) if part is not None)
        in_memory = _fused_training.can_use_in_memory_dataset(options)
        program = self._choose_execution(
            x, (), options, data if in_memory else None)
        if (_fused_training.fused_training_supported(self) and in_memory):
            dataset = _fused_training.in_memory_dataset(
                data, self._fused_batch_size, options.pop("shuffle", True)
            )
            options.pop("batch_size", None)
            # The dataset shuffles itself; Keras warns on shuffle=True.
            options["shuffle"] = False
            history = super().fit(dataset, **options)
            if program is not None and self.jit_compile:
                _compilation_cache.remember(program)
            return history
        return super().fit(x, y, sample_weight=weights, **options)

    def _program_key(self, arrays, batch_size):
        """A digest of what the fused training program of a `fit` depends on.

        The model's and the optimizer's configs, the arrays' example shapes
        and dtypes, the batch size, the steps per execution and the library
        versions: a `fit` with the same key traces the same program, which
        the persistent XLA cache may then already hold. None when the cache
        is off or a config cannot be described.
        """
        if _compilation_cache.directory() is None:
            return None
        optimizer = getattr(self, "optimizer", None)
        try:
            description = {
                "model": [type(self).__module__, type(self).__qualname__,
                          self.get_config()],
                "optimizer": None if optimizer is None else [
                    type(optimizer).__qualname__, optimizer.get_config()],
                "data": [[list(part.shape[1:]), str(part.dtype)]
                         for part in arrays],
                "batch_size": batch_size or 32,
                "steps_per_execution": self.steps_per_execution,
                "versions": [keras.__version__, getattr(
                    sys.modules.get("keras_vae"), "__version__", None)],
            }
            text = json.dumps(description, sort_keys=True, default=repr)
        except Exception:  # a config that cannot be described: no key
            return None
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto",
                 sample_weight=None, steps=None, callbacks=None,
                 return_dict=False, **kwargs):
        """The ELBO terms on data; `keras.Model.evaluate` with checked input.

        `sample_weight` gives the weighted mean of the per-example terms.
        """
        if kwargs.get("_use_cached_eval_dataset"):
            # Validation inside `fit`: the data was checked there.
            return super().evaluate(
                x, y, batch_size=batch_size, verbose=verbose,
                sample_weight=sample_weight, steps=steps,
                callbacks=callbacks, return_dict=return_dict, **kwargs)
        self._check_batch_size(batch_size)
        arrays, stream = self._prepare(x, y, sample_weight, None, "x")
        self._set_checks(test="x" if stream is not None else None)
        if stream is not None:
            x, weights = stream, sample_weight
        else:
            x, y, weights = self._keras_arrays(arrays)
        return super().evaluate(
            x, y, batch_size=batch_size, verbose=verbose,
            sample_weight=weights, steps=steps, callbacks=callbacks,
            return_dict=return_dict, **kwargs)

    def predict(self, x, batch_size=None, verbose="auto", steps=None,
                callbacks=None):
        """Reconstructions through the posterior mean, batch by batch.

        Args:
            x: data: an array, or for a `CVAE` the pair `[x, labels]`; or a
                dataset or generator (of `(x, labels)` for a `CVAE`).
        """
        self._check_batch_size(batch_size)
        arrays, stream = self._prepare(x, None, None, None, "x")
        self._set_checks(predict=stream is not None)
        if stream is None:
            data, labels, _ = arrays
            data = data if labels is None else [data, labels]
        else:
            data = stream
        outputs = super().predict(data, batch_size=batch_size,
                                  verbose=verbose, steps=steps,
                                  callbacks=callbacks)
        if stream is None:
            return outputs
        _data_checks.raise_if_bad_examples(
            outputs[_data_checks.LOG_KEY], "x", self.num_classes,
            self.likelihood.data_bounds)
        return outputs["reconstruction"]

    def export(self, filepath, format="tf_saved_model", verbose=None,
               input_signature=None, **kwargs):
        """`keras.Model.export` with the model's input signature by default.

        Exports `call` (the reconstruction through the posterior mean) in
        every state of the model: new, trained, evaluated or loaded.
        """
        if input_signature is None:
            specs = [
                keras.InputSpec(shape=(None, *tensor.shape[1:]),
                                dtype="float32")
                for tensor in self.encoder.inputs
            ]
            input_signature = [specs[0] if len(specs) == 1 else specs]
        return super().export(filepath, format=format, verbose=verbose,
                              input_signature=input_signature, **kwargs)

    # --------------------------------------------------------------- config
    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "encoder": keras.saving.serialize_keras_object(self.encoder),
                "decoder": keras.saving.serialize_keras_object(self.decoder),
                "likelihood": keras.saving.serialize_keras_object(
                    self.likelihood
                ),
                "beta": self._initial_beta,
                "free_bits": self.free_bits,
                "prior": keras.saving.serialize_keras_object(self.prior),
                "seed": self.seed,
                "train_step_hooks": [
                    keras.saving.serialize_keras_object(hook)
                    for hook in self.train_step_hooks
                ],
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        # Deserializing a functional model consumes its config dict in place.
        # Objects passed in the config (a model, a likelihood) are taken as
        # they are: copying a model pickles it, which fails under a
        # tf.distribute strategy.
        def copied(value):
            if isinstance(value, keras.layers.Layer):
                return value
            if isinstance(value, (list, tuple)):
                return [copied(item) for item in value]
            return copy.deepcopy(value)

        config = {key: copied(value) for key, value in config.items()}
        for key in ("encoder", "decoder", "likelihood", "prior"):
            if isinstance(config.get(key), dict):
                config[key] = keras.saving.deserialize_keras_object(config[key])
        config["train_step_hooks"] = [
            keras.saving.deserialize_keras_object(hook)
            for hook in config.get("train_step_hooks") or ()
        ]
        return cls(**config)
