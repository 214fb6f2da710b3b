"""Run a Python snippet under another Keras backend, in a fresh process."""

import os
import subprocess
import sys
import textwrap


def run_with_backend(code, backend="jax", timeout=1800, cwd=None):
    """Run `code` with `KERAS_BACKEND=backend`; return its stdout.

    Fails the calling test with the subprocess's stderr if it exits non-zero.
    """
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
               JAX_PLATFORMS="cpu", MPLBACKEND="Agg")
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{backend} subprocess failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
        )
    return result.stdout
