"""The base class of train-step hooks: state that changes inside `fit`.

A train-step hook is a layer attached to a VAE with
`keras_vae.VAE.add_train_step_hook`. `attach(model)` creates its variables
once; `before_train_step()` runs before the forward pass and
`after_apply()` right after the optimizer update, inside the compiled train
step on TensorFlow and statelessly on JAX. Because the hook is a tracked
layer of the model, its variables are saved in `.keras` files and
checkpoints, restored by `keras.callbacks.BackupAndRestore`, and carried in
the JAX state. Pruning (`MagnitudePruning`), sparsity preservation
(`SparsityPreservation`) and the tied QAT ranges (`TiedRanges`) are hooks.
"""

import keras

from keras_vae.compression import kernels as kernel_lookup


class _Targets:
    """Holds the model objects a hook changes, without Keras tracking them.

    The kernels belong to the model's layers; tracking them a second time
    through the hook would save them twice.
    """

    def __init__(self):
        self.items = []
        self.attached = False


class TrainStepHook(keras.layers.Layer):
    """Base class of layers whose variables change in every train step.

    Subclasses implement `attach(model)` (create variables, find the
    model's objects they act on, then call `hold(targets)`), and
    `before_train_step()` and/or `after_apply()`, which read and `assign`
    variables with `keras.ops` only. A hook attaches to one model, once.
    Every constructor argument is returned by `get_config()`, so the model
    rebuilds its hooks when it is loaded.

    Args:
        **kwargs: Standard `keras.layers.Layer` arguments (`name`, ...).
            Hooks are not trainable.

    Example:

    >>> import keras, keras_vae
    >>> from keras_vae.compression import TrainStepHook
    >>> class CountSteps(TrainStepHook):
    ...     def attach(self, model):
    ...         self.check_detached()
    ...         self.steps = self.add_weight(shape=(), dtype="int32",
    ...             initializer="zeros", trainable=False, name="steps")
    ...         self.hold([])
    ...     def before_train_step(self):
    ...         self.steps.assign(self.steps.value + 1)
    >>> model = keras_vae.models.mlp_vae((8, 8, 1), 2, hidden_units=(16,))
    >>> model.add_train_step_hook(CountSteps())
    >>> int(model.train_step_hooks[0].steps.numpy())
    0
    """

    def __init__(self, **kwargs):
        kwargs["trainable"] = False
        super().__init__(**kwargs)
        self._targets = _Targets()

    @property
    def attached(self):
        """bool. Whether `attach` has run."""
        return self._targets.attached

    @property
    def targets(self):
        """list. The model objects this hook acts on (set by `hold`)."""
        return list(self._targets.items)

    def check_detached(self):
        """Raise if this hook is already attached to a model."""
        if self.attached:
            raise ValueError(
                f"This `{type(self).__name__}` hook is already attached to a "
                f"model. Create a new one. Received: hook={self.name!r}"
            )

    def hold(self, targets):
        """Record `targets` (kernels, quantizers) and mark the hook built."""
        self._targets.items = list(targets)
        self._targets.attached = True
        self.built = True

    def attach(self, model):
        """Create this hook's variables for `model` (once).

        Args:
            model: `keras_vae.VAE`.
        """
        raise NotImplementedError(
            f"`{type(self).__name__}` must implement `attach(model)`."
        )

    def before_train_step(self):
        """Runs in the train step before the forward pass (no-op here)."""

    def after_apply(self):
        """Runs in the train step after the optimizer update (no-op here)."""

    def call(self, inputs):
        return inputs


class KernelMaskHook(TrainStepHook):
    """A hook holding one saved 0/1 mask per kernel, applied after updates.

    The shared part of `MagnitudePruning` and `SparsityPreservation`:
    `layer_names` are paths from
    `keras_vae.compression.prunable_layers(model)`; `attach` creates one
    non-trainable mask per kernel (its initial value from
    `initial_mask(kernel)`) and `after_apply` multiplies each kernel by its
    mask, so masked weights stay exactly zero through every update.

    Args:
        layer_names: list of str. Paths of the masked layers.
        **kwargs: Standard `keras.layers.Layer` arguments.
    """

    def __init__(self, layer_names, **kwargs):
        super().__init__(**kwargs)
        if isinstance(layer_names, str):
            layer_names = [layer_names]
        self.layer_names = [str(name) for name in layer_names]

    def initial_mask(self, kernel):
        """Initializer of the mask of `kernel` (all ones here)."""
        del kernel
        return "ones"

    def attach(self, model):
        """Create one mask per kernel of `layer_names` on `model`."""
        self.check_detached()
        kernels = kernel_lookup.kernels_by_path(model, self.layer_names)
        self.add_masks(kernels)
        self.hold(kernels)

    def add_masks(self, kernels):
        """Create `self.masks`: one non-trainable mask per kernel."""
        self.masks = [
            self.add_weight(
                shape=kernel.shape,
                dtype=kernel.dtype,
                initializer=self.initial_mask(kernel),
                trainable=False,
                name=f"mask_{index}",
            )
            for index, kernel in enumerate(kernels)
        ]

    @property
    def kernels(self):
        """list of the masked kernel variables, in `layer_names` order."""
        return self.targets

    def after_apply(self):
        for kernel, mask in zip(self.targets, self.masks):
            kernel.assign(kernel.value * mask.value)

    def get_config(self):
        config = super().get_config()
        config.update({"layer_names": list(self.layer_names)})
        return config
