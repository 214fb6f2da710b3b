"""Run a Python snippet under another Keras backend, in a fresh process."""

import os
import subprocess
import sys
import textwrap

_FAST_COMPILE = "--xla_backend_optimization_level=0"


def run_with_backend(code, backend="jax", timeout=1800, cwd=None):
    """Run `code` with `KERAS_BACKEND=backend`; return its stdout.

    Fails the calling test with the subprocess's stderr if it exits non-zero.
    """
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
               JAX_PLATFORMS="cpu", MPLBACKEND="Agg")
    if backend == "jax" and _FAST_COMPILE not in env.get("XLA_FLAGS", ""):
        # The snippets compile many small programs and run each a few
        # times: XLA's backend optimisations cost more than they save.
        # Results are compared within the snippet's own process.
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {_FAST_COMPILE}".strip()
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
