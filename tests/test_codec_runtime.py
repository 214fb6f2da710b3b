"""Codec streams from int8 `.tflite` files (TensorFlow-free runtime) and the CLI."""

import json
import os
import subprocess
import sys
import textwrap

import codec_models
import numpy as np
import pytest

import keras_vae
from keras_vae import cli, codec
from keras_vae.export import to_tflite

RUNTIME_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "export")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("codec_runtime")
    for likelihood in codec_models.LIKELIHOODS:
        train, test = codec_models.digits()[likelihood]
        model = codec_models.trained(likelihood)
        to_tflite(model, folder / f"{likelihood}.tflite",
                  representative_data=train[:200])
        keras_vae.files.save_model(model, folder / f"{likelihood}.keras")
        np.save(folder / f"{likelihood}_x.npy", test[:96])
    return folder


def _python(code):
    """Run code in a fresh interpreter that never imports TensorFlow."""
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
        text=True, env=env, timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_int8_runtime_streams_round_trip_without_tensorflow(files):
    out = _python(f"""
        import json, subprocess, sys
        import numpy as np
        sys.path.insert(0, {RUNTIME_DIR!r})
        import litert_vae
        folder = {str(files)!r}
        result = {{}}
        for name in ("bernoulli", "discretized_logistic"):
            vae = litert_vae.LiteRTVAE(f"{{folder}}/{{name}}.tflite",
                                       num_threads=1)
            x = np.load(f"{{folder}}/{{name}}_x.npy")
            stream = litert_vae.compress(vae, x, batch_size=32, verbose=0)
            restored = litert_vae.decompress(vae, stream, verbose=0)
            lossy = litert_vae.decompress(vae, litert_vae.compress(
                vae, x, mode="lossy", verbose=0), verbose=0)
            result[name] = {{
                "exact": bool(np.array_equal(restored, x)),
                "dtype": str(restored.dtype),
                "kind": litert_vae.codec_core().describe(stream)["kind"],
                "lossy_dtype": str(lossy.dtype),
            }}
        # The command line writes a stream and decodes it again.
        runtime = {os.path.join(RUNTIME_DIR, "litert_vae.py")!r}
        model = f"{{folder}}/discretized_logistic.tflite"
        for args in (["compress", "--input", f"{{folder}}/discretized_logistic_x.npy",
                      "--out", f"{{folder}}/cli.kvz"],
                     ["decompress", "--input", f"{{folder}}/cli.kvz",
                      "--out", f"{{folder}}/cli_restored.npy"]):
            subprocess.run([sys.executable, runtime, model, *args], check=True,
                           capture_output=True)
        result["cli_exact"] = bool(np.array_equal(
            np.load(f"{{folder}}/cli_restored.npy"),
            np.load(f"{{folder}}/discretized_logistic_x.npy")))
        result["tensorflow_imported"] = "tensorflow" in sys.modules
        print(json.dumps(result))
    """)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["bernoulli"] == {"exact": True, "dtype": "bool",
                                   "kind": "litert", "lossy_dtype": "bool"}
    assert result["discretized_logistic"] == {
        "exact": True, "dtype": "uint8", "kind": "litert",
        "lossy_dtype": "uint8"}
    assert result["cli_exact"] is True
    assert result["tensorflow_imported"] is False


def test_keras_model_refuses_a_stream_of_its_int8_file(files):
    sys.path.insert(0, RUNTIME_DIR)
    try:
        import litert_vae
    finally:
        sys.path.remove(RUNTIME_DIR)
    vae = litert_vae.LiteRTVAE(str(files / "bernoulli.tflite"))
    x = np.load(files / "bernoulli_x.npy")[:20]
    stream = litert_vae.compress(vae, x, verbose=0)
    model = keras_vae.files.load_model(files / "bernoulli.keras")
    with pytest.raises(ValueError, match="another model"):
        codec.decompress(model, stream, verbose=0)


def test_cli_compresses_and_decompresses_and_never_overwrites(files, capsys):
    model = str(files / "bernoulli.keras")
    x_path = str(files / "bernoulli_x.npy")
    stream = str(files / "stream.kvz")
    restored = str(files / "restored.npy")
    assert cli.main(["compress", model, x_path, stream]) == 0
    assert "bits per dimension" in capsys.readouterr().out
    assert cli.main(["decompress", model, stream, restored]) == 0
    assert np.array_equal(np.load(restored), np.load(x_path))
    assert cli.main(["compress", model, x_path, stream]) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["decompress", model, stream, restored]) == 2
    assert cli.main(["compress", model, x_path, stream, "--overwrite",
                     "--mode", "lossy", "--step", "0.5"]) == 0
    assert codec.describe(open(stream, "rb").read())["mode"] == "lossy"
    assert cli.main(["decompress", str(files / "discretized_logistic.keras"),
                     stream, restored, "--overwrite"]) == 2
    assert "another model" in capsys.readouterr().err


def test_int8_runtime_refined_lossy_streams_round_trip_and_its_cli_flag(files):
    out = _python(f"""
        import json, subprocess, sys
        import numpy as np
        sys.path.insert(0, {RUNTIME_DIR!r})
        import litert_vae
        folder = {str(files)!r}
        model = f"{{folder}}/discretized_logistic.tflite"
        vae = litert_vae.LiteRTVAE(model, num_threads=1)
        x = np.load(f"{{folder}}/discretized_logistic_x.npy")[:48]
        result = {{"errors": [], "bytes": []}}
        for pixel_step in (51, 5):
            stream = litert_vae.compress(vae, x, mode="lossy", step=0.5,
                                         pixel_step=pixel_step, batch_size=16,
                                         verbose=0)
            restored = litert_vae.decompress(vae, stream, verbose=0)
            result["errors"].append(int(np.abs(
                restored.astype(int) - x.astype(int)).max()))
            result["bytes"].append(len(stream))
            header = litert_vae.codec_core().describe(stream)
            result["header"] = [header["kind"], header["pixel_step"]]
        runtime = {os.path.join(RUNTIME_DIR, "litert_vae.py")!r}
        np.save(f"{{folder}}/refine_x.npy", x)
        for args in (["compress", "--input", f"{{folder}}/refine_x.npy",
                      "--out", f"{{folder}}/refined.kvz", "--mode", "lossy",
                      "--pixel-step", "17"],
                     ["decompress", "--input", f"{{folder}}/refined.kvz",
                      "--out", f"{{folder}}/refined.npy"]):
            subprocess.run([sys.executable, runtime, model, *args], check=True,
                           capture_output=True)
        result["cli_error"] = int(np.abs(np.load(f"{{folder}}/refined.npy")
                                         .astype(int) - x.astype(int)).max())
        result["cli_pixel_step"] = litert_vae.codec_core().describe(
            open(f"{{folder}}/refined.kvz", "rb").read())["pixel_step"]
        bad = subprocess.run([sys.executable, runtime, model, "compress",
                              "--input", f"{{folder}}/refine_x.npy", "--out",
                              f"{{folder}}/bad.kvz", "--mode", "lossy",
                              "--pixel-step", "4"], capture_output=True,
                             text=True)
        result["bad"] = [bad.returncode, bad.stderr]
        print(json.dumps(result))
    """)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["errors"][0] <= 25 and result["errors"][1] <= 2
    assert result["bytes"][0] < result["bytes"][1]
    assert result["header"] == ["litert", 5]
    assert result["cli_pixel_step"] == 17 and result["cli_error"] <= 8
    assert result["bad"][0] == 2 and "Received: pixel_step=4" in result["bad"][1]


def test_cli_pixel_step_writes_a_refined_lossy_stream(files, capsys):
    model = str(files / "discretized_logistic.keras")
    x_path = str(files / "discretized_logistic_x.npy")
    stream = str(files / "refined_cli.kvz")
    restored = str(files / "refined_cli.npy")
    assert cli.main(["compress", model, x_path, stream, "--mode", "lossy",
                     "--step", "0.5", "--pixel-step", "15"]) == 0
    assert codec.describe(open(stream, "rb").read())["pixel_step"] == 15
    assert cli.main(["decompress", model, stream, restored]) == 0
    error = np.abs(np.load(restored).astype(int) - np.load(x_path).astype(int))
    assert error.max() <= 7
    capsys.readouterr()
    assert cli.main(["compress", model, x_path, stream, "--overwrite",
                     "--mode", "lossy", "--pixel-step", "2"]) == 2
    assert "Received: pixel_step=2" in capsys.readouterr().err
