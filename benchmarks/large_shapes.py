"""conv_vae on large colour images (64x64x3, 128x128x3) from a streaming input.

What a user with a large image data set runs, measured on this machine:

- input: a `tf.data` pipeline that never holds the data set in memory.
  Images are decoded (here: generated, synthetic smooth colour images of
  the right shape) one at a time, cached on disk (`Dataset.cache(path)`,
  written during the first epoch and read back after), shuffled in a
  bounded buffer, batched and prefetched. `tfds_pipeline` is the same
  pipeline over a tensorflow-datasets split (not run here: no network);
- training: `conv_vae` with batch 128, and with batch 32 and the
  optimizer's `gradient_accumulation_steps=4` (the same update as batch
  128, a quarter of the activations in memory);
- figures: training images per second (epochs after the first, which
  fills the cache and compiles), peak resident memory (RSS) of the
  process, and the size of the data set had it been one array.

Every setting runs in a fresh process so its peak RSS is its own.

    .venv/bin/python benchmarks/large_shapes.py --readme    # both shapes
    .venv/bin/python benchmarks/large_shapes.py --quick     # a smoke run
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common

SHAPES = ((64, 64, 3), (128, 128, 3))
README_MARKERS = ("<!-- large_shapes:start -->", "<!-- large_shapes:end -->")
#: (name, batch size, gradient accumulation steps): both update on 128.
SETTINGS = (("batch 128", 128, None), ("batch 32 x 4 accumulated", 32, 4))
FILTERS = (32, 64, 128)


def synthetic_images(count, shape, seed=0):
    """A `tf.data.Dataset` of `count` smooth colour images in [0, 1].

    Each image is made from its index alone (a coarse random grid, resized
    bilinearly), so nothing is stored: a stand-in for decoding files.

    Args:
        count: int. Number of images.
        shape: tuple `(height, width, channels)`.
        seed: int. The same seed gives the same images.
    """
    import tensorflow as tf

    height, width, channels = shape

    def make(index):
        coarse = tf.random.stateless_uniform(
            (max(height // 8, 2), max(width // 8, 2), channels),
            seed=tf.stack([tf.cast(seed, tf.int64), index]))
        image = tf.image.resize(coarse[None], (height, width),
                                method="bilinear")[0]
        return tf.clip_by_value(image, 0.0, 1.0)

    return tf.data.Dataset.range(count).map(
        make, num_parallel_calls=tf.data.AUTOTUNE)


def streaming_pipeline(dataset, batch_size, cache_path, shuffle_buffer=512,
                       seed=0):
    """Cache on disk, shuffle in a bounded buffer, batch and prefetch.

    Args:
        dataset: `tf.data.Dataset` of images, or of `(image, label)` pairs
            for a `CVAE`.
        batch_size: int. The (global) batch size.
        cache_path: str. File prefix of the on-disk cache; the first epoch
            writes it, the next ones read it. Never `""`, which would cache
            in memory.
        shuffle_buffer: int. Examples held for shuffling (memory bound).
        seed: int. Shuffle seed.
    """
    import tensorflow as tf

    if not cache_path:
        raise ValueError(
            "Expected a file path for the on-disk cache; an empty path caches "
            f"the whole data set in memory. Received: cache_path={cache_path!r}")
    return (dataset.cache(cache_path)
            .shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
            .batch(batch_size, drop_remainder=True)
            .prefetch(tf.data.AUTOTUNE))


def tfds_pipeline(name, split, batch_size, cache_path, data_dir=None,
                  image_size=None):
    """The streaming pipeline over a tensorflow-datasets split.

    Images are read from the prepared TFRecord files, scaled to [0, 1]
    (and resized to `image_size` if given), cached on disk and streamed.

    Args:
        name: str. A tensorflow-datasets name with an `image` feature
            (`"cifar10"`, `"celeb_a"`, ...).
        split: str. `"train"`, `"test"`, ...
        batch_size: int. The (global) batch size.
        cache_path: str. File prefix of the on-disk cache.
        data_dir: str or None. tensorflow-datasets data folder.
        image_size: tuple `(height, width)` or None.
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds

    dataset = tfds.load(name, split=split, data_dir=data_dir,
                        shuffle_files=True)

    def image(example):
        value = tf.cast(example["image"], tf.float32) / 255.0
        if image_size is not None:
            value = tf.image.resize(value, image_size)
        return value

    return streaming_pipeline(
        dataset.map(image, num_parallel_calls=tf.data.AUTOTUNE),
        batch_size, cache_path)


def measure(shape, batch_size, accumulation, count=1024, epochs=3,
            filters=FILTERS, latent_dim=32, cache_dir=None):
    """Train `conv_vae` on streamed synthetic images; figures as a dict."""
    import keras

    import keras_vae

    cache_dir = cache_dir or tempfile.mkdtemp(prefix="keras-vae-cache-")
    keras.utils.set_random_seed(0)
    model = keras_vae.models.conv_vae(shape, latent_dim=latent_dim,
                                      filters=tuple(filters), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(
        1e-3, gradient_accumulation_steps=accumulation))
    data = streaming_pipeline(synthetic_images(count, shape), batch_size,
                              os.path.join(cache_dir, "images"))
    seconds = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.start)

    # The pipeline shuffles (in its bounded buffer).
    history = model.fit(data, epochs=epochs, verbose=0, shuffle=False,
                        callbacks=[Timer()])
    images = (count // batch_size) * batch_size
    steady = seconds[1:] or seconds
    return {
        "shape": list(shape), "batch_size": batch_size,
        "gradient_accumulation_steps": accumulation,
        "effective_batch": batch_size * (accumulation or 1),
        "images": count, "epochs": epochs, "filters": list(filters),
        "parameters": int(model.count_params()),
        "images_per_second": images * len(steady) / sum(steady),
        "first_epoch_seconds": seconds[0],
        "loss": [float(v) for v in history.history["loss"]],
        "optimizer_updates": int(keras.ops.convert_to_numpy(
            model.optimizer.iterations)),
        "peak_rss_mb": _common.peak_rss_mb(),
        "dataset_as_array_mb": count * int(
            shape[0] * shape[1] * shape[2]) * 4 / 2**20,
        "cache_on_disk_mb": sum(
            os.path.getsize(os.path.join(cache_dir, name))
            for name in os.listdir(cache_dir)) / 2**20,
    }


def benchmark(shapes=SHAPES, settings=SETTINGS, count=1024, epochs=3,
              filters=FILTERS, log=print):
    """Every shape and setting in a fresh child process."""
    rows = []
    for shape in shapes:
        for name, batch_size, accumulation in settings:
            args = ["--shape", *map(str, shape), "--batch-size", batch_size,
                    "--count", count, "--epochs", epochs,
                    "--filters", *map(str, filters)]
            if accumulation:
                args += ["--accumulation", accumulation]
            row = _common.run_child("large_shapes", args, timeout=3600)
            row["setting"] = name
            rows.append(row)
            log(f"  conv_vae {'x'.join(map(str, shape))}, {name}: "
                f"{row['images_per_second']:.1f} images/s, peak RSS "
                f"{row['peak_rss_mb']:.0f} MiB (data set as one array: "
                f"{row['dataset_as_array_mb']:.0f} MiB)")
    return {"rows": rows}


def to_markdown(result):
    lines = [
        "| images | setting | images/s | peak RSS MiB | data as an array "
        "MiB | parameters |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {'x'.join(map(str, row['shape']))} | {row['setting']} | "
            f"{row['images_per_second']:.1f} | {row['peak_rss_mb']:.0f} | "
            f"{row['dataset_as_array_mb']:.0f} | {row['parameters']:,} |")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes: a smoke run")
    parser.add_argument("--shape", type=int, nargs=3, default=None)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--accumulation", type=int, default=None)
    parser.add_argument("--count", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--filters", type=int, nargs="+",
                        default=list(FILTERS))
    parser.add_argument("--out", default=None,
                        help="write the JSON here as well")
    parser.add_argument("--readme", action="store_true",
                        help="write the table between the large_shapes "
                             "markers of README.md")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(tuple(args.shape), args.batch_size,
                                 args.accumulation, args.count, args.epochs,
                                 args.filters)))
        return
    if args.quick:
        result = benchmark(shapes=((64, 64, 3),),
                           settings=(("batch 16", 16, None),
                                     ("batch 4 x 4 accumulated", 4, 4)),
                           count=64, epochs=2, filters=(8, 16))
    else:
        result = benchmark(count=args.count, epochs=args.epochs,
                           filters=tuple(args.filters))
    result["date"] = _common.now()
    markdown = to_markdown(result)
    print("\n".join(markdown))
    if args.readme and not args.quick:
        header = (f"Measured {result['date']} with `benchmarks/"
                  f"large_shapes.py` ({args.count} synthetic images, "
                  f"{args.epochs} epochs, filters {tuple(args.filters)}; "
                  "images/s over the epochs after the first, each setting "
                  "a fresh process, peak RSS of that process):")
        _common.update_readme("\n".join([header, ""] + markdown) + "\n",
                              README_MARKERS)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
