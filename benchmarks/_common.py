"""Helpers shared by the benchmark modules: timing summaries and children.

Every measurement that needs a clean process (a backend other than the
parent's, a peak resident memory, a thread count fixed before import) runs
as `python benchmarks/<module>.py --child ...` and prints one JSON line.
"""

import json
import os
import platform
import resource
import statistics
import subprocess
import sys

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)
README = os.path.join(REPO_DIR, "README.md")


def mmm(stats, fmt="{:.0f}"):
    """`median (min-max)` of a `summary`, each value formatted by `fmt`."""
    return (f"{fmt.format(stats['median'])} "
            f"({fmt.format(stats['min'])}-{fmt.format(stats['max'])})")


def summary(values):
    """`{"min", "median", "max", "n", "values"}` of a list of numbers.

    `values` keeps the order given (one per round), so two candidates
    timed in the same rounds can be compared round by round.
    """
    values = [float(v) for v in values]
    return {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
        "n": len(values),
        "values": values,
    }


def percentile(values, q):
    """The `q`-th percentile (0-100) by linear interpolation."""
    ordered = sorted(float(v) for v in values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def peak_rss_mb():
    """Peak resident set size of this process in MiB (Linux reports KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.platform == "darwin":
        return peak / 2**20
    return peak / 1024.0


def child_env(backend="tensorflow", threads=None):
    """Environment of a benchmark child process."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
               JAX_PLATFORMS="cpu", MPLBACKEND="Agg")
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    pythonpath = [BENCH_DIR, REPO_DIR, env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in pythonpath if p)
    return env


def run_child(module, args, backend="tensorflow", threads=None, timeout=900,
              env=None):
    """Run `benchmarks/<module>.py --child ARGS`; return its last JSON line.

    `env` adds variables to the child's environment (`child_env`).
    """
    script = os.path.join(BENCH_DIR, f"{module}.py")
    result = subprocess.run(
        [sys.executable, script, "--child", *[str(a) for a in args]],
        capture_output=True, text=True, timeout=timeout,
        env=dict(child_env(backend, threads), **(env or {})), cwd=REPO_DIR,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"benchmark child {module} {args} failed ({result.returncode}):\n"
            f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
        )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1])


def emit(record):
    """Print a child's result as the one JSON line the parent reads."""
    print(json.dumps(record), flush=True)


def machine_info():
    """Machine, OS and library versions for the results header."""
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "cpu_mhz": cpu_mhz(),
        "cpu_flags": _cpu_flags(),
    }
    for name in ("numpy", "keras", "tensorflow", "jax", "torch",
                 "ai_edge_litert", "keras_vae"):
        info[name] = _version(name)
    return info


def _version(name):
    try:
        from importlib import metadata

        dist = {"ai_edge_litert": "ai-edge-litert",
                "keras_vae": "keras-vae"}.get(name, name)
        return metadata.version(dist)
    except Exception:
        return None


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_mhz():
    """Nominal clock of this CPU in MHz (from /proc/cpuinfo; 0 if unknown)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("cpu MHz"):
                    return float(line.split(":", 1)[1])
    except (OSError, ValueError):
        pass
    return 0.0


def _cpu_flags():
    wanted = ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni",
              "avx512_bf16", "amx_bf16", "amx_int8")
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [f for f in wanted if f in flags]
    except OSError:
        pass
    return []


def now():
    """The current UTC time, to the second, as the tables print it."""
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds")


def update_readme(markdown, markers, readme=README):
    """Replace the text between two marker lines of the README.

    Args:
        markdown: str. The new text between the markers.
        markers: pair of str. The start and end markers, e.g.
            `("<!-- codec_table:start -->", "<!-- codec_table:end -->")`.
        readme: str. The file to edit.

    Returns:
        bool. False (and nothing written) when a marker is missing.
    """
    with open(readme, encoding="utf-8") as handle:
        text = handle.read()
    start, end = markers
    if start not in text or end not in text:
        return False
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    with open(readme, "w", encoding="utf-8") as handle:
        handle.write(head + start + "\n" + markdown + end + tail)
    return True
