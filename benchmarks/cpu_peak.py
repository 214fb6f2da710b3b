"""Measured float32 and int8 multiply-add ceilings of this CPU.

Builds `cpu_peak.c` with the system C compiler and runs one copy per core
at the same time. Each copy times register-only loops of the instructions
that float32 and int8 matrix multiplies are made of on AVX2 (see the C
file), so the result is what the silicon retires, not a datasheet figure:
no GEMM on these cores can beat it.

    .venv/bin/python benchmarks/cpu_peak.py --threads 1 2

Returns multiply-adds per second (MAC/s); ops/s are twice that.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpu_peak.c")
KERNELS = ("fma_f32", "madd_s16", "maddubs_u8s8")
LABELS = {
    "fma_f32": "float32 `vfmadd231ps` (8 multiply-adds each)",
    "madd_s16": "int8 widened to int16, `vpmaddwd` (16 each; XNNPACK's AVX2 "
                "int8 kernels)",
    "maddubs_u8s8": "uint8 x int8 `vpmaddubsw` (32 each; fbgemm's AVX2 int8 "
                    "kernels, the densest without VNNI)",
}


def build(directory):
    """Compile `cpu_peak.c` into `directory`; return the binary's path."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler (cc, gcc or $CC) on PATH")
    if platform.machine().lower() not in ("x86_64", "amd64"):
        raise RuntimeError(f"the loops are x86-64 AVX2; this CPU is "
                           f"{platform.machine()}")
    binary = os.path.join(directory, "cpu_peak")
    subprocess.run([compiler, "-O2", SOURCE, "-o", binary], check=True,
                   capture_output=True, text=True, timeout=120)
    return binary


def measure(threads=(1, 2)):
    """Per thread count: MAC/s of each kernel, all cores running at once.

    Returns:
        dict: `{"per_threads": {"1": {kernel: MAC/s}, ...}}`, or
        `{"error": reason}` when the loops cannot be built or run here.
    """
    directory = tempfile.mkdtemp(prefix="keras_vae_cpu_peak_")
    try:
        binary = build(directory)
        result = {"per_threads": {}}
        for count in threads:
            children = [subprocess.Popen([binary], stdout=subprocess.PIPE,
                                         text=True) for _ in range(count)]
            rates = [json.loads(child.communicate(timeout=300)[0])
                     for child in children]
            result["per_threads"][str(count)] = {
                kernel: float(sum(rate[kernel] for rate in rates))
                for kernel in KERNELS}
        return result
    except (RuntimeError, OSError, subprocess.SubprocessError,
            ValueError) as error:
        return {"error": f"{type(error).__name__}: {error}"}
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    result = measure(args.threads)
    if "error" in result:
        print(result["error"])
        return 1
    for count, rates in result["per_threads"].items():
        for kernel, rate in rates.items():
            print(f"{count} core(s) {kernel:13s} {rate / 1e9:6.1f} GMAC/s  "
                  f"{LABELS[kernel]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
