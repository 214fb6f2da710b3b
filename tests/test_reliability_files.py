"""Untrusted and damaged files: safe-mode loading, clear errors, no partial files.

Every damaged `.keras` or `.tflite` file (truncated at several points, bytes
flipped, emptied, swapped for another format) must give a `ValueError`
naming the file from every loader: `keras_vae.files.load_model`,
`keras_vae.files.check_tflite_file`, `keras_vae.export.verify` and the
TensorFlow-free runtime `export/litert_vae.py`. Writers never leave a
partial file and never replace one without `overwrite=True`.
"""

import os
import sys
import time

import keras
import numpy as np
import pytest

import keras_vae
from keras_vae import files as vae_files
from keras_vae.export import to_tflite, verify

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "export"))
import reliability_log
from litert_vae import LiteRTVAE

MODULE = "files"
# Faults injected (damaged files, failing writers), reported by the module.
FAULTS = []


@pytest.fixture(scope="module", autouse=True)
def report_faults():
    yield
    reliability_log.report(MODULE, faults=len(FAULTS))


def small_vae():
    return keras_vae.models.mlp_vae((8, 8, 1), latent_dim=2,
                                    hidden_units=(8,), seed=0)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, digits):
    """A model, its `.keras` file and a float `.tflite` export."""
    (x, _), _ = digits
    directory = tmp_path_factory.mktemp("files")
    model = small_vae()
    keras_path = vae_files.save_model(model, str(directory / "model.keras"))
    tflite_path = str(directory / "model.tflite")
    to_tflite(model, tflite_path, quantization="none")
    return model, x[:32], keras_path, tflite_path


def damaged_copies(path, directory):
    """Yield (label, path) of damaged copies of the file at `path`."""
    raw = open(path, "rb").read()
    suffix = os.path.splitext(path)[1]
    variants = {
        "empty": b"",
        "8 bytes": raw[:8],
        "first half": raw[: len(raw) // 2],
        "all but 16 bytes": raw[:-16],
        "random bytes": np.random.default_rng(0).bytes(len(raw)),
    }
    for label, data in variants.items():
        target = os.path.join(directory, f"{label.replace(' ', '_')}{suffix}")
        with open(target, "wb") as handle:
            handle.write(data)
        yield label, target


def assert_names_file(error, path):
    message = str(error.value)
    assert path in message, message
    assert "Received:" in message


def test_keras_file_loads_in_safe_mode_and_round_trips(saved, tmp_path):
    model, x, keras_path, _ = saved
    restored = vae_files.load_model(keras_path)
    for a, b in zip(model.get_weights(), restored.get_weights()):
        np.testing.assert_array_equal(a, b)
    # A Lambda layer is arbitrary Python: safe mode refuses it, naming the file.
    inputs = keras.Input((2,))
    outputs = keras.layers.Lambda(lambda value: value * 2)(inputs)
    path = str(tmp_path / "lambda.keras")
    keras.Model(inputs, outputs).save(path)
    FAULTS.append("Lambda layer in a .keras file")
    with pytest.raises(ValueError, match="safe mode") as info:
        vae_files.load_model(path)
    assert_names_file(info, path)


def test_damaged_keras_files_raise_value_errors_naming_the_file(saved, tmp_path):
    _, _, keras_path, _ = saved
    tried = 0
    for label, path in damaged_copies(keras_path, tmp_path):
        FAULTS.append(f".keras {label}")
        with pytest.raises(ValueError) as info:
            vae_files.load_model(path)
        assert_names_file(info, path)
        tried += 1
    # One byte flipped inside the weights: caught by the zip checksums.
    raw = bytearray(open(keras_path, "rb").read())
    raw[len(raw) // 3] ^= 0xFF
    flipped = str(tmp_path / "flipped.keras")
    open(flipped, "wb").write(bytes(raw))
    FAULTS.append(".keras byte flipped")
    with pytest.raises(ValueError, match="checksum|corrupted") as info:
        vae_files.load_model(flipped)
    assert_names_file(info, flipped)
    # A whole zip whose config is not JSON, and a missing file.
    import zipfile

    bad_config = str(tmp_path / "bad_config.keras")
    with zipfile.ZipFile(keras_path) as source, zipfile.ZipFile(
        bad_config, "w"
    ) as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "config.json":
                data = b"{not json"
            target.writestr(item, data)
    FAULTS.extend([".keras bad config.json", ".keras missing"])
    for path in (bad_config, str(tmp_path / "missing.keras")):
        with pytest.raises(ValueError) as info:
            vae_files.load_model(path)
        assert_names_file(info, path)
    assert tried == 5


def test_damaged_tflite_files_raise_value_errors_in_every_loader(saved, tmp_path):
    model, x, _, tflite_path = saved
    loaders = {
        "check_tflite_file": vae_files.check_tflite_file,
        "verify": lambda path: verify(path, model, x),
        "runtime": LiteRTVAE,
    }
    damaged = list(damaged_copies(tflite_path, tmp_path))
    damaged.append(("missing", str(tmp_path / "missing.tflite")))
    damaged.append(("a .keras file", saved[2]))
    for label, path in damaged:
        for name, load in loaders.items():
            FAULTS.append(f".tflite {label} -> {name}")
            with pytest.raises(ValueError) as info:
                load(path)
            assert path in str(info.value), (label, name, str(info.value))
    # The intact file passes all three.
    vae_files.check_tflite_file(tflite_path)
    verify(tflite_path, model, x, max_abs_error=1e-4)
    assert LiteRTVAE(tflite_path).reconstruct(x).shape == x.shape


def test_atomic_write_never_leaves_a_partial_file(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    FAULTS.extend(["overwrite", "writer fails", "writer writes nothing"])
    # Refused before anything is written.
    with pytest.raises(FileExistsError, match="overwrite=True"):
        with vae_files.atomic_write(str(path)) as temporary:
            raise AssertionError("the block must not run")
    # A writer that fails halfway leaves the old file and no temporary.
    with pytest.raises(RuntimeError, match="disk full"):
        with vae_files.atomic_write(str(path), overwrite=True) as temporary:
            open(temporary, "wb").write(b"half of the new")
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"old"
    # A writer that writes nothing is an error, not an empty file.
    with pytest.raises(ValueError, match="Nothing was written"):
        with vae_files.atomic_write(str(path), overwrite=True):
            pass
    assert path.read_bytes() == b"old"
    with vae_files.atomic_write(str(path), overwrite=True) as temporary:
        open(temporary, "wb").write(b"new")
    assert path.read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == ["out.bin"]


def test_save_model_is_atomic_and_refuses_to_overwrite(saved, tmp_path):
    model = saved[0]
    path = str(tmp_path / "model.keras")
    vae_files.save_model(model, path)
    before = open(path, "rb").read()
    FAULTS.extend(["save overwrite", "save fails halfway", "save .h5 path"])
    with pytest.raises(FileExistsError):
        vae_files.save_model(model, path)

    class Failing(keras.Model):
        def save(self, filepath, **kwargs):
            open(filepath, "wb").write(b"PK partial")
            raise OSError("killed while saving")

    with pytest.raises(OSError, match="killed while saving"):
        vae_files.save_model(Failing(), path, overwrite=True)
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["model.keras"]
    with pytest.raises(ValueError, match="path"):
        vae_files.save_model(model, str(tmp_path / "model.h5"))


def test_failed_export_keeps_the_existing_file_and_leaves_no_temporary(
    saved, tmp_path, monkeypatch
):
    model, x, _, tflite_path = saved
    path = str(tmp_path / "vae.tflite")
    open(path, "wb").write(b"previous export")
    FAULTS.extend(["export overwrite", "export converter crash"])
    with pytest.raises(FileExistsError):
        to_tflite(model, path, quantization="none")
    from keras_vae.export import flatbuffer

    def fail(*args, **kwargs):
        raise RuntimeError("converter crashed")

    monkeypatch.setattr(flatbuffer, "add_metadata", fail)
    with pytest.raises(RuntimeError, match="converter crashed"):
        to_tflite(model, path, quantization="none", overwrite=True)
    assert open(path, "rb").read() == b"previous export"
    assert os.listdir(tmp_path) == ["vae.tflite"]


def test_concurrent_writers_without_overwrite_exactly_one_succeeds(
    tmp_path, monkeypatch
):
    import threading

    writers, paths = 8, 5
    FAULTS.append(f"{writers} concurrent writers x {paths} paths")
    # The worst interleaving, made certain: every writer has passed its
    # existence checks and reaches the final move (`os.link` or
    # `os.replace`) before any of them makes it. Only a move that itself
    # fails when the destination exists lets exactly one writer win.
    barrier = threading.Barrier(writers, timeout=1800)
    for name in ("link", "replace"):
        move = getattr(os, name)

        def synchronized(*args, move=move, **kwargs):
            barrier.wait()
            return move(*args, **kwargs)

        monkeypatch.setattr(os, name, synchronized)
    for index in range(paths):
        path = str(tmp_path / f"report-{index}.json")
        outcomes = []

        def write(writer, path=path, outcomes=outcomes):
            try:
                with vae_files.atomic_write(path) as temporary:
                    with open(temporary, "w") as handle:
                        handle.write(f"writer {writer}")
                outcomes.append(("ok", writer))
            except FileExistsError:
                outcomes.append(("refused", writer))

        threads = [threading.Thread(target=write, args=(w,))
                   for w in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        winners = [writer for outcome, writer in outcomes if outcome == "ok"]
        assert len(outcomes) == writers
        assert len(winners) == 1, (path, outcomes)
        assert open(path).read() == f"writer {winners[0]}"
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == sorted(
        f"report-{index}.json" for index in range(paths))


KILLED_WRITER = """
import importlib.util, os, signal, sys
spec = importlib.util.spec_from_file_location("files", sys.argv[1])
files = importlib.util.module_from_spec(spec)
spec.loader.exec_module(files)
with files.atomic_write(sys.argv[2]) as temporary:
    open(temporary, "wb").write(b"half a mod")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_writers_temporary_folder_is_removed_by_the_next_write(
    tmp_path,
):
    import subprocess

    path = tmp_path / "model.keras"
    FAULTS.append("writer killed before its final move")
    process = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, vae_files.__file__, str(path)],
        capture_output=True,
    )
    assert process.returncode == -9
    leftovers = [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]
    assert len(leftovers) == 1 and not path.exists()
    leftover = tmp_path / leftovers[0]
    # A temporary folder of a live writer, and a user's file that only
    # looks similar, are never touched.
    live = tmp_path / f".tmp-{os.getppid()}-abcd1234"
    live.mkdir()
    (tmp_path / ".tmp-notes").write_text("mine")
    # The killed writer's folder is removed once it has been left alone for
    # longer than a writer can pause (ages are set, not waited for).
    old = time.time() - 2 * vae_files.STALE_AFTER_WRITER_EXIT
    for item in (leftover / "model.keras", leftover, live):
        os.utime(item, (old, old))
    vae_files.write_bytes(str(tmp_path / "other.bin"), b"x")
    names = sorted(os.listdir(tmp_path))
    assert leftover.name not in names
    assert live.name in names and ".tmp-notes" in names
    # Any folder of ours left unchanged for a day goes too.
    day = time.time() - 2 * vae_files.STALE_AFTER
    os.utime(live, (day, day))
    vae_files.write_bytes(str(path), b"whole")
    assert sorted(os.listdir(tmp_path)) == [
        ".tmp-notes", "model.keras", "other.bin"]


def test_writers_refuse_symbolic_links_and_paths_under_a_file(saved, tmp_path):
    model, _, _, _ = saved
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    FAULTS.extend(["symlinked destination", "destination under a file"])
    writers = {
        "model.keras": lambda p, o: vae_files.save_model(model, p, overwrite=o),
        "report.json": lambda p, o: vae_files.write_json(p, {"a": 1},
                                                         overwrite=o),
        "vae.tflite": lambda p, o: to_tflite(model, p, quantization="none",
                                             overwrite=o),
        "samples.png": lambda p, o: keras_vae.plotting.sample_grid(model, p),
    }
    for name, write in writers.items():
        link = tmp_path / name
        link.symlink_to(victim)
        for overwrite in (False, True):
            with pytest.raises(FileExistsError, match="symbolic link"):
                write(str(link), overwrite)
        assert link.is_symlink() and victim.read_bytes() == b"precious"
        # A destination under a file fails before any work is done.
        with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
            write(str(victim / "sub" / name), False)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]
