"""PNG figures of what a VAE has learned."""

import os

import numpy as np

from keras_vae import _validation, files


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _to_images(array):
    array = np.asarray(array, dtype="float32")
    if array.ndim == 2:  # flat vectors: show as a square if possible
        side = int(round(np.sqrt(array.shape[1])))
        if side * side == array.shape[1]:
            array = array.reshape(-1, side, side, 1)
        else:
            array = array[:, None, :, None]
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    return np.clip(array, 0.0, 1.0)


def _save(fig, path):
    # One atomic writer for every file (`keras_vae.files`): a whole PNG or
    # none, never written through a symbolic link. Plots replace an older
    # file of the same name, as before.
    try:
        files.save_figure(fig, path, overwrite=True, dpi=100,
                          bbox_inches="tight")
    finally:
        _pyplot().close(fig)
    return os.fspath(path)


def image_grid(images, path, columns=8, title=None, row_titles=None):
    """Write `images` (n, h, w[, c]) in [0, 1] as a PNG grid; returns `path`."""
    plt = _pyplot()
    images = _to_images(images)
    rows = int(np.ceil(len(images) / columns))
    fig, axes = plt.subplots(
        rows, columns, figsize=(columns * 1.1, rows * 1.1 + (0.4 if title else 0)),
        squeeze=False,
    )
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index < len(images):
            axis.imshow(images[index], cmap="gray", vmin=0.0, vmax=1.0)
    if row_titles:
        for row, text in enumerate(row_titles[:rows]):
            axes[row, 0].set_title(text, fontsize=8, loc="left")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def reconstruction_grid(model, x, path, num_images=16, labels=None):
    """Originals and their reconstructions in alternating rows of a PNG.

    Args:
        model: `keras_vae.VAE` or `CVAE`.
        x: array `(n, ...)` of examples; the first `num_images` are shown.
        path: str. Where to write the PNG.
        num_images: int. How many examples.
        labels: labels of `x`, required for a `CVAE` (it reconstructs given
            the label), else None.

    Example:

    >>> import numpy as np, keras_vae
    >>> model = keras_vae.models.mlp_vae((8, 8, 1), 2, hidden_units=(8,))
    >>> x = np.random.default_rng(0).uniform(size=(8, 8, 8, 1)).astype("float32")
    >>> path = keras_vae.plotting.reconstruction_grid(model, x, "/tmp/rec.png")
    """
    x = np.asarray(x[:num_images], dtype="float32")
    if model.is_conditional:
        reconstructions = np.asarray(
            model.reconstruct(x, _required_labels(labels)[:num_images])
        )
    else:
        reconstructions = np.asarray(model.reconstruct(x))
    columns = min(8, len(x))
    rows = []
    for start in range(0, len(x), columns):
        rows.append(x[start : start + columns])
        rows.append(reconstructions[start : start + columns])
    images = np.concatenate(rows)
    titles = ["original", "reconstruction"] * (len(rows) // 2)
    return image_grid(images, path, columns=columns,
                      title="Test images (odd rows) and reconstructions (even rows)",
                      row_titles=titles)


def sample_grid(model, path, num_samples=64, seed=0, labels=None):
    """Decoded samples from the prior as a PNG grid.

    Args:
        model: `keras_vae.VAE` or `CVAE`.
        path: str. Where to write the PNG.
        num_samples: int. How many samples (8 per row).
        seed: int or None. Seed of the prior samples.
        labels: for a `CVAE`: an int class for all samples, or one label
            per sample. None for a CVAE draws 8 of each class, one class
            per row.

    Example:

    >>> import keras_vae
    >>> model = keras_vae.models.mlp_vae((8, 8, 1), 2, hidden_units=(8,))
    >>> path = keras_vae.plotting.sample_grid(model, "/tmp/samples.png", 16)
    """
    if not model.is_conditional:
        samples = np.asarray(model.sample(num_samples, seed=seed))
        return image_grid(samples, path, columns=8, title="Samples from the prior")
    title = "Samples from the prior given the label"
    if labels is None:
        labels = np.repeat(np.arange(model.num_classes), 8)
        num_samples = len(labels)
        title = "Samples from the prior, one class per row"
    samples = np.asarray(model.sample(num_samples, labels=labels, seed=seed))
    return image_grid(samples, path, columns=8, title=title)


def _required_labels(labels):
    if labels is None:
        raise ValueError(
            "A CVAE encodes and decodes given the class: pass `labels`. "
            "Received: labels=None"
        )
    return np.asarray(labels)


def _posterior_means(model, x, labels=None, batch_size=500):
    x = _validation.as_float_array(
        x, "x", model.input_spec_shape, model.likelihood
    )
    # Labels colour the points of any model; only a CVAE also encodes them.
    one_hot = model.prepare_labels(
        labels if model.is_conditional else None, len(x)
    )
    means = []
    for start in range(0, len(x), batch_size):
        stop = start + batch_size
        batch_labels = None if one_hot is None else one_hot[start:stop]
        z_mean, _ = model.posterior(x[start:stop], batch_labels)
        means.append(np.asarray(z_mean))
    return np.concatenate(means)


def _principal_components(points, count=2):
    """Project `points` on their first `count` principal axes."""
    centred = points - points.mean(axis=0)
    _, singular, axes = np.linalg.svd(centred, full_matrices=False)
    explained = singular**2 / max(float(np.sum(singular**2)), 1e-12)
    return centred @ axes[:count].T, explained[:count]


def latent_scatter(model, x, path, labels=None, num_points=2000, title=None):
    """Scatter of the posterior means, coloured by label, as a PNG.

    A 2-D latent is drawn as is; a larger one is projected on its first two
    principal components (the axis titles give the variance they explain).

    Args:
        model: `keras_vae.VAE` or `CVAE` (a CVAE also encodes with `labels`).
        x: array `(n, ...)`; the first `num_points` examples are drawn.
        path: str. Where to write the PNG.
        labels: array `(n,)` of integer labels or None. Colours the points.
        num_points: int. How many examples to draw.
        title: str or None.

    Example:

    >>> import numpy as np, keras_vae
    >>> model = keras_vae.models.mlp_vae((8, 8, 1), 3, hidden_units=(8,))
    >>> x = np.random.default_rng(0).uniform(size=(50, 8, 8, 1)).astype("float32")
    >>> path = keras_vae.plotting.latent_scatter(model, x, "/tmp/scatter.png")
    """
    x = np.asarray(x[:num_points], dtype="float32")
    labels = None if labels is None else np.asarray(labels)[:num_points]
    if labels is not None and labels.ndim == 2:
        labels = labels.argmax(-1)  # one-hot
    encode_labels = labels if model.is_conditional else None
    points = _posterior_means(model, x, encode_labels)
    if points.shape[1] == 2:
        axis_titles = ("z[0]", "z[1]")
    elif points.shape[1] == 1:
        points = np.concatenate([points, np.zeros_like(points)], axis=1)
        axis_titles = ("z[0]", "")
    else:
        points, explained = _principal_components(points)
        axis_titles = tuple(
            f"PC {i + 1} ({100 * share:.0f}% of variance)"
            for i, share in enumerate(explained)
        )
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(6.5, 5))
    if labels is None:
        axis.scatter(points[:, 0], points[:, 1], s=6, alpha=0.8, color="tab:blue")
    else:
        classes = np.unique(labels)
        colours = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
        for index, value in enumerate(classes):
            chosen = labels == value
            axis.scatter(points[chosen, 0], points[chosen, 1], s=6, alpha=0.8,
                         color=colours(index % colours.N), label=str(value))
        if len(classes) <= 20:
            axis.legend(title="label", markerscale=2.5, fontsize=8,
                        loc="center left", bbox_to_anchor=(1.0, 0.5))
    axis.set_xlabel(axis_titles[0])
    axis.set_ylabel(axis_titles[1])
    axis.set_title(title or "Posterior means of the latent code")
    return _save(fig, path)


def latent_traversal(
    model, path, x=None, labels=None, dims=None, num_steps=9, span=3.0,
    max_dims=8,
):
    """Decode while sweeping one latent dimension at a time, as a PNG.

    Each row starts from a base code (the posterior mean of `x[0]`, or the
    prior mean 0 without `x`) and replaces one coordinate with `num_steps`
    evenly spaced values in `[-span, span]`.

    Args:
        model: `keras_vae.VAE` or `CVAE`.
        path: str. Where to write the PNG.
        x: array `(n, ...)` or None. With data, the base is the code of
            `x[0]` and, without `dims`, the rows are the `max_dims`
            dimensions whose posterior mean varies most over `x` (the
            active ones).
        labels: for a `CVAE`: the class to decode (int), or labels of `x`.
        dims: list of ints or None. Dimensions to sweep.
        num_steps: int. Images per row.
        span: float. Sweep range in prior standard deviations.
        max_dims: int. Rows when `dims` is None.

    Example:

    >>> import keras_vae
    >>> model = keras_vae.models.mlp_vae((8, 8, 1), 3, hidden_units=(8,))
    >>> path = keras_vae.plotting.latent_traversal(model, "/tmp/traversal.png")
    """
    conditional = model.is_conditional
    if conditional and labels is None:
        raise ValueError(
            "A CVAE decodes given a class: pass `labels` (an int class, or "
            "the labels of `x`). Received: labels=None"
        )
    base = np.zeros((model.latent_dim,), dtype="float32")
    decode_label = labels
    if x is not None:
        x = np.asarray(x, dtype="float32")
        means = _posterior_means(model, x, labels if conditional else None)
        base = means[0]
        if dims is None:
            order = np.argsort(-means.var(axis=0))
            dims = sorted(int(d) for d in order[:max_dims])
        if conditional and np.ndim(labels) > 0:
            decode_label = np.asarray(labels)[0]
            if np.ndim(decode_label) > 0:
                decode_label = int(np.argmax(decode_label))
    if dims is None:
        dims = list(range(min(max_dims, model.latent_dim)))
    for dim in dims:
        if not 0 <= int(dim) < model.latent_dim:
            raise ValueError(
                f"Expected `dims` in [0, {model.latent_dim}). "
                f"Received: dims={list(dims)!r}"
            )
    values = np.linspace(-span, span, num_steps, dtype="float32")
    codes = np.repeat(base[None], len(dims) * num_steps, axis=0)
    for row, dim in enumerate(dims):
        codes[row * num_steps : (row + 1) * num_steps, dim] = values
    if conditional:
        images = model.decode(codes, int(decode_label))
    else:
        images = model.decode(codes)
    return image_grid(
        np.asarray(images), path, columns=num_steps,
        title=f"Latent traversal, each row one dimension from {-span:g} to {span:g}",
        row_titles=[f"z[{dim}]" for dim in dims],
    )


def pareto(records, path, quality="negative_elbo", costs=("params", "latency_us"),
           reference=None, title=None):
    """Quality against cost of searched models, Pareto front marked, as a PNG.

    One panel per cost. Every record is a grey point; the records no other
    one beats on both axes of a panel (its two-objective Pareto front) are
    joined by a line and labelled with their `architecture`. A `reference`
    record (e.g. the default model, measured the same way) is a red star.
    Lower is better on both axes; a cost spanning more than a factor of 10
    is drawn on a log axis.

    Args:
        records: list of dicts with the `quality` and `costs` keys, e.g.
            `keras_vae.search.search(...).trials`.
        path: str. Where to write the PNG.
        quality: str. Key of the quality (lower is better).
        costs: tuple of str. Keys of the costs, one panel each.
        reference: dict or None. A record to compare with.
        title: str or None.

    Example:

    >>> import keras_vae
    >>> records = [{"negative_elbo": 120.0, "params": 1e6, "latency_us": 90.0,
    ...             "architecture": "mlp 784-512-256-16"},
    ...            {"negative_elbo": 125.0, "params": 2e5, "latency_us": 30.0,
    ...             "architecture": "mlp 784-128-16"}]
    >>> path = keras_vae.plotting.pareto(records, "/tmp/pareto.png")
    """
    from keras_vae.search import pareto_front

    labels = {"negative_elbo": "test negative ELBO (nats)",
              "iwae_nll": "test IWAE NLL (nats)", "params": "parameters",
              "tflite_bytes": "int8 .tflite bytes",
              "latency_us": "LiteRT int8 latency, batch 1 (us)"}
    costs = (costs,) if isinstance(costs, str) else tuple(costs)
    points = [r for r in records
              if all(r.get(k) is not None for k in (quality, *costs))]
    if not points:
        raise ValueError(
            f"No record has all of {(quality, *costs)}; pass search trials "
            f"measured with these keys. Received: {len(records)} records"
        )
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(costs), figsize=(6.0 * len(costs), 4.6),
                             squeeze=False)
    for axis, cost in zip(axes[0], costs):
        axis.scatter([r[cost] for r in points], [r[quality] for r in points],
                     s=18, color="0.6", label="trials")
        front = pareto_front(points, (quality, cost))
        axis.plot([r[cost] for r in front], [r[quality] for r in front],
                  "o-", color="tab:blue", drawstyle="steps-post",
                  label="Pareto front")
        for r in front:
            axis.annotate(r.get("architecture", r.get("trial_id", "")),
                          (r[cost], r[quality]), fontsize=7,
                          textcoords="offset points", xytext=(4, 4))
        if reference is not None and reference.get(cost) is not None:
            axis.scatter([reference[cost]], [reference[quality]], marker="*",
                         s=180, color="tab:red", zorder=3,
                         label=reference.get("architecture", "reference"))
        values = [r[cost] for r in points]
        if min(values) > 0 and max(values) > 10 * min(values):
            axis.set_xscale("log")
        axis.set_xlabel(labels.get(cost, cost))
        axis.set_ylabel(labels.get(quality, quality))
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    fig.suptitle(title or "Architecture search: quality against cost "
                 "(lower is better on both axes)")
    return _save(fig, path)


def learning_curves(curves, path, x_label="optimizer steps",
                    y_label="test negative ELBO (nats)", title=None,
                    reference=None):
    """Lines of a metric against steps or time, one per run, as a PNG.

    Args:
        curves: dict. Name -> list of `(x values, y values)` pairs, one
            per run; several runs (seeds) are drawn thin, with their mean
            thick.
        path: str. Where to write the PNG.
        x_label: str. Horizontal axis title.
        y_label: str. Vertical axis title.
        title: str or None.
        reference: dict or None. Name -> y value drawn as a dashed
            horizontal line (e.g. the teacher's score).

    Example:

    >>> import keras_vae
    >>> path = keras_vae.plotting.learning_curves(
    ...     {"scratch": [([1, 2, 3], [150.0, 140.0, 135.0])]},
    ...     "/tmp/curve.png")
    """
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(6.5, 4.6))
    colours = plt.get_cmap("tab10")
    for index, (name, runs) in enumerate(curves.items()):
        colour = colours(index % colours.N)
        for xs, ys in runs:
            axis.plot(xs, ys, color=colour, alpha=0.35 if len(runs) > 1 else 1,
                      linewidth=1)
        if len(runs) > 1:
            length = min(len(ys) for _, ys in runs)
            mean_x = np.mean([np.asarray(xs[:length], float)
                              for xs, _ in runs], axis=0)
            mean_y = np.mean([np.asarray(ys[:length], float)
                              for _, ys in runs], axis=0)
            axis.plot(mean_x, mean_y, color=colour, linewidth=2.2,
                      label=f"{name} (mean of {len(runs)})")
        else:
            axis.lines[-1].set_label(name)
    for index, (name, value) in enumerate((reference or {}).items()):
        axis.axhline(value, linestyle="--", color=f"C{7 + index % 3}",
                     label=name)
    axis.set_xlabel(x_label)
    axis.set_ylabel(y_label)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title(title or f"{y_label} against {x_label}")
    return _save(fig, path)
