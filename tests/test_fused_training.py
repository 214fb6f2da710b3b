"""The fused train function of `fit`: same training, faster.

`VAE.fit` on numpy input under the "auto" compile settings (XLA, 32 steps
per execution) runs each execution's batches in one XLA computation, on
TensorFlow fed from `in_memory_dataset`, on JAX from Keras' own batches.
The last, smaller batch of an epoch is padded with zero-weight rows, so
one compiled step serves every batch. These tests pin down that it trains
exactly like Keras' own loop and keeps `fit`'s contract (every batch, the
partial one included; epochs of more than one execution; validation;
callbacks; sample weights), that it traces the step once and a second
`fit` not at all, and that the on-disk compilation cache changes nothing
but the time.
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from backend_runner import run_with_backend

import keras_vae
from keras_vae import _compilation_cache, _fused_training, vae

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the fused train function is TensorFlow's",
)


@pytest.fixture
def always_xla(monkeypatch):
    # Tiny fits stay under the XLA step threshold of "auto"; lower it so
    # the test runs the path that real trainings take.
    monkeypatch.setattr(vae, "XLA_MIN_STEPS", 1)


def _data(count=1000, seed=0):
    return np.random.default_rng(seed).uniform(
        size=(count, 8, 8, 1)).astype("float32")


def _model(**compile_kwargs):
    model = keras_vae.models.mlp_vae(
        (8, 8, 1), latent_dim=2, hidden_units=(16,), seed=0
    )
    model.compile(optimizer="adam", **compile_kwargs)
    return model


def _weights(model):
    return [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]


def _fused_and_keras_runs(x, batch_size):
    """`(name, compile kwargs, fit data, fit kwargs)` of the two runs compared.

    The fused path on the arrays, and Keras' own multi-step XLA loop on the
    same batches in the same order.
    """
    return (
        ("fused", {}, x, {"batch_size": batch_size}),
        ("keras", dict(jit_compile=True, steps_per_execution=32),
         _fused_training.in_memory_dataset(x, batch_size, shuffle=False), {}),
    )


def _assert_same_weights(fused, keras_loop):
    for a, b in zip(fused, keras_loop):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_fused_fit_trains_exactly_like_keras_loop(always_xla):
    x = _data()
    keras.utils.set_random_seed(0)
    fused = _model()
    # In order, so that both runs see the same batches.
    fused_history = fused.fit(x, epochs=3, batch_size=64, shuffle=False,
                              verbose=0)
    assert "make_fused_train_function" in fused.train_function.__qualname__

    keras.utils.set_random_seed(0)
    reference = _model(jit_compile=True, steps_per_execution=32)
    reference_history = reference.fit(
        _fused_training.in_memory_dataset(x, 64, shuffle=False), epochs=3,
        shuffle=False, verbose=0,
    )
    assert "make_fused_train_function" not in (
        reference.train_function.__qualname__
    )
    # 1000 images in batches of 64: 15 full batches and one of 40, each
    # epoch, all trained.
    assert int(fused.optimizer.iterations) == 3 * 16
    assert int(reference.optimizer.iterations) == 3 * 16
    _assert_same_weights(_weights(fused), _weights(reference))
    # And the weights did move.
    assert not np.allclose(_weights(fused)[0], _weights(_model())[0])
    np.testing.assert_allclose(
        fused_history.history["elbo"], reference_history.history["elbo"],
        rtol=1e-5,
    )


def test_epochs_of_several_executions_and_a_partial_batch(always_xla):
    x = _data(1000)
    model = _model()
    # Batches of 16: 62 full and one of 8 per epoch, i.e. two executions
    # (32 steps, then 31) per epoch.
    history = model.fit(x, epochs=2, batch_size=16, verbose=0)
    assert int(model.optimizer.iterations) == 2 * 63
    assert history.history["loss"][1] < history.history["loss"][0]


def test_loss_falls_and_evaluate_agrees(always_xla, digits):
    (x_train, _), _ = digits
    keras.utils.set_random_seed(1)
    model = keras_vae.models.mlp_vae(
        x_train.shape[1:], latent_dim=4, hidden_units=(64,), seed=1
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(x_train, epochs=8, batch_size=64, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.8 * losses[0]
    train_elbo = model.evaluate(x_train, batch_size=len(x_train), verbose=0,
                                return_dict=True)["elbo"]
    # The last epoch's running ELBO and a fresh evaluation of the same
    # data agree to within a few nats (the running mean lags the weights).
    assert abs(train_elbo - history.history["elbo"][-1]) < 5.0


def test_validation_split_and_callbacks_keep_keras_semantics(always_xla):
    x = _data(640)
    model = _model()
    seen = []

    class EpochEnd(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(sorted(logs))

    history = model.fit(x, epochs=2, batch_size=64, validation_split=0.25,
                        callbacks=[EpochEnd()], verbose=0)
    # 480 training images: 8 batches per epoch; validation on the rest.
    assert int(model.optimizer.iterations) == 16
    assert "val_elbo" in history.history
    assert seen[-1] == sorted(history.history)


def test_per_batch_callback_turns_fusion_off(always_xla):
    x = _data(256)
    batches = []

    class BatchEnd(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            batches.append(batch)

    model = _model()
    model.fit(x, epochs=1, batch_size=64, callbacks=[BatchEnd()], verbose=0)
    assert batches == [0, 1, 2, 3]
    assert "make_fused_train_function" not in (
        model.train_function.__qualname__
    )


def test_in_memory_dataset_covers_every_example_once_per_epoch():
    x = np.arange(10, dtype="float32").reshape(10, 1)
    dataset = _fused_training.in_memory_dataset(x, 4, shuffle=True)
    epochs = []
    for _ in range(2):
        values = np.concatenate([batch[0].numpy() for batch in dataset])
        assert sorted(values.ravel().tolist()) == list(range(10))
        epochs.append(values.ravel().tolist())
    assert [len(b[0]) for b in dataset] == [4, 4, 2]
    assert epochs[0] != epochs[1]  # reshuffled every epoch
    in_order = _fused_training.in_memory_dataset(x, 4, shuffle=False)
    assert np.concatenate([b[0].numpy() for b in in_order]).ravel().tolist() \
        == list(range(10))


def test_quantization_aware_model_trains_the_same_on_the_fused_path(
        always_xla):
    from keras_vae.compression import quantize_aware

    x = _data(512)
    results = {}
    for name, compile_kwargs, data, kwargs in _fused_and_keras_runs(x, 64):
        keras.utils.set_random_seed(0)
        qat = quantize_aware(keras_vae.models.mlp_vae(
            (8, 8, 1), latent_dim=2, hidden_units=(16,), seed=0))
        qat.compile(optimizer="adam", **compile_kwargs)
        qat.fit(data, epochs=2, shuffle=False, verbose=0, **kwargs)
        fused = "make_fused_train_function" in qat.train_function.__qualname__
        assert fused == (name == "fused")
        # Weights and the observed activation ranges (non-trainable).
        results[name] = [keras.ops.convert_to_numpy(v) for v in qat.weights]
    _assert_same_weights(results["fused"], results["keras"])


def test_a_distribution_strategy_keeps_keras_loop(always_xla):
    import tensorflow as tf

    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        model = _model()
    model.fit(_data(256), epochs=1, batch_size=64, verbose=0)
    assert int(model.optimizer.iterations) == 4
    assert "make_fused_train_function" not in (
        model.train_function.__qualname__
    )


def test_cvae_on_numpy_labels_takes_the_fused_path(always_xla):
    x = _data(200)
    labels = np.arange(200) % 3
    results = {}
    for name, compile_kwargs in (
        ("fused", {}),
        ("keras", dict(jit_compile=True, steps_per_execution=32)),
    ):
        keras.utils.set_random_seed(0)
        model = keras_vae.models.mlp_cvae((8, 8, 1), 3, latent_dim=2,
                                          hidden_units=(16,), seed=0)
        model.compile(optimizer="adam", **compile_kwargs)
        if name == "fused":
            # The defaults of VAE.compile, as for an unconditional model.
            model.fit(x, labels, batch_size=16, epochs=2, shuffle=False,
                      verbose=0)
            assert model.steps_per_execution == 32 and model.jit_compile
            assert "make_fused_train_function" in (
                model.train_function.__qualname__)
        else:
            one_hot = np.eye(3, dtype="float32")[labels]
            model.fit(_fused_training.in_memory_dataset(
                (x, one_hot), 16, shuffle=False), epochs=2, verbose=0)
        # 200 examples in batches of 16: 12 full ones and one of 8.
        assert int(model.optimizer.iterations) == 2 * 13
        results[name] = _weights(model)
    _assert_same_weights(results["fused"], results["keras"])


def _count_traces(model):
    """Count the calls of `model.train_step`: each is a trace of the step."""
    traces = []
    step = model.train_step

    def counted(*args):
        traces.append(len(traces))
        return step(*args)

    model.train_step = counted
    return traces


def test_one_compiled_step_serves_full_and_partial_batches(always_xla):
    model = _model()
    traces = _count_traces(model)
    # 200 examples in batches of 64: three full batches and one of 8.
    model.fit(_data(200), epochs=2, batch_size=64, verbose=0)
    assert "make_fused_train_function" in model.train_function.__qualname__
    assert int(model.optimizer.iterations) == 2 * 4
    assert len(traces) == 1


def test_a_second_fit_traces_and_compiles_nothing_again(always_xla):
    model = _model()
    traces = _count_traces(model)
    model.fit(_data(200), epochs=1, batch_size=64, verbose=0)
    first_function = model.train_function
    model.fit(_data(200, seed=1), epochs=2, batch_size=64, verbose=0)
    assert model.train_function is first_function
    assert int(model.optimizer.iterations) == 3 * 4
    assert len(traces) == 1


def test_a_short_fit_uses_xla_when_the_cache_holds_its_program(
        monkeypatch, tmp_path):
    # The index of compiled programs sits beside the cache directory; a
    # fresh folder here (TensorFlow's own cache flag is left as it is).
    monkeypatch.setitem(_compilation_cache._state, "directory",
                        str(tmp_path / "xla"))
    threshold = vae.XLA_MIN_STEPS
    x = _data(256)
    model = _model()
    model.fit(x, epochs=1, batch_size=64, verbose=0)
    assert not model.jit_compile  # 4 steps and nothing compiled yet
    monkeypatch.setattr(vae, "XLA_MIN_STEPS", 1)
    model.fit(x, epochs=1, batch_size=64, verbose=0)
    assert model.jit_compile  # compiled, and noted in the index
    monkeypatch.setattr(vae, "XLA_MIN_STEPS", threshold)
    before = _weights(model)
    model.fit(x, epochs=1, batch_size=64, verbose=0)
    assert model.jit_compile  # the same program: XLA although short
    assert not np.allclose(before[0], _weights(model)[0])  # it trained
    model.fit(x, epochs=1, batch_size=32, verbose=0)
    assert not model.jit_compile  # another batch size is another program
    monkeypatch.setitem(_compilation_cache._state, "directory", None)
    model.fit(x, epochs=1, batch_size=64, verbose=0)
    assert not model.jit_compile  # cache off: the step threshold alone


def test_compile_metrics_keep_a_separate_partial_step_like_keras(always_xla):
    # A metric of `compile` would count padding rows: the partial batch
    # then runs alone, through a second compiled step, as in Keras.
    x = _data(200)
    results = {}
    for name, compile_kwargs, data, kwargs in _fused_and_keras_runs(x, 64):
        keras.utils.set_random_seed(0)
        model = _model(metrics=["mae"], **compile_kwargs)
        traces = _count_traces(model)
        history = model.fit(data, epochs=2, shuffle=False, verbose=0,
                            **kwargs)
        fused = "make_fused_train_function" in (
            model.train_function.__qualname__)
        assert fused == (name == "fused")
        assert not _fused_training.pads_partial_batch(model)
        assert len(traces) == 2  # full batches, then the batch of 8
        results[name] = (_weights(model), history.history)
    _assert_same_weights(results["fused"][0], results["keras"][0])
    for key in ("mae", "elbo"):
        np.testing.assert_allclose(results["fused"][1][key],
                                   results["keras"][1][key], rtol=1e-5)


def test_sample_weights_of_a_padded_partial_batch_train_like_keras(
        always_xla):
    x = _data(200)
    weights = np.random.default_rng(3).uniform(size=200).astype("float32")
    results = {}
    for name, compile_kwargs in (
        ("fused", {}),
        ("keras", dict(jit_compile=True, steps_per_execution=32)),
    ):
        keras.utils.set_random_seed(0)
        model = _model(**compile_kwargs)
        if name == "fused":
            history = model.fit(x, sample_weight=weights, epochs=2,
                                batch_size=64, shuffle=False, verbose=0)
            assert _fused_training.pads_partial_batch(model)
            assert "make_fused_train_function" in (
                model.train_function.__qualname__)
        else:
            # `fit` gives unconditional data an empty target so that Keras
            # keeps the weights; the same here.
            empty = np.zeros((200, 0), "float32")
            history = model.fit(_fused_training.in_memory_dataset(
                (x, empty, weights), 64, shuffle=False), epochs=2, verbose=0)
        assert int(model.optimizer.iterations) == 2 * 4
        results[name] = (_weights(model), history.history)
    _assert_same_weights(results["fused"][0], results["keras"][0])
    np.testing.assert_allclose(results["fused"][1]["elbo"],
                               results["keras"][1]["elbo"], rtol=1e-5)


def test_convolutional_model_steps_one_call_each_and_train_like_keras(
        always_xla):
    # Convolutions stay out of the XLA `while` loop (many times slower
    # there on the CPU); the padded partial batch still shares the step.
    x = _data(40)
    results = {}
    for name, compile_kwargs, data, kwargs in _fused_and_keras_runs(x, 16):
        keras.utils.set_random_seed(0)
        model = keras_vae.models.conv_vae((8, 8, 1), latent_dim=2,
                                          filters=(4,), seed=0)
        model.compile(optimizer="adam", **compile_kwargs)
        traces = _count_traces(model)
        model.fit(data, epochs=2, shuffle=False, verbose=0, **kwargs)
        if name == "fused":
            assert not _fused_training.loops_in_xla(model)
            assert "make_fused_train_function" in (
                model.train_function.__qualname__)
            assert len(traces) == 1
        # 40 examples in batches of 16: two full batches and one of 8.
        assert int(model.optimizer.iterations) == 2 * 3
        results[name] = _weights(model)
    assert _fused_training.loops_in_xla(_model())
    _assert_same_weights(results["fused"], results["keras"])


def test_jax_fused_fit_trains_like_keras_loop_with_one_trace():
    # All JAX checks in one subprocess (each start costs seconds).
    out = run_with_backend("""
        import keras, numpy as np
        import keras_vae

        x = np.random.default_rng(0).uniform(
            size=(200, 8, 8, 1)).astype("float32")
        weights = np.random.default_rng(3).uniform(size=200).astype("float32")

        def train(compile_kwargs, **fit_kwargs):
            keras.utils.set_random_seed(0)
            model = keras_vae.models.mlp_vae(
                (8, 8, 1), latent_dim=2, hidden_units=(16,), seed=0)
            model.compile(optimizer="adam", **compile_kwargs)
            traces = []
            step = model.train_step

            def counted(*args):
                traces.append(1)
                return step(*args)

            model.train_step = counted
            history = model.fit(x, epochs=2, batch_size=64, shuffle=False,
                                verbose=0, **fit_kwargs)
            fused = "make_fused_train_function" in (
                model.train_function.__qualname__)
            return model, history.history, traces, fused

        def same(a, b):
            for u, v in zip(a.trainable_variables, b.trainable_variables):
                np.testing.assert_allclose(
                    np.asarray(u), np.asarray(v), rtol=1e-5, atol=1e-6)

        keras_loop = dict(steps_per_execution=32)  # not "auto": Keras' loop
        fused, history, traces, on_fused = train({})
        reference, reference_history, _, on_reference = train(keras_loop)
        assert on_fused and not on_reference, (on_fused, on_reference)
        assert int(fused.optimizer.iterations) == 8
        assert int(reference.optimizer.iterations) == 8
        # Three full batches and one of 8 per epoch: one trace.
        assert len(traces) == 1, len(traces)
        same(fused, reference)
        np.testing.assert_allclose(history["elbo"], reference_history["elbo"],
                                   rtol=1e-5)
        before = [np.asarray(v) for v in fused.trainable_variables]
        fused.fit(x, epochs=1, batch_size=64, verbose=0)
        assert len(traces) == 1, len(traces)  # a second fit: no new trace
        assert int(fused.optimizer.iterations) == 12
        assert not np.allclose(before[0], np.asarray(
            fused.trainable_variables[0]))

        weighted, _, _, _ = train({}, sample_weight=weights)
        weighted_reference, _, _, _ = train(keras_loop,
                                            sample_weight=weights)
        same(weighted, weighted_reference)
        print("JAX FUSED OK")
    """)
    assert "JAX FUSED OK" in out


_CACHED_FIT = """
    import os, sys
    os.environ["KERAS_VAE_COMPILATION_CACHE"] = sys.argv[1]
    import keras, numpy as np
    import keras_vae
    from keras_vae import _compilation_cache, vae

    vae.XLA_MIN_STEPS = 1
    assert _compilation_cache.directory(), "the cache is off"
    keras.utils.set_random_seed(0)
    model = keras_vae.models.mlp_vae((8, 8, 1), latent_dim=2,
                                     hidden_units=(16,), seed=0)
    model.compile(optimizer="adam")
    x = np.random.default_rng(0).uniform(size=(200, 8, 8, 1)).astype("float32")
    model.fit(x, epochs=2, batch_size=64, shuffle=False, verbose=0)
    np.savez(sys.argv[2], *[np.asarray(v) for v in model.trainable_variables])
"""


def _run_cached_fit(cache, result):
    env = {key: value for key, value in os.environ.items()
           if key not in ("TF_XLA_FLAGS", "XLA_FLAGS")}
    env.update(KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_CACHED_FIT), str(cache),
         str(result)],
        capture_output=True, text=True, env=env, timeout=1800)
    assert completed.returncode == 0, completed.stderr[-4000:]
    with np.load(result) as arrays:
        return [arrays[name] for name in sorted(
            arrays.files, key=lambda name: int(name.split("_")[1]))]


def _cached_files(cache):
    return sorted(os.path.join(folder, name)
                  for folder, _, names in os.walk(cache) for name in names)


def test_a_warm_compilation_cache_trains_the_same_weights(tmp_path):
    cache = tmp_path / "cache"
    cold = _run_cached_fit(cache, tmp_path / "cold.npz")
    written = _cached_files(cache)
    assert written, "the first process left no compiled program on disk"
    warm = _run_cached_fit(cache, tmp_path / "warm.npz")
    # The second process loaded every program: it compiled nothing new.
    assert _cached_files(cache) == written
    for a, b in zip(cold, warm):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("value", ["off", "0", "false", "none", ""])
def test_compilation_cache_is_switched_off_by_the_environment(
        monkeypatch, value):
    monkeypatch.delenv("TF_XLA_FLAGS", raising=False)
    monkeypatch.delenv("_KERAS_VAE_TF_XLA_CACHE_FLAG", raising=False)
    monkeypatch.setenv(_compilation_cache.ENV_VAR, value)
    assert _compilation_cache.cache_root() is None
    assert _compilation_cache.configure("tensorflow") is None


def test_compilation_cache_lives_in_a_user_folder_or_where_asked(
        monkeypatch, tmp_path):
    monkeypatch.delenv(_compilation_cache.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _compilation_cache.cache_root() == str(
        tmp_path / "xdg" / "keras_vae" / "xla")
    monkeypatch.setenv(_compilation_cache.ENV_VAR, str(tmp_path / "here"))
    assert _compilation_cache.cache_root() == str(tmp_path / "here")
    # This process read its XLA flags long ago: configuring again only
    # changes the environment, restored by monkeypatch, and the state.
    for key in ("directory", "backend"):
        monkeypatch.setitem(_compilation_cache._state, key,
                            _compilation_cache._state[key])
    monkeypatch.delenv("TF_XLA_FLAGS", raising=False)
    monkeypatch.delenv("_KERAS_VAE_TF_XLA_CACHE_FLAG", raising=False)
    path = _compilation_cache.configure("tensorflow")
    assert path.startswith(str(tmp_path / "here" / "tensorflow-"))
    assert os.path.isdir(path)
    assert os.environ["TF_XLA_FLAGS"].endswith(path)


def test_inherited_cache_flag_yields_to_the_child_environment(monkeypatch):
    # A keras-vae parent passes its TensorFlow cache flag on to children;
    # a child asked to run without the cache must drop it, while a flag
    # the user set stays.
    ours = "--tf_xla_persistent_cache_directory=/parent/cache"
    monkeypatch.setenv("TF_XLA_FLAGS", f"--tf_xla_auto_jit=1 {ours}")
    monkeypatch.setenv("_KERAS_VAE_TF_XLA_CACHE_FLAG", ours)
    monkeypatch.setenv(_compilation_cache.ENV_VAR, "off")
    assert _compilation_cache.configure("tensorflow") is None
    assert os.environ["TF_XLA_FLAGS"] == "--tf_xla_auto_jit=1"
    monkeypatch.setenv("TF_XLA_FLAGS", ours)  # the user's own
    monkeypatch.delenv(_compilation_cache.ENV_VAR)
    assert _compilation_cache.configure("tensorflow") is None
    assert os.environ["TF_XLA_FLAGS"] == ours
