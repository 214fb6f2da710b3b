"""The VAE as a compressor on MNIST-5k, against the standard codecs.

One run measures, on the 1,000 MNIST-5k test digits:

- lossless, binarised (pixel > 127) and 8-bit: keras-vae bits-back (BB-ANS)
  rate in bits per pixel from the Keras model and from its int8 `.tflite`
  file through the TensorFlow-free runtime (every image restored bit for
  bit), the model's own test negative ELBO in bits per pixel, and gzip,
  bz2, lzma (raw bytes; packed bits for binary), PNG, JPEG-XL lossless
  (per image and as one 40 x 25 sheet) and WebP lossless;
- lossy, 8-bit: the rate-distortion curves (bits per image against PSNR
  and SSIM) of keras-vae latent codes over a sweep of grid steps (an MLP
  VAE with the plain `discretized_logistic` likelihood, decoded with its
  mean), of latent codes plus pixels refined to a grid of step q
  (`pixel_step`, each q with its cheapest latent step), and of
  JPEG, WebP, AVIF and JPEG-XL over a sweep of quality settings (down to
  each codec's lowest), with the bytes of each codec's smallest file (its
  container header and then some), the ratio of keras-vae's bits to each
  codec's at equal PSNR and where the curves cross;
- throughput (images per second) of lossless compress and decompress.

The two MLP VAEs (784-512-256, latent 32) have likelihoods whose pixels
also see their already-coded neighbours (`context_bernoulli` on binarised
digits, `context_discretized_logistic` on 8-bit digits): the latent code
gives the digit's shape, a small causal head the local detail that
standard codecs model. They train on all 4,000 MNIST-5k training digits
(the test digits are only coded) for a fixed number of epochs, chosen
beforehand where the negative ELBO of 500 held-out training digits was
lowest when training on the other 3,500 (`--choose-epochs` reruns that
search), and are cached as `benchmarks/cache/codec_<name>_<settings
hash>.keras` so a rerun only measures (delete the folder to retrain).

    .venv/bin/python benchmarks/codec_table.py          # full run (make bench)
    .venv/bin/python benchmarks/codec_table.py --quick --out-dir /tmp/codec
    .venv/bin/python benchmarks/codec_table.py --render benchmarks/codec_table.json

writes `codec_table.md`, `codec_table.json` and `codec_rd.png` in
`--out-dir` (default `benchmarks/`), and the tables between the
`codec_table` markers of README.md (full runs only). Needs the `bench`
extra (imagecodecs, scikit-image).
"""

import argparse
import bz2
import gzip
import hashlib
import io
import json
import lzma
import math
import os
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "export"))

import _common

import keras_vae
from keras_vae import codec

CACHE_DIR = os.path.join(HERE, "cache")
README_MARKERS = ("<!-- codec_table:start -->", "<!-- codec_table:end -->")
PIXELS = 28 * 28
SHEET = (25, 40)  # rows x columns of digits in one sheet image

FULL = {
    "num_test": 1000, "latent_dim": 32, "hidden_units": (512, 256),
    "likelihood": {"binary": "context_bernoulli",
                   "8bit": "context_discretized_logistic",
                   # Lossy codes decode with the decoder's mean: a context
                   # likelihood has none in closed form, so the lossy
                   # curve uses the same MLP with a plain likelihood.
                   "lossy": "discretized_logistic"},
    # Options of each likelihood beyond its defaults (see
    # `keras_vae.likelihoods.ContextDiscretizedLogistic`). 8-bit: a wider
    # head (24 neighbours within 3 pixels, 64 hidden units, 8 decoder
    # features per pixel) models the local detail that dominates the
    # rate, and some probability spread evenly over the levels bounds what
    # a pixel far in a tail costs, in training as in coding.
    "likelihood_options": {"8bit": {"uniform_mass": 1e-3, "radius": 3,
                                    "hidden_units": 64, "features": 8}},
    # Chosen on held-out training digits: the epochs where the negative
    # ELBO of 500 of them was lowest, training on the other 3,500
    # (`--choose-epochs`). 8-bit with its wider head (`--choose-epochs
    # --models 8bit --max-epochs 75`), every 5 epochs from 5: 1.693,
    # 1.517, 1.455, 1.427, 1.415, 1.408, 1.414, 1.411, 1.410, 1.422,
    # 1.435, 1.439, 1.426, 1.442, 1.493 bits/pixel: 30 epochs.
    "epochs": {"binary": 50, "8bit": 30, "lossy": 100},
    "validation": 500, "max_epochs": 200,
    "batch_size": 128, "learning_rate": 1e-3, "seed": 0,
    "steps": (3.0, 2.0, 1.5, 1.0, 0.75, 0.5, 0.35, 0.25, 0.15, 0.1, 0.05),
    # Refined pixels: each pixel step q with the latent step (of these)
    # that gives the fewest bits (the restored image depends on q only).
    "pixel_steps": (255, 85, 51, 17, 15, 5, 3),
    "refine_steps": (1.0, 0.5, 0.35, 0.25, 0.15, 0.1),
    "qualities": (0, 1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95),
    "precision": 10, "codec_batch_size": 128,
}
QUICK = dict(FULL, num_test=48, latent_dim=4, hidden_units=(32,),
             epochs={"binary": 2, "8bit": 2, "lossy": 2}, max_epochs=2,
             validation=64,
             steps=(1.0, 0.25), qualities=(10, 50, 90),
             pixel_steps=(85, 5), refine_steps=(1.0, 0.25))


# ------------------------------------------------------------------ data
def load_data(settings):
    (x_train, _), (x_test, _) = keras_vae.datasets.load("mnist5k")
    levels_train = np.rint(x_train * 255).astype(np.uint8)
    levels_test = np.rint(x_test[: settings["num_test"]] * 255).astype(np.uint8)
    return {
        # Binarised MNIST: pixel > 127.
        "binary_train": (levels_train > 127).astype("float32"),
        "binary_test": levels_test > 127,
        "levels_train": (levels_train / 255.0).astype("float32"),
        "levels_test": levels_test,
    }


# ----------------------------------------------------------------- models
def _likelihood(name, settings):
    """The likelihood of model `name`, with its `likelihood_options`."""
    likelihood = keras_vae.likelihoods.get(settings["likelihood"][name])
    options = settings.get("likelihood_options", {}).get(name)
    if not options:
        return likelihood
    return type(likelihood).from_config({**likelihood.get_config(),
                                         **options})


def _settings_key(name, settings):
    keys = ("latent_dim", "hidden_units", "batch_size", "learning_rate",
            "seed")
    likelihood = settings["likelihood"][name]
    # The likelihood's config too: a changed default retrains the model.
    config = _likelihood(name, settings).get_config()
    config.pop("name", None)
    text = json.dumps([name, keras_vae.__version__, likelihood, config,
                       settings["epochs"][name],
                       [settings[k] for k in keys]], default=str, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _new_model(name, settings, jit_compile="auto"):
    keras.utils.set_random_seed(settings["seed"])
    model = keras_vae.models.mlp_vae(
        (28, 28, 1), latent_dim=settings["latent_dim"],
        hidden_units=settings["hidden_units"],
        likelihood=_likelihood(name, settings), seed=settings["seed"])
    model.compile(optimizer=keras.optimizers.Adam(settings["learning_rate"]),
                  jit_compile=jit_compile)
    return model


def trained_model(name, x_train, settings, quick, log):
    """Train (or load from the cache) the MLP VAE of `name` on `x_train`."""
    path = os.path.join(
        CACHE_DIR, f"codec_{name}_{_settings_key(name, settings)}.keras")
    if not quick and os.path.exists(path):
        log(f"{name}: cached model {os.path.relpath(path, REPO)}")
        return keras_vae.files.load_model(path), {"cached": True}
    model = _new_model(name, settings)
    epochs = settings["epochs"][name]
    start = time.perf_counter()
    model.fit(x_train, epochs=epochs, batch_size=settings["batch_size"],
              verbose=0 if quick else 2)
    info = {"cached": False, "epochs": epochs,
            "train_examples": len(x_train),
            "train_seconds": time.perf_counter() - start}
    log(f"{name}: trained {epochs} epochs on {len(x_train)} digits in "
        f"{info['train_seconds']:.0f} s")
    if not quick:
        os.makedirs(CACHE_DIR, exist_ok=True)
        keras_vae.files.save_model(model, path, overwrite=True)
    return model, info


def choose_epochs(name, x_train, settings, log, every=5):
    """Epochs with the lowest held-out negative ELBO (train on the rest).

    Trains on all training digits but `settings["validation"]` (a fixed
    random subset) for `settings["max_epochs"]`, measuring the negative
    ELBO of the held-out digits every `every` epochs; the test digits are
    not used. Returns `(best_epochs, curve)`.
    """
    order = np.random.default_rng(settings["seed"]).permutation(len(x_train))
    held_out = x_train[order[: settings["validation"]]]
    train = x_train[order[settings["validation"]:]]
    model = _new_model(name, settings, jit_compile=True)
    # Fits of `every` epochs are short: XLA explicitly, as a long fit has.
    curve = []
    for epoch in range(every, settings["max_epochs"] + 1, every):
        model.fit(train, epochs=epoch, initial_epoch=epoch - every,
                  batch_size=settings["batch_size"], verbose=0)
        curve.append((epoch, negative_elbo_bpp(model, held_out, samples=3)))
        log(f"{name}: epoch {epoch}: held-out negative ELBO "
            f"{curve[-1][1]:.4f} bits/pixel")
    best = min(curve, key=lambda point: point[1])[0]
    return best, curve


def negative_elbo_bpp(model, x, samples=20):
    """Test negative ELBO in bits per pixel, averaged over noise draws."""
    x = np.asarray(x, "float32")
    values = []
    for seed in range(samples):
        terms = model.compute_terms(x, seed=seed)
        values.append(float(np.mean(keras.ops.convert_to_numpy(
            terms["reconstruction"] + terms["kl"]))))
    return float(np.mean(values)) / (math.log(2.0) * PIXELS)


# ----------------------------------------------------- standard codecs
def _imagecodecs():
    try:
        import imagecodecs
    except ImportError:
        raise ImportError(
            "benchmarks/codec_table.py compares with standard image codecs: "
            "`pip install -e '.[bench]'` (imagecodecs, scikit-image)"
        ) from None
    return imagecodecs


def sheet(images):
    """The images tiled as one grey sheet of SHEET rows x columns."""
    rows, columns = SHEET
    count = rows * columns
    padded = np.zeros((count, 28, 28), np.uint8)
    padded[: len(images)] = images.reshape(-1, 28, 28)[:count]
    return (padded.reshape(rows, columns, 28, 28).transpose(0, 2, 1, 3)
            .reshape(rows * 28, columns * 28))


def _png_1bit(image):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image > 0).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def lossless_codecs(images, binary):
    """Total bytes of each standard lossless codec for `images` (n, 28, 28).

    `images` are uint8 grey levels (0/255 for binarised data); `binary`
    adds the codecs on packed bits and 1-bit PNG.
    """
    ic = _imagecodecs()
    images = images.reshape(-1, 28, 28)
    raw = (images > 127).astype(np.uint8).tobytes() if binary else images.tobytes()
    results = {
        "gzip (1 byte per pixel)": len(gzip.compress(raw, 9, mtime=0)),
        "bz2 (1 byte per pixel)": len(bz2.compress(raw, 9)),
        "lzma (1 byte per pixel)": len(lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME)),
    }
    if binary:
        packed = np.packbits(images > 127).tobytes()
        results.update({
            "gzip (packed bits)": len(gzip.compress(packed, 9, mtime=0)),
            "bz2 (packed bits)": len(bz2.compress(packed, 9)),
            "lzma (packed bits)": len(lzma.compress(
                packed, preset=9 | lzma.PRESET_EXTREME)),
        })
    png = (_png_1bit if binary else (lambda a: ic.png_encode(a, level=9)))
    big = sheet(images)

    def rgb(image):
        return np.repeat(image[..., None], 3, axis=-1)

    per_image = {
        "PNG": png,
        "JPEG-XL lossless": lambda a: ic.jpegxl_encode(a, lossless=True, effort=9),
        "WebP lossless": lambda a: ic.webp_encode(rgb(a), lossless=True, level=100),
    }
    for name, encode in per_image.items():
        results[f"{name} (per image)"] = sum(len(encode(a)) for a in images)
        results[f"{name} (one sheet)"] = len(encode(big))
    return results


LOSSY_CODECS = {
    "JPEG": lambda ic, a, q: ic.jpeg8_encode(a, level=q),
    "WebP": lambda ic, a, q: ic.webp_encode(np.repeat(a[..., None], 3, -1),
                                            level=q, lossless=False),
    # imagecodecs codes grey AVIF losslessly whatever the level: give RGB
    # and have it stored as monochrome (YUV400, no chroma planes: ~10
    # bytes less than YUV444 at the same PSNR). The level is libavif's
    # quality, 0 (coarsest quantiser, the lowest it goes) to 100
    # (lossless). Speed 6 (libavif's default is 0, 12x slower) changes
    # sizes by <1%.
    "AVIF": lambda ic, a, q: ic.avif_encode(np.repeat(a[..., None], 3, -1),
                                            level=q, speed=6,
                                            pixelformat="yuv400"),
    "JPEG-XL": lambda ic, a, q: ic.jpegxl_encode(a, level=q),
}
DECODERS = {
    "JPEG": lambda ic, data: ic.jpeg8_decode(data),
    "WebP": lambda ic, data: ic.webp_decode(data)[..., 0],
    # Monochrome AVIF decodes to (28, 28), others to (28, 28, channels).
    "AVIF": lambda ic, data: np.asarray(ic.avif_decode(data)).reshape(
        28, 28, -1)[..., 0],
    "JPEG-XL": lambda ic, data: ic.jpegxl_decode(data),
}


def quality_metrics(original, restored):
    """Mean per-image PSNR (dB, peak 255) and SSIM of uint8 images."""
    from skimage.metrics import structural_similarity

    original = original.reshape(-1, 28, 28).astype(np.float64)
    restored = restored.reshape(-1, 28, 28).astype(np.float64)
    mse = np.mean((original - restored) ** 2, axis=(1, 2))
    psnr = 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))
    ssim = [structural_similarity(a, b, data_range=255.0)
            for a, b in zip(original, restored)]
    return float(np.mean(psnr)), float(np.mean(ssim))


def lossy_codec_curves(images, qualities, log):
    """Bits per image, PSNR and SSIM of each lossy codec at each quality."""
    ic = _imagecodecs()
    images = images.reshape(-1, 28, 28)
    blank = np.zeros((28, 28), np.uint8)
    curves = {}
    for name, encode in LOSSY_CODECS.items():
        points = []
        for quality in qualities:
            files = [encode(ic, image, quality) for image in images]
            restored = np.stack([
                np.asarray(DECODERS[name](ic, data)).reshape(28, 28)
                for data in files])
            psnr, ssim = quality_metrics(images, restored)
            points.append({
                "quality": quality,
                "bits_per_image": 8.0 * np.mean([len(f) for f in files]),
                "psnr": psnr, "ssim": ssim,
                "smallest_file_bytes": len(encode(ic, blank, quality)),
            })
        curves[name] = points
        log(f"lossy {name}: {points[0]['bits_per_image']:.0f}-"
            f"{points[-1]['bits_per_image']:.0f} bits per image")
    return curves


# --------------------------------------------------------------- keras-vae
def _timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def bits_back(compress, decompress, x, header_of):
    """Lossless stream of `x`: sizes, exactness and throughput."""
    # One-off costs (tracing, interpreter set-up) stay out of the timing.
    decompress(compress(x[:2]))
    stream, seconds_in = _timed(compress, x)
    restored, seconds_out = _timed(decompress, stream)
    header = header_of(stream)
    count = len(x)
    net_bits = 8 * header["payload_bytes"] - header["startup_bits"]
    return {
        "exact": bool(np.array_equal(restored, x)
                      and restored.dtype == x.dtype),
        "total_bytes": len(stream),
        "header_bytes": header["header_bytes"],
        "startup_bits": header["startup_bits"],
        "bpp_total": 8.0 * len(stream) / (count * PIXELS),
        "bpp_net": net_bits / (count * PIXELS),
        "compress_images_per_s": count / seconds_in,
        "decompress_images_per_s": count / seconds_out,
    }


def keras_vae_lossy_curve(model, images, steps):
    """Bits per image, PSNR and SSIM of latent codes at each grid step."""
    points = []
    for step in steps:
        stream = codec.compress(model, images, mode="lossy", step=step,
                                verbose=0)
        restored = codec.decompress(model, stream, verbose=0)
        psnr, ssim = quality_metrics(images, restored)
        header = codec.describe(stream)
        points.append({
            "step": step, "bits_per_image": 8.0 * len(stream) / len(images),
            "header_bytes": header["header_bytes"], "psnr": psnr,
            "ssim": ssim,
        })
    return points


def keras_vae_refined_curve(model, images, pixel_steps, steps, log=print):
    """Latent code plus pixels refined to `pixel_step` q, one point per q.

    The pixels come back on the grid 0, q, 2q, ..., 255 whatever the
    latent step, so each q keeps the latent step (of `steps`) whose stream
    is smallest; that stream is decoded and measured. Every candidate's
    size is kept too (`bits_by_step`).
    """
    points = []
    for pixel_step in pixel_steps:
        streams = {step: codec.compress(model, images, mode="lossy",
                                        step=step, pixel_step=pixel_step,
                                        verbose=0)
                   for step in steps}
        step = min(steps, key=lambda s: len(streams[s]))
        stream = streams[step]
        restored = codec.decompress(model, stream, verbose=0)
        psnr, ssim = quality_metrics(images, restored)
        header = codec.describe(stream)
        points.append({
            "pixel_step": pixel_step, "step": step,
            "bits_per_image": 8.0 * len(stream) / len(images),
            "header_bytes": header["header_bytes"], "psnr": psnr,
            "ssim": ssim,
            "max_error": int(np.abs(restored.astype(int)
                                    - images.astype(int)).max()),
            "bits_by_step": {str(s): 8.0 * len(streams[s]) / len(images)
                             for s in steps},
        })
        log(f"lossy keras-vae pixel step {pixel_step}: latent step {step}, "
            f"{points[-1]['bits_per_image']:.0f} bits per image, "
            f"{psnr:.2f} dB")
    return points


def compare_curves(ours, theirs):
    """keras-vae's bits against a codec's at equal PSNR, point by point.

    Inside the codec's PSNR range its bits come from linear interpolation
    on its curve (lower envelope); below that range the codec cannot make a
    smaller file than its fewest bits, and above it needs more than its
    most, so those bounds are compared instead. `ratio` is keras-vae's
    bits over the codec's. Crossings are the PSNRs where the interpolated
    difference changes sign between neighbouring keras-vae points.
    """
    ordered = sorted(theirs, key=lambda p: p["psnr"])
    psnrs = np.array([p["psnr"] for p in ordered])
    bits = np.array([p["bits_per_image"] for p in ordered])
    # More PSNR never costs fewer bits: keep the codec's lower envelope.
    bits = np.minimum.accumulate(bits[::-1])[::-1]
    points = []
    for point in ours:
        if point["psnr"] < psnrs[0]:
            theirs_bits, how = float(bits.min()), "at least (its smallest files)"
        elif point["psnr"] > psnrs[-1]:
            theirs_bits, how = float(bits[-1]), "more than (its best quality)"
        else:
            theirs_bits = float(np.interp(point["psnr"], psnrs, bits))
            how = "interpolated"
        points.append({"psnr": point["psnr"], "ours": point["bits_per_image"],
                       "theirs": theirs_bits, "how": how,
                       "ratio": point["bits_per_image"] / theirs_bits})
    inside = sorted((p for p in points if p["how"] == "interpolated"),
                    key=lambda p: p["psnr"])
    crossings = []
    for a, b in zip(inside, inside[1:]):
        da, db = a["ours"] - a["theirs"], b["ours"] - b["theirs"]
        if da * db < 0:
            crossings.append(a["psnr"] + (b["psnr"] - a["psnr"]) * da / (da - db))
    return {
        "points": points,
        "fewer_bits_everywhere": all(p["ratio"] < 1 for p in points),
        "crossings_psnr": crossings,
        "codec_psnr_range": [float(psnrs[0]), float(psnrs[-1])],
        "codec_fewest_bits": float(bits.min()),
    }


# --------------------------------------------------------------------- run
def run(quick=False, out_dir=HERE, log=print):
    settings = QUICK if quick else FULL
    data = load_data(settings)
    results = {
        "date": _common.now(),
        "command": ("benchmarks/codec_table.py --quick" if quick
                    else "benchmarks/codec_table.py"),
        "settings": {k: list(v) if isinstance(v, tuple) else v
                     for k, v in settings.items()},
        "load_average_at_start": list(os.getloadavg()),
        "lossless": {},
    }
    import litert_vae

    core = litert_vae.codec_core()
    models = {}
    for name, train_key, test_key in (
            ("binary", "binary_train", "binary_test"),
            ("8bit", "levels_train", "levels_test")):
        model, info = trained_model(name, data[train_key], settings, quick,
                                    log)
        models[name] = model
        x = data[test_key]
        network_input = (x / 255.0) if name == "8bit" else x
        row = {"training": info, "likelihood": settings["likelihood"][name],
               "likelihood_options": settings.get(
                   "likelihood_options", {}).get(name, {}),
               "negative_elbo_bpp": negative_elbo_bpp(model, network_input)}
        options = dict(batch_size=settings["codec_batch_size"],
                       precision=settings["precision"], verbose=0)
        row["keras"] = bits_back(
            lambda a, model=model, options=options: codec.compress(
                model, a, **options),
            lambda s, model=model: codec.decompress(model, s, verbose=0),
            x, codec.describe)
        row["keras"]["ratio_to_negative_elbo"] = (
            row["keras"]["bpp_net"] / row["negative_elbo_bpp"])
        log(f"{name}: bits-back {row['keras']['bpp_net']:.4f} bits/pixel "
            f"(negative ELBO {row['negative_elbo_bpp']:.4f}), exact="
            f"{row['keras']['exact']}")
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, f"{name}_int8.tflite")
            keras_vae.export.to_tflite(model, path,
                                       representative_data=data[train_key][:500])
            vae = litert_vae.LiteRTVAE(path)
            row["int8_runtime"] = bits_back(
                lambda a, vae=vae, options=options: litert_vae.compress(
                    vae, a, **options),
                lambda s, vae=vae: litert_vae.decompress(vae, s, verbose=0),
                x, core.describe)
            row["int8_file_bytes"] = os.path.getsize(path)
        log(f"{name}: int8 runtime {row['int8_runtime']['bpp_net']:.4f} "
            f"bits/pixel, exact={row['int8_runtime']['exact']}")
        grey = np.where(x, 255, 0).astype(np.uint8) if name == "binary" else x
        row["standard"] = {
            codec_name: 8.0 * size / (len(x) * PIXELS)
            for codec_name, size in lossless_codecs(grey, name == "binary").items()
        }
        best = min(row["standard"], key=row["standard"].get)
        row["best_standard"] = {"codec": best, "bpp": row["standard"][best]}
        log(f"{name}: best standard codec {best} {row['standard'][best]:.4f} "
            "bits/pixel")
        results["lossless"][name] = row
    log("lossy ...")
    images = data["levels_test"]
    lossy_model, info = trained_model("lossy", data["levels_train"], settings,
                                      quick, log)
    ours = keras_vae_lossy_curve(lossy_model, images, settings["steps"])
    refined = keras_vae_refined_curve(lossy_model, images,
                                      settings["pixel_steps"],
                                      settings["refine_steps"], log)
    curves = lossy_codec_curves(images, settings["qualities"], log)
    results["lossy"] = {
        "keras_vae": ours,
        "keras_vae_refined": refined,
        "likelihood": settings["likelihood"]["lossy"],
        "training": info,
        "codecs": curves,
        "comparison": {name: compare_curves(ours, points)
                       for name, points in curves.items()},
        "comparison_refined": {name: compare_curves(refined, points)
                               for name, points in curves.items()},
    }
    results["load_average_at_end"] = list(os.getloadavg())
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "codec_table.json"), "w") as handle:
        json.dump(results, handle, indent=1)
    markdown = to_markdown(results)
    with open(os.path.join(out_dir, "codec_table.md"), "w") as handle:
        handle.write(markdown)
    plot(results, os.path.join(out_dir, "codec_rd.png"))
    if not quick:
        _common.update_readme(markdown, README_MARKERS)
    log(f"wrote {out_dir}/codec_table.md, codec_table.json, codec_rd.png")
    return results


# ------------------------------------------------------------ the report
def _lossless_table(row, title):
    keras_row, runtime = row["keras"], row["int8_runtime"]
    options = ", ".join(f"{key}={value}" for key, value in
                        row.get("likelihood_options", {}).items())
    lines = [
        f"**{title}** (MLP VAE, likelihood `{row.get('likelihood', '?')}`"
        f"{f' ({options})' if options else ''}; "
        f"test negative ELBO of the model: "
        f"{row['negative_elbo_bpp']:.4f} bits/pixel)",
        "",
        "| codec | bits/pixel |",
        "|---|---|",
        f"| **keras-vae bits-back, Keras model** (net of start-up bits) | "
        f"**{keras_row['bpp_net']:.4f}** |",
        f"| keras-vae bits-back, Keras model, whole file | "
        f"{keras_row['bpp_total']:.4f} |",
        f"| keras-vae bits-back, int8 `.tflite` runtime (net) | "
        f"{runtime['bpp_net']:.4f} |",
    ]
    for name, value in sorted(row["standard"].items(), key=lambda kv: kv[1]):
        lines.append(f"| {name} | {value:.4f} |")
    ratio = keras_row["ratio_to_negative_elbo"]
    best = row["best_standard"]
    gap = keras_row["bpp_net"] / best["bpp"] - 1
    lines += [
        "",
        f"Bits-back is {100 * (ratio - 1):+.2f}% from the negative ELBO "
        f"({_elbo_verdict(ratio)})"
        f"; start-up bits {keras_row['startup_bits']} (once per stream), "
        f"header {keras_row['header_bytes']} bytes. Against the best "
        f"standard codec ({best['codec']}, {best['bpp']:.4f}): "
        f"{100 * gap:+.1f}% ({'keras-vae smaller' if gap < 0 else 'keras-vae larger'}). "
        f"Every image restored bit for bit: Keras {keras_row['exact']}, "
        f"int8 runtime {runtime['exact']}.",
        "",
    ]
    return lines


def _elbo_verdict(ratio):
    if abs(ratio - 1) <= 0.015:
        return "target within 1.5%: met"
    if ratio < 1:
        return ("below it by more than 1.5%: the entropy coder gives every "
                "level a probability of at least 2^-24, so a pixel the model "
                "puts far in a tail costs at most about 24 bits, where the "
                "negative ELBO charges its exact, larger cost; the model is "
                "overconfident on some test pixels")
    return "target within 1.5%: missed"


def to_markdown(results):
    lines = [
        "<!-- Written by benchmarks/codec_table.py; do not edit by hand. -->",
        "",
        f"Measured {results['date']} with `{results['command']}` "
        f"({results['settings']['num_test']} MNIST-5k test digits; load "
        f"average {results['load_average_at_start'][0]:.1f} at start, "
        f"{results['load_average_at_end'][0]:.1f} at end).",
        "",
    ]
    lossless = results["lossless"]
    lines += _lossless_table(lossless["binary"], "Binarised MNIST (pixel > 127)")
    lines += _lossless_table(lossless["8bit"], "8-bit MNIST")
    lines += ["**Throughput** of lossless coding (images/s, one process)", "",
              "| data | model | compress | decompress |", "|---|---|---|---|"]
    for name in ("binary", "8bit"):
        for key, label in (("keras", "Keras (TensorFlow)"),
                           ("int8_runtime", "int8 LiteRT runtime")):
            row = lossless[name][key]
            lines.append(f"| {name} | {label} | "
                         f"{row['compress_images_per_s']:.0f} | "
                         f"{row['decompress_images_per_s']:.0f} |")
    lines += _lossy_tables(results["lossy"])
    return "\n".join(lines)


def _ratio_cell(point):
    """A keras-vae point's bits over a codec's at equal PSNR, as a cell."""
    if point["how"] == "interpolated":
        return f"{point['ratio']:.2f}"
    # Outside the codec's PSNR range only a bound is known: the codec
    # needs at least its fewest bits (below) or more than its most (above).
    where = "below" if point["how"].startswith("at least") else "above"
    return f"<={point['ratio']:.2f} ({where} its range)"


def _verdict(comparison):
    """keras-vae's points against one codec's curve, in words."""
    points = comparison["points"]
    inside = [p["ratio"] for p in points if p["how"] == "interpolated"]
    if inside:
        verdict = (f"{'fewer' if max(inside) < 1 else 'not always fewer'} "
                   f"bits at equal PSNR at the {len(inside)} of {len(points)} "
                   f"points inside its PSNR range (ratio {min(inside):.2f}-"
                   f"{max(inside):.2f})")
    else:
        verdict = "no point inside its PSNR range"
    for how, where in (("at least", "below"), ("more than", "above")):
        outside = [p["ratio"] for p in points if p["how"].startswith(how)]
        if outside:
            verdict += (f"; {len(outside)} {where} it (ratio at most "
                        f"{min(outside):.2f}-{max(outside):.2f})")
    return verdict


def _lossy_tables(lossy):
    lines = ["", "**Lossy, 8-bit** (MLP VAE, likelihood "
             f"`{lossy.get('likelihood', '?')}`; bits per image of the whole "
             "stream, header included; mean PSNR and SSIM; plot: "
             "`benchmarks/codec_rd.png`)", "",
             "Latent code only (decoded with the decoder's mean):", "",
             "| keras-vae step | bits/image | PSNR (dB) | SSIM |",
             "|---|---|---|---|"]
    for point in lossy["keras_vae"]:
        lines.append(f"| {point['step']:g} | {point['bits_per_image']:.1f} | "
                     f"{point['psnr']:.2f} | {point['ssim']:.3f} |")
    refined = lossy.get("keras_vae_refined", [])
    names = list(lossy["codecs"])
    if refined:
        header = refined[0]["header_bytes"]
        lines += ["", "Latent code plus refined pixels (`pixel_step` q: each "
                  "pixel coded under p(x | z) to the grid 0, q, ..., 255 and "
                  "restored to it, so within q/2 levels; for each q the latent "
                  f"step with the fewest bits; header {header} bytes). Ratio: "
                  "keras-vae bits over the codec's, interpolated on its curve "
                  "at equal PSNR:", "",
                  "| q | latent step | bits/image | PSNR (dB) | SSIM | largest "
                  "error (levels) | " + " | ".join(
                      f"ratio to {name}" for name in names) + " |",
                  "|" + "---|" * (6 + len(names))]
        for index, point in enumerate(refined):
            ratios = [_ratio_cell(lossy["comparison_refined"][name]["points"]
                                  [index]) for name in names]
            lines.append(
                f"| {point['pixel_step']} | {point['step']:g} | "
                f"{point['bits_per_image']:.1f} | {point['psnr']:.2f} | "
                f"{point['ssim']:.3f} | {point['max_error']} | "
                + " | ".join(ratios) + " |")
    lines += ["", "| codec | bits/image (min-max over qualities) | PSNR range "
              "(dB) | smallest file (bytes, blank image) | keras-vae latent "
              "code at equal PSNR | keras-vae refined pixels at equal PSNR | "
              "curves cross at (dB): latent / refined |",
              "|---|---|---|---|---|---|---|"]
    for name, points in lossy["codecs"].items():
        bits = [p["bits_per_image"] for p in points]
        psnr = [p["psnr"] for p in points]
        smallest = min(p["smallest_file_bytes"] for p in points)
        cells, crossings = [], []
        for key in ("comparison", "comparison_refined"):
            comparison = lossy.get(key, {}).get(name)
            cells.append(_verdict(comparison) if comparison else "-")
            crossings.append(", ".join(
                f"{c:.1f}" for c in comparison["crossings_psnr"])
                or "none" if comparison else "-")
        lines.append(f"| {name} | {min(bits):.0f}-{max(bits):.0f} | "
                     f"{min(psnr):.1f}-{max(psnr):.1f} | {smallest} | "
                     f"{cells[0]} | {cells[1]} | {' / '.join(crossings)} |")
    lines.append("")
    return lines


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lossy = results["lossy"]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, metric in zip(axes, ("psnr", "ssim")):
        ours = lossy["keras_vae"]
        axis.plot([p["bits_per_image"] for p in ours], [p[metric] for p in ours],
                  "o-", color="black", linewidth=2, label="keras-vae latent code")
        refined = lossy.get("keras_vae_refined", [])
        if refined:
            axis.plot([p["bits_per_image"] for p in refined],
                      [p[metric] for p in refined], "s-", color="tab:purple",
                      linewidth=2,
                      label="keras-vae latent code + pixels (pixel_step)")
            for p in refined if metric == "psnr" else ():
                axis.annotate(f"q={p['pixel_step']}",
                              (p["bits_per_image"], p[metric]), fontsize=6,
                              textcoords="offset points", xytext=(4, -8))
        for name, points in lossy["codecs"].items():
            axis.plot([p["bits_per_image"] for p in points],
                      [p[metric] for p in points], ".--", label=name)
        axis.set_xscale("log")
        axis.set_xlabel("bits per image (28 x 28, files as written)")
        axis.set_ylabel("PSNR (dB)" if metric == "psnr" else "SSIM")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle("Lossy compression of 8-bit MNIST-5k test digits")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny models and data (the smoke run)")
    parser.add_argument("--out-dir", default=HERE)
    parser.add_argument("--child", action="store_true",
                        help="print a one-line JSON summary (benchmarks/run.py)")
    parser.add_argument("--choose-epochs", action="store_true",
                        help="only find the training epochs of each model "
                             "on a held-out part of the training digits")
    parser.add_argument("--models", nargs="+", choices=("binary", "8bit"),
                        default=("binary", "8bit"),
                        help="models of --choose-epochs")
    parser.add_argument("--max-epochs", type=int, default=None,
                        help="longest training of --choose-epochs "
                             "(default: the settings' max_epochs)")
    parser.add_argument("--render", metavar="JSON",
                        help="only rebuild the Markdown, the plot and the "
                             "README tables from the JSON of a run")
    args = parser.parse_args(argv)
    if args.render:
        with open(args.render) as handle:
            results = json.load(handle)
        markdown = to_markdown(results)
        with open(os.path.join(args.out_dir, "codec_table.md"), "w") as handle:
            handle.write(markdown)
        plot(results, os.path.join(args.out_dir, "codec_rd.png"))
        if "--quick" not in results["command"]:
            _common.update_readme(markdown, README_MARKERS)
        return
    if args.choose_epochs:
        settings = dict(QUICK if args.quick else FULL)
        if args.max_epochs:
            settings["max_epochs"] = args.max_epochs
        data = load_data(settings)
        keys = {"binary": "binary_train", "8bit": "levels_train"}
        for name in args.models:
            best, _ = choose_epochs(name, data[keys[name]], settings, print)
            print(f"{name}: lowest held-out negative ELBO after {best} epochs")
        return
    results = run(args.quick, args.out_dir,
                  log=(lambda *a: print(*a, file=sys.stderr)) if args.child
                  else print)
    if args.child:
        print(json.dumps({
            name: {"bpp_net": row["keras"]["bpp_net"],
                   "negative_elbo_bpp": row["negative_elbo_bpp"],
                   "best_standard": row["best_standard"]}
            for name, row in results["lossless"].items()}))


if __name__ == "__main__":
    main()
