"""Our masks match TF-MOT's `prune_low_magnitude` step by step.

The same MLP encoder/decoder is built in tf_keras (in a subprocess with
`TF_USE_LEGACY_KERAS=1`, which TF-MOT needs) and as a `keras_vae.VAE`. Both
are trained with a zero learning rate while a callback writes the same fresh
random kernels before every batch, so each pruning step sees new magnitudes
and the masks depend only on the step counting, the schedule and the
threshold rule. Both record every mask after every batch.
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_vae
from keras_vae.compression import PruningCallback, pruning_hooks

NUM_STEPS = 12
# (schedule kind, settings, block size)
CASES = {
    "polynomial": ("PolynomialDecay", dict(initial_sparsity=0.1, final_sparsity=0.8,
                                           begin_step=2, end_step=11, power=3,
                                           frequency=3), (1, 1)),
    "constant": ("ConstantSparsity", dict(target_sparsity=0.6, begin_step=1,
                                          end_step=7, frequency=2), (1, 1)),
    "blocks": ("PolynomialDecay", dict(initial_sparsity=0.2, final_sparsity=0.7,
                                       begin_step=1, end_step=9, power=2,
                                       frequency=4), (2, 3)),
}
LAYERS = ("encoder_dense_0", "z_mean", "z_log_var", "decoder_dense_0",
          "decoder_output")

TFMOT_SCRIPT = """
import json, sys
import numpy as np
import tensorflow as tf
import tf_keras
import tensorflow_model_optimization as tfmot

sparsity = tfmot.sparsity.keras


def run(case, kind, settings, block, path):
    data = np.load(path + f"/{case}_kernels.npz")
    x = tf_keras.Input((8, 8, 1), name="x")
    h = tf_keras.layers.Flatten()(x)
    h = tf_keras.layers.Dense(32, activation="relu", name="encoder_dense_0")(h)
    encoder = tf_keras.Model(x, [tf_keras.layers.Dense(4, name="z_mean")(h),
                                 tf_keras.layers.Dense(4, name="z_log_var")(h)])
    z = tf_keras.Input((4,), name="z")
    h = tf_keras.layers.Dense(32, activation="relu", name="decoder_dense_0")(z)
    decoder = tf_keras.Model(z, tf_keras.layers.Dense(64, name="decoder_output")(h))
    schedule = getattr(sparsity, kind)(**settings)
    encoder = sparsity.prune_low_magnitude(encoder, pruning_schedule=schedule,
                                           block_size=tuple(block))
    decoder = sparsity.prune_low_magnitude(decoder, pruning_schedule=schedule,
                                           block_size=tuple(block))
    mean, _ = encoder(x)
    model = tf_keras.Model(x, decoder(mean))
    model.compile(optimizer=tf_keras.optimizers.SGD(0.0), loss="mse")
    wrappers = {}
    for sub in (encoder, decoder):
        for layer in sub.layers:
            if getattr(layer, "pruning_vars", None):
                wrappers[layer.layer.name] = layer
    names = sorted(wrappers)
    masks = {name: [] for name in names}
    steps = []

    class Record(tf_keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            step = len(steps)
            for name in names:
                wrappers[name].layer.kernel.assign(data[name][step])

        def on_train_batch_end(self, batch, logs=None):
            steps.append(int(wrappers[names[0]].pruning_step.numpy()))
            for name in names:
                masks[name].append(wrappers[name].pruning_vars[0][1].numpy())

    count = 8 * data["steps"].item()
    x_data = np.random.default_rng(0).uniform(size=(count, 8, 8, 1))
    model.fit(x_data.astype("float32"), np.zeros((count, 64), "float32"),
              batch_size=8, epochs=1, verbose=0, shuffle=False,
              callbacks=[sparsity.UpdatePruningStep(), Record()])
    np.savez(path + f"/{case}_tfmot.npz", steps=np.array(steps),
             **{name: np.stack(masks[name]) for name in names})


for case, (kind, settings, block) in json.loads(sys.argv[1]).items():
    run(case, kind, settings, block, sys.argv[2])
"""


def _kernels(model, seed):
    rng = np.random.default_rng(seed)
    encoder, decoder = model.encoder, model.decoder
    kernels = {}
    for name in LAYERS:
        layer = (encoder if name in [each.name for each in encoder.layers] else decoder
                 ).get_layer(name)
        shape = tuple(layer.kernel.shape)
        kernels[name] = rng.normal(size=(NUM_STEPS, *shape)).astype("float32")
    return kernels


@pytest.fixture(scope="module")
def tfmot_masks(tmp_path_factory):
    """Kernels per case, and TF-MOT's steps and masks, from one subprocess."""
    import json

    path = tmp_path_factory.mktemp("tfmot")
    model = keras_vae.models.mlp_vae((8, 8, 1), 4, hidden_units=(32,), seed=0)
    kernels = {}
    for index, case in enumerate(sorted(CASES)):
        kernels[case] = _kernels(model, seed=index)
        np.savez(os.path.join(path, f"{case}_kernels.npz"), steps=NUM_STEPS,
                 **kernels[case])
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("KERAS_BACKEND", None)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(TFMOT_SCRIPT),
         json.dumps(CASES), str(path)],
        capture_output=True, text=True, env=env, timeout=1800,
    )
    if result.returncode != 0:
        raise AssertionError(result.stderr[-5000:])
    return {
        case: (kernels[case], np.load(os.path.join(path, f"{case}_tfmot.npz")))
        for case in CASES
    }


def _tfmot_schedule(kind, settings):
    import tensorflow_model_optimization as tfmot

    return getattr(tfmot.sparsity.keras, kind)(**settings)


class _Record(keras.callbacks.Callback):
    def __init__(self, kernels):
        super().__init__()
        self.kernels = kernels
        self.steps = []
        self.masks = {name: [] for name in kernels}

    def _layer(self, name):
        for sub in (self.model.encoder, self.model.decoder):
            if name in [layer.name for layer in sub.layers]:
                return sub.get_layer(name)

    def on_train_batch_begin(self, batch, logs=None):
        for name, values in self.kernels.items():
            self._layer(name).kernel.assign(values[len(self.steps)])

    def on_train_batch_end(self, batch, logs=None):
        hook = pruning_hooks(self.model)[0]
        self.steps.append(int(hook.pruning_step.numpy()))
        by_path = dict(zip(hook.layer_names, hook.masks))
        for sub, name in [(p.split("/")[0], p.split("/")[1]) for p in by_path]:
            self.masks[name].append(by_path[f"{sub}/{name}"].numpy())


@pytest.mark.parametrize("case", sorted(CASES))
def test_masks_match_tfmot_prune_low_magnitude_at_every_step(case, tfmot_masks):
    kind, settings, block = CASES[case]
    kernels, reference = tfmot_masks[case]
    (x, _), _ = keras_vae.datasets.load("digits")
    model = keras_vae.models.mlp_vae((8, 8, 1), 4, hidden_units=(32,), seed=0)

    model.compile(optimizer=keras.optimizers.SGD(0.0))
    record = _Record(kernels)
    # The TF-MOT schedule object is passed as it is.
    pruning = PruningCallback(_tfmot_schedule(kind, settings), block_size=block)
    # Half the steps, then the rest in a second `fit`: the counter goes on.
    half = NUM_STEPS // 2
    model.fit(x[: 8 * half], batch_size=8, epochs=1, verbose=0,
              callbacks=[pruning, record])
    model.fit(x[: 8 * (NUM_STEPS - half)], batch_size=8, epochs=1, verbose=0,
              callbacks=[pruning, record])

    np.testing.assert_array_equal(record.steps, reference["steps"])
    np.testing.assert_array_equal(record.steps, np.arange(1, NUM_STEPS + 1))
    changed = 0
    for name in LAYERS:
        ours = np.stack(record.masks[name])
        theirs = reference[name]
        assert ours.shape == theirs.shape
        # Same sparsity at every step, and the same weights selected; a
        # weight may differ only where its magnitude ties the threshold.
        np.testing.assert_array_equal(ours.mean(axis=tuple(range(1, ours.ndim))),
                                      theirs.mean(axis=tuple(range(1, ours.ndim))))
        np.testing.assert_array_equal(ours, theirs)
        changed += int((np.diff(ours, axis=0) != 0).any(axis=tuple(
            range(1, ours.ndim))).sum())
    # The masks really changed on several pruning steps (not all ones).
    assert changed >= 2 * len(LAYERS)
    assert reference[LAYERS[0]][-1].mean() < 0.5
