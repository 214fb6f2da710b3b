"""Large images from a streaming input, and gradient accumulation.

`benchmarks/large_shapes.py` trains `conv_vae` on 64x64x3 and 128x128x3
images streamed through `tf.data` (disk cache, bounded shuffle, prefetch)
with the optimizer's `gradient_accumulation_steps`; here a tiny version of
it runs, and accumulation is checked against one large batch on Keras'
loop and on the fused path (JAX: tests/test_distributed_jax.py).
"""

import os
import sys

import keras
import numpy as np
import pytest

import keras_vae
from keras_vae import distribute, vae

BENCH_DIR = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "benchmarks")
sys.path.insert(0, BENCH_DIR)

import large_shapes

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the streaming pipeline and the fused path are TensorFlow's",
)


@pytest.fixture
def same_noise(monkeypatch):
    # The noise of 4 draws of 32 rows is not that of one draw of 128 rows:
    # with zero noise both runs compute the same ELBO gradients.
    monkeypatch.setattr(
        distribute, "normal_for_global_batch",
        lambda shape, dtype="float32", seed=None: keras.ops.zeros(shape, dtype))


def _one_update(batch_size, accumulation, x):
    keras.utils.set_random_seed(0)  # the same initial weights
    model = keras_vae.models.mlp_vae((8, 8, 1), latent_dim=2,
                                     hidden_units=(16,), seed=0)
    model.compile(optimizer=keras.optimizers.SGD(
        0.5, gradient_accumulation_steps=accumulation))
    initial = model.get_weights()
    model.fit(x, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    return model, initial


@pytest.mark.parametrize("path", ["keras_loop", "fused"])
def test_gradient_accumulation_4x32_equals_one_batch_of_128(
        same_noise, monkeypatch, path):
    if path == "fused":
        # "auto" fuses long fits only; let this 4-step fit qualify.
        monkeypatch.setattr(vae, "XLA_MIN_STEPS", 1)
    x = np.random.default_rng(0).uniform(size=(128, 8, 8, 1)).astype("float32")
    accumulated, initial = _one_update(32, 4, x)
    large, _ = _one_update(128, None, x)
    fused = "make_fused_train_function" in (
        accumulated.train_function.__qualname__)
    assert fused == (path == "fused")
    # Four micro-batches, one optimizer update.
    assert int(keras.ops.convert_to_numpy(accumulated.optimizer.iterations)) == 1
    moved = max(np.max(np.abs(a - b))
                for a, b in zip(initial, accumulated.get_weights()))
    assert moved > 1e-3
    for a, b in zip(accumulated.get_weights(), large.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_synthetic_images_stream_in_the_requested_shape():
    images = large_shapes.synthetic_images(8, (64, 64, 3), seed=1)
    first = next(iter(images.batch(8)))
    assert tuple(first.shape) == (8, 64, 64, 3)
    assert 0.0 <= float(np.min(first)) and float(np.max(first)) <= 1.0
    again = next(iter(large_shapes.synthetic_images(8, (64, 64, 3),
                                                    seed=1).batch(8)))
    np.testing.assert_array_equal(first, again)


def test_streaming_pipeline_refuses_a_memory_cache():
    with pytest.raises(ValueError, match="on-disk cache"):
        large_shapes.streaming_pipeline(
            large_shapes.synthetic_images(4, (8, 8, 3)), 2, cache_path="")


def test_conv_vae_64x64x3_trains_on_a_streaming_pipeline(tmp_path):
    # What benchmarks/large_shapes.py runs, tiny: conv_vae on streamed
    # 64x64x3 images, 2 micro-batches of 4 per update.
    row = large_shapes.measure((64, 64, 3), batch_size=4, accumulation=2,
                               count=16, epochs=2, filters=(4, 8),
                               latent_dim=2, cache_dir=str(tmp_path))
    assert all(np.isfinite(row["loss"]))
    # 4 batches per epoch, one update per 2 of them.
    assert row["optimizer_updates"] == 4
    assert row["effective_batch"] == 8
    assert row["images_per_second"] > 0
    assert row["peak_rss_mb"] > 0
    # The first epoch wrote the cache to disk, not to memory.
    assert row["cache_on_disk_mb"] > 0
