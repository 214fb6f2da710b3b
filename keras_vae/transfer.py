"""Transfer learning: fine-tune a trained VAE on new data, encoder frozen.

The recipe: train (or load) a VAE, freeze all or part of its encoder with
`freeze_encoder`, compile again (Keras reads `trainable` at compile time)
and fit on the new data. `fine_tune` does the three steps.

Example:

>>> import numpy as np, keras_vae
>>> model = keras_vae.models.mlp_vae((8, 8, 1), latent_dim=2, hidden_units=(8,))
>>> frozen = keras_vae.transfer.freeze_encoder(model, trainable_layers=["z_log_var"])
>>> frozen
['encoder_dense_0', 'z_mean']
"""

import keras

from keras_vae import _validation


def _weighted_layers(model):
    """Layers that own weights, in order, looking inside nested models."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.extend(_weighted_layers(layer))
        elif layer.weights:
            found.append(layer)
    return found


def freeze_encoder(model, trainable_layers=None):
    """Freeze the encoder of `model`, except the layers named or counted.

    Args:
        model: `keras_vae.VAE` (or `CVAE`).
        trainable_layers: None, int or list of str. None freezes every
            encoder layer; an int keeps the last `n` encoder layers with
            weights trainable (e.g. 2 = the `z_mean` and `z_log_var` heads
            of the builders); a list keeps the layers with those names.

    Returns:
        list of str: names of the frozen layers. Compile the model again
        before `fit` so the change takes effect.
    """
    layers = _weighted_layers(model.encoder)
    names = [layer.name for layer in layers]
    if trainable_layers is None:
        keep = set()
    elif isinstance(trainable_layers, int) and not isinstance(trainable_layers, bool):
        if not 0 <= trainable_layers <= len(layers):
            raise ValueError(
                f"Expected `trainable_layers` between 0 and {len(layers)} "
                f"(the encoder's layers with weights: {names}). "
                f"Received: trainable_layers={trainable_layers}"
            )
        keep = set(names[len(names) - trainable_layers:])
    elif isinstance(trainable_layers, str):
        raise ValueError(
            "Expected `trainable_layers` as a list of layer names, not a "
            f"string. Received: trainable_layers={trainable_layers!r}"
        )
    else:
        keep = set(trainable_layers)
        unknown = sorted(keep - set(names))
        if unknown:
            raise ValueError(
                f"Unknown encoder layer names {unknown}. Expected names "
                f"from {names}. Received: trainable_layers={trainable_layers!r}"
            )
    frozen = []
    for layer in layers:
        layer.trainable = layer.name in keep
        if not layer.trainable:
            frozen.append(layer.name)
    return frozen


def unfreeze(model):
    """Make every layer of `model` trainable again; compile before `fit`."""
    for layer in _weighted_layers(model.encoder) + _weighted_layers(model.decoder):
        layer.trainable = True


def fine_tune(
    model,
    x,
    y=None,
    trainable_layers=None,
    learning_rate=1e-4,
    epochs=5,
    **fit_kwargs,
):
    """Fit `model` on new data with its encoder frozen (wholly or in part).

    Freezes the encoder with `freeze_encoder`, compiles with Adam at a
    small learning rate (a fresh optimizer), and fits. The decoder, the
    likelihood's and the prior's weights keep training.

    Args:
        model: a trained `keras_vae.VAE` or `CVAE`.
        x: new training data (array or `tf.data.Dataset`).
        y: labels for a `CVAE`, else None.
        trainable_layers: see `freeze_encoder`.
        learning_rate: float > 0. Adam learning rate.
        epochs: int. Epochs of fine-tuning.
        **fit_kwargs: passed to `model.fit` (`batch_size`, `callbacks`, ...).

    Returns:
        The `History` of the fine-tuning `fit`.
    """
    learning_rate = _validation.check_positive_number(
        learning_rate, "learning_rate")
    freeze_encoder(model, trainable_layers)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate))
    return model.fit(x, y, epochs=epochs, **fit_kwargs)


__all__ = ["fine_tune", "freeze_encoder", "unfreeze"]
