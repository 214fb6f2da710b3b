"""A learning curve: test ELBO against optimizer steps and training time."""

import time

import keras

from keras_vae import _keras_internals, _validation


class LearningCurve(keras.callbacks.Callback):
    """Record a VAE's test negative ELBO during `fit`, by steps and seconds.

    Every `every` epochs (and after the first) the negative ELBO of
    `model` on `x` is computed with `keras_vae.metrics.elbo` (fixed noise
    seed, so points differ only by training) and appended to `points` as a
    dict: `epoch`, `steps` (optimizer steps so far), `seconds` (wall time
    spent training so far, the evaluations excluded) and `negative_elbo`.
    Steps and seconds add up over successive `fit` calls with the same
    callback. It has no per-batch hook, so `fit` keeps its fast multi-step
    executions.

    Args:
        model: `keras_vae.VAE` or None. The model to evaluate; None means
            the model being fit. Give the student when fitting a
            `keras_vae.compression.Distiller`.
        x: array `(n, *input_shape)`. Evaluation data.
        labels: class labels of `x` for a conditional model, else None.
        every: int > 0. Evaluate every this many epochs.
        seed: int. Seed of the evaluation noise.

    Example:

    >>> import keras, numpy as np, keras_vae
    >>> model = keras_vae.models.mlp_vae((8, 8, 1), 2, hidden_units=(8,))
    >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
    >>> x = np.random.default_rng(0).uniform(size=(64, 8, 8, 1)).astype("float32")
    >>> curve = keras_vae.callbacks.LearningCurve(x=x)
    >>> _ = model.fit(x, epochs=2, batch_size=32, verbose=0, callbacks=[curve])
    >>> [point["steps"] for point in curve.points]
    [2, 4]
    """

    def __init__(self, model=None, x=None, labels=None, every=1, seed=0):
        super().__init__()
        if x is None:
            raise ValueError(
                "`LearningCurve` needs the evaluation data `x`, e.g. the "
                "test set. Received: x=None"
            )
        self.evaluated = model
        self.x = x
        self.labels = labels
        self.every = _validation.check_positive_int(every, "every")
        self.seed = int(seed)
        self.points = []
        self._steps = 0
        self._seconds = 0.0
        self._mark = None

    def on_train_begin(self, logs=None):
        self._mark = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        # Training time only: the evaluations below and the time between
        # two `fit` calls are not counted.
        now = time.perf_counter()
        self._seconds += now - self._mark
        self._mark = now
        self._steps += int(self.params.get("steps") or 0)
        if epoch != 0 and (epoch + 1) % self.every:
            return
        from keras_vae import metrics

        # On JAX, `fit` holds the newest weights outside the variables.
        _keras_internals.sync_jax_state(self.model)
        model = self.evaluated if self.evaluated is not None else self.model
        value = -metrics.elbo(model, self.x, labels=self.labels,
                              seed=self.seed)
        self.points.append({
            "epoch": epoch + 1,
            "steps": self._steps,
            "seconds": self._seconds,
            "negative_elbo": float(value),
        })
        self._mark = time.perf_counter()
