"""Pruning: exact zeros, schedule state across fit / save / restore, strip.

TF-MOT parity is in `test_pruning_tfmot_parity.py`. The JAX backend runs
the same state checks in one subprocess.
"""

import json
import os

import keras
import numpy as np
import pytest

import keras_vae
from keras_vae.compression import (
    ConstantSparsity,
    PolynomialDecay,
    PruningCallback,
    pruning_hooks,
    strip_pruning,
)
from tests.backend_runner import run_with_backend

BATCH = 64


def _model(seed=0):
    return keras_vae.models.mlp_vae((8, 8, 1), 4, hidden_units=(32,), seed=seed)


def _compiled(seed=0):
    keras.utils.set_random_seed(seed)
    model = _model(seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    return model


def _kernels(model):
    return {
        path: keras.ops.convert_to_numpy(layer.kernel)
        for path, layer in keras_vae.compression.prunable_layers(model).items()
    }


def _schedule():
    # 8 steps per epoch of 512 digits at batch 64; ends in epoch 3.
    return PolynomialDecay(0.0, 0.75, begin_step=0, end_step=20, frequency=4)


def _step(model):
    return int(keras.ops.convert_to_numpy(pruning_hooks(model)[0].pruning_step))


@pytest.fixture(scope="module")
def x(digits):
    (x_train, _), _ = digits
    return x_train[:512]


def test_pruned_weights_stay_exactly_zero_through_optimizer_updates(x):
    model = _compiled()
    pruning = PruningCallback(ConstantSparsity(0.5, begin_step=2, frequency=3))
    zeros_after_batch = []

    class Count(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            kernel = self.model.encoder.get_layer("encoder_dense_0").kernel
            zeros_after_batch.append(float(np.mean(kernel.numpy() == 0)))

    model.fit(x, batch_size=BATCH, epochs=2, verbose=0, shuffle=False,
              callbacks=[pruning, Count()])
    # Dense until the first pruning step (2), then exactly half, every step,
    # although Adam moves every weight it gets a gradient for.
    assert zeros_after_batch[0] == 0.0
    assert zeros_after_batch[1:] == [0.5] * (len(zeros_after_batch) - 1)
    hook = pruning_hooks(model)[0]
    assert len(hook.masks) == 5  # every Dense kernel by default
    for kernel, mask in zip(hook.kernels, hook.masks):
        kernel, mask = kernel.numpy(), mask.numpy()
        assert np.mean(kernel == 0) == 0.5
        np.testing.assert_array_equal(kernel[mask == 0], 0.0)


def test_layers_filter_prunes_only_the_chosen_kernels(x):
    model = _compiled()
    pruning = PruningCallback(ConstantSparsity(0.5, 0, frequency=1),
                              layers=["decoder_output"])
    model.fit(x[:128], batch_size=BATCH, epochs=1, verbose=0, callbacks=[pruning])
    sparsity = {p: float(np.mean(k == 0)) for p, k in _kernels(model).items()}
    assert sparsity.pop("decoder/decoder_output") == 0.5
    assert set(sparsity.values()) == {0.0}


def test_schedule_continues_when_fit_is_called_twice(x):
    model = _compiled()
    pruning = PruningCallback(_schedule())
    model.fit(x, batch_size=BATCH, epochs=1, verbose=0, callbacks=[pruning])
    assert _step(model) == 8
    middle = np.mean(_kernels(model)["encoder/encoder_dense_0"] == 0)
    # A new callback with the same schedule reuses the model's hook.
    model.fit(x, batch_size=BATCH, epochs=2, verbose=0,
              callbacks=[PruningCallback(_schedule())])
    assert len(pruning_hooks(model)) == 1
    assert _step(model) == 24
    final = np.mean(_kernels(model)["encoder/encoder_dense_0"] == 0)
    assert 0.0 < middle < final == 0.75


def _expected_zeros(schedule, step, size):
    # TF-MOT's rule: keep round(n * (1 - sparsity)) weights.
    sparsity = float(keras.ops.convert_to_numpy(schedule.sparsity(step)))
    return size - int(np.round(np.float32(size) * np.float32(1.0 - sparsity)))


def test_keras_save_load_mid_schedule_continues_the_schedule(x, tmp_path):
    model = _compiled()
    model.fit(x, batch_size=BATCH, epochs=1, verbose=0,
              callbacks=[PruningCallback(_schedule())])
    path = str(tmp_path / "mid.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert _step(restored) == 8
    for saved, loaded in zip(pruning_hooks(model)[0].masks,
                             pruning_hooks(restored)[0].masks):
        np.testing.assert_array_equal(saved.numpy(), loaded.numpy())
    # Steps 9-16: the masks follow the schedule from where it stopped
    # (the last update, step 16, prunes to 74.4%), not from step 1.
    restored.fit(x, batch_size=BATCH, epochs=1, verbose=0,
                 callbacks=[PruningCallback(_schedule())])
    assert _step(restored) == 16
    for kernel in _kernels(restored).values():
        assert int(np.sum(kernel == 0)) == _expected_zeros(_schedule(), 16, kernel.size)
    restored.fit(x, batch_size=BATCH, epochs=1, verbose=0,
                 callbacks=[PruningCallback(_schedule())])
    assert _step(restored) == 24
    for kernel in _kernels(restored).values():
        assert int(np.sum(kernel == 0)) == _expected_zeros(_schedule(), 20, kernel.size)


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("interrupted")


def test_backup_and_restore_resumes_the_schedule(x, tmp_path):
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    model = _compiled()
    with pytest.raises(RuntimeError, match="interrupted"):
        model.fit(x, batch_size=BATCH, epochs=3, verbose=0,
                  callbacks=[PruningCallback(_schedule()), backup, _Interrupt(2)])
    # A fresh process would build a fresh model: the backup holds the state.
    fresh = _compiled()
    history = fresh.fit(x, batch_size=BATCH, epochs=3, verbose=0,
                        callbacks=[PruningCallback(_schedule()), backup])
    assert len(history.history["loss"]) == 1  # only epoch 3 was left
    assert history.history["pruning_step"] == [24]
    assert np.mean(_kernels(fresh)["decoder/decoder_output"] == 0) == 0.75


def test_strip_pruning_gives_a_plain_model_with_the_same_outputs(x, tmp_path):
    model = _compiled()
    model.fit(x, batch_size=BATCH, epochs=3, verbose=0,
              callbacks=[PruningCallback(_schedule())])
    plain = strip_pruning(model)
    assert plain.train_step_hooks == []
    assert len(plain.weights) == len(model.weights) - 6  # 5 masks + counter
    assert [v.shape for v in plain.trainable_weights] == [
        v.shape for v in model.trainable_weights]
    np.testing.assert_array_equal(plain.predict(x[:32], verbose=0),
                                  model.predict(x[:32], verbose=0))
    path = str(tmp_path / "plain.keras")
    plain.save(path)
    loaded = keras.saving.load_model(path)
    for kernel in _kernels(loaded).values():
        assert np.mean(kernel == 0) == 0.75


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(schedule="poly"), "schedule"),
        (dict(schedule=ConstantSparsity(0.5, 0), layers=["nope"]), "layers"),
        (dict(schedule=ConstantSparsity(0.5, 0), block_size=(0, 1)), "block_size"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        model = _compiled()
        model.fit(np.zeros((8, 8, 8, 1), "float32"), verbose=0,
                  callbacks=[PruningCallback(**kwargs)])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: ConstantSparsity(1.0, 0), "target_sparsity"),
        (lambda: PolynomialDecay(0.0, 0.8, 10, 5), "end_step"),
        (lambda: PolynomialDecay(0.0, 0.8, 0, -1), "end_step"),
        (lambda: ConstantSparsity(0.5, 0, frequency=0), "frequency"),
    ],
)
def test_bad_schedules_raise_value_error(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_schedules_round_trip_through_config():
    for schedule in (ConstantSparsity(0.3, 5, 50, 5),
                     PolynomialDecay(0.1, 0.9, 0, 100, power=2, frequency=7)):
        clone = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(schedule))
        assert clone.get_config() == schedule.get_config()
        for step in (0, 5, 7, 50, 100, 101):
            assert [float(v) for v in clone(step)] == [float(v) for v in schedule(step)]


def test_a_later_callback_may_change_the_schedule_but_not_layers_or_blocks(x):
    model = _compiled()
    model.fit(x[:128], batch_size=BATCH, epochs=1, verbose=0,
              callbacks=[PruningCallback(ConstantSparsity(0.5, 0, frequency=1),
                                         layers=["decoder_output"])])
    hook = pruning_hooks(model)[0]
    refused = [
        PruningCallback(ConstantSparsity(0.5, 0, frequency=1)),  # all layers
        PruningCallback(ConstantSparsity(0.5, 0, frequency=1),
                        layers=["decoder_output", "z_mean"]),
        PruningCallback(ConstantSparsity(0.5, 0, frequency=1),
                        layers=["decoder/decoder_output"], block_size=(2, 2)),
    ]
    for callback in refused:
        with pytest.raises(ValueError, match="already pruned.*strip_pruning"):
            model.fit(x[:64], batch_size=BATCH, epochs=1, verbose=0,
                      callbacks=[callback])
    assert hook.layer_names == ["decoder/decoder_output"]
    assert hook.block_size == (1, 1)
    assert _step(model) == 2  # the refused calls did not train
    # The same layers (by name or path) with a new schedule: schedule taken.
    later = ConstantSparsity(0.75, 0, frequency=1)
    model.fit(x[:128], batch_size=BATCH, epochs=1, verbose=0,
              callbacks=[PruningCallback(later, layers="decoder/decoder_output")])
    assert pruning_hooks(model) == [hook] and hook.schedule is later
    sparsity = {p: float(np.mean(k == 0)) for p, k in _kernels(model).items()}
    assert sparsity.pop("decoder/decoder_output") == 0.75
    assert set(sparsity.values()) == {0.0}


def _separable_vae():
    """Encoder with a SeparableConv2D (pruned) and a DepthwiseConv2D (not)."""
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.SeparableConv2D(4, 3, padding="same", name="separable")(inputs)
    h = keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise")(h)
    h = keras.layers.Flatten()(h)
    encoder = keras.Model(inputs, [keras.layers.Dense(2, name="z_mean")(h),
                                   keras.layers.Dense(2, name="z_log_var")(h)])
    decoder = keras_vae.models.mlp.mlp_decoder((8, 8, 1), 2, hidden_units=(8,))
    model = keras_vae.VAE(encoder, decoder, seed=0)
    model.compile(optimizer="adam")
    return model


def test_layers_pruning_cannot_handle_warn_when_skipped_and_raise_when_named(x):
    import warnings

    model = _separable_vae()
    schedule = ConstantSparsity(0.5, 0, frequency=1)
    with pytest.warns(UserWarning, match=r"encoder/depthwise \(DepthwiseConv2D\)"):
        model.fit(x[:32], batch_size=16, epochs=1, verbose=0,
                  callbacks=[PruningCallback(schedule)])
    hook = pruning_hooks(model)[0]
    # SeparableConv2D prunes its pointwise kernel, as TF-MOT does.
    assert "encoder/separable" in hook.layer_names
    assert "encoder/depthwise" not in hook.layer_names
    pointwise = model.encoder.get_layer("separable").pointwise_kernel.numpy()
    assert np.mean(pointwise == 0) == 0.5
    depthwise = model.encoder.get_layer("depthwise").kernel.numpy()
    assert np.all(depthwise != 0)
    for layers in (["depthwise"], "encoder/depthwise", ["separable", "depthwise"]):
        with pytest.raises(ValueError, match="Cannot prune encoder/depthwise "
                                             r"\(DepthwiseConv2D\)"):
            PruningCallback(schedule, layers=layers).set_model(_separable_vae())
    # Leaving it out explicitly is silent.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PruningCallback(schedule, layers=lambda layer: layer.name != "depthwise"
                        ).set_model(_separable_vae())


def test_block_size_on_a_kernel_that_is_not_rank_2_fails_with_a_message_about_blocks():
    from keras_vae.compression import magnitude_mask

    for shape in ((3, 4, 5), (3, 3, 2, 4), (6,)):
        weights = np.random.default_rng(0).normal(size=shape).astype("float32")
        with pytest.raises(ValueError, match="Block pruning needs a rank-2"):
            magnitude_mask(weights, 0.5, block_size=(2, 2))
        # Single weights are fine on any rank.
        mask = keras.ops.convert_to_numpy(magnitude_mask(weights, 0.5))
        assert mask.shape == shape and mask.mean() == 0.5
    with pytest.raises(ValueError, match="block_size"):
        magnitude_mask(np.ones((4, 4), "float32"), 0.5, block_size=(2,))
    model = keras_vae.models.conv1d_vae((16, 1), 2, filters=(4,), seed=0)
    model.compile(optimizer="adam")
    with pytest.raises(ValueError, match="Block pruning needs a rank-2"):
        model.fit(np.zeros((8, 16, 1), "float32"), verbose=0,
                  callbacks=[PruningCallback(ConstantSparsity(0.5, 0),
                                             block_size=(2, 1))])


JAX_CODE = """
import json, os, sys, tempfile
import keras, numpy as np, keras_vae
from keras_vae.compression import (ConstantSparsity, PolynomialDecay,
    PruningCallback, pruning_hooks, quantize_aware, strip_pruning,
    is_quantization_aware, QuantizationAwareTraining)

(x, _), _ = keras_vae.datasets.load("digits")
x = x[:512]
def compiled():
    keras.utils.set_random_seed(0)
    m = keras_vae.models.mlp_vae((8, 8, 1), 4, hidden_units=(32,), seed=0)
    m.compile(optimizer=keras.optimizers.Adam(1e-2))
    return m
def schedule():
    return PolynomialDecay(0.0, 0.75, begin_step=0, end_step=20, frequency=4)
def step(m):
    return int(np.asarray(pruning_hooks(m)[0].pruning_step.value))
def zeros(m):
    layer = keras_vae.compression.prunable_layers(m)["decoder/decoder_output"]
    return float(np.mean(np.asarray(layer.kernel.value) == 0))
out = {}
tmp = tempfile.mkdtemp()
# fit twice, then .keras save/load mid-schedule and a third fit
m = compiled()
m.fit(x, batch_size=64, epochs=1, verbose=0, callbacks=[PruningCallback(schedule())])
out["twice_first"] = step(m)
m.fit(x, batch_size=64, epochs=1, verbose=0, callbacks=[PruningCallback(schedule())])
out["twice_second"] = step(m); out["twice_zeros"] = zeros(m)
m.save(os.path.join(tmp, "mid.keras"))
r = keras.saving.load_model(os.path.join(tmp, "mid.keras"))
out["loaded_step"] = step(r)
r.fit(x, batch_size=64, epochs=1, verbose=0, callbacks=[PruningCallback(schedule())])
out["loaded_final_step"] = step(r); out["loaded_zeros"] = zeros(r)
# BackupAndRestore after an interruption
class Stop(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            raise RuntimeError("interrupted")
backup = keras.callbacks.BackupAndRestore(os.path.join(tmp, "backup"))
try:
    compiled().fit(x, batch_size=64, epochs=3, verbose=0,
                   callbacks=[PruningCallback(schedule()), backup, Stop()])
except RuntimeError:
    pass
f = compiled()
h = f.fit(x, batch_size=64, epochs=3, verbose=0,
          callbacks=[PruningCallback(schedule()), backup])
out["backup_epochs_run"] = len(h.history["loss"]); out["backup_step"] = step(f)
out["backup_zeros"] = zeros(f)
# QAT after pruning on JAX: switch on at epoch 1, zeros kept, save/load.
q = quantize_aware(strip_pruning(f), enabled=False)
q.compile(optimizer=keras.optimizers.Adam(1e-3))
h = q.fit(x, batch_size=64, epochs=2, verbose=0,
          callbacks=[QuantizationAwareTraining(start_epoch=1)])
out["qat_switch"] = h.history["quantization"]; out["qat_zeros"] = zeros(q)
q.save(os.path.join(tmp, "qat.keras"))
ql = keras.saving.load_model(os.path.join(tmp, "qat.keras"))
out["qat_loaded_on"] = is_quantization_aware(ql)
out["qat_loaded_same"] = bool(np.array_equal(ql.predict(x[:16], verbose=0),
                                              q.predict(x[:16], verbose=0)))
# mixed_bfloat16: a few pruning steps, then QAT, finite metrics.
keras.config.set_dtype_policy("mixed_bfloat16")
b = keras_vae.models.mlp_vae((8, 8, 1), 2, hidden_units=(16,), seed=0)
b.compile(optimizer="adam")
hb = b.fit(x[:64], batch_size=16, epochs=1, verbose=0, callbacks=[
    PruningCallback(ConstantSparsity(0.5, 0, frequency=1))])
qb = quantize_aware(b)
qb.compile(optimizer="adam")
hq = qb.fit(x[:64], batch_size=16, epochs=1, verbose=0)
keras.config.set_dtype_policy("float32")
out["bf16_policy"] = qb.dtype_policy.name
out["bf16_logs"] = [float(h.history[k][-1]) for h in (hb, hq)
                    for k in ("loss", "reconstruction_loss", "kl_loss", "elbo")]
out["bf16_zeros"] = [float(np.mean(np.asarray(k.value) == 0))
                     for k in pruning_hooks(qb)[0].kernels]
print(json.dumps(out))
"""


def test_pruning_state_qat_and_bfloat16_on_the_jax_backend():
    out = json.loads(run_with_backend(JAX_CODE, "jax", cwd=os.getcwd())
                     .strip().splitlines()[-1])
    assert (out["twice_first"], out["twice_second"]) == (8, 16)
    assert 0.7 < out["twice_zeros"] < 0.75  # step 16 of the schedule: 74.4%
    assert (out["loaded_step"], out["loaded_final_step"]) == (16, 24)
    assert out["loaded_zeros"] == 0.75
    assert (out["backup_epochs_run"], out["backup_step"]) == (1, 24)
    assert out["backup_zeros"] == 0.75
    assert out["qat_switch"] == [0.0, 1.0]
    assert out["qat_zeros"] >= 0.75
    assert out["qat_loaded_on"] and out["qat_loaded_same"]
    assert out["bf16_policy"] == "mixed_bfloat16"
    assert len(out["bf16_logs"]) == 8 and np.all(np.isfinite(out["bf16_logs"]))
    assert out["bf16_zeros"] == [0.5] * 5
