"""Knowledge distillation: train a small student VAE from a big teacher.

`Distiller` is a Keras model holding a frozen teacher VAE and a student
VAE; its `train_step` minimises the student's own negative ELBO plus two
distillation terms, on the TensorFlow and JAX backends:

- the posterior term, KL(q_teacher(z | x) || q_student(z | x)) summed over
  the latent dimensions (through a learned linear map of the student's
  posterior into the teacher's latent space when the sizes differ; the map
  belongs to the `Distiller`, so the student exports without it);
- the output term: the teacher's decoder mean is a soft target for the
  student's decoder at the same code (Bernoulli: the KL between the two
  pixel distributions, i.e. cross-entropy up to a constant; any other
  likelihood: squared error of the means).

Optionally each batch is topped up with images the teacher decodes from
prior samples (`generated_fraction`), which gives the student more data
than the training set holds. `distill` is the short form that compiles,
fits and returns the student, an ordinary `keras_vae.VAE` that prunes,
quantizes and exports like any other.

Example:

>>> import numpy as np, keras_vae
>>> from keras_vae.compression import distill
>>> x = np.random.default_rng(0).uniform(size=(64, 8, 8, 1)).astype("float32")
>>> teacher = keras_vae.models.mlp_vae((8, 8, 1), 4, hidden_units=(32,))
>>> student = keras_vae.models.mlp_vae((8, 8, 1), 4, hidden_units=(8,))
>>> student = distill(teacher, student, x, epochs=1, verbose=0)
>>> student.latent_dim
4
"""

import copy
import os
import sys
import time

import keras
import numpy as np
from keras import ops

from keras_vae import _validation
from keras_vae.likelihoods import Bernoulli
from keras_vae.likelihoods.base import sum_over_data_axes

# Codes at which the output term compares the two decoders.
OUTPUT_CODES = ("teacher", "student", "reconstruction")


def gaussian_kl(mean_p, log_var_p, mean_q, log_var_q):
    """KL(N(mean_p, exp(log_var_p)) || N(mean_q, exp(log_var_q))) per example.

    Both Gaussians are diagonal; the result is summed over the last axis.

    Args:
        mean_p: tensor `(batch, dims)`. Mean of the first distribution.
        log_var_p: tensor `(batch, dims)`. Its log-variance.
        mean_q: tensor `(batch, dims)`. Mean of the second distribution.
        log_var_q: tensor `(batch, dims)`. Its log-variance.

    Returns:
        Tensor `(batch,)`, in nats.

    Example:

    >>> import numpy as np
    >>> from keras_vae.compression.distillation import gaussian_kl
    >>> zero = np.zeros((1, 3), "float32")
    >>> float(gaussian_kl(zero, zero, zero + 1.0, zero)[0])
    1.5
    """
    elementwise = (
        log_var_q
        - log_var_p
        + (ops.exp(log_var_p) + ops.square(mean_p - mean_q))
        * ops.exp(-log_var_q)
        - 1.0
    )
    return 0.5 * ops.sum(elementwise, axis=-1)


def output_divergence(likelihood, teacher_params, student_params,
                      temperature=1.0):
    """Per-example distance of the student's decoder output to the teacher's.

    For a Bernoulli likelihood it is the KL divergence from the teacher's
    pixel probabilities (its logits divided by `temperature`) to the
    student's, which is the soft-target cross-entropy minus the target's
    entropy: the same gradient, and 0 at a perfect match. For any other
    likelihood it is the squared error between the two means, summed over
    the data dimensions.

    Args:
        likelihood: `keras_vae.likelihoods.Likelihood`. The student's.
        teacher_params: tensor. Teacher decoder output (e.g. logits).
        student_params: tensor. Student decoder output, same shape.
        temperature: float > 0. Bernoulli only: > 1 softens the teacher's
            probabilities towards 0.5, < 1 sharpens them.

    Returns:
        Tensor `(batch,)`.
    """
    if isinstance(likelihood, Bernoulli):
        logits = ops.cast(teacher_params, "float32") / temperature
        target = ops.sigmoid(logits)
        return likelihood.negative_log_prob(
            target, student_params
        ) - likelihood.negative_log_prob(target, logits)
    teacher_mean = ops.cast(likelihood.mean(teacher_params), "float32")
    student_mean = ops.cast(likelihood.mean(student_params), "float32")
    return sum_over_data_axes(ops.square(student_mean - teacher_mean))


def _check_fraction(value, name):
    value = _validation.check_non_negative(value, name)
    if value >= 1.0:
        raise ValueError(
            f"Expected `{name}` in [0, 1): the share of each batch made of "
            f"teacher-generated examples, real ones being the rest. "
            f"Received: {name}={value!r}"
        )
    return value


def _check_pair(teacher, student):
    from keras_vae.vae import VAE

    for name, model in (("teacher", teacher), ("student", student)):
        if not isinstance(model, VAE):
            raise ValueError(
                f"Expected `{name}` to be a `keras_vae.VAE` or `CVAE`, e.g. "
                f"from `keras_vae.models.mlp_vae`. Received: {name}={model!r}"
            )
    if tuple(teacher.input_spec_shape) != tuple(student.input_spec_shape):
        raise ValueError(
            "The teacher and the student must model the same data shape. "
            f"Received: teacher input shape {teacher.input_spec_shape}, "
            f"student input shape {student.input_spec_shape}"
        )
    if teacher.num_classes != student.num_classes:
        raise ValueError(
            "The teacher and the student must both be unconditional or both "
            "conditional on the same number of classes. Received: "
            f"teacher num_classes={teacher.num_classes}, student "
            f"num_classes={student.num_classes}"
        )
    if type(teacher.likelihood) is not type(student.likelihood):
        raise ValueError(
            "The output term compares the two decoders' distributions, so "
            "the teacher and the student need the same likelihood. Build "
            "the student with the teacher's likelihood. Received: teacher "
            f"likelihood {type(teacher.likelihood).__name__}, student "
            f"likelihood {type(student.likelihood).__name__}"
        )


@keras.saving.register_keras_serializable(package="keras_vae")
class Distiller(keras.Model):
    """Train a student VAE with a frozen teacher VAE's help.

    The training loss, averaged over the batch, is

        elbo_weight * (reconstruction + beta * KL(q_s || prior))
        + posterior_weight * KL(q_teacher(z | x) || q_student(z | x))
        + output_weight * D(teacher decoder, student decoder)

    where `beta` is the student's `beta_variable` and D is
    `output_divergence`. With `output_code="teacher"` both decoders are
    evaluated at a sample of the teacher's posterior, with `"student"` at
    the student's own posterior sample (the one of its ELBO, so no extra
    decoder pass), and with `"reconstruction"` each at its own model's
    sample (works for any latent sizes). The first two need equal latent
    sizes. When the latent sizes differ, the posterior term compares the
    teacher's posterior with the student's mapped by two learned linear
    layers (`posterior_map`), which are part of the `Distiller` only.

    With `generated_fraction` f > 0, each training batch of n real examples
    gets `round(n * f / (1 - f))` more, decoded by the teacher from prior
    samples (means of p(x | z); random classes for a conditional model),
    and every term covers them too.

    The teacher is frozen (`teacher.trainable = False`) and runs in
    inference mode. The student's train-step hooks (pruning, QAT) run as
    in the student's own `fit`. Metrics: `loss`, `elbo` (the student's,
    real examples only, beta = 1), `reconstruction_loss`, `kl_loss`,
    `posterior_loss` and `output_loss`. `call(x)` is the student's
    reconstruction. Saved and loaded as `.keras` with both models.

    Args:
        teacher: `keras_vae.VAE` or `CVAE`. Trained model to learn from.
        student: `keras_vae.VAE` or `CVAE`. Model to train; same data
            shape, likelihood class and conditioning as the teacher.
        posterior_weight: float >= 0. Weight of the posterior term.
        output_weight: float >= 0. Weight of the output term.
        elbo_weight: float >= 0. Weight of the student's own negative ELBO.
        temperature: float > 0. Temperature of the teacher's Bernoulli
            logits in the output term.
        generated_fraction: float in [0, 1). Share of each training batch
            made of teacher-generated examples.
        output_code: str. `"teacher"`, `"student"` or `"reconstruction"`:
            where the output term evaluates the decoders (see above).
        decay_steps: int > 0 or None. When set, the posterior and output
            weights fall linearly to 0 over this many training steps (the
            count is saved with the model), leaving the student's own ELBO
            for the rest of training: distillation as a fast start.
        seed: int or None. Seed of the posterior and prior noise.

    Example:

    >>> import keras, numpy as np, keras_vae
    >>> from keras_vae.compression import Distiller
    >>> x = np.random.default_rng(0).uniform(size=(64, 8, 8, 1)).astype("float32")
    >>> teacher = keras_vae.models.mlp_vae((8, 8, 1), 4, hidden_units=(32,))
    >>> student = keras_vae.models.mlp_vae((8, 8, 1), 4, hidden_units=(8,))
    >>> distiller = Distiller(teacher, student, seed=0)
    >>> distiller.compile(optimizer=keras.optimizers.Adam(1e-3))
    >>> history = distiller.fit(x, epochs=1, verbose=0)
    >>> sorted(history.history)  # doctest: +NORMALIZE_WHITESPACE
    ['elbo', 'kl_loss', 'loss', 'output_loss', 'posterior_loss',
     'reconstruction_loss']
    """

    def __init__(
        self,
        teacher,
        student,
        posterior_weight=1.0,
        output_weight=1.0,
        elbo_weight=1.0,
        temperature=1.0,
        generated_fraction=0.0,
        output_code="teacher",
        decay_steps=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_pair(teacher, student)
        self.posterior_weight = _validation.check_non_negative(
            posterior_weight, "posterior_weight")
        self.output_weight = _validation.check_non_negative(
            output_weight, "output_weight")
        self.elbo_weight = _validation.check_non_negative(
            elbo_weight, "elbo_weight")
        self.temperature = _validation.check_non_negative(
            temperature, "temperature")
        if self.temperature == 0.0:
            raise ValueError(
                "Expected `temperature` > 0 (1 leaves the teacher's "
                "probabilities as they are). Received: temperature=0"
            )
        self.generated_fraction = _check_fraction(
            generated_fraction, "generated_fraction")
        if output_code not in OUTPUT_CODES:
            raise ValueError(
                f"Expected `output_code` to be one of {OUTPUT_CODES}. "
                f"Received: output_code={output_code!r}"
            )
        same_size = teacher.latent_dim == student.latent_dim
        if output_code != "reconstruction" and not same_size:
            raise ValueError(
                f"`output_code={output_code!r}` decodes one code with both "
                "decoders, which needs equal latent sizes; use "
                "output_code='reconstruction' for a student with another "
                f"latent size. Received: teacher latent_dim="
                f"{teacher.latent_dim}, student latent_dim="
                f"{student.latent_dim}"
            )
        self.output_code = output_code
        self.seed = seed
        self.teacher = teacher
        self.student = student
        # A frozen teacher: its weights are left out of the gradient and
        # of the optimizer state.
        self.teacher.trainable = False
        self.posterior_map = None
        if not same_size:
            self.posterior_map = [
                keras.layers.Dense(teacher.latent_dim, name=name)
                for name in ("posterior_map_mean", "posterior_map_log_var")
            ]
            for layer in self.posterior_map:
                layer.build((None, student.latent_dim))
        self.decay_steps = (
            None if decay_steps is None
            else _validation.check_positive_int(decay_steps, "decay_steps"))
        # Training steps taken, saved with the model: the decay goes on
        # where it stopped after a `.keras` load or a checkpoint restore.
        self.step_variable = self.add_weight(
            shape=(), initializer="zeros", trainable=False,
            name="distillation_step")
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.elbo_tracker = keras.metrics.Mean(name="elbo")
        self.reconstruction_loss_tracker = keras.metrics.Mean(
            name="reconstruction_loss")
        self.kl_loss_tracker = keras.metrics.Mean(name="kl_loss")
        self.posterior_loss_tracker = keras.metrics.Mean(name="posterior_loss")
        self.output_loss_tracker = keras.metrics.Mean(name="output_loss")
        self.built = True

    @property
    def metrics(self):
        return [
            self.loss_tracker,
            self.elbo_tracker,
            self.reconstruction_loss_tracker,
            self.kl_loss_tracker,
            self.posterior_loss_tracker,
            self.output_loss_tracker,
        ]

    # ----------------------------------------------------------- the data
    def _one_hot(self, labels):
        labels = ops.convert_to_tensor(labels)
        classes = self.student.num_classes
        if len(labels.shape) == 2 and labels.shape[-1] == classes and (
            classes > 1
        ):
            return ops.cast(labels, "float32")
        if len(labels.shape) == 2:
            labels = ops.squeeze(labels, axis=-1)
        return ops.one_hot(ops.cast(labels, "int32"), classes)

    def _unpack(self, data):
        """`(x, one-hot labels or None)` from a batch of `fit`."""
        x, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        if isinstance(x, (tuple, list)) and len(x) == 2 and labels is None:
            x, labels = x
        if not self.student.is_conditional:
            return ops.convert_to_tensor(x), None
        if labels is None:
            raise ValueError(
                "A conditional student needs class labels: fit the "
                "Distiller on `(x, y)`, e.g. `distiller.fit(x, y)`. "
                "Received: data without labels"
            )
        return ops.convert_to_tensor(x), self._one_hot(labels)

    def _generated(self, batch_size):
        """Teacher samples to top up a batch of `batch_size` real examples.

        `batch_size` is an int when the batch shape is static (JAX, XLA)
        and a scalar tensor otherwise (a TensorFlow graph of any batch).
        """
        share = self.generated_fraction / (1.0 - self.generated_fraction)
        if isinstance(batch_size, int):
            count = int(round(batch_size * share))
            if count == 0:
                return None, None
        else:
            count = ops.cast(
                ops.round(ops.cast(batch_size, "float32") * share), "int32")
        z = self.teacher.prior.sample(
            count, self.teacher.latent_dim, seed=self.seed_generator)
        labels = None
        if self.teacher.is_conditional:
            ids = keras.random.randint(
                (count,), 0, self.teacher.num_classes,
                seed=self.seed_generator)
            labels = ops.one_hot(ids, self.teacher.num_classes)
        params = self.teacher.decoder_params(z, labels, training=False)
        x = ops.stop_gradient(self.teacher.likelihood.mean(params))
        return x, labels

    # ----------------------------------------------------------- the loss
    def _sample(self, mean, log_var, noise):
        return mean + ops.exp(0.5 * log_var) * noise

    def compute_terms(self, x, labels=None, training=False):
        """Per-example loss terms of a batch, as a dict of tensors.

        Keys: `reconstruction`, `kl` (the student's ELBO terms, beta = 1),
        `posterior` (KL teacher posterior || student posterior) and
        `output` (`output_divergence` of the decoders), each `(batch,)`.

        Args:
            x: tensor `(batch, *input_shape)`.
            labels: None, or one-hot labels for conditional models.
            training: bool. Training mode of the student's layers.
        """
        teacher, student = self.teacher, self.student
        t_mean, t_log_var = teacher.posterior(x, labels, training=False)
        t_mean = ops.stop_gradient(t_mean)
        t_log_var = ops.stop_gradient(t_log_var)
        s_mean, s_log_var = student.posterior(x, labels, training=training)
        noise = keras.random.normal(
            ops.shape(s_mean), dtype=s_mean.dtype, seed=self.seed_generator)
        z = self._sample(s_mean, s_log_var, noise)
        s_params = student.decoder_params(z, labels, training=training)
        reconstruction = student.likelihood.negative_log_prob(x, s_params)
        kl = ops.sum(
            ops.cast(student.prior.kl(s_mean, s_log_var, z), "float32"),
            axis=-1)
        if self.posterior_map is None:
            mapped_mean, mapped_log_var = s_mean, s_log_var
        else:
            mapped_mean = self.posterior_map[0](s_mean)
            mapped_log_var = self.posterior_map[1](s_log_var)
        posterior = gaussian_kl(t_mean, t_log_var, mapped_mean, mapped_log_var)
        if self.output_code == "student":
            code, student_output = z, s_params
        else:
            # The same noise when the sizes match: both models decode the
            # matching point of their posteriors.
            if self.posterior_map is None:
                t_noise = noise
            else:
                t_noise = keras.random.normal(
                    ops.shape(t_mean), dtype=t_mean.dtype,
                    seed=self.seed_generator)
            code = self._sample(t_mean, t_log_var, t_noise)
            student_output = s_params
            if self.output_code == "teacher":
                student_output = student.decoder_params(
                    code, labels, training=training)
        t_params = ops.stop_gradient(
            teacher.decoder_params(code, labels, training=False))
        output = output_divergence(
            student.likelihood, t_params, student_output, self.temperature)
        return {
            "reconstruction": ops.cast(reconstruction, "float32"),
            "kl": kl,
            "posterior": ops.cast(posterior, "float32"),
            "output": ops.cast(output, "float32"),
        }

    def _loss_and_logs(self, data, training):
        x, labels = self._unpack(data)
        real = ops.shape(x)[0]
        if training and self.generated_fraction > 0.0:
            batch_size = x.shape[0]
            generated_x, generated_labels = self._generated(
                real if batch_size is None else int(batch_size))
            if generated_x is not None:
                x = ops.concatenate(
                    [x, ops.cast(generated_x, x.dtype)], axis=0)
                if labels is not None:
                    labels = ops.concatenate([labels, generated_labels], axis=0)
        terms = self.compute_terms(x, labels, training=training)
        beta = ops.cast(self.student.beta_variable, "float32")
        elbo_loss = ops.mean(terms["reconstruction"] + beta * terms["kl"])
        scale = self._distillation_scale(training)
        loss = (
            self.elbo_weight * elbo_loss
            + scale * self.posterior_weight * ops.mean(terms["posterior"])
            + scale * self.output_weight * ops.mean(terms["output"])
        )
        if training and self.student.losses:
            loss = loss + ops.cast(ops.sum(self.student.losses), "float32")
        reconstruction = terms["reconstruction"][:real]
        kl = terms["kl"][:real]
        logs = {
            "loss": loss,
            "elbo": -ops.mean(reconstruction + kl),
            "reconstruction_loss": ops.mean(reconstruction),
            "kl_loss": ops.mean(kl),
            "posterior_loss": ops.mean(terms["posterior"][:real]),
            "output_loss": ops.mean(terms["output"][:real]),
        }
        return loss, logs

    def _distillation_scale(self, training):
        """1, or the linear decay factor of the distillation weights."""
        step = self.step_variable.value
        if training:
            self.step_variable.assign(step + 1.0)
        if self.decay_steps is None:
            return 1.0
        return ops.maximum(0.0, 1.0 - step / float(self.decay_steps))

    # ------------------------------------------- train/test per backend
    def _run_hooks(self, method):
        for hook in self.student.train_step_hooks:
            getattr(hook, method)()

    def _update_metrics(self, values):
        for tracker in self.metrics:
            tracker.update_state(values[tracker.name])
        return {tracker.name: tracker.result() for tracker in self.metrics}

    def train_step(self, *args):
        if keras.backend.backend() == "jax":
            return self._jax_train_step(*args)
        return self._tf_train_step(*args)

    def test_step(self, *args):
        if keras.backend.backend() == "jax":
            return self._jax_test_step(*args)
        return self._update_metrics(self._loss_and_logs(args[0], False)[1])

    def _tf_train_step(self, data):
        import tensorflow as tf

        self._run_hooks("before_train_step")
        with tf.GradientTape() as tape:
            loss, logs = self._loss_and_logs(data, training=True)
            scaled_loss = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled_loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        self._run_hooks("after_apply")
        return self._update_metrics(logs)

    def _state_mapping(self, trainable, non_trainable):
        return list(zip(self.trainable_variables, trainable)) + list(
            zip(self.non_trainable_variables, non_trainable))

    def _stateless_hooks(self, method, trainable, non_trainable):
        if not self.student.train_step_hooks:
            return trainable, non_trainable
        mapping = self._state_mapping(trainable, non_trainable)
        with keras.StatelessScope(state_mapping=mapping) as scope:
            self._run_hooks(method)
        return (
            [scope.get_current_value(v) for v in self.trainable_variables],
            [scope.get_current_value(v) for v in self.non_trainable_variables],
        )

    def _stateless_loss(self, trainable, non_trainable, data, training):
        mapping = self._state_mapping(trainable, non_trainable)
        with keras.StatelessScope(state_mapping=mapping) as scope:
            loss, logs = self._loss_and_logs(data, training)
        non_trainable = [
            scope.get_current_value(v) for v in self.non_trainable_variables
        ]
        return loss, (logs, non_trainable)

    def _stateless_update_metrics(self, metrics_variables, values):
        new_variables, logs, start = [], {}, 0
        for tracker in self.metrics:
            count = len(tracker.variables)
            tracker_variables = tracker.stateless_update_state(
                metrics_variables[start:start + count], values[tracker.name])
            start += count
            logs[tracker.name] = tracker.stateless_result(tracker_variables)
            new_variables.extend(tracker_variables)
        return logs, new_variables

    def _jax_train_step(self, state, data):
        import jax

        trainable, non_trainable, optimizer_variables, metrics_variables = (
            state)
        trainable, non_trainable = self._stateless_hooks(
            "before_train_step", trainable, non_trainable)
        def scaled_loss(trainable, non_trainable, data):
            # The loss scale of a `LossScaleOptimizer` (mixed_float16), as
            # Keras' JAX step applies it: `stateless_apply` unscales.
            loss, aux = self._stateless_loss(trainable, non_trainable, data,
                                             True)
            mapping = list(zip(self.optimizer.variables, optimizer_variables))
            with keras.StatelessScope(state_mapping=mapping):
                return self.optimizer.scale_loss(loss), aux

        gradient_fn = jax.value_and_grad(scaled_loss, has_aux=True)
        (_, (values, non_trainable)), gradients = gradient_fn(
            trainable, non_trainable, data)
        trainable, optimizer_variables = self.optimizer.stateless_apply(
            optimizer_variables, gradients, trainable)
        trainable, non_trainable = self._stateless_hooks(
            "after_apply", trainable, non_trainable)
        logs, metrics_variables = self._stateless_update_metrics(
            metrics_variables, values)
        return logs, (trainable, non_trainable, optimizer_variables,
                      metrics_variables)

    def _jax_test_step(self, state, data):
        trainable, non_trainable, metrics_variables = state
        _, (values, non_trainable) = self._stateless_loss(
            trainable, non_trainable, data, False)
        logs, metrics_variables = self._stateless_update_metrics(
            metrics_variables, values)
        return logs, (trainable, non_trainable, metrics_variables)

    # ------------------------------------------------------- entry points
    def call(self, inputs, training=False):
        return self.student(inputs, training=training)

    def _prepared(self, x, y, name):
        """Validated numpy data and one-hot labels; other inputs as they are."""
        if y is None and isinstance(x, (tuple, list)) and len(x) == 2:
            x, y = x
        if x is None or not hasattr(x, "shape") or hasattr(x, "element_spec"):
            return x, y
        x = _validation.as_float_array(
            x, name, self.student.input_spec_shape, self.student.likelihood)
        if self.student.is_conditional:
            y = self.student.prepare_labels(y, len(x), "y")
        elif y is not None:
            raise ValueError(
                "An unconditional student trains on `x` alone; drop `y`. "
                f"Received: y of type {type(y).__name__}"
            )
        return x, y

    def fit(self, x=None, y=None, *args, validation_data=None, **kwargs):
        x, y = self._prepared(x, y, "x")
        if isinstance(validation_data, (tuple, list)) and validation_data:
            pair = (validation_data if len(validation_data) == 2
                    else (validation_data[0], None))
            validation_data = self._prepared(*pair, "validation_data")
            if validation_data[1] is None:
                validation_data = (validation_data[0],)
        elif hasattr(validation_data, "shape"):
            validation_data = (
                self._prepared(validation_data, None, "validation_data")[0],)
        return super().fit(x, y, *args, validation_data=validation_data,
                           **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        x, y = self._prepared(x, y, "x")
        return super().evaluate(x, y, *args, **kwargs)

    # ------------------------------------------------------------- saving
    # Keras does not save a `SeedGenerator`'s state; with it, training
    # continued from a `.keras` file or checkpoint draws the same noise as
    # training that never stopped.
    _NOISE_KEY = "seed_generator_state"

    def save_own_variables(self, store):
        super().save_own_variables(store)
        store[self._NOISE_KEY] = self.seed_generator.state

    def load_own_variables(self, store):
        keys = [key for key in store.keys() if key != self._NOISE_KEY]
        super().load_own_variables({key: store[key] for key in keys})
        if self._NOISE_KEY in store.keys():
            self.seed_generator.state.assign(store[self._NOISE_KEY])

    # ------------------------------------------------------------- config
    def get_config(self):
        config = super().get_config()
        teacher = keras.saving.serialize_keras_object(self.teacher)
        # The frozen teacher's own training state has no use here (and its
        # optimizer would be rebuilt for no trainable weight on loading).
        teacher.pop("compile_config", None)
        config.update({
            "teacher": teacher,
            "student": keras.saving.serialize_keras_object(self.student),
            "posterior_weight": self.posterior_weight,
            "output_weight": self.output_weight,
            "elbo_weight": self.elbo_weight,
            "temperature": self.temperature,
            "generated_fraction": self.generated_fraction,
            "output_code": self.output_code,
            "decay_steps": self.decay_steps,
            "seed": self.seed,
        })
        return config

    @classmethod
    def from_config(cls, config):
        config = copy.deepcopy(config)
        for key in ("teacher", "student"):
            if isinstance(config.get(key), dict):
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def distill(
    teacher,
    student,
    x,
    labels=None,
    epochs=30,
    batch_size=128,
    learning_rate=1e-3,
    posterior_weight=1.0,
    output_weight=1.0,
    elbo_weight=1.0,
    temperature=1.0,
    generated_fraction=0.0,
    output_code="teacher",
    decay_steps=None,
    validation_data=None,
    callbacks=None,
    seed=None,
    verbose="auto",
):
    """Train `student` from the frozen `teacher` on `x`; return the student.

    Builds a `Distiller`, compiles it with Adam, fits it and returns the
    student, trained in place: an ordinary `keras_vae.VAE` (or `CVAE`) to
    evaluate, prune, quantize and export. The teacher's `trainable` flag is
    restored when training ends. Use `Distiller` directly for its history,
    callbacks that need it, or `.keras` checkpoints of both models.

    Args:
        teacher: `keras_vae.VAE` or `CVAE`. The trained teacher.
        student: `keras_vae.VAE` or `CVAE`. The model to train.
        x: array `(n, *input_shape)` or a `tf.data.Dataset` (of `x`, or of
            `(x, y)` for a conditional pair).
        labels: class labels of `x` for a conditional pair, else None.
        epochs: int > 0. Passes over `x`.
        batch_size: int > 0. Real examples per batch (numpy input; a
            dataset keeps its own batches).
        learning_rate: float > 0. Adam learning rate.
        posterior_weight: float >= 0. See `Distiller`.
        output_weight: float >= 0. See `Distiller`.
        elbo_weight: float >= 0. See `Distiller`.
        temperature: float > 0. See `Distiller`.
        generated_fraction: float in [0, 1). See `Distiller`.
        output_code: str. See `Distiller`.
        decay_steps: int > 0 or None. See `Distiller`.
        validation_data: array, `(x, y)` or dataset, or None. Reported as
            `val_*` metrics each epoch.
        callbacks: list of `keras.callbacks.Callback` or None.
        seed: int or None. Seed of the distillation noise.
        verbose: `"auto"`, 0, 1 or 2. `"auto"`: a progress bar on a
            terminal, one line per epoch otherwise.

    Returns:
        The trained `student`.

    Example:

    >>> import numpy as np, keras_vae
    >>> from keras_vae.compression import distill
    >>> x = np.random.default_rng(0).uniform(size=(64, 8, 8, 1)).astype("float32")
    >>> teacher = keras_vae.models.mlp_vae((8, 8, 1), 4, hidden_units=(32,))
    >>> student = keras_vae.models.mlp_vae((8, 8, 1), 4, hidden_units=(8,))
    >>> student = distill(teacher, student, x, epochs=1, verbose=0)
    """
    epochs = _validation.check_positive_int(epochs, "epochs")
    batch_size = _validation.check_positive_int(batch_size, "batch_size")
    learning_rate = _validation.check_non_negative(
        learning_rate, "learning_rate")
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    was_trainable = teacher.trainable
    distiller = Distiller(
        teacher, student, posterior_weight=posterior_weight,
        output_weight=output_weight, elbo_weight=elbo_weight,
        temperature=temperature, generated_fraction=generated_fraction,
        output_code=output_code, decay_steps=decay_steps, seed=seed)
    try:
        distiller.compile(optimizer=keras.optimizers.Adam(learning_rate))
        # A dataset is batched already; Keras refuses `batch_size` with it.
        batching = ({} if hasattr(x, "element_spec")
                    else {"batch_size": batch_size})
        distiller.fit(x, labels, epochs=epochs,
                      validation_data=validation_data, callbacks=callbacks,
                      verbose=verbose, **batching)
    finally:
        teacher.trainable = was_trainable
    return student




# ------------------------------------------------------------------ the job
#: The files `distill_and_report` writes into its output folder, by key.
RUN_FILES = {
    "teacher": "teacher.keras",
    "student": "student.keras",
    "scratch": "scratch_student.keras",
    "curve_steps": "learning_curve_steps.png",
    "curve_seconds": "learning_curve_seconds.png",
    "samples": "student_samples.png",
    "report": "report.json",
}


def _fresh_likelihood(model):
    return keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(model.likelihood))


def build_student(teacher, hidden_units=(48,), latent_dim=None, seed=None):
    """An MLP student shaped like `teacher`: same data, likelihood, classes.

    Args:
        teacher: `keras_vae.VAE` or `CVAE`.
        hidden_units: tuple of ints. The student's hidden widths.
        latent_dim: int or None. None takes the teacher's.
        seed: int or None. Seed of the student's sampling noise.

    Returns:
        `keras_vae.VAE` (`mlp_vae`) or `CVAE` (`mlp_cvae`).

    Example:

    >>> import keras_vae
    >>> from keras_vae.compression.distillation import build_student
    >>> teacher = keras_vae.models.mlp_vae((8, 8, 1), 4, hidden_units=(32,))
    >>> build_student(teacher, hidden_units=(8,)).latent_dim
    4
    """
    from keras_vae import models

    common = {
        "latent_dim": latent_dim or teacher.latent_dim,
        "hidden_units": tuple(int(u) for u in hidden_units),
        "likelihood": _fresh_likelihood(teacher),
        "seed": seed,
    }
    if teacher.is_conditional:
        return models.mlp_cvae(teacher.input_spec_shape, teacher.num_classes,
                               name="student", **common)
    return models.mlp_vae(teacher.input_spec_shape, name="student", **common)


def _sample_labels(model, y, count):
    if not model.is_conditional:
        return None
    return np.resize(np.asarray(y), count)


def _sample_kid(model, x_test, y_test, count, seed):
    """KID of `count` samples against the test set (None: no network)."""
    from keras_vae import sample_quality

    if tuple(x_test.shape[1:]) not in sample_quality.DATASET_FOR_SHAPE:
        return None
    labels = _sample_labels(model, y_test, count)
    samples = np.asarray(model.sample(count, seed=seed, labels=labels))
    return sample_quality.kid(x_test, samples)


def _train_teacher(builder, x_train, y_train, epochs, batch_size,
                   learning_rate, seed, verbose):
    teacher = builder(x_train.shape[1:], seed=seed)
    teacher.compile(optimizer=keras.optimizers.Adam(learning_rate))
    started = time.perf_counter()
    labels = y_train if teacher.is_conditional else None
    teacher.fit(x_train, labels, epochs=epochs, batch_size=batch_size,
                verbose=verbose)
    return teacher, time.perf_counter() - started


def distill_and_report(
    dataset="mnist5k",
    teacher=None,
    teacher_model="mlp",
    teacher_epochs=30,
    student_hidden_units=(48,),
    epochs=30,
    batch_size=128,
    learning_rate=1e-3,
    posterior_weight=1.0,
    output_weight=1.0,
    generated_fraction=0.0,
    compare_scratch=True,
    num_samples=1000,
    seed=0,
    output_dir="runs/distill",
    overwrite=False,
    data_dir=None,
    verbose="auto",
):
    """Distil a small MLP student from a teacher; write models, plots, report.

    The teacher is loaded from a `.keras` file or trained here (the
    builder `teacher_model` at its default size). The student (an MLP with
    `student_hidden_units`, the teacher's latent size and likelihood) is
    distilled for `epochs`; with `compare_scratch`, the same student
    (same initial weights) is also trained alone for the same number of
    optimizer steps. Writes to `output_dir`: `teacher.keras` (if trained
    here), `student.keras`, `scratch_student.keras`, the learning curves
    (test negative ELBO against optimizer steps and against training
    seconds, the teacher's training not counted) as PNGs,
    `student_samples.png` and `report.json` (test negative ELBO,
    parameters and, for 28x28x1 or 8x8x1 images, KID of `num_samples`
    samples against the test set).

    Args:
        dataset: str. A `keras_vae.datasets.load` name.
        teacher: str, `keras_vae.VAE` or None. A `.keras` path, a model,
            or None to train one.
        teacher_model: str. `"mlp"` or `"conv"`: the teacher trained here.
        teacher_epochs: int > 0. Epochs of that teacher.
        student_hidden_units: tuple of ints. The student's hidden widths.
        epochs: int > 0. Epochs of the student (distilled and scratch).
        batch_size: int > 0. Batch size of every training.
        learning_rate: float > 0. Adam learning rate of every training.
        posterior_weight: float >= 0. See `Distiller`.
        output_weight: float >= 0. See `Distiller`.
        generated_fraction: float in [0, 1). See `Distiller`.
        compare_scratch: bool. Also train the student from scratch.
        num_samples: int > 0. Samples scored by KID.
        seed: int. Seed of weights, batch order and noise.
        output_dir: str. Folder of the run files.
        overwrite: bool. Replace the files of an earlier run.
        data_dir: str or None. tensorflow-datasets data directory.
        verbose: `"auto"`, 0, 1 or 2. Keras progress output.

    Returns:
        dict. The report.

    Example:

    >>> from keras_vae.compression.distillation import distill_and_report
    >>> # report = distill_and_report("digits", teacher_epochs=5, epochs=5)
    """
    from keras_vae import datasets, files, models, plotting
    from keras_vae.callbacks import LearningCurve
    from keras_vae.metrics import elbo

    builders = {"mlp": models.mlp_vae, "conv": models.conv_vae}
    if teacher_model not in builders:
        raise ValueError(
            f"Expected `teacher_model` in {sorted(builders)}. Received: "
            f"teacher_model={teacher_model!r}"
        )
    for name, value in (("teacher_epochs", teacher_epochs),
                        ("epochs", epochs), ("batch_size", batch_size),
                        ("num_samples", num_samples)):
        _validation.check_positive_int(value, name)
    paths = {key: os.path.join(output_dir, name)
             for key, name in RUN_FILES.items()}
    for path in paths.values():
        files.check_writable_destination(path, overwrite)
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    with files.claim_folder(output_dir):
        keras.utils.set_random_seed(seed)
        (x_train, y_train), (x_test, y_test) = datasets.load(
            dataset, data_dir=data_dir)
        report = {"dataset": dataset, "backend": keras.backend.backend(),
                  "epochs": epochs, "batch_size": batch_size,
                  "learning_rate": learning_rate, "seed": seed,
                  "weights": {"posterior": posterior_weight,
                              "output": output_weight,
                              "generated_fraction": generated_fraction},
                  "files": {}}
        if teacher is None:
            teacher, seconds = _train_teacher(
                builders[teacher_model], x_train, y_train, teacher_epochs,
                batch_size, learning_rate, seed, verbose)
            report["teacher_train_seconds"] = seconds
            report["files"]["teacher"] = files.save_model(
                teacher, paths["teacher"], overwrite=overwrite)
        elif isinstance(teacher, (str, os.PathLike)):
            teacher = files.load_model(teacher, compile=False)
        labels = y_train if teacher.is_conditional else None
        test_labels = y_test if teacher.is_conditional else None
        student = build_student(teacher, student_hidden_units, seed=seed)
        initial = student.get_weights()
        curves = {}
        curve = LearningCurve(student, x_test, labels=test_labels)
        distill(teacher, student, x_train, labels=labels, epochs=epochs,
                batch_size=batch_size, learning_rate=learning_rate,
                posterior_weight=posterior_weight,
                output_weight=output_weight,
                generated_fraction=generated_fraction, callbacks=[curve],
                seed=seed, verbose=verbose)
        curves["distilled"] = curve.points
        models_scored = {"teacher": teacher, "distilled": student}
        if compare_scratch:
            scratch = build_student(teacher, student_hidden_units, seed=seed)
            scratch.set_weights(initial)
            scratch.compile(optimizer=keras.optimizers.Adam(learning_rate))
            curve = LearningCurve(scratch, x_test, labels=test_labels)
            keras.utils.set_random_seed(seed)
            scratch.fit(x_train, labels, epochs=epochs, batch_size=batch_size,
                        verbose=verbose, callbacks=[curve])
            curves["scratch"] = curve.points
            models_scored["scratch"] = scratch
            report["files"]["scratch"] = files.save_model(
                scratch, paths["scratch"], overwrite=overwrite)
        report["files"]["student"] = files.save_model(
            student, paths["student"], overwrite=overwrite)
        report["models"] = {
            name: {
                "params": int(model.count_params()),
                "negative_elbo": -elbo(model, x_test, labels=test_labels,
                                       seed=0),
                "kid": _sample_kid(model, x_test, y_test, num_samples, seed),
            }
            for name, model in models_scored.items()
        }
        report["curves"] = curves
        teacher_score = {"teacher": report["models"]["teacher"][
            "negative_elbo"]}
        for key, axis, label in (
                ("curve_steps", "steps", "optimizer steps"),
                ("curve_seconds", "seconds",
                 "training seconds (teacher's training not counted)")):
            report["files"][key] = plotting.learning_curves(
                {name: [([p[axis] for p in points],
                         [p["negative_elbo"] for p in points])]
                 for name, points in curves.items()},
                paths[key], x_label=label, reference=teacher_score,
                title=f"Student {_describe_units(student_hidden_units)} on "
                      f"{dataset}: distilled vs from scratch")
        report["files"]["samples"] = plotting.sample_grid(
            student, paths["samples"], seed=seed,
            labels=None)
        report["files"]["report"] = files.write_json(
            paths["report"], report, overwrite=overwrite)
        return report


def _describe_units(hidden_units):
    """`(64,)` -> `"MLP 64"`: a student's widths as text."""
    return "MLP " + "-".join(str(int(u)) for u in hidden_units)


__all__ = [
    "Distiller",
    "build_student",
    "distill",
    "distill_and_report",
    "gaussian_kl",
    "output_divergence",
]
