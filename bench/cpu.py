"""What a bench ran on, for its output (issue 27 point 7): the CPU's model and the instruction sets that decide its
speed here (AVX2, AVX-512, VNNI, BF16, AMX), the emulation switches when set, and the llama.cpp build.

    python bench/cpu.py      # prints both lines
"""

from __future__ import annotations

import os
from pathlib import Path

# (label, the /proc/cpuinfo flags that make it): what the embeddings (PyTorch/oneDNN, ONNX Runtime) and llama.cpp use
ISA = (("AVX2", ("avx2",)), ("FMA", ("fma",)), ("AVX-VNNI", ("avx_vnni",)), ("AVX-512", ("avx512f",)),
       ("AVX512-VNNI", ("avx512_vnni",)), ("AVX512-BF16", ("avx512_bf16",)),
       ("AMX-BF16", ("amx_tile", "amx_bf16")), ("AMX-INT8", ("amx_tile", "amx_int8")))
# switches that make this process use fewer instruction sets than the CPU has (to emulate a plain AVX2 CPU: PyTorch,
# oneDNN, MKL, OpenBLAS, NumPy; llama.cpp through a portable library) or that change what the benches measure
EMULATION = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "OPENBLAS_CORETYPE",
             "NPY_DISABLE_CPU_FEATURES", "LLAMA_CPP_LIB_PATH", "POPCORN_CORPUS_PRECISION", "POPCORN_CPU_ISA")


def cpu_info(path: str = "/proc/cpuinfo") -> tuple[str, set[str]]:
    """(model name, flags) of the first processor listed; ("", set()) where unreadable (not Linux)."""
    model, flags = "", set()
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            if model and flags:
                break
    except OSError:
        pass
    return model, flags


def instruction_sets(flags: set[str] | None = None) -> str:
    """e.g. "AVX2 FMA AVX-512 AVX512-VNNI AVX512-BF16, no AMX" (each label whose flags the CPU lists)."""
    flags = cpu_info()[1] if flags is None else flags
    have = [label for label, needs in ISA if set(needs) <= flags]
    if not flags:
        return "unknown (no /proc/cpuinfo flags)"
    return " ".join(have) + ("" if any(label.startswith("AMX") for label in have) else ", no AMX")


def cpu_line() -> str:
    """The CPU's model, its instruction sets, and the emulation switches in force (PyTorch/oneDNN read them)."""
    model, flags = cpu_info()
    switches = [f"{name}={os.environ[name]}" for name in EMULATION if os.environ.get(name)]
    return f"{model or 'unknown CPU'}: {instruction_sets(flags)}" + (f" [{' '.join(switches)}]" if switches else "")


def llama_build() -> str:
    """llama-cpp-python's version and the instruction sets its llama.cpp was compiled with (scripts/setup.sh builds
    for the CPU it runs on; requirements.txt's wheel is portable)."""
    try:
        import llama_cpp

        info = llama_cpp.llama_print_system_info().decode()
    except Exception as exc:  # not installed: the local LLM cannot run, and the bench says why later
        return f"unavailable ({type(exc).__name__})"
    features = " ".join(part.split("=")[0].split(":")[-1].strip() for part in info.split("|")
                        if part.strip().endswith("= 1"))
    return f"llama-cpp-python {getattr(llama_cpp, '__version__', '?')} ({features})"


if __name__ == "__main__":
    print(f"cpu: {cpu_line()}")
    print(f"llama.cpp: {llama_build()}")
