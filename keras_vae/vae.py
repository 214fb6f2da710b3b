"""The variational autoencoder model."""

import copy

import keras
import numpy as np
from keras import ops

from keras_vae import (
    _fused_training,
    _keras_internals,
    _validation,
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
# compilation, so it is used only for fits long enough to earn that back.
DEFAULT_STEPS_PER_EXECUTION = 32
XLA_MIN_STEPS = 500
_BATCH_HOOKS = ("on_train_batch_begin", "on_train_batch_end",
                "on_batch_begin", "on_batch_end")


def _has_batch_hooks(callback):
    """True when a callback overrides a per-batch training hook."""
    return any(
        getattr(type(callback), name, None)
        is not getattr(keras.callbacks.Callback, name)
        for name in _BATCH_HOOKS
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


@keras.saving.register_keras_serializable(package="keras_vae")
class VAE(keras.Model):
    """Variational autoencoder trained with `fit` on the negative ELBO.

    Wraps a functional `encoder` (x -> `[z_mean, z_log_var]`) and a
    functional `decoder` (z -> parameters of p(x | z), e.g. Bernoulli
    logits). `train_step` minimises `mean(reconstruction + beta * kl)` with a
    single reparameterised sample per example; `test_step` reports the same
    terms. Tracked metrics are `loss`, `reconstruction_loss`, `kl_loss` and
    `elbo`, the evidence lower bound with beta = 1 in nats per example
    (higher is better; `-elbo` is the negative ELBO usually quoted for
    MNIST), so runs with different beta compare honestly.

    `call(x)` returns the reconstruction through the posterior mean, so
    `predict` and export work on the model as a whole.

    Args:
        encoder: `keras.Model`. Maps x to `[z_mean, z_log_var]`.
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
        if len(encoder.outputs or []) != 2:
            raise ValueError(
                "Expected `encoder` to have two outputs, `[z_mean, z_log_var]`. "
                f"Received: encoder with outputs={encoder.outputs}"
            )
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihoods.get(likelihood)
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
        return int(self.encoder.outputs[0].shape[-1])

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
            labels: None, or class labels (see `keras_vae.CVAE`).
            num_examples: int. Number of examples the labels go with.
            name: str. Argument name used in error messages.
        """
        if labels is not None:
            raise ValueError(
                f"`{name}` is only used by a conditional model "
                "(keras_vae.CVAE); drop it for this model. Received: "
                f"{name} for {type(self).__name__} {self.name!r}"
            )
        return None

    # ----------------------------------------------------------- the model
    def posterior(self, x, labels=None, training=False):
        """Parameters `(z_mean, z_log_var)` of q(z | x) as tensors.

        The unvalidated building block under `encode`, for code that works
        on tensors (metrics, export, compression): `z_log_var` is clipped to
        `LOG_VAR_BOUNDS`. A conditional model also needs `labels` (one-hot,
        as returned by `prepare_labels`).

        Args:
            x: tensor `(batch, *input_shape)`.
            labels: None, or one-hot labels for a conditional model.
            training: bool. Training mode of the encoder's layers.
        """
        self.prepare_labels(labels, 0)
        return self._posterior(x, training=training)

    def decoder_params(self, z, labels=None, training=False):
        """Parameters of p(x | z) (e.g. Bernoulli logits) as a tensor.

        Args:
            z: tensor `(batch, latent_dim)`.
            labels: None, or one-hot labels for a conditional model.
            training: bool. Training mode of the decoder's layers.
        """
        self.prepare_labels(labels, 0)
        return self.decoder(z, training=training)

    def _posterior(self, x, training=False):
        z_mean, z_log_var = self.encoder(x, training=training)
        z_log_var = ops.clip(z_log_var, *LOG_VAR_BOUNDS)
        return z_mean, z_log_var

    def encode(self, x):
        """Posterior parameters `(z_mean, z_log_var)` of q(z | x).

        Args:
            x: array or tensor of shape `(batch, *input_shape)`.
        """
        x = self._maybe_validate(x)
        return self._posterior(x)

    def decode(self, z):
        """Mean of p(x | z), e.g. pixel probabilities for Bernoulli."""
        if isinstance(z, (np.ndarray, list)) or np.isscalar(z):
            z = _validation.as_float_array(z, "z", (self.latent_dim,))
        return self.likelihood.mean(self.decoder(z))

    def reconstruct(self, x):
        """Reconstruction of `x` through the posterior mean."""
        x = self._maybe_validate(x)
        z_mean, _ = self._posterior(x)
        return self.likelihood.mean(self.decoder(z_mean))

    def sample(self, num_samples, seed=None):
        """Draw `num_samples` decoded samples from the prior.

        Args:
            num_samples: int > 0.
            seed: int or None. The same int gives the same samples; None
                draws from the model's own `SeedGenerator`.
        """
        num_samples = _validation.check_positive_int(num_samples, "num_samples")
        noise_seed = self.seed_generator if seed is None else seed
        z = self.prior.sample(num_samples, self.latent_dim, seed=noise_seed)
        return self.decode(z)

    def call(self, inputs, training=False):
        z_mean, _ = self._posterior(inputs, training=training)
        return self.likelihood.mean(self.decoder(z_mean, training=training))

    def compute_output_spec(self, inputs, training=False):
        return keras.KerasTensor(
            (inputs.shape[0], *self.decoder.outputs[0].shape[1:]),
            dtype=self.compute_dtype,
        )

    # ------------------------------------------------------------ the ELBO
    def compute_terms(self, x, training=False, seed=None):
        """Per-example ELBO terms with one reparameterised sample.

        Returns a dict of tensors: `reconstruction` (batch,) the negative
        log-likelihood summed over data dimensions, `kl` (batch,) the KL to
        the prior, `kl_per_dim` (batch, latent or 1), `z_mean`,
        `z_log_var` and `z`.
        """
        z_mean, z_log_var = self._posterior(x, training=training)
        return self._elbo_terms(
            x, z_mean, z_log_var,
            lambda z: self.decoder(z, training=training), seed,
        )

    def _elbo_terms(self, x, z_mean, z_log_var, decode, seed=None):
        """The terms of `compute_terms` from the posterior and a decoder."""
        noise = keras.random.normal(
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

    def _training_loss(self, terms, x, training):
        reconstruction = ops.mean(terms["reconstruction"])
        if self.free_bits > 0.0:
            kl_per_dim = ops.mean(terms["kl_per_dim"], axis=0)
            # A prior whose KL does not factorise reports one column, the
            # total: its floor is the budget of all latent dimensions.
            dims_per_column = self.latent_dim // kl_per_dim.shape[-1]
            kl = ops.sum(
                ops.maximum(kl_per_dim, self.free_bits * dims_per_column)
            )
        else:
            kl = ops.mean(terms["kl"])
        loss = reconstruction + ops.cast(self.beta_variable, "float32") * kl
        if training and self.losses:
            loss = loss + ops.cast(ops.sum(self.losses), "float32")
        return loss

    def _logged_values(self, loss, terms):
        reconstruction = terms["reconstruction"]
        kl = terms["kl"]
        return {
            "loss": loss,
            "reconstruction_loss": ops.mean(reconstruction),
            "kl_loss": ops.mean(kl),
            "elbo": -ops.mean(reconstruction + kl),
        }

    @property
    def metrics(self):
        return [
            self.loss_tracker,
            self.reconstruction_loss_tracker,
            self.kl_loss_tracker,
            self.elbo_tracker,
        ]

    def _unpack_x(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return x

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
        hook.attach(self)
        with _keras_internals.tracking_unlocked(self):
            self.train_step_hooks.append(hook)
        # Compiled steps were traced without the hook; trace them again.
        self.train_function = None

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

    def _update_metrics(self, values):
        for tracker in self.metrics:
            tracker.update_state(values[tracker.name])
        return {tracker.name: tracker.result() for tracker in self.metrics}

    def _tf_train_step(self, data):
        import tensorflow as tf

        x = self._unpack_x(data)
        self._run_train_step_hooks("before_train_step")
        with tf.GradientTape() as tape:
            terms = self.compute_terms(x, training=True)
            loss = self._training_loss(terms, x, training=True)
            scaled_loss = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled_loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        self._run_train_step_hooks("after_apply")
        return self._update_metrics(self._logged_values(loss, terms))

    def _tf_test_step(self, data):
        x = self._unpack_x(data)
        terms = self.compute_terms(x, training=False)
        loss = self._training_loss(terms, x, training=False)
        return self._update_metrics(self._logged_values(loss, terms))

    def _stateless_terms(self, trainable, non_trainable, x, training):
        mapping = list(zip(self.trainable_variables, trainable)) + list(
            zip(self.non_trainable_variables, non_trainable)
        )
        with keras.StatelessScope(state_mapping=mapping) as scope:
            terms = self.compute_terms(x, training=training)
            loss = self._training_loss(terms, x, training=training)
        non_trainable = [
            scope.get_current_value(v) for v in self.non_trainable_variables
        ]
        return loss, (self._logged_values(loss, terms), non_trainable)

    def _stateless_update_metrics(self, metrics_variables, values):
        new_variables = []
        logs = {}
        start = 0
        for tracker in self.metrics:
            count = len(tracker.variables)
            tracker_variables = metrics_variables[start : start + count]
            start += count
            tracker_variables = tracker.stateless_update_state(
                tracker_variables, values[tracker.name]
            )
            logs[tracker.name] = tracker.stateless_result(tracker_variables)
            new_variables.extend(tracker_variables)
        return logs, new_variables

    def _jax_train_step(self, state, data):
        import jax

        (
            trainable,
            non_trainable,
            optimizer_variables,
            metrics_variables,
        ) = state
        x = self._unpack_x(data)
        trainable, non_trainable = self._stateless_train_step_hooks(
            "before_train_step", trainable, non_trainable
        )
        gradient_fn = jax.value_and_grad(self._stateless_terms, has_aux=True)
        (_, (values, non_trainable)), gradients = gradient_fn(
            trainable, non_trainable, x, True
        )
        trainable, optimizer_variables = self.optimizer.stateless_apply(
            optimizer_variables, gradients, trainable
        )
        trainable, non_trainable = self._stateless_train_step_hooks(
            "after_apply", trainable, non_trainable
        )
        logs, metrics_variables = self._stateless_update_metrics(
            metrics_variables, values
        )
        return logs, (
            trainable,
            non_trainable,
            optimizer_variables,
            metrics_variables,
        )

    def _jax_test_step(self, state, data):
        trainable, non_trainable, metrics_variables = state
        x = self._unpack_x(data)
        _, (values, non_trainable) = self._stateless_terms(
            trainable, non_trainable, x, False
        )
        logs, metrics_variables = self._stateless_update_metrics(
            metrics_variables, values
        )
        return logs, (trainable, non_trainable, metrics_variables)

    # ------------------------------------------------- validated entry points
    def _maybe_validate(self, x, name="x"):
        if isinstance(x, (np.ndarray, list, tuple)) or np.isscalar(x):
            return _validation.as_float_array(
                x, name, self.input_spec_shape, self.likelihood
            )
        return x

    def _validate_fit_data(self, x, name):
        """Check numpy inputs fully and a dataset's spec and first batch."""
        if x is None or isinstance(x, (np.ndarray, list)) or np.isscalar(x):
            return _validation.as_float_array(
                x, name, self.input_spec_shape, self.likelihood
            )
        try:
            import tensorflow as tf
        except ImportError:  # pragma: no cover - tensorflow is a dependency
            return x
        if isinstance(x, tf.data.Dataset):
            for batch in x.take(1):
                first = self._unpack_x(batch)
                if isinstance(first, (tuple, list, dict)):
                    break
                _validation.as_float_array(
                    np.asarray(first), f"{name} (first batch)",
                    self.input_spec_shape, self.likelihood,
                )
        return x

    def _check_batch_size(self, args, kwargs):
        # `batch_size` is the first argument after `x, y` in Keras' loops;
        # Keras treats 0 as "default" and crashes on floats and strings.
        value = args[0] if args else kwargs.get("batch_size")
        _validation.check_optional_positive_int(value, "batch_size")

    def compile(self, *args, steps_per_execution="auto", jit_compile="auto",
                **kwargs):
        """Configure training; the defaults are tuned for speed.

        Takes the arguments of `keras.Model.compile` (a VAE needs no
        `loss`). Two defaults differ from Keras, both measured by
        `make bench` (benchmarks/results.md):

        Args:
            steps_per_execution: int or `"auto"`. `"auto"` runs
                `DEFAULT_STEPS_PER_EXECUTION` (32) training steps per call
                into the compiled function, and 1 when a callback passed to
                `fit` has per-batch hooks (`on_train_batch_begin`, ...), so
                such callbacks still see every step.
            jit_compile: bool or `"auto"`. `"auto"` compiles the train step
                with XLA on the TensorFlow backend when the `fit` call runs
                at least `XLA_MIN_STEPS` (500) steps, and not for shorter
                fits, for which the seconds of XLA compilation would cost
                more than they save. On JAX every step is XLA-compiled.

        Example:

        >>> import keras, keras_vae
        >>> model = keras_vae.models.mlp_vae((8, 8, 1), latent_dim=2,
        ...                                  hidden_units=(16,))
        >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
        >>> model.steps_per_execution  # until `fit` chooses
        1
        """
        self._auto_steps_per_execution = steps_per_execution == "auto"
        self._auto_jit_compile = (
            jit_compile == "auto"
            and keras.backend.backend() == "tensorflow"
            and not kwargs.get("run_eagerly", False)
        )
        super().compile(
            *args,
            steps_per_execution=(
                1 if self._auto_steps_per_execution else steps_per_execution
            ),
            jit_compile=False if self._auto_jit_compile else jit_compile,
            **kwargs,
        )
        # Saved compile configs keep "auto", so a loaded model chooses too.
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

    def _choose_execution(self, x, args, kwargs):
        """Resolve the "auto" `compile` settings for this `fit` call."""
        import inspect

        bound = inspect.signature(keras.Model.fit).bind(
            self, x, None, *args, **kwargs
        )
        options = dict(bound.arguments)
        changed = False
        if getattr(self, "_auto_steps_per_execution", False):
            callbacks = options.get("callbacks") or []
            steps = 1 if any(_has_batch_hooks(c) for c in callbacks) else (
                DEFAULT_STEPS_PER_EXECUTION
            )
            changed |= steps != self.steps_per_execution
            self.steps_per_execution = steps
        if getattr(self, "_auto_jit_compile", False):
            planned = _planned_steps(
                x, options.get("batch_size"), options.get("epochs", 1),
                options.get("initial_epoch", 0),
                options.get("steps_per_epoch"),
                options.get("validation_split", 0.0),
            )
            jit = planned is None or planned >= XLA_MIN_STEPS
            changed |= jit != self.jit_compile
            self.jit_compile = jit
        # Numpy input under both "auto" settings: the TensorFlow backend
        # fuses each execution's steps into one XLA computation.
        fused_batch_size = None
        if (getattr(self, "_auto_steps_per_execution", False)
                and getattr(self, "_auto_jit_compile", False)
                and isinstance(x, np.ndarray)):
            fused_batch_size = int(options.get("batch_size") or 32)
        changed |= fused_batch_size != getattr(self, "_fused_batch_size", None)
        self._fused_batch_size = fused_batch_size
        if changed:
            self.train_function = None
            self.test_function = None
            self.predict_function = None

    def make_train_function(self, force=False):
        if self.train_function is not None and not force:
            return self.train_function
        super().make_train_function(force=True)
        if _fused_training.fused_training_supported(self):
            self.train_function = _fused_training.make_fused_train_function(
                self, self._fused_batch_size, fallback=self.train_function
            )
        return self.train_function

    def fit(self, x=None, y=None, *args, validation_data=None, **kwargs):
        self._check_batch_size(args, kwargs)
        x = self._validate_fit_data(x, "x")
        self._choose_execution(x, args, kwargs)
        if (_fused_training.fused_training_supported(self)
                and _fused_training.can_use_in_memory_dataset(
                    x, y, args, kwargs)):
            x = _fused_training.in_memory_dataset(
                x, self._fused_batch_size, kwargs.pop("shuffle", True)
            )
            kwargs.pop("batch_size", None)
            # The dataset shuffles itself; Keras warns on shuffle=True.
            kwargs["shuffle"] = False
        if isinstance(validation_data, np.ndarray):
            validation_data = self._validate_fit_data(
                validation_data, "validation_data"
            )
        elif isinstance(validation_data, tuple) and validation_data:
            validation_data = (
                self._validate_fit_data(validation_data[0], "validation_data"),
                *validation_data[1:],
            )
        return super().fit(
            x, y, *args, validation_data=validation_data, **kwargs
        )

    def evaluate(self, x=None, y=None, *args, **kwargs):
        self._check_batch_size(args, kwargs)
        x = self._validate_fit_data(x, "x")
        return super().evaluate(x, y, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        self._check_batch_size(args, kwargs)
        x = self._validate_fit_data(x, "x")
        return super().predict(x, *args, **kwargs)

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
        config = copy.deepcopy(config)
        for key in ("encoder", "decoder", "likelihood", "prior"):
            if isinstance(config.get(key), dict):
                config[key] = keras.saving.deserialize_keras_object(config[key])
        config["train_step_hooks"] = [
            keras.saving.deserialize_keras_object(hook)
            for hook in config.get("train_step_hooks") or ()
        ]
        return cls(**config)
