"""Safe file handling: atomic writes and checked loading of model files.

Every writer here produces either the whole new file or nothing: data goes
to a temporary file in the destination directory, is flushed to disk, and
is moved into place with `os.replace`, which is atomic on POSIX and
Windows. Existing files are never replaced unless `overwrite=True`.
Readers check that a file exists and is whole before parsing it, and name
the file in every error.

Example:

>>> import os, tempfile, keras_vae
>>> path = os.path.join(tempfile.mkdtemp(), "notes.txt")
>>> with keras_vae.files.atomic_write(path) as temporary:
...     _ = open(temporary, "w").write("hello")
>>> open(path).read()
'hello'
"""

import contextlib
import os
import tempfile
import zipfile

# A .keras archive always holds these two members (Keras 3 format).
_KERAS_MEMBERS = ("config.json", "model.weights.h5")
# FlatBuffer file identifier of a TFLite / LiteRT model, at bytes 4..8.
_TFLITE_IDENTIFIER = b"TFL3"


def _check_path(path, name="path"):
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(
            f"Expected `{name}` to be a file path. Received: {name}={path!r}"
        )
    return os.fspath(path)


def check_overwrite(path, overwrite=False):
    """Raise `FileExistsError` if `path` exists and `overwrite` is False.

    Args:
        path: str or path-like. The destination file.
        overwrite: bool. Allow replacing an existing file.

    Example:

    >>> import keras_vae
    >>> keras_vae.files.check_overwrite("/nonexistent/model.keras")
    """
    path = _check_path(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(
            f"{path} already exists; pass overwrite=True to replace it or "
            f"choose another path. Received: path={path!r}, overwrite=False"
        )


@contextlib.contextmanager
def atomic_write(path, overwrite=False):
    """Context manager yielding a temporary path that replaces `path` on exit.

    Write the whole file to the yielded path (it ends with the same name as
    `path`, so writers that check the suffix, such as `model.save`, accept
    it). On a normal exit the file is synced and moved onto `path` with
    `os.replace`; on an exception, or if nothing was written, the temporary
    file is removed and `path` is left as it was.

    Args:
        path: str or path-like. The destination file; its directory is
            created if missing.
        overwrite: bool. Allow replacing an existing file. Without it an
            existing `path` raises `FileExistsError` before anything is
            written.

    Example:

    >>> import keras_vae
    >>> # with keras_vae.files.atomic_write("out/model.keras") as tmp:
    >>> #     model.save(tmp)
    """
    path = os.path.abspath(_check_path(path))
    check_overwrite(path, overwrite)
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=".tmp-", suffix="-" + os.path.basename(path), dir=directory
    )
    os.close(handle)
    # Writers such as `save_weights` refuse an existing target unless told.
    os.remove(temporary)
    try:
        yield temporary
        if not os.path.exists(temporary):
            raise ValueError(
                f"Nothing was written for {path}: the block inside "
                "`atomic_write` must create the yielded file. Received: "
                f"path={path!r}"
            )
        with open(temporary, "rb+") as stream:
            os.fsync(stream.fileno())
        if not overwrite and os.path.exists(path):
            raise FileExistsError(
                f"{path} appeared while it was being written; pass "
                f"overwrite=True to replace it. Received: path={path!r}"
            )
        os.replace(temporary, path)
        _fsync_directory(directory)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _fsync_directory(directory):
    # Makes the rename itself durable; not possible on every platform.
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def save_model(model, path, overwrite=False):
    """Save `model` to a `.keras` file atomically.

    Args:
        model: `keras.Model`. The model to save.
        path: str or path-like ending in `.keras`.
        overwrite: bool. Replace an existing file.

    Returns:
        str. The path written.

    Example:

    >>> import keras_vae
    >>> model = keras_vae.models.mlp_vae((8, 8, 1), latent_dim=2,
    ...                                  hidden_units=(8,))
    >>> # keras_vae.files.save_model(model, "runs/model.keras")
    """
    path = _check_path(path)
    if not path.endswith(".keras"):
        raise ValueError(
            "Expected `path` to end in `.keras`. Received: "
            f"path={path!r}"
        )
    with atomic_write(path, overwrite=overwrite) as temporary:
        model.save(temporary)
    return path


def check_keras_file(path):
    """Check that `path` is a whole `.keras` archive; raise `ValueError` if not.

    Catches a missing file, a wrong suffix, a file that is not a zip
    archive (including one truncated before its central directory), a zip
    without the Keras members, and a member whose CRC does not match
    (bytes corrupted in place).

    Args:
        path: str or path-like.

    Returns:
        str. The checked path.

    Example:

    >>> import keras_vae
    >>> try:
    ...     keras_vae.files.check_keras_file("missing.keras")
    ... except ValueError as error:
    ...     print(str(error)[:34])
    Model file missing.keras not found
    """
    path = _check_path(path)
    if not os.path.isfile(path):
        raise ValueError(
            f"Model file {path} not found. Received: path={path!r}"
        )
    if not path.endswith(".keras"):
        raise ValueError(
            f"Model file {path} is not a `.keras` archive; keras_vae loads "
            f"only the Keras 3 format. Received: path={path!r}"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            missing = [m for m in _KERAS_MEMBERS if m not in names]
            if missing:
                raise ValueError(
                    f"Model file {path} is a zip without {missing}: it is "
                    "not a Keras model or was written partially. Received: "
                    f"path={path!r}"
                )
            broken = archive.testzip()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as error:
        raise ValueError(
            f"Model file {path} is truncated or corrupted ({error}). "
            f"Re-export or re-download it. Received: path={path!r}"
        ) from None
    if broken is not None:
        raise ValueError(
            f"Model file {path} is corrupted: member {broken!r} fails its "
            f"checksum. Re-export or re-download it. Received: path={path!r}"
        )
    return path


def load_model(path, custom_objects=None, compile=True):
    """Load a `.keras` model in Keras safe mode after checking the file.

    Safe mode refuses to deserialize `Lambda` layers and other arbitrary
    Python code, so loading an untrusted file cannot run code; it cannot be
    switched off here. A missing, truncated or corrupted file raises
    `ValueError` naming the file instead of a zip or HDF5 traceback.

    Args:
        path: str or path-like ending in `.keras`.
        custom_objects: dict or None. Extra registered classes.
        compile: bool. Restore the compile state saved with the model.

    Returns:
        `keras.Model`.

    Example:

    >>> import keras_vae
    >>> # model = keras_vae.files.load_model("runs/demo/model.keras")
    """
    import keras

    path = check_keras_file(path)
    try:
        return keras.saving.load_model(
            path, custom_objects=custom_objects, compile=compile,
            safe_mode=True,
        )
    except ValueError as error:
        if "safe_mode" in str(error) or "unsafe" in str(error).lower():
            raise ValueError(
                f"Model file {path} contains code that safe mode refuses to "
                f"load (e.g. a Lambda layer): {error} Received: path={path!r}"
            ) from None
        raise ValueError(
            f"Model file {path} could not be loaded: {error} Received: "
            f"path={path!r}"
        ) from None
    except (OSError, KeyError, EOFError, TypeError, zipfile.BadZipFile) as error:
        raise ValueError(
            f"Model file {path} is corrupted and could not be loaded "
            f"({type(error).__name__}: {error}). Received: path={path!r}"
        ) from None


def check_tflite_file(path):
    """Check that `path` holds a whole TFLite / LiteRT flatbuffer.

    Reads the file identifier and builds an interpreter from the bytes, so a
    missing, empty, truncated or foreign file raises `ValueError` naming the
    file.

    Args:
        path: str or path-like.

    Returns:
        bytes. The model content, ready for an interpreter.

    Example:

    >>> import keras_vae
    >>> # content = keras_vae.files.check_tflite_file("encoder.tflite")
    """
    path = _check_path(path)
    if not os.path.isfile(path):
        raise ValueError(
            f"TFLite file {path} not found. Received: path={path!r}"
        )
    with open(path, "rb") as handle:
        content = handle.read()
    if len(content) < 8 or content[4:8] != _TFLITE_IDENTIFIER:
        raise ValueError(
            f"TFLite file {path} is not a TFLite model (no 'TFL3' "
            f"identifier; {len(content)} bytes). Received: path={path!r}"
        )
    try:
        _make_interpreter(content)
    except Exception as error:  # the runtime raises RuntimeError/ValueError
        raise ValueError(
            f"TFLite file {path} is truncated or corrupted "
            f"({type(error).__name__}: {str(error)[:200]}). Re-export it. "
            f"Received: path={path!r}"
        ) from None
    return content


def _make_interpreter(content):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - ai-edge-litert is a dependency
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    interpreter = Interpreter(model_content=content)
    interpreter.allocate_tensors()
    return interpreter


__all__ = [
    "atomic_write",
    "check_keras_file",
    "check_overwrite",
    "check_tflite_file",
    "load_model",
    "save_model",
]
