"""Evaluation of a trained VAE: ELBO, IWAE bound, active units, error.

All functions take numpy data, work in batches, and for a
`keras_vae.CVAE` also need `labels`. Log-likelihoods are in nats per
example; `iwae_nll` also reports bits per dimension.

Example:

>>> import numpy as np, keras_vae
>>> model = keras_vae.models.mlp_vae((8, 8, 1), latent_dim=2, hidden_units=(8,))
>>> x = np.random.default_rng(0).uniform(size=(16, 8, 8, 1)).astype("float32")
>>> result = keras_vae.metrics.iwae_nll(model, x, num_samples=10)
>>> sorted(result)
['bits_per_dim', 'nll', 'num_samples', 'stderr']
"""

import math

import keras
import numpy as np
from keras import ops

from keras_vae import _validation
from keras_vae.priors.base import gaussian_log_density
from keras_vae.sample_quality import fid, kid


def _prepare(model, x, labels):
    """Validated float32 `x` and, for a CVAE, one-hot labels (else None)."""
    x = _validation.as_float_array(
        x, "x", model.input_spec_shape, model.likelihood
    )
    return x, model.prepare_labels(labels, len(x))


def _batches(x, labels, batch_size):
    batch_size = _validation.check_positive_int(batch_size, "batch_size")
    for start in range(0, len(x), batch_size):
        stop = start + batch_size
        yield x[start:stop], None if labels is None else labels[start:stop]


def _model_inputs(x, labels):
    return x if labels is None else (x, labels)


def _seed_generator(seed):
    if seed is None or isinstance(seed, keras.random.SeedGenerator):
        return seed
    return keras.random.SeedGenerator(int(seed))


def _to_numpy(value):
    return np.asarray(ops.convert_to_numpy(value), dtype="float64")


def elbo(model, x, labels=None, batch_size=500, seed=0, return_per_example=False):
    """The evidence lower bound in nats per example (higher is better).

    The same one-sample estimator as `model.evaluate` (`compute_terms`
    with the posterior noise, the prior's KL, beta = 1 and no free bits),
    so with different seeds the two agree within Monte Carlo error.

    Args:
        model: `keras_vae.VAE` or `keras_vae.CVAE`.
        x: array `(n, *input_shape)`.
        labels: class labels, required for a `CVAE`.
        batch_size: int. Examples per batch.
        seed: int or None. Seed of the posterior noise.
        return_per_example: bool. Also return the `(n,)` per-example ELBO.

    Returns:
        float, or `(float, np.ndarray)` with `return_per_example=True`.
    """
    x, labels = _prepare(model, x, labels)
    generator = _seed_generator(seed)
    values = []
    for x_batch, label_batch in _batches(x, labels, batch_size):
        terms = model.compute_terms(
            _model_inputs(x_batch, label_batch), training=False, seed=generator
        )
        values.append(-_to_numpy(terms["reconstruction"] + terms["kl"]))
    per_example = np.concatenate(values)
    mean = float(per_example.mean())
    return (mean, per_example) if return_per_example else mean


def _log_mean_exp(log_weights):
    """log(mean(exp(w))) along the last axis, stable for any magnitude."""
    top = np.max(log_weights, axis=-1, keepdims=True)
    return (
        top[..., 0]
        + np.log(np.mean(np.exp(log_weights - top), axis=-1))
    )


def iwae_nll(
    model,
    x,
    num_samples=500,
    labels=None,
    batch_size=100,
    seed=0,
    max_rows=20000,
    return_per_example=False,
):
    """Importance-weighted estimate of the negative log-likelihood.

    With K samples z_k ~ q(z | x), `-log mean_k p(x | z_k) p(z_k) / q(z_k | x)`
    (Burda et al., 2016): an upper bound on -log p(x) that tightens as K
    grows; K = 1 is the negative ELBO estimate (with the sampled KL). The
    sum is taken with log-sum-exp in float64, so it does not underflow even
    at hundreds of nats. Examples are processed `batch_size` at a time and
    their K samples in chunks of at most `max_rows` decoder rows, so memory
    stays bounded for any K.

    Args:
        model: `keras_vae.VAE` or `keras_vae.CVAE` (bound on -log p(x | y)).
        x: array `(n, *input_shape)`.
        num_samples: int > 0. K, importance samples per example.
        labels: class labels, required for a `CVAE`.
        batch_size: int. Examples per batch.
        seed: int or None. Seed of the posterior samples.
        max_rows: int. Largest number of decoder rows evaluated at once.
        return_per_example: bool. Add the `(n,)` per-example NLL as
            `"per_example"`.

    Returns:
        dict with `nll` (mean, nats per example), `stderr` (its standard
        error over examples), `bits_per_dim` (`nll / (D * ln 2)`, D the
        number of data dimensions, the usual unit for images) and
        `num_samples`.
    """
    num_samples = _validation.check_positive_int(num_samples, "num_samples")
    max_rows = _validation.check_positive_int(max_rows, "max_rows")
    x, labels = _prepare(model, x, labels)
    generator = _seed_generator(seed)
    results = []
    for x_batch, label_batch in _batches(x, labels, batch_size):
        size = len(x_batch)
        z_mean, z_log_var = model.posterior(x_batch, label_batch)
        chunk = max(1, min(num_samples, max_rows // size))
        log_weights = []
        done = 0
        while done < num_samples:
            k = min(chunk, num_samples - done)
            done += k
            # Example i owns rows i*k ... i*k + k - 1.
            mean = ops.repeat(z_mean, k, axis=0)
            log_var = ops.repeat(z_log_var, k, axis=0)
            noise = keras.random.normal(ops.shape(mean), seed=generator)
            z = mean + ops.exp(0.5 * log_var) * noise
            x_rep = ops.repeat(x_batch, k, axis=0)
            label_rep = (
                None if label_batch is None
                else ops.repeat(label_batch, k, axis=0)
            )
            params = model.decoder_params(z, label_rep)
            log_px_z = -model.likelihood.negative_log_prob(x_rep, params)
            log_pz = model.prior.log_prob(z)
            log_qz = ops.sum(gaussian_log_density(z, mean, log_var), axis=-1)
            log_weights.append(
                _to_numpy(log_px_z + log_pz - log_qz).reshape(size, k)
            )
        results.append(-_log_mean_exp(np.concatenate(log_weights, axis=1)))
    per_example = np.concatenate(results)
    nll = float(per_example.mean())
    dims = math.prod(model.input_spec_shape)
    output = {
        "nll": nll,
        "stderr": float(per_example.std(ddof=1) / np.sqrt(len(per_example)))
        if len(per_example) > 1 else float("nan"),
        "bits_per_dim": nll / (dims * math.log(2.0)),
        "num_samples": num_samples,
    }
    if return_per_example:
        output["per_example"] = per_example
    return output


def posterior_mean_variance(model, x, labels=None, batch_size=500):
    """Variance over the data of each latent's posterior mean, `(latent,)`."""
    x, labels = _prepare(model, x, labels)
    means = [
        _to_numpy(model.posterior(x_batch, label_batch)[0])
        for x_batch, label_batch in _batches(x, labels, batch_size)
    ]
    return np.var(np.concatenate(means), axis=0)


def active_units(model, x, threshold=0.01, labels=None, batch_size=500):
    """Number of latent dimensions the model uses (Burda et al., 2016).

    A unit u is active when `Cov_x(E_q[z_u | x]) > threshold`: its
    posterior mean changes with the input. A collapsed unit copies the
    prior for every x and has a variance near 0.

    Args:
        model: `keras_vae.VAE` or `keras_vae.CVAE`.
        x: array `(n, *input_shape)`.
        threshold: float >= 0. Variance above which a unit counts.
        labels: class labels, required for a `CVAE`.
        batch_size: int. Examples per batch.

    Returns:
        int.
    """
    threshold = _validation.check_non_negative(threshold, "threshold")
    variances = posterior_mean_variance(model, x, labels, batch_size)
    return int(np.sum(variances > threshold))


def reconstruction_error(model, x, labels=None, batch_size=500):
    """Mean squared error between `x` and its reconstruction.

    The reconstruction is the mean of p(x | z) at the posterior mean
    (`model.reconstruct`); the error is averaged over examples and data
    dimensions.

    Args:
        model: `keras_vae.VAE` or `keras_vae.CVAE`.
        x: array `(n, *input_shape)`.
        labels: class labels, required for a `CVAE`.
        batch_size: int. Examples per batch.

    Returns:
        float.
    """
    x, labels = _prepare(model, x, labels)
    total = 0.0
    for x_batch, label_batch in _batches(x, labels, batch_size):
        z_mean, _ = model.posterior(x_batch, label_batch)
        mean = model.likelihood.mean(model.decoder_params(z_mean, label_batch))
        total += float(np.sum(np.square(_to_numpy(mean) - x_batch)))
    return total / x.size


__all__ = [
    "active_units",
    "elbo",
    "fid",
    "iwae_nll",
    "kid",
    "posterior_mean_variance",
    "reconstruction_error",
]
