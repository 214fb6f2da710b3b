"""Shared checks that every model of the family must pass.

Each model's test calls `check_model(build_fn, x)` and only adds what is
special about it.
"""

import os

import keras
import numpy as np


def check_config_round_trip(model):
    config = model.get_config()
    clone = model.__class__.from_config(config)
    assert clone.get_config() == config
    assert clone.count_params() == model.count_params()


def check_one_fit_step_lowers_nothing_to_nan(model, x, y=None):
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(x, y, epochs=1, batch_size=len(x), verbose=0)
    for name in ("loss", "reconstruction_loss", "kl_loss", "elbo"):
        assert np.isfinite(history.history[name][0]), name


def check_save_load_exact(model, x, directory):
    """`x` is what `predict` takes: an array, or `[x, labels]` for a CVAE."""
    path = os.path.join(directory, "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    expected = np.asarray(model.predict(x, verbose=0))
    actual = np.asarray(restored.predict(x, verbose=0))
    np.testing.assert_array_equal(actual, expected)
    for a, b in zip(model.get_weights(), restored.get_weights()):
        np.testing.assert_array_equal(a, b)
    return restored


def check_export_smoke(model, x, directory, quantization="int8"):
    """Export to `.tflite` and verify every signature against Keras.

    About 5-10 s per call (SavedModel tracing plus conversion), so it is not
    part of `check_model`; call it once per model family.
    """
    from keras_vae.export import to_tflite, verify

    path = os.path.join(directory, f"model_{quantization}.tflite")
    to_tflite(model, path, quantization=quantization, representative_data=x,
              overwrite=True)
    return verify(path, model, x, max_nll_delta_pct=5.0)


def check_model(build_fn, x, directory):
    """Config round-trip, one fit step, exact `.keras` save/load."""
    model = build_fn()
    check_config_round_trip(model)
    check_one_fit_step_lowers_nothing_to_nan(model, x)
    reconstruction = np.asarray(model.reconstruct(x))
    assert reconstruction.shape == x.shape
    assert np.isfinite(reconstruction).all()
    check_save_load_exact(model, x, directory)
    return model


def check_tflite_encoder_decoder(model, encoder_inputs, decoder_inputs,
                                 directory, atol=1e-4):
    """Convert encoder and decoder to one float `.tflite` file and run it.

    Works for any functional encoder/decoder, one input or several (a CVAE
    takes `[x, y_one_hot]` and `[z, y_one_hot]`), through the Keras
    `ExportArchive` -> SavedModel -> TFLite converter path. The `encode`
    signature returns the posterior parameters, `decode` the mean of
    p(x | z); both are run with the LiteRT interpreter and compared with
    Keras. Returns the path of the `.tflite` file.
    """
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    def specs(functional):
        return [
            tf.TensorSpec((None, *tensor.shape[1:]), tf.float32,
                          name=f"input_{index}")
            for index, tensor in enumerate(functional.inputs)
        ]

    def as_call(inputs):
        # A one-input functional model warns when called with a list.
        return inputs[0] if len(inputs) == 1 else list(inputs)

    def encode(*inputs):
        z_mean, z_log_var = model.encoder(as_call(inputs), training=False)
        return {"z_mean": z_mean, "z_log_var": z_log_var}

    def decode(*inputs):
        params = model.decoder(as_call(inputs), training=False)
        return {"x_mean": model.likelihood.mean(params)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("encode", encode, input_signature=specs(model.encoder))
    archive.add_endpoint("decode", decode, input_signature=specs(model.decoder))
    saved_model = os.path.join(directory, "saved_model")
    archive.write_out(saved_model, verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(
        saved_model, signature_keys=["encode", "decode"]
    )
    path = os.path.join(directory, "encoder_decoder.tflite")
    with open(path, "wb") as handle:
        handle.write(converter.convert())

    interpreter = Interpreter(model_path=path)
    checks = (
        ("encode", encoder_inputs, encode),
        ("decode", decoder_inputs, decode),
    )
    for name, inputs, function in checks:
        inputs = [np.asarray(value, dtype="float32") for value in inputs]
        runner = interpreter.get_signature_runner(name)
        actual = runner(**{f"input_{i}": v for i, v in enumerate(inputs)})
        expected = function(*inputs)
        assert sorted(actual) == sorted(expected), (name, sorted(actual))
        for key, value in expected.items():
            np.testing.assert_allclose(
                actual[key], keras.ops.convert_to_numpy(value), atol=atol,
                err_msg=f"{name}/{key}",
            )
    return path
