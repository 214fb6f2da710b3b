"""tf.data input pipelines."""

import numpy as np

from keras_vae import _validation


def to_dataset(x, batch_size=128, shuffle=True, seed=None, y=None, drop_remainder=False):
    """Build a cached, shuffled, batched and prefetched `tf.data.Dataset`.

    Args:
        x: float array `(n, ...)`. The examples.
        batch_size: int > 0.
        shuffle: bool. Reshuffle every epoch (seeded by `seed`).
        seed: int or None. Shuffle seed.
        y: array or None. Numeric labels (class ids or one-hot rows); when
            given the elements are `(x, y)`.
        drop_remainder: bool. Drop the last incomplete batch.

    Example:

    >>> import numpy as np, keras_vae
    >>> ds = keras_vae.datasets.to_dataset(np.zeros((10, 4), "float32"), 4)
    >>> [tuple(b.shape) for b in ds]
    [(4, 4), (4, 4), (2, 4)]
    """
    import tensorflow as tf

    batch_size = _validation.check_positive_int(batch_size, "batch_size")
    x = _validation.as_float_array(x, "x")
    if y is not None:
        y = np.asarray(y)
        if not (np.issubdtype(y.dtype, np.number) or y.dtype == bool) or (
            np.issubdtype(y.dtype, np.complexfloating)
        ):
            raise ValueError(
                "Expected numeric labels `y` (class ids or one-hot rows); map "
                "names to ids first, e.g. with `np.unique(y, "
                f"return_inverse=True)`. Received: y with dtype={y.dtype}"
            )
        if y.ndim == 0 or len(y) != len(x):
            raise ValueError(
                "`x` and `y` must have the same number of examples. "
                f"Received: len(x)={len(x)}, y of shape {y.shape}"
            )
        dataset = tf.data.Dataset.from_tensor_slices((x, y))
    else:
        dataset = tf.data.Dataset.from_tensor_slices(x)
    dataset = dataset.cache()
    if shuffle:
        dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(
        tf.data.AUTOTUNE
    )
