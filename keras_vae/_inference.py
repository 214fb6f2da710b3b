"""Compiled inference for `encode`, `decode`, `reconstruct` and `sample`.

Run eagerly, one small batch through a VAE costs milliseconds of Python and
op dispatch. Each entry point is compiled once per input signature instead:
a `tf.function` with `reduce_retracing` on TensorFlow (it reads the
variables when it runs, so training, pruning masks and restored weights are
seen), and on JAX a `jax.jit` of a stateless function that is given the
current variable values at every call (after `jax_state_sync`, so a model
in the middle of `fit` is read as it is). Results are those of the eager
call.

The cache is dropped whenever the model's Keras `predict_function` is
(`compile`, `set_quantization`, a new train-step hook): anything that
changes what the forward pass traces (such as the Python switch of
fake quantization) also drops Keras' own compiled functions.
"""

import keras

from keras_vae import _keras_internals


class InferenceFunctions:
    """Compiled versions of a model's inference functions, by name."""

    def __init__(self, model):
        self._model = model
        self._functions = {}
        self._variables = None

    def __call__(self, name, function, *args):
        """Run `function(*args)` through its compiled version `name`."""
        compiled = self._functions.get(name)
        if compiled is None:
            compiled = self._compile(function)
            self._functions[name] = compiled
        return compiled(*args)

    def _compile(self, function):
        if keras.backend.backend() == "jax":
            return self._compile_jax(function)
        import tensorflow as tf

        # Plain Python around Keras layers: no AutoGraph conversion needed.
        return tf.function(function, reduce_retracing=True, autograph=False)

    def _compile_jax(self, function):
        import jax

        model = self._model
        if self._variables is None:
            self._variables = list(model.trainable_variables) + list(
                model.non_trainable_variables
            )
        variables = self._variables

        def stateless(values, *args):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return function(*args)

        jitted = jax.jit(stateless)

        def call(*args):
            _keras_internals.sync_jax_state(model)
            return jitted([variable.value for variable in variables], *args)

        return call
