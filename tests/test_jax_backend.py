"""The JAX backend trains, and what it saves loads and predicts on TensorFlow."""

import os

import keras
import numpy as np
from backend_runner import run_with_backend


def test_jax_trains_and_models_move_between_backends(tmp_path):
    import keras_vae

    (x, _), (x_test, _) = keras_vae.datasets.load("digits")
    tf_model = keras_vae.models.mlp_vae((8, 8, 1), 4, hidden_units=(32,), seed=0)
    tf_model.compile(optimizer="adam")
    tf_model.fit(x[:256], epochs=1, verbose=0)
    tf_model.save(os.path.join(tmp_path, "tf.keras"))
    np.save(os.path.join(tmp_path, "tf_pred.npy"),
            np.asarray(tf_model.predict(x_test[:32], verbose=0)))
    out = run_with_backend(
        f"""
        import json, numpy as np, keras, keras_vae
        assert keras.backend.backend() == "jax"
        (x, _), (x_test, _) = keras_vae.datasets.load("digits")
        # A model trained and saved on TensorFlow loads and predicts the same.
        tf_model = keras.saving.load_model(r"{tmp_path}/tf.keras")
        np.testing.assert_allclose(np.asarray(tf_model.predict(x_test[:32], verbose=0)),
                                   np.load(r"{tmp_path}/tf_pred.npy"), atol=1e-5)
        results = {{}}
        for jit in (True, False):
            keras.utils.set_random_seed(0)
            model = keras_vae.models.mlp_vae((8, 8, 1), 4, hidden_units=(32,), seed=0)
            model.compile(optimizer=keras.optimizers.Adam(3e-3), jit_compile=jit)
            h = model.fit(x[:512], epochs=5, batch_size=64, verbose=0).history
            results[str(jit)] = h["loss"]
            ds = keras_vae.datasets.to_dataset(x[:256], 64, seed=0, y=np.zeros(256))
            model.fit(ds, epochs=1, verbose=0)
        ev = model.evaluate(x_test, verbose=0, return_dict=True)
        model.save(r"{tmp_path}/jax.keras")
        np.save(r"{tmp_path}/jax_pred.npy", np.asarray(model.predict(x_test[:32], verbose=0)))
        np.save(r"{tmp_path}/x.npy", x_test[:32])
        print(json.dumps({{"losses": results, "eval": ev}}))
        """
    )
    import json

    report = json.loads(out.strip().splitlines()[-1])
    for losses in report["losses"].values():
        assert losses[-1] < 0.9 * losses[0]
    assert np.isfinite(report["eval"]["elbo"])
    model = keras.saving.load_model(os.path.join(tmp_path, "jax.keras"))
    x = np.load(os.path.join(tmp_path, "x.npy"))
    np.testing.assert_allclose(
        np.asarray(model.predict(x, verbose=0)),
        np.load(os.path.join(tmp_path, "jax_pred.npy")), atol=1e-5,
    )
