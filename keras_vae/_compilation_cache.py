"""XLA executables kept on disk, so a new process skips compiling them.

`fit` on either backend spends most of its first seconds compiling the
training step with XLA. Both backends can keep the compiled executable in
a directory and load it in the next process that compiles the same
program:

- JAX: its persistent compilation cache (`jax_compilation_cache_dir`);
  entries are keyed by the program, the compile options and the JAX
  version, and a damaged entry is only a warning (JAX compiles again).
- TensorFlow: the XLA JIT's persistent cache
  (`TF_XLA_FLAGS=--tf_xla_persistent_cache_directory=...`), which works
  for `jit_compile=True` functions on the CPU. An entry is keyed by the
  function's signature and its XLA program, and checked against the
  program when loaded. TensorFlow reads the flag once, when its first
  function is traced, so it must be set before that: `import keras_vae`
  does it. The flag applies to every XLA-compiled function of the process.

`configure()` (run when `keras_vae` is imported) points the backend in use
at `<cache root>/<backend>-<version>-<machine>-<flags>`: the backend's
version, the machine part (a hash of the CPU model and its instruction set
flags) and a hash of `XLA_FLAGS`/`TF_XLA_FLAGS` keep executables built by
another release, for another CPU or under other compiler options apart,
even in a home directory shared by several machines.
The cache root is `$KERAS_VAE_COMPILATION_CACHE` if set, else
`$XDG_CACHE_HOME/keras_vae/xla` or `~/.cache/keras_vae/xla`: a folder of
the user, never of the project. Set
`KERAS_VAE_COMPILATION_CACHE=off` (or `0`, `false`, `none`, empty) to
turn it off. Settings the user already made win: an existing JAX cache
directory or a TensorFlow persistent cache flag is left as it is. The
cache is skipped when the directory is not writable or its disk has less
than `MIN_FREE_BYTES` free (TensorFlow fails the compilation, not just
the cache, when it cannot write an entry), and each directory is trimmed
to `MAX_BYTES`, oldest entries first.

Beside the executables, `remember(key)` and `compiled_before(key)` keep an
index of the training programs compiled in this directory (one empty file
per program key, in `<directory>-programs`). `VAE.fit` uses it to choose
XLA for a short fit whose program is already on disk: loading it costs
less than the plain step's tracing, so even a one-epoch fit gains (see
`VAE.compile`). A stale index entry (an executable trimmed away) only
means one compilation.

A cached executable is the program XLA would compile again, so results
do not change; only the compilation time goes (`tests/test_fused_training.py`
trains in a process with a warm cache and one with the cache off and
compares the weights).

Example:

    KERAS_VAE_COMPILATION_CACHE=off python train.py      # no disk cache
    KERAS_VAE_COMPILATION_CACHE=/scratch/xla python train.py
"""

import hashlib
import os
import platform
import shutil

ENV_VAR = "KERAS_VAE_COMPILATION_CACHE"
_OFF = ("", "0", "off", "false", "no", "none")
#: Each backend's directory is trimmed to this size (oldest files first).
MAX_BYTES = 512 * 2**20
#: The cache stays off on a disk with less free space than this.
MIN_FREE_BYTES = 1 * 2**30
_TF_FLAG = "--tf_xla_persistent_cache_directory"
_INHERITED = "_KERAS_VAE_TF_XLA_CACHE_FLAG"
# What `configure` did in this process.
_state = {"directory": None, "backend": None}


def cache_root():
    """The cache root from the environment, or None when switched off."""
    value = os.environ.get(ENV_VAR)
    if value is not None:
        if value.strip().lower() in _OFF:
            return None
        return os.path.expanduser(value)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache")
    return os.path.join(base, "keras_vae", "xla")


def directory():
    """The directory the backend caches executables in, or None."""
    return _state["directory"]


def configure(backend=None):
    """Point the backend's persistent XLA cache at keras-vae's directory.

    Args:
        backend: str or None. `"tensorflow"` or `"jax"`; the Keras backend
            by default.

    Returns:
        str or None. The directory in use, or None when the cache is off,
        unusable, or configured by the user.
    """
    if backend is None:
        import keras

        backend = keras.backend.backend()
    _forget_inherited_flag()
    root = cache_root()
    if root is None or backend not in ("tensorflow", "jax"):
        return None
    if backend == "tensorflow" and _TF_FLAG in os.environ.get(
            "TF_XLA_FLAGS", ""):
        return None
    version = _backend_version(backend)
    path = os.path.join(
        root, f"{backend}-{version}-{_machine_tag()}-{_flags_tag()}")
    if not _usable(path):
        return None
    if backend == "jax":
        import jax

        if jax.config.jax_compilation_cache_dir:
            return None
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    else:
        _trim(path, MAX_BYTES)  # JAX trims its own directory
        flags = os.environ.get("TF_XLA_FLAGS", "")
        ours = f"{_TF_FLAG}={path}"
        os.environ["TF_XLA_FLAGS"] = f"{flags} {ours}".strip()
        # Child processes inherit the environment: the marker lets their
        # `configure` tell this flag from one the user set.
        os.environ[_INHERITED] = ours
    _state.update(directory=path, backend=backend)
    return path


def _index_directory():
    path = _state["directory"]
    return None if path is None else f"{path}-programs"


def compiled_before(key):
    """True when `remember(key)` ran in this cache directory before.

    Args:
        key: str. A hex digest naming one compiled program.

    Returns:
        bool. False when the cache is off.
    """
    folder = _index_directory()
    return bool(folder) and os.path.exists(os.path.join(folder, key))


def remember(key):
    """Note that the program named `key` is compiled into this directory.

    Does nothing when the cache is off or the index cannot be written.

    Args:
        key: str. A hex digest naming one compiled program.
    """
    folder = _index_directory()
    if not folder:
        return
    try:
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, key), "w"):
            pass
    except OSError:
        pass


def _forget_inherited_flag():
    """Drop a TF cache flag inherited from a keras-vae parent process.

    The child then decides from its own `KERAS_VAE_COMPILATION_CACHE`.
    """
    ours = os.environ.pop(_INHERITED, None)
    flags = os.environ.get("TF_XLA_FLAGS")
    if ours and flags is not None and ours in flags.split():
        kept = [flag for flag in flags.split() if flag != ours]
        if kept:
            os.environ["TF_XLA_FLAGS"] = " ".join(kept)
        else:
            del os.environ["TF_XLA_FLAGS"]


def _flags_tag():
    """A short hash of the XLA flags that may change compiled code.

    `XLA_FLAGS` and `TF_XLA_FLAGS` (say, fast-math options) change what
    XLA compiles for the same program; executables compiled under other
    flags live in another directory.
    """
    flags = "\n".join(
        os.environ.get(name, "") for name in ("XLA_FLAGS", "TF_XLA_FLAGS"))
    return hashlib.sha256(flags.encode()).hexdigest()[:8]


def clear():
    """Delete this process' cache directory (after a damaged entry)."""
    path = _state["directory"]
    if path:
        shutil.rmtree(_index_directory(), ignore_errors=True)
        for name in os.listdir(path):
            try:
                os.remove(os.path.join(path, name))
            except OSError:
                pass


def _backend_version(backend):
    if backend == "jax":
        import jax

        return jax.__version__
    import tensorflow as tf

    return tf.__version__


def _machine_tag():
    """A short hash of the CPU model and instruction set extensions."""
    description = [platform.machine(), platform.processor()]
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith(("model name", "flags")):
                    description.append(line.strip())
                if len(description) >= 4:
                    break
    except OSError:
        pass
    return hashlib.sha256("\n".join(description).encode()).hexdigest()[:12]


def _usable(path):
    """True when `path` exists or can be made, is writable and has room."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".probe-{os.getpid()}")
        with open(probe, "w") as handle:
            handle.write("ok")
        os.remove(probe)
        return shutil.disk_usage(path).free >= MIN_FREE_BYTES
    except OSError:
        return False


def _trim(path, max_bytes):
    """Delete the oldest files of `path` until it holds `max_bytes` or less."""
    try:
        entries = []
        for entry in os.scandir(path):
            if entry.is_file():
                stat = entry.stat()
                entries.append((stat.st_mtime, stat.st_size, entry.path))
    except OSError:
        return
    total = sum(size for _, size, _ in entries)
    for _, size, name in sorted(entries):
        if total <= max_bytes:
            break
        try:
            os.remove(name)
            total -= size
        except OSError:
            pass
