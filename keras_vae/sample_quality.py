"""Sample quality: KID and FID on features of a small offline classifier.

The Kernel Inception Distance (KID, Binkowski et al., 2018) and the
Frechet Inception Distance (FID, Heusel et al., 2017) compare two sets of
images through the features a classifier computes for them. Inception-v3
is the usual feature network, but it is a 90 MB download trained on
photographs. keras-vae trains a small classifier on its embedded data
instead (MNIST-5k for 28x28x1 images, scikit-learn's digits for 8x8x1),
seeded, in seconds, once: the network is cached in the user's cache
directory (`$KERAS_VAE_CACHE_DIR`, else `$XDG_CACHE_HOME/keras_vae`, else
`~/.cache/keras_vae`) and never downloaded.

Values are comparable only between scores computed with the same feature
network: every result names it (`feature_network`, with a fingerprint of
its weights), and neither score is comparable with published
Inception-based KID or FID.

KID is the unbiased estimate of the squared maximum mean discrepancy with
the cubic polynomial kernel `k(a, b) = (a . b / d + 1) ** 3`, computed on
disjoint subsets: their mean is unbiased at any sample size and their
spread gives an honest standard error. FID fits a Gaussian to each set of
features and is biased upwards for small sets; compare FIDs only at equal
sample sizes.

Example:

>>> import keras_vae  # doctest: +SKIP
>>> (_, _), (x_test, _) = keras_vae.datasets.load("mnist5k")
>>> score = keras_vae.metrics.kid(x_test[:500], x_test[500:])
>>> abs(score["kid"]) < 2 * score["stderr"]
True
"""

import hashlib
import json
import os

import keras
import numpy as np

from keras_vae import _validation

#: Bumped whenever the feature network's architecture or training changes,
#: so an old cached network is never mixed with new scores.
FEATURE_NETWORK_VERSION = 1
#: Environment variable naming the cache directory.
CACHE_ENV = "KERAS_VAE_CACHE_DIR"
#: Embedded data set whose classifier serves each image shape.
DATASET_FOR_SHAPE = {(28, 28, 1): "mnist5k", (8, 8, 1): "digits"}
# Training of the feature classifier: (epochs, batch size, feature width).
_TRAINING = {"mnist5k": (5, 64, 64), "digits": (15, 64, 32)}
_FEATURE_LAYER = "features"
_LOADED = {}


def cache_dir():
    """Directory of cached feature networks, created if missing.

    `$KERAS_VAE_CACHE_DIR` when set, else `$XDG_CACHE_HOME/keras_vae`, else
    `~/.cache/keras_vae`.

    Returns:
        str.

    Example:

    >>> from keras_vae import sample_quality
    >>> path = sample_quality.cache_dir()
    """
    directory = os.environ.get(CACHE_ENV)
    if not directory:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
            os.path.expanduser("~"), ".cache")
        directory = os.path.join(base, "keras_vae")
    os.makedirs(directory, exist_ok=True)
    return directory


def _classifier(input_shape, num_classes, width, seed):
    """A small seeded classifier whose `features` layer feeds the scores."""
    def init(offset):
        return keras.initializers.GlorotUniform(seed=seed + offset)

    inputs = keras.Input(shape=input_shape, name="x")
    hidden = inputs
    if input_shape[0] >= 16:
        for index, filters in enumerate((16, 32)):
            hidden = keras.layers.Conv2D(
                filters, 3, strides=2, padding="same", activation="relu",
                kernel_initializer=init(index), name=f"conv_{index}")(hidden)
    hidden = keras.layers.Flatten(name="flatten")(hidden)
    if input_shape[0] < 16:
        hidden = keras.layers.Dense(
            64, activation="relu", kernel_initializer=init(10),
            name="dense")(hidden)
    features = keras.layers.Dense(
        width, activation="relu", kernel_initializer=init(20),
        name=_FEATURE_LAYER)(hidden)
    logits = keras.layers.Dense(
        num_classes, kernel_initializer=init(30), name="logits")(features)
    return keras.Model(inputs, logits, name="sample_quality_classifier")


def _fingerprint(model):
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight, dtype="float32").tobytes())
    return digest.hexdigest()[:12]


def _train(dataset, seed, verbose):
    """Train the classifier; return its standardized feature extractor."""
    from keras_vae import datasets

    (x_train, y_train), (x_test, y_test) = datasets.load(dataset)
    epochs, batch_size, width = _TRAINING[dataset]
    model = _classifier(x_train.shape[1:], int(y_train.max()) + 1, width,
                        seed)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    # The batch order comes from a private generator: the network depends
    # on `seed` only, and the caller's global random state is untouched.
    rng = np.random.default_rng(seed)
    order = np.concatenate(
        [rng.permutation(len(x_train)) for _ in range(epochs)])
    model.fit(x_train[order], y_train[order], batch_size=batch_size,
              epochs=1, shuffle=False, verbose=verbose)
    accuracy = model.evaluate(x_test, y_test, verbose=0,
                              return_dict=True)["accuracy"]
    # Features standardized on the training images: KID's cubic kernel
    # then sees values of order 1 whatever the scale the classifier chose.
    raw = keras.Model(model.input, model.get_layer(_FEATURE_LAYER).output)
    values = features(raw, x_train)
    variance = values.var(axis=0)
    # A unit silent on all training images must not blow up elsewhere.
    variance = np.maximum(variance, 1e-3 * variance.mean() + 1e-12)
    normalized = keras.layers.Normalization(
        mean=values.mean(axis=0), variance=variance,
        name="standardize")(raw.output)
    network = keras.Model(model.input, normalized,
                          name="sample_quality_features")
    return network, float(accuracy)


def feature_network(dataset="mnist5k", seed=0, verbose=0):
    """The cached feature network of `dataset`, trained on first use.

    A small classifier (two stride-2 convolutions for MNIST-5k, an MLP for
    the 8x8 digits) trained with a fixed seed on the embedded training
    split; the returned model maps images to the activations of its
    `features` layer (64 for MNIST-5k, 32 for digits). It is saved as a
    `.keras` file (with a JSON note of its test accuracy and fingerprint)
    in `cache_dir()` and loaded from there afterwards.

    Args:
        dataset: str. `"mnist5k"` or `"digits"`.
        seed: int. Seed of the initial weights and the batch order.
        verbose: int. Keras verbosity of the one-time training.

    Returns:
        `keras.Model` with attributes `fingerprint` (str, `dataset`,
        version, seed and a hash of the weights) and `test_accuracy`.

    Example:

    >>> from keras_vae import sample_quality
    >>> network = sample_quality.feature_network("digits")  # doctest: +SKIP
    >>> network.output.shape  # doctest: +SKIP
    (None, 32)
    """
    from keras_vae import files

    if dataset not in _TRAINING:
        raise ValueError(
            f"Expected `dataset` to be one of {sorted(_TRAINING)}, the "
            "embedded data sets a feature network is trained on. For other "
            "images pass your own `feature_network` (a model or function "
            f"mapping images to feature vectors). Received: dataset={dataset!r}"
        )
    seed = int(seed)
    stem = f"sample_quality_{dataset}_v{FEATURE_NETWORK_VERSION}_seed{seed}"
    path = os.path.join(cache_dir(), stem + ".keras")
    key = (keras.backend.backend(), path)
    if key in _LOADED:
        return _LOADED[key]
    note_path = os.path.join(cache_dir(), stem + ".json")
    network = None
    if os.path.exists(path):
        try:
            network = files.load_model(path, compile=False)
            with open(note_path) as handle:
                accuracy = json.load(handle)["test_accuracy"]
        except (ValueError, OSError, KeyError):
            network = None  # a broken cache entry is trained again
    if network is None:
        network, accuracy = _train(dataset, seed, verbose)
        try:
            files.save_model(network, path, overwrite=True)
            note = {"dataset": dataset, "version": FEATURE_NETWORK_VERSION,
                    "seed": seed, "test_accuracy": accuracy,
                    "fingerprint": _fingerprint(network)}
            files.write_json(note_path, note, overwrite=True)
        except OSError:
            pass  # a read-only cache still scores; it trains next time too
    network.fingerprint = f"{stem}:{_fingerprint(network)}"
    network.test_accuracy = float(accuracy)
    _LOADED[key] = network
    return network


def _resolve_network(network, shape):
    if network is not None:
        return network
    dataset = DATASET_FOR_SHAPE.get(tuple(shape))
    if dataset is None:
        raise ValueError(
            "No embedded feature network fits images of shape "
            f"{tuple(shape)}; the built-in ones serve "
            f"{sorted(DATASET_FOR_SHAPE)}. Pass `feature_network`, a "
            "`keras.Model` or function mapping a batch of images to "
            f"feature vectors. Received: images of shape {tuple(shape)}"
        )
    return feature_network(dataset)


def _network_name(network):
    if hasattr(network, "fingerprint"):
        return network.fingerprint
    return getattr(network, "name", None) or getattr(
        network, "__name__", type(network).__name__)


def features(network, x, batch_size=500):
    """Feature vectors of `x` under `network`, as float64 `(n, d)`.

    Args:
        network: `keras.Model` or callable. Maps a batch of images to
            features (flattened to vectors here).
        x: array `(n, ...)`.
        batch_size: int > 0. Images per call.

    Returns:
        `np.ndarray` `(n, d)`.
    """
    batch_size = _validation.check_positive_int(batch_size, "batch_size")
    x = _validation.as_float_array(x, "x")
    outputs = []
    for start in range(0, len(x), batch_size):
        batch = x[start:start + batch_size]
        value = network(batch)
        value = np.asarray(keras.ops.convert_to_numpy(value), "float64")
        outputs.append(value.reshape(len(batch), -1))
    return np.concatenate(outputs)


def _polynomial_kernel(a, b):
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def _unbiased_mmd2(a, b):
    """Unbiased squared MMD of two samples under the cubic kernel."""
    m, n = len(a), len(b)
    k_aa, k_bb = _polynomial_kernel(a, a), _polynomial_kernel(b, b)
    k_ab = _polynomial_kernel(a, b)
    return (
        (k_aa.sum() - np.trace(k_aa)) / (m * (m - 1))
        + (k_bb.sum() - np.trace(k_bb)) / (n * (n - 1))
        - 2.0 * k_ab.mean()
    )


def _check_features(value, name):
    array = np.asarray(value, dtype="float64")
    if array.ndim != 2 or not np.isfinite(array).all():
        raise ValueError(
            f"Expected `{name}` to be a finite 2-D array (examples, "
            f"features). Received: {name} of shape {array.shape}"
        )
    return array


def kid_from_features(real, generated, num_subsets=10, seed=0):
    """KID of two feature sets: mean and standard error over subsets.

    Each set is shuffled (with its own draws of one generator seeded by
    `seed`) and split into `num_subsets` disjoint parts; part i of one set
    is compared with part i of the other by the unbiased squared MMD. The
    parts are independent, so the mean is unbiased and the standard error
    is their standard deviation over `sqrt(num_subsets)`.

    Args:
        real: array `(n, d)`. Features of the reference images.
        generated: array `(m, d)`. Features of the images to score.
        num_subsets: int >= 2. Disjoint subsets per set.
        seed: int. Seed of the shuffles.

    Returns:
        dict: `kid`, `stderr`, `num_subsets`, `subset_size` (smallest part
        of each set, as `[real, generated]`).

    Example:

    >>> import numpy as np
    >>> from keras_vae.sample_quality import kid_from_features
    >>> rng = np.random.default_rng(0)
    >>> score = kid_from_features(rng.normal(size=(400, 4)),
    ...                           rng.normal(size=(400, 4)))
    >>> abs(score["kid"]) < 3 * score["stderr"]
    True
    """
    real = _check_features(real, "real")
    generated = _check_features(generated, "generated")
    num_subsets = _validation.check_positive_int(num_subsets, "num_subsets")
    smallest = min(len(real), len(generated))
    if num_subsets < 2 or smallest < 2 * num_subsets:
        raise ValueError(
            "KID needs at least 2 subsets of at least 2 examples from each "
            f"set: with {smallest} examples in the smaller set use "
            f"num_subsets <= {max(smallest // 2, 1)} (>= 2) or more "
            f"examples. Received: num_subsets={num_subsets}"
        )
    if real.shape[1] != generated.shape[1]:
        raise ValueError(
            "Both feature sets need the same width. Received: real with "
            f"{real.shape[1]} features, generated with {generated.shape[1]}"
        )
    rng = np.random.default_rng(seed)
    real_parts = np.array_split(rng.permutation(len(real)), num_subsets)
    generated_parts = np.array_split(
        rng.permutation(len(generated)), num_subsets)
    values = np.array([
        _unbiased_mmd2(real[i], generated[j])
        for i, j in zip(real_parts, generated_parts)
    ])
    return {
        "kid": float(values.mean()),
        "stderr": float(values.std(ddof=1) / np.sqrt(num_subsets)),
        "num_subsets": num_subsets,
        "subset_size": [min(len(p) for p in real_parts),
                        min(len(p) for p in generated_parts)],
    }


def fid_from_features(real, generated):
    """Frechet distance between Gaussians fitted to two feature sets.

    `|mu_r - mu_g|^2 + tr(S_r + S_g - 2 (S_r S_g)^(1/2))`, with the trace
    of the matrix square root taken from the eigenvalues of the symmetric
    `S_r^(1/2) S_g S_r^(1/2)`, in float64.

    Args:
        real: array `(n, d)`, n >= 2.
        generated: array `(m, d)`, m >= 2.

    Returns:
        float.

    Example:

    >>> import numpy as np
    >>> from keras_vae.sample_quality import fid_from_features
    >>> a = np.array([[0.0], [2.0]])
    >>> round(fid_from_features(a, a + 3.0), 6)
    9.0
    """
    real = _check_features(real, "real")
    generated = _check_features(generated, "generated")
    if min(len(real), len(generated)) < 2 or real.shape[1] != generated.shape[1]:
        raise ValueError(
            "FID needs at least 2 examples per set and the same number of "
            f"features. Received: real of shape {real.shape}, generated of "
            f"shape {generated.shape}"
        )
    mean_r, mean_g = real.mean(axis=0), generated.mean(axis=0)
    cov_r = np.atleast_2d(np.cov(real, rowvar=False))
    cov_g = np.atleast_2d(np.cov(generated, rowvar=False))
    values, vectors = np.linalg.eigh(cov_r)
    root_r = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    middle = root_r @ cov_g @ root_r
    trace_root = np.sqrt(
        np.clip(np.linalg.eigvalsh((middle + middle.T) / 2.0), 0.0, None)
    ).sum()
    distance = (
        np.sum(np.square(mean_r - mean_g))
        + np.trace(cov_r) + np.trace(cov_g) - 2.0 * trace_root
    )
    return float(max(distance, 0.0))


def kid(x_real, x_generated, feature_network=None, num_subsets=10, seed=0,
        batch_size=500):
    """Kernel Inception Distance of generated images to real ones.

    Lower is better; two samples of the same distribution score 0 within
    about two standard errors. The two sets must be different images: an
    image in both pairs with itself in the cross term and pulls the score
    below 0. See `kid_from_features` for the estimator.

    Args:
        x_real: array `(n, *image_shape)`. Reference images, e.g. the test
            set.
        x_generated: array `(m, *image_shape)`. Images to score, e.g.
            `model.sample(m)`.
        feature_network: `keras.Model`, callable or None. None takes the
            cached classifier of the embedded data set with this image
            shape (`feature_network(...)`; 28x28x1 or 8x8x1).
        num_subsets: int >= 2. Disjoint subsets per set.
        seed: int. Seed of the subset shuffles.
        batch_size: int > 0. Images per feature-network call.

    Returns:
        dict: `kid`, `stderr`, `num_subsets`, `subset_size`, `num_real`,
        `num_generated` and `feature_network` (the network's fingerprint:
        scores are comparable only with the same one).

    Example:

    >>> import numpy as np, keras_vae
    >>> (_, _), (x_test, _) = keras_vae.datasets.load("digits")
    >>> score = keras_vae.metrics.kid(x_test[:180], x_test[180:])  # doctest: +SKIP
    """
    x_real = _validation.as_float_array(x_real, "x_real")
    x_generated = _validation.as_float_array(
        x_generated, "x_generated", x_real.shape[1:])
    network = _resolve_network(feature_network, x_real.shape[1:])
    result = kid_from_features(
        features(network, x_real, batch_size),
        features(network, x_generated, batch_size),
        num_subsets=num_subsets, seed=seed)
    result.update(num_real=len(x_real), num_generated=len(x_generated),
                  feature_network=_network_name(network))
    return result


def fid(x_real, x_generated, feature_network=None, batch_size=500):
    """Frechet Inception Distance of generated images to real ones.

    Lower is better. Biased upwards for small sets: compare FIDs computed
    from the same numbers of images. See `fid_from_features`.

    Args:
        x_real: array `(n, *image_shape)`. Reference images.
        x_generated: array `(m, *image_shape)`. Images to score.
        feature_network: `keras.Model`, callable or None (see `kid`).
        batch_size: int > 0. Images per feature-network call.

    Returns:
        dict: `fid`, `num_real`, `num_generated` and `feature_network`.

    Example:

    >>> import keras_vae
    >>> (_, _), (x_test, _) = keras_vae.datasets.load("digits")
    >>> score = keras_vae.metrics.fid(x_test[:180], x_test[180:])  # doctest: +SKIP
    """
    x_real = _validation.as_float_array(x_real, "x_real")
    x_generated = _validation.as_float_array(
        x_generated, "x_generated", x_real.shape[1:])
    network = _resolve_network(feature_network, x_real.shape[1:])
    return {
        "fid": fid_from_features(features(network, x_real, batch_size),
                                 features(network, x_generated, batch_size)),
        "num_real": len(x_real),
        "num_generated": len(x_generated),
        "feature_network": _network_name(network),
    }


__all__ = [
    "CACHE_ENV",
    "cache_dir",
    "feature_network",
    "features",
    "fid",
    "fid_from_features",
    "kid",
    "kid_from_features",
]
