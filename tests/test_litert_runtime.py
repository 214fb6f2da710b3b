"""`export/litert_vae.py` runs exported files with numpy and LiteRT only."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_vae
from keras_vae.export import to_tflite

RUNTIME_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "export")
RUNTIME = os.path.join(RUNTIME_DIR, "litert_vae.py")


def _python(code, *args):
    """Run code in a fresh interpreter that has never seen TensorFlow."""
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    result = subprocess.run(
        [sys.executable, *args] if not code else
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    (x, _), (x_test, _) = keras_vae.datasets.load("digits")
    keras.utils.set_random_seed(2)
    model = keras_vae.models.mlp_vae((8, 8, 1), 3, hidden_units=(32,), seed=2)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(x[:512], epochs=2, batch_size=64, verbose=0)
    directory = tmp_path_factory.mktemp("runtime")
    paths = {}
    for name, kwargs in (
        ("int8", {}),
        ("int8_io", {"int8_io": True}),
        ("float", {"quantization": "none"}),
    ):
        paths[name] = os.path.join(directory, f"{name}.tflite")
        to_tflite(model, paths[name], representative_data=x[:200], **kwargs)
    x = x_test[:16]
    np.save(os.path.join(directory, "x.npy"), x)
    z = np.random.default_rng(0).standard_normal((5, 3)).astype("float32")
    np.save(os.path.join(directory, "z.npy"), z)
    expected = {
        "z_mean": keras.ops.convert_to_numpy(model.encode(x)[0]),
        "reconstruct": keras.ops.convert_to_numpy(model.reconstruct(x)),
        "decode": keras.ops.convert_to_numpy(model.decode(z)),
    }
    return paths, directory, expected


def test_runtime_matches_keras_without_ever_importing_tensorflow(exported):
    paths, directory, expected = exported
    out = _python(
        f"""
        import json, sys
        import numpy as np
        sys.path.insert(0, {RUNTIME_DIR!r})
        from litert_vae import LiteRTVAE
        x = np.load({os.path.join(directory, "x.npy")!r})
        z = np.load({os.path.join(directory, "z.npy")!r})
        results = {{}}
        for name in ("float", "int8", "int8_io"):
            vae = LiteRTVAE({str(directory)!r} + "/" + name + ".tflite",
                            num_threads=1)
            z_mean, z_log_var = vae.encode(x)
            np.save({str(directory)!r} + f"/{{name}}_z_mean.npy", z_mean)
            np.save({str(directory)!r} + f"/{{name}}_reconstruct.npy",
                    vae.reconstruct(x))
            np.save({str(directory)!r} + f"/{{name}}_decode.npy", vae.decode(z))
            # Batch resizing: 16, then 1, then 16 again give the same rows.
            single = vae.reconstruct(x[3:4])
            again = vae.reconstruct(x)
            samples = vae.sample(7, seed=0)
            results[name] = {{
                "resize_ok": bool(np.allclose(single[0], again[3], atol=1e-6)),
                "sample_shape": list(samples.shape),
                "sample_dtype": str(samples.dtype),
                "same_seed": bool(np.array_equal(samples, vae.sample(7, seed=0))),
                "other_seed": bool(np.array_equal(samples, vae.sample(7, seed=1))),
                "latent_dim": vae.latent_dim,
                "metadata": vae.metadata["quantization"],
            }}
        bench = vae.benchmark(runs=50, throughput_runs=5, warmup=5)
        results["bench"] = bench
        results["tensorflow_imported"] = "tensorflow" in sys.modules
        results["keras_imported"] = "keras" in sys.modules
        print(json.dumps(results))
        """
    )
    results = json.loads(out.strip().splitlines()[-1])
    assert results["tensorflow_imported"] is False
    assert results["keras_imported"] is False
    tolerances = {"float": 1e-5, "int8": 0.15, "int8_io": 0.15}
    for name, tolerance in tolerances.items():
        result = results[name]
        assert result["resize_ok"] and result["same_seed"]
        assert not result["other_seed"]
        assert result["sample_shape"] == [7, 8, 8, 1]
        assert result["sample_dtype"] == "float32"
        assert result["latent_dim"] == 3
        assert result["metadata"] == ("none" if name == "float" else "int8")
        for key in ("z_mean", "reconstruct", "decode"):
            actual = np.load(os.path.join(directory, f"{name}_{key}.npy"))
            np.testing.assert_allclose(
                actual.reshape(expected[key].shape), expected[key],
                atol=tolerance, err_msg=f"{name}/{key}",
            )
    # int8 I/O is dequantized on the host: outputs are probabilities.
    io = np.load(os.path.join(directory, "int8_io_reconstruct.npy"))
    assert io.dtype == np.float32 and 0.0 <= io.min() and io.max() <= 1.0
    bench = results["bench"]
    assert 0 < bench["latency_median_us"] <= bench["latency_p95_us"]
    assert bench["throughput_per_s"] > 0 and bench["throughput_batch_size"] == 256


def test_command_line_info_sample_reconstruct_and_bench(exported):
    paths, directory, expected = exported
    info = json.loads(_python(None, RUNTIME, paths["int8"], "info"))
    assert sorted(info["signatures"]) == ["decode", "encode", "reconstruct"]
    assert info["signatures"]["decode"]["input"] == ["z", [-1, 3], "float32"]
    assert info["metadata"]["input_shape"] == [8, 8, 1]
    out = os.path.join(directory, "samples.npy")
    _python(None, RUNTIME, paths["int8"], "sample", "-n", "4", "--seed", "3",
            "--out", out)
    assert np.load(out).shape == (4, 8, 8, 1)
    recon = os.path.join(directory, "cli_recon.npy")
    _python(None, RUNTIME, paths["float"], "reconstruct", "--input",
            os.path.join(directory, "x.npy"), "--out", recon, "--threads", "1")
    np.testing.assert_allclose(np.load(recon), expected["reconstruct"], atol=1e-5)
    bench = json.loads(_python(None, RUNTIME, paths["int8"], "bench",
                               "--runs", "20"))
    assert bench["signature"] == "reconstruct" and bench["latency_median_us"] > 0


def test_runtime_errors_name_the_problem(exported, tmp_path):
    paths, _, _ = exported
    sys.path.insert(0, RUNTIME_DIR)
    try:
        from litert_vae import LiteRTVAE
    finally:
        sys.path.remove(RUNTIME_DIR)
    vae = LiteRTVAE(paths["int8"])
    with pytest.raises(ValueError, match=r"Received: x of shape \(2, 7, 7, 1\)"):
        vae.reconstruct(np.zeros((2, 7, 7, 1), "float32"))
    with pytest.raises(ValueError, match="num_samples=0"):
        vae.sample(0)
    with pytest.raises(ValueError, match="num_threads=0"):
        LiteRTVAE(paths["int8"], num_threads=0)
    decode_only = os.path.join(tmp_path, "decode.tflite")
    model = keras_vae.models.mlp_vae((8, 8, 1), 3, hidden_units=(8,))
    to_tflite(model, decode_only, quantization="none", signatures=("decode",))
    with pytest.raises(ValueError, match="no `encode` signature"):
        LiteRTVAE(decode_only).encode(np.zeros((1, 8, 8, 1), "float32"))
    assert LiteRTVAE(decode_only).sample(2, seed=0).shape == (2, 8, 8, 1)
