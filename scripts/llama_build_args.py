"""CMake arguments for compiling llama.cpp (llama-cpp-python) for the CPU this setup runs on.

    python scripts/llama_build_args.py            # this machine's, from /proc/cpuinfo
    python scripts/llama_build_args.py --portable # what requirements.txt uses (a Space builds on one machine and runs
                                                  # on another)

`-DGGML_NATIVE=OFF` always (no -march=native: that also turns on AMX, and llama.cpp's AMX kernels stop with an illegal
instruction on the VMs this was measured on, although the CPU lists amx_int8), then each instruction set the CPU lists:
AVX2/FMA/F16C (llama.cpp's defaults; turned off on a CPU without them), and AVX-512 with VNNI, BF16 and VBMI where
present. On this project's 2-core Xeon (Sapphire Rapids) the AVX-512 build evaluates a plan's prompt 1.5x faster than
the portable one (bench/RESULTS.md). Setup keeps one wheel per argument set, so a machine with other flags never
reuses a wheel built for this one.
"""

from __future__ import annotations

import sys
from pathlib import Path

PORTABLE = ["-DGGML_NATIVE=OFF"]
# (cmake option, the /proc/cpuinfo flags it needs): AVX-512 foundation first, its extensions only with it
AVX512 = ("GGML_AVX512", ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"))
AVX512_EXTENSIONS = (("GGML_AVX512_VNNI", ("avx512_vnni",)), ("GGML_AVX512_BF16", ("avx512_bf16",)),
                     ("GGML_AVX512_VBMI", ("avx512vbmi",)))
BASELINE = (("GGML_AVX2", ("avx2",)), ("GGML_FMA", ("fma",)), ("GGML_F16C", ("f16c",)))


def cpu_flags(cpuinfo: str) -> set[str]:
    """The instruction-set flags of the first x86 processor listed (empty for another architecture)."""
    for line in cpuinfo.splitlines():
        if line.startswith("flags") and ":" in line:
            return set(line.split(":", 1)[1].split())
    return set()


def build_args(flags: set[str]) -> list[str]:
    if not flags:  # not x86 (or unreadable): llama.cpp's portable defaults
        return list(PORTABLE)
    args = list(PORTABLE)
    args += [f"-D{option}=OFF" for option, needs in BASELINE if not set(needs) <= flags]
    option, needs = AVX512
    if set(needs) <= flags:
        args.append(f"-D{option}=ON")
        args += [f"-D{opt}=ON" for opt, req in AVX512_EXTENSIONS if set(req) <= flags]
    if "avx_vnni" in flags:
        args.append("-DGGML_AVX_VNNI=ON")
    return args


def main(argv: list[str]) -> int:
    if "--portable" in argv:
        print(" ".join(PORTABLE))
        return 0
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    print(" ".join(build_args(cpu_flags(text))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
