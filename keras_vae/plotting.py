"""PNG figures of what a VAE has learned."""

import os

import numpy as np


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
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
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


def reconstruction_grid(model, x, path, num_images=16):
    """Originals and their reconstructions in alternating rows of a PNG.

    Args:
        model: `keras_vae.VAE`.
        x: array `(n, ...)` of examples; the first `num_images` are shown.
        path: str. Where to write the PNG.
        num_images: int. How many examples.
    """
    x = np.asarray(x[:num_images], dtype="float32")
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


def sample_grid(model, path, num_samples=64, seed=0):
    """Decoded samples from the prior as a PNG grid."""
    samples = np.asarray(model.sample(num_samples, seed=seed))
    return image_grid(samples, path, columns=8, title="Samples from the prior")
