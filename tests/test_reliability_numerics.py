"""Numerical faults: extreme logits and inputs, diverging learning rates.

The loss either stays finite, or `StopOnNonFinite` stops training at the
first non-finite step with an error naming the step and the term, and the
weights from before that step are kept.
"""


import keras
import numpy as np
import pytest
import reliability_log
import tensorflow as tf
from backend_runner import run_with_backend

import keras_vae
from keras_vae.callbacks import NonFiniteLossError, StopOnNonFinite

EXTREME_LOGITS = [-1e30, -1e6, -88.0, -20.0, 0.0, 20.0, 88.0, 1e6, 1e30]
# Faults injected, by kind (reported by the module).
FAULTS = []


@pytest.fixture(scope="module", autouse=True)
def report_faults():
    yield
    reliability_log.report("numerics", faults=len(FAULTS))


def small_vae(likelihood="bernoulli", seed=1):
    return keras_vae.models.mlp_vae(
        (8, 8, 1), latent_dim=2, hidden_units=(16,), likelihood=likelihood,
        seed=seed,
    )


@pytest.fixture(scope="module")
def x_small():
    (x_train, _), _ = keras_vae.datasets.load("digits")
    return x_train[:128]


class WeightRecorder(keras.callbacks.Callback):
    """Records the weights at train begin and after every batch."""

    def __init__(self):
        super().__init__()
        self.history = []

    def on_train_begin(self, logs=None):
        self.history.append([np.array(w) for w in self.model.get_weights()])

    def on_train_batch_end(self, batch, logs=None):
        self.history.append([np.array(w) for w in self.model.get_weights()])


def assert_weights_equal(actual, expected):
    assert len(actual) == len(expected)
    for a, b in zip(actual, expected):
        np.testing.assert_array_equal(a, b)


def set_bias(model, layer_name, value):
    layer = model.get_layer("encoder").get_layer(layer_name) if layer_name in (
        "z_mean", "z_log_var"
    ) else model.get_layer("decoder").get_layer(layer_name)
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel, np.full_like(bias, value)])


def test_bernoulli_loss_and_gradient_are_finite_for_extreme_logits():
    likelihood = keras_vae.likelihoods.Bernoulli()
    logits = np.array(EXTREME_LOGITS, "float32")
    for target in (0.0, 0.5, 1.0):
        FAULTS.extend(f"logit {v:g}, x={target}" for v in EXTREME_LOGITS)
        x = np.full((1, len(logits)), target, "float32")
        params = tf.Variable(logits[None])
        with tf.GradientTape() as tape:
            nll = likelihood.negative_log_prob(x, params)
        gradient = tape.gradient(nll, params).numpy()
        assert np.isfinite(nll.numpy()).all(), target
        assert np.isfinite(gradient).all(), target
        # Cross-entropy is bounded below by the entropy of the target.
        assert float(nll[0]) >= -1e-3
    # A confident right answer costs ~0; a confident wrong one costs |logit|.
    right = likelihood.negative_log_prob(
        np.array([[1.0, 0.0]], "float32"), np.array([[1e6, -1e6]], "float32")
    )
    wrong = likelihood.negative_log_prob(
        np.array([[0.0]], "float32"), np.array([[1e6]], "float32")
    )
    assert float(right[0]) == pytest.approx(0.0, abs=1e-6)
    assert float(wrong[0]) == pytest.approx(1e6, rel=1e-6)


@pytest.mark.parametrize("bias", [-1e4, 1e4])
def test_training_stays_finite_with_saturated_decoder_logits(x_small, bias):
    FAULTS.append(f"decoder logits {bias:g}")
    model = small_vae()
    set_bias(model, "decoder_output", bias)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(
        x_small, epochs=1, batch_size=64, verbose=0,
        callbacks=[StopOnNonFinite()],
    ).history
    for name in ("loss", "reconstruction_loss", "kl_loss", "elbo"):
        assert np.isfinite(history[name]).all(), name
    # Saturated logits on grey-level data cost ~|bias| * mean(x) per pixel.
    assert history["reconstruction_loss"][0] > 100.0


@pytest.mark.parametrize("bias", [-1e6, 1e6])
def test_extreme_log_variance_is_clipped_so_kl_stays_finite(x_small, bias):
    FAULTS.append(f"log-variance {bias:g}")
    model = small_vae()
    set_bias(model, "z_log_var", bias)
    _, z_log_var = model.encode(x_small[:8])
    low, high = keras_vae.vae.LOG_VAR_BOUNDS
    assert float(np.min(z_log_var)) >= low and float(np.max(z_log_var)) <= high
    terms = model.compute_terms(x_small[:8])
    assert np.isfinite(terms["kl"].numpy()).all()
    assert np.isfinite(terms["reconstruction"].numpy()).all()


@pytest.mark.parametrize("value", [0.0, 1e-38, 1e-45, 1.0])
def test_tiny_and_boundary_inputs_train_finitely(value):
    FAULTS.append(f"inputs all {value:g}")
    model = small_vae()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = np.full((16, 8, 8, 1), value, "float32")
    history = model.fit(
        x, epochs=2, batch_size=8, verbose=0, callbacks=[StopOnNonFinite()]
    ).history
    assert np.isfinite(history["loss"]).all()
    assert np.isfinite(np.asarray(model.reconstruct(x[:2]))).all()


def test_huge_gaussian_inputs_fail_loudly_never_silently(x_small):
    model = small_vae(likelihood="gaussian")
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = np.full((16, 8, 8, 1), 1e30, "float32")
    FAULTS.extend(["gaussian inputs 1e30", "float64 inputs 1e300"])
    with pytest.raises(NonFiniteLossError) as info:
        model.fit(
            x, epochs=1, batch_size=8, verbose=0,
            callbacks=[StopOnNonFinite()],
        )
    assert info.value.step == 1
    assert info.value.term in ("reconstruction", "KL")
    assert f"the {info.value.term} term" in str(info.value)
    assert all(np.isfinite(w).all() for w in model.get_weights())
    # float64 data beyond float32 range is refused before training.
    with pytest.raises(ValueError, match="too large for float32"):
        model.fit(np.full((4, 8, 8, 1), 1e300), epochs=1, verbose=0)


def test_error_names_the_kl_term_and_keeps_the_initial_weights(x_small):
    model = small_vae()
    set_bias(model, "z_mean", 1e20)  # KL = z_mean**2 / 2 overflows float32
    FAULTS.append("z_mean 1e20")
    initial = [np.array(w) for w in model.get_weights()]
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    with pytest.raises(NonFiniteLossError) as info:
        model.fit(
            x_small, epochs=1, batch_size=32, verbose=0,
            callbacks=[StopOnNonFinite()],
        )
    error = info.value
    assert isinstance(error, ValueError)
    assert (error.term, error.step, error.epoch, error.batch) == ("KL", 1, 0, 0)
    assert "step 1 " in str(error) and "KL term" in str(error)
    assert "Received: kl_loss=inf" in str(error)
    assert_weights_equal(model.get_weights(), initial)
    # The optimizer state is rolled back too: no update was applied.
    assert int(model.optimizer.iterations.numpy()) == 0


def test_error_names_the_reconstruction_term(x_small):
    model = small_vae(likelihood="gaussian")
    set_bias(model, "decoder_output", 1e20)  # (x - mean)**2 overflows
    FAULTS.append("gaussian mean 1e20")
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    with pytest.raises(NonFiniteLossError) as info:
        model.fit(
            x_small, epochs=1, batch_size=32, verbose=0,
            callbacks=[StopOnNonFinite()],
        )
    assert info.value.term == "reconstruction"
    assert "reconstruction term" in str(info.value)


def test_diverging_learning_rate_stops_at_first_bad_step_with_last_good_weights(
    x_small,
):
    FAULTS.append("SGD learning rate 1e6 (TF)")
    model = small_vae()
    model.compile(optimizer=keras.optimizers.SGD(1e6))
    recorder = WeightRecorder()
    with pytest.raises(NonFiniteLossError) as info:
        model.fit(
            x_small, epochs=3, batch_size=16, verbose=0,
            callbacks=[recorder, StopOnNonFinite()],
        )
    step = info.value.step
    assert step >= 1 and f"step {step} " in str(info.value)
    # The recorder saw the weights after each step; every step before the
    # failing one was finite, and the model holds the weights after step-1.
    good = recorder.history[:step]
    assert all(all(np.isfinite(w).all() for w in ws) for ws in good)
    assert_weights_equal(model.get_weights(), good[-1])
    assert int(model.optimizer.iterations.numpy()) == step - 1
    # Without the callback the same run silently ends in NaN.
    plain = small_vae()
    plain.compile(optimizer=keras.optimizers.SGD(1e6))
    history = plain.fit(x_small, epochs=3, batch_size=16, verbose=0).history
    assert not np.isfinite(history["loss"][-1])


def test_a_corrupt_later_batch_is_caught_and_training_can_continue(x_small):
    # Validation sees only the first batch of a tf.data pipeline; a corrupt
    # batch further in is caught at its step by the callback instead.
    model = small_vae(likelihood="gaussian")
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    corrupt = x_small.copy()
    corrupt[80:96] = 1e30
    FAULTS.append("corrupt sixth batch")
    dataset = tf.data.Dataset.from_tensor_slices(corrupt).batch(16)
    with pytest.raises(NonFiniteLossError) as info:
        model.fit(dataset, epochs=1, verbose=0,
                  callbacks=[StopOnNonFinite()])
    assert (info.value.step, info.value.batch) == (6, 5)
    # Weights and Adam moments are those after step 5, all finite, so
    # training continues on clean data.
    assert int(model.optimizer.iterations.numpy()) == 5
    for variable in model.optimizer.variables:
        assert np.isfinite(keras.ops.convert_to_numpy(variable)).all()
    history = model.fit(x_small, epochs=1, batch_size=16, verbose=0,
                        callbacks=[StopOnNonFinite()]).history
    assert np.isfinite(history["loss"]).all()


class PoisonAtBatch(keras.callbacks.Callback):
    """Pushes the `z_mean` bias to 1e20 (KL overflows) when `batch` begins."""

    def __init__(self, batch):
        super().__init__()
        self.batch = batch

    def on_train_batch_begin(self, batch, logs=None):
        if batch == self.batch:
            set_bias(self.model, "z_mean", 1e20)


def test_several_steps_per_execution_report_the_range_and_restore_before_it(
    x_small,
):
    # 4 steps per execution: Keras calls the batch hooks once per execution
    # (begin with batch 4, end with batch 7), so the error can only name
    # the execution's steps 5-8, and the weights restored must be those
    # from before step 5, as the message says.
    FAULTS.append("KL overflow in the second execution of 4 steps")
    model = small_vae()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), steps_per_execution=4)
    recorder = WeightRecorder()
    with pytest.raises(NonFiniteLossError) as info:
        model.fit(x_small, epochs=1, batch_size=16, shuffle=False, verbose=0,
                  callbacks=[PoisonAtBatch(4), recorder, StopOnNonFinite()])
    error = info.value
    assert (error.first_step, error.step) == (5, 8)
    assert (error.first_batch, error.batch) == (4, 7)
    message = str(error)
    assert "steps 5-8" in message and "batches 4-7" in message
    assert "before step 5 were restored" in message
    # Train begin, the end of the first execution (after step 4), then the
    # end of the failed one (the recorder runs before the check).
    assert len(recorder.history) == 3
    assert_weights_equal(model.get_weights(), recorder.history[1])
    assert int(model.optimizer.iterations.numpy()) == 4


def test_diverging_run_on_jax_stops_with_last_good_weights():
    FAULTS.append("SGD learning rate 1e6 (JAX)")
    output = run_with_backend(
        """
        import numpy as np, keras, keras_vae
        from keras_vae.callbacks import NonFiniteLossError, StopOnNonFinite

        class Recorder(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.seen = [self.model.get_weights()]
            def on_train_batch_end(self, batch, logs=None):
                self.model.jax_state_sync()
                self.seen.append(self.model.get_weights())

        (x, _), _ = keras_vae.datasets.load("digits")
        model = keras_vae.models.mlp_vae((8, 8, 1), latent_dim=2,
                                         hidden_units=(16,), seed=1)
        model.compile(optimizer=keras.optimizers.SGD(1e6))
        recorder = Recorder()
        try:
            model.fit(x[:128], epochs=3, batch_size=16, verbose=0,
                      callbacks=[recorder, StopOnNonFinite()])
            raise SystemExit("no error raised")
        except NonFiniteLossError as error:
            step = error.step
        weights = model.get_weights()
        assert all(np.isfinite(w).all() for w in weights)
        for a, b in zip(weights, recorder.seen[step - 1]):
            np.testing.assert_array_equal(a, b)
        print("STOPPED", step)
        """
    )
    assert "STOPPED" in output
