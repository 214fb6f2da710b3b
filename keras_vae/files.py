"""Safe file handling: atomic writes and checked loading of model files.

Every writer in keras-vae (`.keras` models, `.tflite` exports, PNG plots,
JSON reports, backup checkpoints) goes through `atomic_write`, which
produces either the whole new file or nothing:

- the data goes to a private temporary folder beside the destination
  (`.tmp-<pid>-<random>/<name>`), is flushed to disk, and is then moved
  into place in one step;
- without `overwrite`, that step is a hard link (`os.link`), which fails
  atomically when the destination exists: of two writers racing for one
  path, exactly one succeeds and the other gets `FileExistsError`;
  with `overwrite=True` it is `os.replace`, atomic on POSIX and Windows;
- a destination that is a symbolic link is refused, so a write never lands
  on a file the link points to;
- temporary folders left by a killed writer are removed by the next write
  into the same folder (see `remove_stale_temporaries`).

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
import errno
import json
import os
import re
import shutil
import tempfile
import time
import zipfile

# A .keras archive always holds these two members (Keras 3 format).
_KERAS_MEMBERS = ("config.json", "model.weights.h5")
# FlatBuffer file identifier of a TFLite / LiteRT model, at bytes 4..8.
_TFLITE_IDENTIFIER = b"TFL3"
# `.tmp-<writer pid>-<random>`: the temporary folder of one write.
_TEMPORARY = re.compile(r"^\.tmp-(\d+)-[A-Za-z0-9_]+$")
#: Seconds a temporary folder of a writer that is no longer running must
#: stay unchanged before it is removed (a writer on another machine that
#: shares the folder may reuse the process id).
STALE_AFTER_WRITER_EXIT = 60.0
#: Seconds after which any unchanged temporary folder is removed, whatever
#: its writer.
STALE_AFTER = 24 * 3600.0
# `os.link` errors that mean "no hard links on this file system".
_NO_HARD_LINKS = {
    errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOSYS,
    getattr(errno, "ENOTSUP", errno.EPERM),
    getattr(errno, "EOPNOTSUPP", errno.EPERM),
}


def _check_path(path, name="path"):
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(
            f"Expected `{name}` to be a file path. Received: {name}={path!r}"
        )
    return os.fspath(path)


def _exists_error(path):
    return FileExistsError(
        f"{path} already exists; pass overwrite=True to replace it or "
        f"choose another path. Received: path={path!r}, overwrite=False"
    )


def check_writable_destination(path, overwrite=False):
    """Raise if `path` may not be written: a link, a folder, or existing.

    A symbolic link is refused even with `overwrite=True`: writing through
    it would change the file it points to, and replacing it would surprise
    whoever made it. An existing file is refused unless `overwrite`. A path
    under a file (`NotADirectoryError`) or in a folder that is not writable
    (`PermissionError`) is refused too; missing folders are fine (writers
    create them).

    Args:
        path: str or path-like. The destination file.
        overwrite: bool. Allow replacing an existing regular file.

    Example:

    >>> import os, tempfile, keras_vae
    >>> folder = os.path.join(tempfile.mkdtemp(), "new")
    >>> keras_vae.files.check_writable_destination(folder + "/a.png")
    """
    path = _check_path(path)
    _check_parent(path)
    if os.path.islink(path):
        raise FileExistsError(
            f"{path} is a symbolic link; keras-vae never writes through or "
            "replaces a link. Remove the link or write to another path. "
            f"Received: path={path!r}"
        )
    if os.path.isdir(path):
        raise IsADirectoryError(
            f"{path} is a folder, expected a file path. Received: "
            f"path={path!r}"
        )
    if os.path.exists(path) and not overwrite:
        raise _exists_error(path)


def _check_parent(path):
    # The nearest existing folder above `path` must be a writable folder,
    # so that a bad destination fails before any work, not after it.
    ancestor = os.path.dirname(os.path.abspath(path))
    while not os.path.lexists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise NotADirectoryError(
            f"Cannot write {path}: {ancestor} is a file, not a folder. "
            f"Choose another path. Received: path={path!r}"
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise PermissionError(
            f"Cannot write {path}: the folder {ancestor} is not writable. "
            f"Choose another path. Received: path={path!r}"
        )


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
    if os.path.lexists(path) and not overwrite:
        raise _exists_error(path)


def _process_running(pid):
    if pid == os.getpid() or os.name == "nt":
        # On Windows `os.kill(pid, 0)` would terminate the process: rely on
        # the age of the folder alone there.
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but belongs to someone else, or unknown
    return True


def _last_change(folder):
    newest = os.lstat(folder).st_mtime
    for entry in os.scandir(folder):
        newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
    return newest


def remove_stale_temporaries(directory, now=None, force=False):
    """Remove temporary folders that killed writers left in `directory`.

    Only folders named like this module's own (`.tmp-<pid>-<random>`) are
    considered. One is stale when its writer process no longer runs on this
    machine and nothing in it changed for `STALE_AFTER_WRITER_EXIT`
    seconds, or when nothing in it changed for `STALE_AFTER` seconds.
    `atomic_write` calls this before every write.

    Args:
        directory: str or path-like. The folder to clean.
        now: float or None. The current time (`time.time()` by default).
        force: bool. Remove every such folder whatever its age and writer:
            only for a folder that one writer uses at a time (e.g. the
            backup callback's own folder when it starts).

    Returns:
        list of str. The folders removed.

    Example:

    >>> import tempfile, keras_vae
    >>> keras_vae.files.remove_stale_temporaries(tempfile.mkdtemp())
    []
    """
    directory = _check_path(directory, "directory")
    now = time.time() if now is None else float(now)
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if not match or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            age = now - _last_change(entry.path)
        except OSError:
            continue  # removed meanwhile
        writer_gone = not _process_running(int(match.group(1)))
        if force or age > STALE_AFTER or (
            writer_gone and age > STALE_AFTER_WRITER_EXIT
        ):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
    return removed


def _commit(temporary, path, overwrite):
    """Move the finished `temporary` file onto `path` in one step."""
    if overwrite:
        check_writable_destination(path, overwrite=True)
        os.replace(temporary, path)
        return
    try:
        # Fails atomically if `path` exists (a file, a link or a folder).
        os.link(temporary, path)
        return
    except FileExistsError:
        raise _exists_error(path) from None
    except OSError as error:
        if error.errno not in _NO_HARD_LINKS:
            raise
    # No hard links on this file system (e.g. FAT, some network shares):
    # claim the name with an exclusive create, then move the data onto it.
    # Still exactly one winner; readers may see an empty file for a moment.
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        raise _exists_error(path) from None
    os.close(descriptor)
    os.replace(temporary, path)


@contextlib.contextmanager
def atomic_write(path, overwrite=False):
    """Context manager yielding a temporary path that becomes `path` on exit.

    Write the whole file to the yielded path (it has the same file name as
    `path`, inside a private temporary folder beside it, so writers that
    check the suffix, such as `model.save`, accept it). On a normal exit
    the file is synced and moved onto `path` in one step; on an exception,
    or if nothing was written, the temporary folder is removed and `path`
    is left as it was. Temporary folders of killed writers in the same
    folder are removed first (`remove_stale_temporaries`).

    Args:
        path: str or path-like. The destination file; its directory is
            created if missing. A symbolic link is refused.
        overwrite: bool. Allow replacing an existing file. Without it an
            existing `path` raises `FileExistsError`, before anything is
            written and again, atomically, at the final move (so of two
            concurrent writers exactly one succeeds).

    Example:

    >>> import keras_vae
    >>> # with keras_vae.files.atomic_write("out/model.keras") as tmp:
    >>> #     model.save(tmp)
    """
    path = os.path.abspath(_check_path(path))
    check_writable_destination(path, overwrite)
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    remove_stale_temporaries(directory)
    folder = tempfile.mkdtemp(prefix=f".tmp-{os.getpid()}-", dir=directory)
    temporary = os.path.join(folder, os.path.basename(path))
    try:
        yield temporary
        if not os.path.isfile(temporary):
            raise ValueError(
                f"Nothing was written for {path}: the block inside "
                "`atomic_write` must create the yielded file. Received: "
                f"path={path!r}"
            )
        with open(temporary, "rb+") as stream:
            os.fsync(stream.fileno())
        _commit(temporary, path, overwrite)
        _fsync_directory(directory)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_bytes(path, data, overwrite=False):
    """Write `data` to `path` atomically (see `atomic_write`).

    Args:
        path: str or path-like. The destination file.
        data: bytes. The whole content.
        overwrite: bool. Replace an existing file.

    Returns:
        str. The path written.

    Example:

    >>> import os, tempfile, keras_vae
    >>> path = os.path.join(tempfile.mkdtemp(), "a.bin")
    >>> keras_vae.files.write_bytes(path, b"abc") == path
    True
    """
    with atomic_write(path, overwrite=overwrite) as temporary:
        with open(temporary, "wb") as handle:
            handle.write(data)
    return os.fspath(path)


def write_json(path, value, overwrite=False):
    """Write `value` as indented JSON to `path` atomically.

    The value is serialized before anything is written, so an object JSON
    cannot hold raises `TypeError` and leaves no file.

    Args:
        path: str or path-like. The destination file.
        value: a JSON-serializable object.
        overwrite: bool. Replace an existing file.

    Returns:
        str. The path written.

    Example:

    >>> import os, tempfile, keras_vae
    >>> path = os.path.join(tempfile.mkdtemp(), "report.json")
    >>> _ = keras_vae.files.write_json(path, {"elbo": -90.5})
    """
    text = json.dumps(value, indent=2)
    return write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def save_figure(figure, path, overwrite=False, **savefig_kwargs):
    """Save a matplotlib `figure` to `path` atomically (format from suffix).

    Args:
        figure: `matplotlib.figure.Figure`.
        path: str or path-like, e.g. ending in `.png`.
        overwrite: bool. Replace an existing file.
        **savefig_kwargs: passed to `figure.savefig` (e.g. `dpi`).

    Returns:
        str. The path written.

    Example:

    >>> import keras_vae
    >>> # keras_vae.files.save_figure(fig, "runs/demo/samples.png")
    """
    with atomic_write(path, overwrite=overwrite) as temporary:
        figure.savefig(temporary, **savefig_kwargs)
    return os.fspath(path)


LOCK_NAME = ".keras-vae.lock"


class FolderBusyError(FileExistsError):
    """Another process holds the folder claimed by `claim_folder`."""


@contextlib.contextmanager
def claim_folder(directory):
    """Context manager: hold `directory` exclusively while writing into it.

    Creates the folder if needed and takes an exclusive, non-blocking lock
    on `<directory>/.keras-vae.lock` (opened without following symbolic
    links). A second claim, from any process, raises `FolderBusyError`
    (a `FileExistsError`) at once, before it writes anything. The operating
    system releases the lock when its holder exits, even when killed, so a
    crashed run never blocks the folder. On exit the lock file is removed,
    and so are the folders this claim created if they are still empty.

    Args:
        directory: str or path-like. The folder to claim.

    Example:

    >>> import os, tempfile, keras_vae
    >>> run = os.path.join(tempfile.mkdtemp(), "run")
    >>> with keras_vae.files.claim_folder(run):
    ...     _ = keras_vae.files.write_json(os.path.join(run, "a.json"), {})
    >>> sorted(os.listdir(run))
    ['a.json']
    """
    directory = os.path.abspath(_check_path(directory, "directory"))
    _check_parent(os.path.join(directory, LOCK_NAME))
    # The folders this claim creates, deepest first.
    created = []
    missing = directory
    while not os.path.lexists(missing):
        created.append(missing)
        missing = os.path.dirname(missing)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, LOCK_NAME)
    descriptor = None
    try:
        descriptor = _lock(path, directory)
        yield directory
    finally:
        if descriptor is not None:
            if os.name == "nt":  # an open file cannot be removed there
                os.close(descriptor)
            # Elsewhere unlink while still holding the lock: a process that
            # opened this file meanwhile sees it gone and retries (`_lock`).
            with contextlib.suppress(OSError):
                os.remove(path)
            if os.name != "nt":
                os.close(descriptor)
        for folder in created:
            try:
                os.rmdir(folder)  # only succeeds if nothing was written
            except OSError:
                break


def _busy(directory):
    return FolderBusyError(
        f"Another keras-vae process is writing into {directory} (it holds "
        f"{LOCK_NAME}). Wait for it to finish or choose another folder. "
        f"Received: directory={directory!r}"
    )


def _lock(path, directory):
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    try:
        import fcntl
    except ImportError:  # Windows: an exclusive create marks the claim
        try:
            return os.open(path, flags | os.O_EXCL)
        except FileExistsError:
            raise _busy(directory) from None
    while True:
        try:
            descriptor = os.open(path, flags, 0o644)
        except OSError as error:
            if os.path.islink(path):
                raise FileExistsError(
                    f"{path} is a symbolic link; keras-vae never follows a "
                    f"link to lock a folder. Remove it. Received: "
                    f"directory={directory!r}"
                ) from None
            raise error
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(descriptor)
            raise _busy(directory) from None
        # The previous holder may have removed the file between our open
        # and our lock; then this lock guards nothing: take a fresh file.
        try:
            current = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            current = None
        mine = os.fstat(descriptor)
        if current is not None and (current.st_dev, current.st_ino) == (
            mine.st_dev, mine.st_ino
        ):
            os.ftruncate(descriptor, 0)
            os.write(descriptor, f"{os.getpid()}\n".encode())
            return descriptor
        os.close(descriptor)


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
    "check_writable_destination",
    "claim_folder",
    "FolderBusyError",
    "load_model",
    "remove_stale_temporaries",
    "save_figure",
    "save_model",
    "write_bytes",
    "write_json",
]
