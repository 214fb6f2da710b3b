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
from keras_vae.export import to_tflite, verify

RUNTIME_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "export")
RUNTIME = os.path.join(RUNTIME_DIR, "litert_vae.py")


def _run(code, *args):
    """Run code (or a script with `args`) in a fresh interpreter."""
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    return subprocess.run(
        [sys.executable, *args] if not code else
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True, text=True, env=env, timeout=1800,
    )


def _python(code, *args):
    """Run code in a fresh interpreter that has never seen TensorFlow."""
    result = _run(code, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _runtime():
    sys.path.insert(0, RUNTIME_DIR)
    try:
        import litert_vae
    finally:
        sys.path.remove(RUNTIME_DIR)
    return litert_vae


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


def test_command_line_keeps_existing_output_and_refuses_uint8(exported):
    paths, directory, _ = exported
    out = os.path.join(directory, "kept.npy")
    np.save(out, np.arange(3))
    refused = _run(None, RUNTIME, paths["int8"], "sample", "-n", "2",
                   "--out", out)
    assert refused.returncode == 2 and "--overwrite" in refused.stderr
    np.testing.assert_array_equal(np.load(out), np.arange(3))
    _python(None, RUNTIME, paths["int8"], "sample", "-n", "2", "--out", out,
            "--overwrite")
    assert np.load(out).shape == (2, 8, 8, 1)
    # 8-bit images are refused, as the library refuses them, not cast.
    pixels = os.path.join(directory, "pixels.npy")
    np.save(pixels, np.full((2, 8, 8, 1), 200, np.uint8))
    for name in ("float", "int8_io"):
        result = _run(None, RUNTIME, paths[name], "reconstruct", "--input",
                      pixels, "--out", os.path.join(directory, "r.npy"))
        assert result.returncode == 2
        assert "integer dtype uint8" in result.stderr and "/ 255" in result.stderr
        assert "Traceback" not in result.stderr
    assert not os.path.exists(os.path.join(directory, "r.npy"))


def test_runtime_errors_name_the_problem(exported, tmp_path):
    paths, _, _ = exported
    LiteRTVAE = _runtime().LiteRTVAE
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


@pytest.mark.parametrize("arguments, message", [
    ({"seed": "a"}, "seed='a'"),
    ({"seed": -1}, "seed=-1"),
    ({"seed": 1.5}, "seed=1.5"),
    ({"seed": True}, "seed=True"),
    ({"temperature": 0}, "temperature=0"),
    ({"temperature": -1.0}, "temperature=-1.0"),
    ({"temperature": float("nan")}, "temperature=nan"),
    ({"temperature": float("inf")}, "temperature=inf"),
    ({"temperature": "hot"}, "temperature='hot'"),
    ({"labels": 3}, "not conditional"),
])
def test_sample_arguments_are_checked(exported, arguments, message):
    paths, _, _ = exported
    vae = _runtime().LiteRTVAE(paths["int8"])
    with pytest.raises(ValueError, match=f"Received: {message}|{message}"):
        vae.sample(2, **arguments)


def _write(path, data):
    with open(path, "wb") as handle:
        handle.write(bytes(data))
    return str(path)


def test_runtime_refuses_files_changed_after_export(exported, tmp_path):
    from keras_vae.export import flatbuffer, read_tflite

    paths, _, _ = exported
    litert_vae = _runtime()
    raw = open(paths["float"], "rb").read()
    metadata = read_tflite(paths["float"]).metadata
    assert metadata["likelihood"] == "bernoulli"
    # One flipped bit in the middle of the weights.
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 0x01
    # The likelihood edited: it would switch off the [0, 1] input check.
    gaussian = flatbuffer.add_metadata(
        raw, flatbuffer.METADATA_NAME, dict(metadata, likelihood="gaussian"))
    # Bytes of the metadata that are not UTF-8 any more.
    start = raw.find(b'{"calibration"')
    garbled = bytearray(raw)
    garbled[start + 5 : start + 9] = b"\xff\xfe\xff\xfe"
    # A file from before the checksum, and one without keras_vae metadata.
    unsigned = flatbuffer.add_metadata(
        raw, flatbuffer.METADATA_NAME,
        {k: v for k, v in metadata.items() if k != "sha256"})
    cases = {
        "flipped": (flipped, "SHA-256"),
        "gaussian": (gaussian, "SHA-256"),
        "garbled": (garbled, "damaged"),
        "unsigned": (unsigned, "no SHA-256"),
        "truncated": (raw[: len(raw) // 2], "damaged|SHA-256"),
    }
    for name, (data, message) in cases.items():
        path = _write(tmp_path / f"{name}.tflite", data)
        with pytest.raises(ValueError, match=message) as info:
            litert_vae.LiteRTVAE(path)
        assert path in str(info.value), name
    # The untouched bytes load, and the Bernoulli range check is on.
    vae = litert_vae.LiteRTVAE(_write(tmp_path / "intact.tflite", raw))
    with pytest.raises(ValueError, match="lies in \\[0, 1\\]"):
        vae.reconstruct(np.full((1, 8, 8, 1), 2.0, "float32"))


def _mmd_permutation_p_value(a, b, permutations=200, seed=0):
    """p-value of a kernel two-sample test (MMD, RBF, median bandwidth)."""
    joined = np.concatenate([a, b]).astype("float64")
    squared = np.sum((joined[:, None] - joined[None]) ** 2, axis=-1)
    kernel = np.exp(-squared / np.median(squared[squared > 0]))
    n = len(a)

    def statistic(order):
        k = kernel[np.ix_(order, order)]
        return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()

    observed = statistic(np.arange(len(joined)))
    rng = np.random.default_rng(seed)
    null = [statistic(rng.permutation(len(joined))) for _ in range(permutations)]
    return (1 + np.sum(np.asarray(null) >= observed)) / (1 + permutations)


def test_mixture_prior_samples_match_the_keras_prior_not_a_standard_normal(
    tmp_path,
):
    (x, _), (x_test, _) = keras_vae.datasets.load("digits")
    keras.utils.set_random_seed(3)
    model = keras_vae.models.mlp_vae((8, 8, 1), 2, hidden_units=(32,),
                                     prior="mixture", seed=3)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(x, epochs=2, batch_size=64, verbose=0)
    path = os.path.join(tmp_path, "mixture.tflite")
    to_tflite(model, path, representative_data=x[:300])
    verify(path, model, x_test[:128], max_nll_delta_pct=1.0)
    vae = _runtime().LiteRTVAE(path)
    device = vae.sample_latents(400, seed=0)
    reference = keras.ops.convert_to_numpy(model.prior.sample(400, 2, seed=0))
    normal = np.random.default_rng(1).standard_normal((400, 2))
    assert _mmd_permutation_p_value(device, reference) > 0.01
    assert _mmd_permutation_p_value(device, normal) < 0.01
    assert vae.sample(3, seed=0).shape == (3, 8, 8, 1)


def test_conditional_samples_show_the_requested_digit(tmp_path):
    from sklearn.linear_model import LogisticRegression

    (x, y), _ = keras_vae.datasets.load("digits")
    classifier = LogisticRegression(max_iter=2000).fit(x.reshape(len(x), -1), y)
    keras.utils.set_random_seed(0)
    model = keras_vae.models.mlp_cvae((8, 8, 1), num_classes=10, latent_dim=2,
                                      hidden_units=(64,), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(x, y, epochs=3, batch_size=64, verbose=0)
    path = os.path.join(tmp_path, "cvae.tflite")
    to_tflite(model, path, representative_data=(x[:300], y[:300]))
    vae = _runtime().LiteRTVAE(path)
    assert vae.num_classes == 10 and vae.is_conditional

    def fraction_of_sevens(images):
        return np.mean(classifier.predict(images.reshape(len(images), -1)) == 7)

    assert fraction_of_sevens(vae.sample(200, labels=7, seed=0)) >= 0.8
    assert fraction_of_sevens(vae.sample(200, labels=3, seed=0)) < 0.2
    with pytest.raises(ValueError, match="labels=None"):
        vae.sample(2, seed=0)
    with pytest.raises(ValueError, match="max=10"):
        vae.decode(np.zeros((2, 2), "float32"), labels=[1, 10])
    # Labels go with every signature: encode and reconstruct too.
    z_mean, _ = vae.encode(x[:4], labels=y[:4])
    expected = keras.ops.convert_to_numpy(model.encode(x[:4], y[:4])[0])
    np.testing.assert_allclose(z_mean, expected, atol=0.1)
    assert vae.reconstruct(x[:4], labels=y[:4]).shape == (4, 8, 8, 1)
    samples = os.path.join(tmp_path, "sevens.npy")
    _python(None, RUNTIME, path, "sample", "-n", "50", "--labels", "7",
            "--seed", "0", "--out", samples)
    assert fraction_of_sevens(np.load(samples)) >= 0.8
